"""The report's mitigation table: per task and run, metric(plain) → metric(mitigated), the paired
difference with its 95% interval and p-value, read from results.json's ``tasks.<task>.mitigation``.

results.json is untrusted: every value is type-checked here and rendered by the template through
autoescaping; a block that is not what the runner writes is shown as missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vlmbench.report.metricspec import finite, flatten, flatten_ci

EXTRA_METRICS: tuple[str, ...] = (
    "all.accuracy", "all.yes_ratio", "chair_i", "chair_s", "recall",
    "generative.chair", "generative.cover", "generative.hal", "discriminative.f1",
)  # fmt: skip
"""Shown beside the headline when a mitigation block has them (accuracy, yes-bias, CHAIR's three)."""


@dataclass(frozen=True)
class MitigationCell:
    """One run's numbers for one task and metric."""

    spec: str
    plain: float
    mitigated: float
    delta: float
    ci: tuple[float, float] | None
    p: float | None
    test: str


def cell(result: Mapping[str, Any], metric: str) -> MitigationCell | None:
    """The mitigation numbers of ``metric`` in a task result; None when it has none."""
    block = result.get("mitigation")
    if not isinstance(block, Mapping):
        return None
    values = [finite(flatten(block.get(key) or {}).get(metric)) for key in ("plain", "metrics", "difference")]
    if any(v is None for v in values):
        return None
    plain, mitigated, delta = (float(v) for v in values)  # type: ignore[arg-type]
    p = finite(flatten(block.get("difference_p") or {}).get(metric))
    test = flatten_tests(block.get("difference_test")).get(metric, "")
    return MitigationCell(str(block.get("spec") or ""), plain, mitigated, delta,
                          flatten_ci(block.get("difference_ci95")).get(metric), p, test)  # fmt: skip


def flatten_tests(value: Any, prefix: str = "") -> dict[str, str]:
    """``difference_test`` (nested metric -> "mcnemar"/"bootstrap") flattened; other values skipped."""
    out: dict[str, str] = {}
    if isinstance(value, Mapping):
        for key, item in value.items():
            name = f"{prefix}{key}"
            if isinstance(item, Mapping):
                out.update(flatten_tests(item, f"{name}."))
            elif item in ("mcnemar", "bootstrap"):
                out[name] = str(item)
    return out


def mitigation_rows(results: Sequence[Mapping[str, Any]], tasks: Sequence[Any]) -> list[dict[str, Any]]:
    """Rows of the report's mitigation table: per task (a `TaskView`) its headline and the
    `EXTRA_METRICS` some run's mitigation block holds, one `MitigationCell` (or None) per run."""
    rows: list[dict[str, Any]] = []
    for task in tasks:
        per_run = [r.get(task.name) if isinstance(r.get(task.name), Mapping) else {} for r in results]
        if not any(isinstance(r.get("mitigation"), Mapping) for r in per_run):
            continue
        metrics = [task.headline.metric, *(m for m in EXTRA_METRICS if m != task.headline.metric)]
        for metric in metrics:
            cells = [cell(r, metric) for r in per_run]
            if any(c is not None for c in cells):
                rows.append(
                    {
                        "task": task,
                        "metric": metric,
                        "headline": metric == task.headline.metric,
                        "cells": cells,
                    }
                )
    return rows
