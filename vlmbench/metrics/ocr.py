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
from typing import Any

import numpy as np

from vlmbench.metrics.anls import levenshtein


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
        "exact_match": float(np.mean([exact_match(r["prediction"], r["answers"]) for r in rows])),
        "cer": float(np.mean([cer(r["prediction"], r["answers"]) for r in rows])),
    }
