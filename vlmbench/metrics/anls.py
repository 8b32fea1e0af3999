"""Average Normalised Levenshtein Similarity (ANLS), the DocVQA metric, and the edit distance it uses.

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
from typing import Any

import numpy as np

ANLS_THRESHOLD = 0.5

# Above this many DP cells the numpy row recurrence beats the pure-Python loop.
_NUMPY_CELLS = 4096


def levenshtein(a: str, b: str) -> int:
    """Edit distance (unit-cost insertions, deletions and substitutions) between two strings."""
    if a == b:
        return 0
    if len(a) < len(b):
        a, b = b, a  # b is the shorter one: rows of length len(b) + 1
    if not b:
        return len(a)
    if len(a) * len(b) > _NUMPY_CELLS:
        return _levenshtein_numpy(a, b)
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        cur = [i]
        for j, cb in enumerate(b, start=1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _levenshtein_numpy(a: str, b: str) -> int:
    """Row-by-row DP, each row vectorised: the left-neighbour (insertion) chain is a running min."""
    codes_b = np.frombuffer(b.encode("utf-32-le"), dtype=np.uint32)
    offsets = np.arange(len(b) + 1, dtype=np.int64)
    prev = offsets.copy()
    for i, ca in enumerate(a, start=1):
        cost = (codes_b != ord(ca)).astype(np.int64)
        row = np.empty_like(prev)
        row[0] = i
        # deletion (from above) or substitution/match (from upper-left)
        row[1:] = np.minimum(prev[1:] + 1, prev[:-1] + cost)
        # insertion: row[j] = min_k<=j (row[k] + j - k)
        prev = np.minimum.accumulate(row - offsets) + offsets
    return int(prev[-1])


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
    return {"anls": float(np.mean(scores)) if scores else 0.0}
