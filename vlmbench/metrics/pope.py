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

Addition (choices mode): when every scored row carries ``choice_logprobs`` (the log-probabilities the
runner logs for the ``Yes``/``No`` choices), each split and ``all`` also get ``auc``: the
threshold-free ROC-AUC of ``logprob(Yes) - logprob(No)`` against the ground truth, as
vlm-evaluation reports it (0.0 when a split holds only one ground-truth class). Generated answers
have no log-probs, so generate-mode results have no ``auc``.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from vlmbench.metrics.auc import roc_auc, roc_auc_resampled
from vlmbench.metrics.scorer import (
    DEFAULT_RESAMPLES,
    SampleStats,
    Scorer,
    base_fields,
    checked_answers,
    ci,
    ratio_matrix,
    result,
)
from vlmbench.metrics.stats import bootstrap_ci_matrix

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


def logprob_margin(logprobs: Any) -> float | None:
    """``logprob(yes) - logprob(no)`` from a ``choice_logprobs`` mapping (choice names matched
    case-insensitively), or None when either is missing."""
    if not isinstance(logprobs, Mapping):
        return None
    by_name = {str(k).strip().lower(): v for k, v in logprobs.items()}
    yes, no = by_name.get("yes"), by_name.get("no")
    if (
        isinstance(yes, bool)
        or isinstance(no, bool)
        or not isinstance(yes, (int, float))
        or not isinstance(no, (int, float))
    ):
        return None
    return float(yes) - float(no)


def margins_of(rows: Sequence[Mapping[str, Any]]) -> np.ndarray | None:
    """Every row's log-prob margin, or None unless all rows have one (the ``auc`` condition)."""
    margins = [logprob_margin(row.get("choice_logprobs")) for row in rows]
    if not rows or any(m is None for m in margins):
        return None
    return np.array(margins, dtype=np.float64)


def _yes_no_code(text: Any) -> int:
    label = str(text).strip().lower()
    return YES if label.startswith("yes") else NO if label.startswith("no") else UNKNOWN


_LEAVES: tuple[str, ...] = ("accuracy", "precision", "recall", "f1", "yes_ratio", "unknown", "auc")


class PopeScorer(Scorer):
    """POPE: confusion metrics per split and pooled, the mean of the split f1s, and (choices mode) AUC."""

    name = "pope"
    directions = MappingProxyType(
        {
            "f1_mean_of_splits": True,
            "accuracy": True,
            "precision": True,
            "recall": True,
            "f1": True,
            "yes_ratio": None,
            "unknown": False,
            "auc": True,
        }
    )
    default_metric = "f1_mean_of_splits"
    conventions = (
        "Official POPE parsing (first sentence, commas removed, 'no'/'not' -> no, else yes; empty -> unknown). "
        "yes_ratio is the share of predicted yes; unknown answers are wrong and not yes. "
        "f1_mean_of_splits as LLaVA-1.5/InternVL report it. "
        "auc (choices mode only, an addition): ROC-AUC of logprob(Yes) - logprob(No)."
    )

    def metric_names(self) -> tuple[str, ...]:
        return ("f1_mean_of_splits", *(f"{group}.{m}" for group in (*POPE_SPLITS, "all") for m in _LEAVES))

    def score(
        self, rows: Sequence[Mapping[str, Any]], *, seed: int = 0, n_resamples: int = DEFAULT_RESAMPLES
    ) -> dict[str, Any]:
        """Score POPE rows (``prediction``, ``answer`` yes/no, ``category`` split, optional ``choice_logprobs``)."""
        parsed, pred, gt, split = encode_rows(rows)
        metrics = pope_metrics_from_codes(pred, gt, split)
        per_sample = [
            {**base_fields(row), "parsed": p, "correct": bool(pc == g)}
            for row, p, pc, g in zip(rows, parsed, pred, gt, strict=True)
        ]
        margins = margins_of(rows)
        ci95: dict[str, Any] = {}
        groups = [(name, split == k) for k, name in enumerate(POPE_SPLITS) if name in metrics]
        for name, mask in [*groups, ("all", np.ones(len(rows), dtype=bool))]:
            sp, sg = pred[mask], gt[mask]
            ci95[name] = {
                "f1": ci(sp, lambda i, sp=sp, sg=sg: f1_accuracy(sp[i], sg[i])[0], seed, n_resamples),
                "accuracy": ci(sp, lambda i, sp=sp, sg=sg: f1_accuracy(sp[i], sg[i])[1], seed, n_resamples),
            }
            if margins is not None:
                labels, scores = sg == YES, margins[mask]
                metrics[name]["auc"] = roc_auc(labels, scores)
                low, high = bootstrap_ci_matrix(
                    labels.size,
                    lambda idx, y=labels, s=scores: roc_auc_resampled(y, s, idx),
                    n_resamples=n_resamples,
                    seed=seed,
                )
                ci95[name]["auc"] = [low, high]
        present = [k for k, name in enumerate(POPE_SPLITS) if name in metrics]

        def f1_mean(i: np.ndarray) -> float:
            p, g, s = pred[i], gt[i], split[i]
            return float(np.mean([f1_accuracy(p[s == k], g[s == k])[0] for k in present]))

        ci95["f1_mean_of_splits"] = ci(pred, f1_mean, seed, n_resamples) if present else [0.0, 0.0]
        return result(self.task_name, len(rows), metrics, ci95, per_sample)

    def outcome(self, fields: Mapping[str, Any]) -> tuple[float, bool | None]:
        correct = bool(fields.get("correct"))
        return float(correct), correct

    def statistics(self, rows: Sequence[Mapping[str, Any]]) -> SampleStats | None:
        """Every POPE metric from sample-log rows (``parsed`` or ``prediction``, ``references`` or
        ``answer``, ``category``; ``choice_logprobs`` for auc); None when a ground truth is not yes/no."""
        pred = np.empty(len(rows), dtype=np.int8)
        gt = np.empty(len(rows), dtype=np.int8)
        split = np.empty(len(rows), dtype=object)
        for i, row in enumerate(rows):
            parsed = row.get("parsed")
            if parsed not in _CODES:
                parsed = parse_yes_no(str(row.get("prediction") or ""))
            pred[i] = _yes_no_code(parsed)
            refs = row.get("references")
            gt[i] = _yes_no_code(refs[0] if isinstance(refs, list) and refs else row.get("answer"))
            split[i] = row.get("category")
        if np.any(gt == UNKNOWN):
            return None
        groups: dict[str, np.ndarray] = {s: split == s for s in POPE_SPLITS if np.any(split == s)}
        present = list(groups)
        groups["all"] = np.ones(len(rows), dtype=bool)
        right = pred == gt
        margins = margins_of(rows)
        indicators = {
            name: {
                key: values.astype(np.float64)
                for key, values in (
                    ("n", mask), ("right", mask & right), ("pred_yes", mask & (pred == YES)),
                    ("gt_yes", mask & (gt == YES)), ("tp", mask & (pred == YES) & (gt == YES)),
                    ("unk", mask & (pred == UNKNOWN)),
                )
            }
            for name, mask in groups.items()
        }  # fmt: skip

        def compute(idx: np.ndarray) -> dict[str, np.ndarray]:
            out: dict[str, np.ndarray] = {}
            for name, ind in indicators.items():
                c = {key: values[idx].sum(axis=1) for key, values in ind.items()}
                precision = ratio_matrix(c["tp"], c["pred_yes"])
                recall = ratio_matrix(c["tp"], c["gt_yes"])
                out[f"{name}.accuracy"] = ratio_matrix(c["right"], c["n"])
                out[f"{name}.precision"] = precision
                out[f"{name}.recall"] = recall
                out[f"{name}.f1"] = ratio_matrix(2 * precision * recall, precision + recall)
                out[f"{name}.yes_ratio"] = ratio_matrix(c["pred_yes"], c["n"])
                out[f"{name}.unknown"] = ratio_matrix(c["unk"], c["n"])
                if margins is not None:
                    out[f"{name}.auc"] = roc_auc_resampled(gt == YES, margins, idx, include=groups[name])
            if present:
                out["f1_mean_of_splits"] = np.mean([out[f"{s}.f1"] for s in present], axis=0)
            return out

        binary = {f"{name}.accuracy": (right, mask) for name, mask in groups.items()}
        return SampleStats(compute, binary)

    def check_reference(self, row: Mapping[str, Any]) -> None:
        answers = checked_answers(row)
        if len(answers) != 1 or str(answers[0]).strip().lower() not in ("yes", "no"):
            raise ValueError(f"a POPE answer must be 'yes' or 'no', got {answers!r}")
        if "category" not in row:
            raise ValueError(f"missing field 'category' (the POPE split: {', '.join(POPE_SPLITS)})")
        if row["category"] not in POPE_SPLITS:
            raise ValueError(
                f"unknown POPE split {row['category']!r}; expected one of {', '.join(POPE_SPLITS)}"
            )
