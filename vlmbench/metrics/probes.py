"""Attribute, relation and count probes: POPE-style yes/no questions about colours, left/right
relations and counts, each in three negative-sampling regimes (random / popular / adversarial).

Answers are parsed with the official POPE rule (`vlmbench.metrics.pope.parse_yes_no`); "yes" is the
positive class, as in POPE. Metrics (`vlmbench.metrics.binary`) for every probe type present, per
regime and pooled over its regimes (``color.adversarial.f1``, ``color.all.f1``), and for all rows
(``all.accuracy``); the headline ``f1_mean_of_types`` is the unweighted mean of the types' pooled F1,
so that a design that hallucinates colours but not counts shows a low ``color.all.f1`` next to a high
``count.all.f1``. Bootstrap intervals for accuracy, F1 and yes_ratio of every group and the headline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np

from vlmbench.metrics.binary import (
    CONFUSION_DIRECTIONS,
    CONFUSION_METRICS,
    GroupedConfusion,
    nest,
    yes_no_codes,
)
from vlmbench.metrics.pope import POPE_SPLITS, parse_yes_no
from vlmbench.metrics.scorer import (
    DEFAULT_RESAMPLES,
    SampleStats,
    Scorer,
    base_fields,
    checked_answers,
    result,
)
from vlmbench.metrics.stats import bootstrap_ci_matrix

PROBE_TYPES: tuple[str, ...] = ("color", "position", "count")
"""The probe types, in report order (`position` asks left/right relations between two objects)."""
REGIMES: tuple[str, ...] = POPE_SPLITS
_CI_METRICS: tuple[str, ...] = ("accuracy", "f1", "yes_ratio")


def _groups(types: np.ndarray, regimes: np.ndarray) -> dict[str, np.ndarray]:
    """Row masks: ``<type>.<regime>`` and ``<type>.all`` for each type present, then ``all``."""
    groups: dict[str, np.ndarray] = {}
    for probe in PROBE_TYPES:
        of_type = types == probe
        if not np.any(of_type):
            continue
        for regime in REGIMES:
            mask = of_type & (regimes == regime)
            if np.any(mask):
                groups[f"{probe}.{regime}"] = mask
        groups[f"{probe}.all"] = of_type
    groups["all"] = np.ones(types.size, dtype=bool)
    return groups


def _present_types(groups: Mapping[str, np.ndarray]) -> list[str]:
    return [p for p in PROBE_TYPES if f"{p}.all" in groups]


def _type_mean(confusion: GroupedConfusion, types: Sequence[str]):
    def statistic(idx: np.ndarray) -> np.ndarray:
        values = confusion.compute(idx, [f"{p}.all" for p in types])
        return np.mean([values[f"{p}.all.f1"] for p in types], axis=0)

    return statistic


def _check_row(row: Mapping[str, Any]) -> tuple[str, str]:
    probe, regime = row.get("probe_type"), row.get("category")
    if probe not in PROBE_TYPES:
        raise ValueError(f"unknown probe_type {probe!r}; expected one of {', '.join(PROBE_TYPES)}")
    if regime not in REGIMES:
        raise ValueError(f"unknown regime (category) {regime!r}; expected one of {', '.join(REGIMES)}")
    return str(probe), str(regime)


class ProbesScorer(Scorer):
    """Colour / relation / count probes: POPE confusion metrics per probe type and regime."""

    name = "probes"
    directions = MappingProxyType({"f1_mean_of_types": True, **CONFUSION_DIRECTIONS})
    default_metric = "f1_mean_of_types"
    conventions = (
        "Synthetic colour / left-right / count probes, balanced yes/no; official POPE parsing (first sentence, "
        "'no'/'not' -> no, else yes; empty -> unknown, which is wrong and not yes); 'yes' is the positive class. "
        "Metrics per probe type and negative regime (random: any other value; popular: the set's most common "
        "other value; adversarial: a value from the same scene), f1_mean_of_types = mean of the types' pooled F1."
    )

    def metric_names(self) -> tuple[str, ...]:
        groups = [f"{p}.{r}" for p in PROBE_TYPES for r in (*REGIMES, "all")] + ["all"]
        return ("f1_mean_of_types", *(f"{g}.{m}" for g in groups for m in CONFUSION_METRICS))

    def score(
        self, rows: Sequence[Mapping[str, Any]], *, seed: int = 0, n_resamples: int = DEFAULT_RESAMPLES
    ) -> dict[str, Any]:
        """Score probe rows (``prediction``, ``answer`` yes/no, ``probe_type``, ``category`` regime)."""
        kinds = [_check_row(row) for row in rows]
        parsed = [parse_yes_no(str(row["prediction"])) for row in rows]
        pred = yes_no_codes(parsed)
        gt = yes_no_codes(row["answer"] for row in rows)
        if np.any(gt < 0):
            raise ValueError("a probe answer must be 'yes' or 'no'")
        types = np.array([k[0] for k in kinds], dtype=object)
        regimes = np.array([k[1] for k in kinds], dtype=object)
        confusion = GroupedConfusion(pred, gt, _groups(types, regimes))
        flat: dict[str, Any] = {}
        present = _present_types(confusion.groups)
        mean_stat = _type_mean(confusion, present)
        flat["f1_mean_of_types"] = float(mean_stat(np.arange(len(rows))[None, :])[0]) if present else 0.0
        flat.update(confusion.point())
        ci95 = confusion.intervals(_CI_METRICS, seed, n_resamples)
        if present:
            low, high = bootstrap_ci_matrix(len(rows), mean_stat, n_resamples=n_resamples, seed=seed)
            ci95 = {"f1_mean_of_types": [low, high], **ci95}
        else:
            ci95 = {"f1_mean_of_types": [0.0, 0.0], **ci95}
        per_sample = [
            {**base_fields(row), "parsed": p, "correct": bool(pc == g), "probe_type": k[0], "category": k[1]}
            for row, p, pc, g, k in zip(rows, parsed, pred, gt, kinds, strict=True)
        ]
        return result(self.task_name, len(rows), nest(flat), nest(ci95), per_sample)

    def outcome(self, fields: Mapping[str, Any]) -> tuple[float, bool | None]:
        correct = bool(fields.get("correct"))
        return float(correct), correct

    def statistics(self, rows: Sequence[Mapping[str, Any]]) -> SampleStats | None:
        """All metrics from sample-log rows (``parsed``, ``references``, ``probe_type``, ``category``)."""
        try:
            kinds = [_check_row(row) for row in rows]
        except ValueError:
            return None
        pred = yes_no_codes(
            row.get("parsed") if row.get("parsed") in ("yes", "no", "unknown")
            else parse_yes_no(str(row.get("prediction") or ""))
            for row in rows
        )  # fmt: skip
        refs = [row.get("references") for row in rows]
        gt = yes_no_codes(
            r[0] if isinstance(r, list) and r else row.get("answer")
            for r, row in zip(refs, rows, strict=True)
        )
        if np.any(gt < 0):
            return None
        types = np.array([k[0] for k in kinds], dtype=object)
        regimes = np.array([k[1] for k in kinds], dtype=object)
        confusion = GroupedConfusion(pred, gt, _groups(types, regimes))
        present = _present_types(confusion.groups)
        if not present:
            return confusion.stats()
        return confusion.stats(
            lambda idx, out: {"f1_mean_of_types": np.mean([out[f"{p}.all.f1"] for p in present], axis=0)}
        )

    def check_reference(self, row: Mapping[str, Any]) -> None:
        answers = checked_answers(row)
        if len(answers) != 1 or str(answers[0]).strip().lower() not in ("yes", "no"):
            raise ValueError(f"a probe answer must be 'yes' or 'no', got {answers!r}")
        for key in ("probe_type", "category"):
            if key not in row:
                raise ValueError(
                    f"missing field {key!r} (probe type: {', '.join(PROBE_TYPES)}; category: the regime)"
                )
        _check_row(row)
