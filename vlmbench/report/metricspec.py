"""Metric bookkeeping shared by the report, the leaderboard and `vlmbench check`.

Metrics are addressed by dotted keys: POPE's nested ``metrics["random"]["f1"]`` is
``"random.f1"``; flat tasks use the metric name (``"anls"``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vlmbench.metrics.headlines import HEADLINES

# Fallback headline per task when results.json has no "headline" object (the runner's table).
DEFAULT_HEADLINES: Mapping[str, tuple[str, bool]] = HEADLINES

POPE_SPLITS: tuple[str, ...] = ("random", "popular", "adversarial")

# Metric leaf names where lower is better, and those with no better direction.
_LOWER_IS_BETTER = frozenset({"chair_i", "chair_s", "cer", "unknown"})
_NEUTRAL = frozenset({"yes_ratio"})


@dataclass(frozen=True)
class Headline:
    """The number a task is ranked by."""

    metric: str
    higher_is_better: bool

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"


def headline_of(task: str, result: Mapping[str, Any]) -> Headline:
    """The task's headline from results.json, else the default for the task, else its first metric."""
    spec = result.get("headline")
    if isinstance(spec, Mapping) and spec.get("metric"):
        return Headline(str(spec["metric"]), bool(spec.get("higher_is_better", True)))
    if task in DEFAULT_HEADLINES:
        metric, higher = DEFAULT_HEADLINES[task]
        return Headline(metric, higher)
    flat = flatten(result.get("metrics", {}))
    first = next(iter(flat), "score")
    return Headline(first, direction(first) is not False)


def direction(metric: str) -> bool | None:
    """True when higher is better, False when lower is better, None when neither (yes_ratio)."""
    leaf = metric.rsplit(".", 1)[-1]
    if leaf in _NEUTRAL:
        return None
    return leaf not in _LOWER_IS_BETTER


def flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested metric dict -> ``{"random.f1": 0.8, ...}`` (numeric leaves only, order kept)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


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


def finite(value: Any) -> float | None:
    """``value`` as a float when it is a finite number, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


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
