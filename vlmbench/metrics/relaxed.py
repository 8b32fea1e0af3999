"""ChartQA relaxed accuracy.

A prediction is right for one target when

* both strings (stripped) read as finite numbers -- a trailing ``%`` is read as a fraction on
  either side, so ``"12%"`` is 0.12 and equals ``"0.12"`` -- and
  ``|pred - target| / |target| <= 0.05``; a target of exactly 0 needs ``pred == 0``;
* otherwise, when the stripped strings are equal ignoring case.

Numbers with thousands separators (``"1,000"``) or units do not read as numbers (as in the
reference implementation) and fall back to the string comparison. With several targets the best
one counts. The score of a set is the mean over questions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from vlmbench.metrics.scorer import MeanScorer, mean

RELATIVE_TOLERANCE = 0.05


def to_number(text: str) -> float | None:
    """The number a ChartQA answer reads as (``"12%"`` -> 0.12), or None when it is not one."""
    text = str(text).strip()
    scale = 1.0
    if text.endswith("%"):
        text, scale = text[:-1].rstrip(), 0.01
    try:
        value = float(text)
    except ValueError:
        return None
    return value * scale if math.isfinite(value) else None


def relaxed_correct(prediction: str, target: str, tolerance: float = RELATIVE_TOLERANCE) -> bool:
    """Whether ``prediction`` counts as right for one ``target`` (see the module docstring)."""
    pred_value, target_value = to_number(prediction), to_number(target)
    if pred_value is not None and target_value is not None:
        if target_value == 0.0:
            return pred_value == 0.0
        return abs(pred_value - target_value) / abs(target_value) <= tolerance
    return str(prediction).strip().lower() == str(target).strip().lower()


def relaxed_accuracy(prediction: str, answers: Sequence[str], tolerance: float = RELATIVE_TOLERANCE) -> float:
    """1.0 when the prediction is right for any reference answer, else 0.0."""
    return 1.0 if any(relaxed_correct(prediction, a, tolerance) for a in answers) else 0.0


def relaxed_metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """``{"relaxed_accuracy": mean}`` over rows with ``prediction`` and ``answers`` (0.0 for no rows)."""
    scores = [relaxed_accuracy(r["prediction"], r["answers"]) for r in rows]
    return {"relaxed_accuracy": mean(scores)}


class RelaxedAccuracyScorer(MeanScorer):
    """ChartQA: relaxed accuracy per question, averaged."""

    name = "chartqa"
    directions = MappingProxyType({"relaxed_accuracy": True})
    default_metric = "relaxed_accuracy"
    binary = frozenset({"relaxed_accuracy"})
    conventions = "Relaxed accuracy: numbers within 5% relative error (trailing % read as a fraction), else exact match."

    def per_question(self, prediction: str, answers: list[str]) -> Mapping[str, float]:
        return {"relaxed_accuracy": relaxed_accuracy(prediction, answers)}
