"""Metric bookkeeping shared by the report, the leaderboard and `vlmbench check`.

Metrics are addressed by dotted keys: POPE's nested ``metrics["random"]["f1"]`` is
``"random.f1"``; flat tasks use the metric name (``"anls"``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vlmbench.metrics.pope import POPE_SPLITS
from vlmbench.metrics.registry import BUILTIN_SCORERS, builtin_by_headline, builtin_direction, resolve_scorer
from vlmbench.metrics.scorer import Direction, Scorer, finite, flatten

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Headline:
    """The number a task is ranked by."""

    metric: str
    higher_is_better: bool

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"


def _plugin_scorer(task: str, spec: str) -> Scorer | None:
    """A non-built-in scorer, resolved through the task YAML of that name in the tasks directory
    (when its ``scorer`` field still names the same class); None when it cannot be imported here."""
    from vlmbench.errors import UserError
    from vlmbench.tasks.registry import read_task_config, task_files

    try:
        path = task_files().get(task)
        if path is None or read_task_config(path).scorer != spec:
            return None
        return resolve_scorer(spec, base_dir=path.parent, source=str(path))
    except UserError as exc:
        logger.debug("scorer %s of task %s is not available here: %s", spec, task, exc)
        return None


def scorer_of(task: str, result: Mapping[str, Any]) -> Scorer | None:
    """The scorer of one task of a run: the recorded ``scorer`` (a built-in, or a class the task's YAML
    in the tasks directory names), else the built-in named like the task, else the built-in whose
    headline the run recorded. None when none applies (reports then use what results.json records)."""
    spec = result.get("scorer")
    if isinstance(spec, str) and spec:
        return BUILTIN_SCORERS.get(spec) or _plugin_scorer(task, spec)
    if task in BUILTIN_SCORERS:
        return BUILTIN_SCORERS[task]
    recorded = result.get("headline")
    if isinstance(recorded, Mapping) and isinstance(recorded.get("metric"), str):
        return builtin_by_headline(recorded["metric"])
    return None


def headline_of(task: str, result: Mapping[str, Any]) -> Headline:
    """The task's headline: the metric results.json records, with its direction from the task's scorer
    (results.json's own flag when the scorer is not available); without a recorded one the scorer's
    default; else the first metric."""
    scorer = scorer_of(task, result)
    spec = result.get("headline")
    if isinstance(spec, Mapping) and spec.get("metric"):
        metric = str(spec["metric"])
        higher = scorer.direction(metric) if scorer is not None and scorer.knows(metric) else None
        return Headline(metric, bool(spec.get("higher_is_better", True)) if higher is None else higher)
    if scorer is not None:
        return Headline(*scorer.headline())
    flat = flatten(result.get("metrics", {}))
    first = next(iter(flat), "score")
    return Headline(first, direction(first) is not False)


def direction(
    metric: str, scorer: Scorer | None = None, recorded: Mapping[str, Any] | None = None
) -> Direction:
    """True when higher is better, False when lower is better, None when neither (yes_ratio).

    From ``scorer`` when it knows the metric, else from the ``directions`` a results.json task
    records, else from the built-in scorers by the metric's leaf name (True for a metric none knows)."""
    if scorer is not None and scorer.knows(metric):
        return scorer.direction(metric)
    if isinstance(recorded, Mapping) and metric in recorded:
        value = recorded[metric]
        return value if isinstance(value, bool) else None
    return builtin_direction(metric)


def flatten_ci(ci95: Any) -> dict[str, tuple[float, float]]:
    """ci95 either keyed by dotted names or nested like metrics -> ``{"random.f1": (lo, hi)}``."""
    out: dict[str, tuple[float, float]] = {}
    if not isinstance(ci95, Mapping):
        return out

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, Mapping):
                walk(value, f"{name}.")
            elif (
                isinstance(value, (list, tuple))
                and len(value) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            ):
                out[name] = (float(value[0]), float(value[1]))

    walk(ci95, "")
    return out


def ordered_metrics(task: str, metrics: Mapping[str, Any], headline: Headline) -> list[str]:
    """Dotted metric names with the headline first, then POPE splits in their canonical order."""
    names = list(flatten(metrics))
    if task == "pope" or any(name.split(".", 1)[0] in POPE_SPLITS for name in names):
        order = {split: i for i, split in enumerate((*POPE_SPLITS, "all"))}
        names.sort(key=lambda n: order.get(n.split(".", 1)[0], -1) if "." in n else -1)
    if headline.metric in names:
        names.remove(headline.metric)
        names.insert(0, headline.metric)
    return names


def fmt_number(value: Any, digits: int = 3) -> str:
    """A metric value for display ('—' for missing)."""
    number = finite(value)
    return "—" if number is None else f"{number:.{digits}f}"


def fmt_count(value: Any) -> str:
    """Large counts in a compact form: 1234567 -> '1.23M'."""
    number = finite(value)
    if number is None:
        return "—"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(number) >= scale:
            return f"{number / scale:.3g}{unit}"
    return f"{number:.4g}"


def fmt_p(value: Any) -> str:
    """A p-value for display."""
    number = finite(value)
    if number is None:
        return "—"
    if number < 0.001:
        return "<0.001"
    return f"{number:.3f}"
