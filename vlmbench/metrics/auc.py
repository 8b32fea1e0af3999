"""Threshold-free ROC-AUC: scikit-learn for a point value, a vectorised form for bootstrap resamples.

Both follow the Mann-Whitney reading of the AUC: the chance that a random positive scores above a
random negative, ties counting one half (what `sklearn.metrics.roc_auc_score` computes). With no
positive or no negative the AUC is undefined and reported as 0.0, like every other ratio metric.
"""

from __future__ import annotations

import numpy as np


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC of ``scores`` for the boolean ``labels`` (0.0 when only one class is present)."""
    labels = np.asarray(labels, dtype=bool)
    if labels.all() or not labels.any():
        return 0.0
    from sklearn.metrics import roc_auc_score  # imported on use: ~1 s that every command would pay

    return float(roc_auc_score(labels, np.asarray(scores, dtype=np.float64)))


def roc_auc_resampled(
    labels: np.ndarray, scores: np.ndarray, idx: np.ndarray, include: np.ndarray | None = None
) -> np.ndarray:
    """ROC-AUC of each resample: ``idx`` is a ``(k, n)`` index matrix into ``labels``/``scores``;
    with ``include`` (boolean per item) only the drawn items it marks count (one split of a pooled set).

    Each resample is a multiset of the items, so the AUC is a weighted Mann-Whitney statistic over
    the distinct score values: for positives at value ``v``, the weight of negatives below ``v``
    plus half the weight of negatives at ``v``. Returns an array of shape ``(k,)``.
    """
    labels = np.asarray(labels, dtype=bool)
    values, group = np.unique(np.asarray(scores, dtype=np.float64), return_inverse=True)
    k, size = idx.shape[0], values.size
    # weight of each (resample, distinct value, class): how often the resample drew such an item
    cell = np.arange(k)[:, None] * size + group[idx]
    drawn_pos = labels[idx]
    counted = np.ones(idx.shape, dtype=bool) if include is None else np.asarray(include, dtype=bool)[idx]
    pos = np.bincount(cell[counted & drawn_pos], minlength=k * size).reshape(k, size).astype(np.float64)
    neg = np.bincount(cell[counted & ~drawn_pos], minlength=k * size).reshape(k, size).astype(np.float64)
    neg_below = np.cumsum(neg, axis=1) - neg
    wins = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
    pairs = pos.sum(axis=1) * neg.sum(axis=1)
    return np.divide(wins, pairs, out=np.zeros(k), where=pairs > 0)
