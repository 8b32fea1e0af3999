"""POPE (Polling-based Object Probing Evaluation) answer parsing and metrics.

Parsing follows the official POPE evaluation script, with the two gaps DESIGN.md closes:

* only the first sentence counts (text before the first ``.``); commas are removed;
* the answer is ``no`` when any word is ``no`` or ``not`` (case-insensitive, surrounding
  punctuation stripped, so ``"No!"`` is ``no``), otherwise ``yes``;
* a prediction with no word at all (empty, whitespace, only punctuation) is ``unknown``
  -- the official script would call it ``yes``.

Metrics treat ``unknown`` as wrong for accuracy, as *not* a positive prediction (it is left
out of precision's denominator and of ``yes_ratio``) and as a miss (false negative) when the
ground truth is ``yes``. Every ratio whose denominator is zero is reported as ``0.0``.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

YesNo = Literal["yes", "no", "unknown"]

# The three POPE sampling settings, in the order reports show them.
POPE_SPLITS: tuple[str, ...] = ("random", "popular", "adversarial")

# Integer codes used by the vectorised metric code.
YES, NO, UNKNOWN = 1, 0, -1
_CODES: Mapping[str, int] = {"yes": YES, "no": NO, "unknown": UNKNOWN}
_NEGATIONS: frozenset[str] = frozenset({"no", "not"})


def parse_yes_no(text: str) -> YesNo:
    """Map a free-form model answer to ``"yes"``, ``"no"`` or ``"unknown"`` (official POPE rule).

    >>> parse_yes_no("No, there is not.")
    'no'
    >>> parse_yes_no("Yes.")
    'yes'
    >>> parse_yes_no("")
    'unknown'
    """
    first_sentence = text.split(".", 1)[0]
    words = [w.strip(string.punctuation).lower() for w in first_sentence.replace(",", "").split()]
    words = [w for w in words if w]
    if not words:
        return "unknown"
    if any(w in _NEGATIONS for w in words):
        return "no"
    return "yes"


def parse_ground_truth(answer: str) -> YesNo:
    """Normalise a POPE ground-truth label (``"yes"``/``"no"``, any case); raise ValueError otherwise."""
    label = str(answer).strip().lower()
    if label not in ("yes", "no"):
        raise ValueError(f"POPE ground-truth answer must be 'yes' or 'no', got {answer!r}")
    return label  # type: ignore[return-value]


def _ratio(num: float, den: float) -> float:
    """``num / den`` as a float, ``0.0`` when ``den`` is zero."""
    return float(num) / float(den) if den else 0.0


def confusion_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Accuracy, precision, recall, f1, yes_ratio and unknown from integer-coded arrays.

    ``pred`` holds YES/NO/UNKNOWN codes, ``gt`` YES/NO codes (same length).
    """
    n = int(pred.size)
    pred_yes = pred == YES
    gt_yes = gt == YES
    tp = int(np.count_nonzero(pred_yes & gt_yes))
    n_pred_yes = int(np.count_nonzero(pred_yes))
    n_gt_yes = int(np.count_nonzero(gt_yes))
    precision = _ratio(tp, n_pred_yes)
    recall = _ratio(tp, n_gt_yes)  # unknown on a gt-yes row is a false negative
    return {
        "accuracy": _ratio(np.count_nonzero(pred == gt), n),
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall),
        "yes_ratio": _ratio(n_pred_yes, n),
        "unknown": _ratio(np.count_nonzero(pred == UNKNOWN), n),
    }


def f1_accuracy(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """Just (f1, accuracy) -- the cheap pair the bootstrap recomputes per resample."""
    pred_yes = pred == YES
    tp = int(np.count_nonzero(pred_yes & (gt == YES)))
    precision = _ratio(tp, np.count_nonzero(pred_yes))
    recall = _ratio(tp, np.count_nonzero(gt == YES))
    return _ratio(2 * precision * recall, precision + recall), _ratio(np.count_nonzero(pred == gt), pred.size)


def encode_rows(rows: Sequence[Mapping[str, Any]]) -> tuple[list[YesNo], np.ndarray, np.ndarray, np.ndarray]:
    """Parse rows into (parsed answers, pred codes, gt codes, split indices into POPE_SPLITS).

    Each row needs ``prediction``, ``answer`` (yes/no) and ``category`` (a POPE split).
    Raises ValueError on a bad label or an unknown split.
    """
    parsed: list[YesNo] = []
    gt = np.empty(len(rows), dtype=np.int8)
    split = np.empty(len(rows), dtype=np.int8)
    for i, row in enumerate(rows):
        category = row.get("category")
        if category not in POPE_SPLITS:
            raise ValueError(f"unknown POPE split {category!r}; expected one of {', '.join(POPE_SPLITS)}")
        parsed.append(parse_yes_no(row["prediction"]))
        gt[i] = _CODES[parse_ground_truth(row["answer"])]
        split[i] = POPE_SPLITS.index(category)
    pred = np.array([_CODES[p] for p in parsed], dtype=np.int8)
    return parsed, pred, gt, split


def pope_metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """POPE metrics: ``{split: {...}, "all": {...}, "f1_mean_of_splits": float}``.

    Splits appear only when present in ``rows`` (in POPE_SPLITS order); ``all`` pools every row;
    ``f1_mean_of_splits`` is the unweighted mean of the per-split f1 values (0.0 with no rows).
    """
    _, pred, gt, split = encode_rows(rows)
    return pope_metrics_from_codes(pred, gt, split)


def pope_metrics_from_codes(pred: np.ndarray, gt: np.ndarray, split: np.ndarray) -> dict[str, Any]:
    """:func:`pope_metrics` on already encoded arrays (see :func:`encode_rows`)."""
    out: dict[str, Any] = {}
    f1s: list[float] = []
    for k, name in enumerate(POPE_SPLITS):
        mask = split == k
        if np.any(mask):
            out[name] = confusion_metrics(pred[mask], gt[mask])
            f1s.append(out[name]["f1"])
    out["all"] = confusion_metrics(pred, gt)
    out["f1_mean_of_splits"] = float(np.mean(f1s)) if f1s else 0.0
    return out
