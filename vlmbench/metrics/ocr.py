"""Text-recognition metrics: exact match and character error rate (CER).

* ``exact_match``: 1.0 when the prediction equals a reference after stripping and collapsing
  inner whitespace to one space. The comparison is **case-sensitive** (OCR is judged on the
  characters it reads); OCRBench's own convention (case-insensitive containment of the answer in
  the response) is a different, more lenient number.
* ``cer``: ``levenshtein(pred, ref) / len(ref)`` on the same normalised strings, the minimum over
  the references. Per sample it is clipped to 1 (a long hallucinated output could otherwise push
  it far above 1), so the mean stays in [0, 1]. An empty reference gives 0 for an empty
  prediction and 1 otherwise. Lower is better.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from vlmbench.metrics.anls import levenshtein
from vlmbench.metrics.scorer import MeanScorer, mean


def normalize_ocr(text: str) -> str:
    """Strip and collapse whitespace; case and punctuation are kept."""
    return " ".join(str(text).split())


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised reference, else 0.0."""
    pred = normalize_ocr(prediction)
    return 1.0 if any(pred == normalize_ocr(a) for a in answers) else 0.0


def cer(prediction: str, answers: Sequence[str]) -> float:
    """Character error rate of one prediction: min over references, clipped to [0, 1] (1.0 with none)."""
    pred = normalize_ocr(prediction)
    best = 1.0
    for answer in answers:
        ref = normalize_ocr(answer)
        rate = (levenshtein(pred, ref) / len(ref)) if ref else (0.0 if not pred else 1.0)
        best = min(best, rate)
    return best


def ocr_metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """``{"exact_match", "cer"}`` means over rows with ``prediction`` and ``answers`` (0.0 for no rows)."""
    if not rows:
        return {"exact_match": 0.0, "cer": 0.0}
    return {
        "exact_match": mean([exact_match(r["prediction"], r["answers"]) for r in rows]),
        "cer": mean([cer(r["prediction"], r["answers"]) for r in rows]),
    }


class OcrScorer(MeanScorer):
    """Text recognition: exact match (the headline) and character error rate (lower is better)."""

    name = "ocr"
    directions = MappingProxyType({"exact_match": True, "cer": False})
    default_metric = "exact_match"
    binary = frozenset({"exact_match"})
    conventions = (
        "Exact match after whitespace normalisation (case-sensitive); "
        "CER = edit distance / reference length, clipped to 1."
    )

    def per_question(self, prediction: str, answers: list[str]) -> Mapping[str, float]:
        return {"exact_match": exact_match(prediction, answers), "cer": cer(prediction, answers)}
