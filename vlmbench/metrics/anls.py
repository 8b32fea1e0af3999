"""Average Normalised Levenshtein Similarity (ANLS), the DocVQA metric (edit distance: rapidfuzz).

Per question (as in the official DocVQA/ST-VQA evaluation):

1. prediction and every reference are normalised: lower-cased, stripped, inner whitespace
   collapsed to one space;
2. ``NL = levenshtein(pred, ref) / max(len(pred), len(ref))`` (0 when both are empty);
3. the score is ``1 - min NL`` over the references, and a score *below* the threshold (0.5)
   becomes 0 -- a score of exactly 0.5 is kept.

ANLS of a set is the mean of the per-question scores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from rapidfuzz.distance import Levenshtein

from vlmbench.metrics.scorer import MeanScorer, mean

ANLS_THRESHOLD = 0.5


def levenshtein(a: str, b: str) -> int:
    """Edit distance (unit-cost insertions, deletions and substitutions) between two strings."""
    return int(Levenshtein.distance(a, b))


def normalize_anls(text: str) -> str:
    """Lower-case, strip and collapse whitespace (the official ANLS normalisation)."""
    return " ".join(str(text).lower().split())


def anls_score(prediction: str, answers: Sequence[str], threshold: float = ANLS_THRESHOLD) -> float:
    """ANLS of one prediction against its reference answers (0.0 when there are none)."""
    pred = normalize_anls(prediction)
    best = 0.0
    for answer in answers:
        ref = normalize_anls(answer)
        length = max(len(pred), len(ref))
        similarity = 1.0 - (levenshtein(pred, ref) / length if length else 0.0)
        best = max(best, similarity)
    return best if best >= threshold else 0.0


def anls_metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """``{"anls": mean}`` over rows with ``prediction`` and ``answers`` (0.0 for no rows)."""
    scores = [anls_score(r["prediction"], r["answers"]) for r in rows]
    return {"anls": mean(scores)}


class AnlsScorer(MeanScorer):
    """DocVQA: ANLS per question, averaged."""

    name = "docvqa"
    directions = MappingProxyType({"anls": True})
    default_metric = "anls"
    conventions = (
        "ANLS with threshold 0.5 (similarity below 0.5 -> 0), max over reference answers, case-insensitive."
    )

    def per_question(self, prediction: str, answers: list[str]) -> Mapping[str, float]:
        return {"anls": anls_score(prediction, answers)}
