"""HallusionBench (Guan et al., CVPR 2024): yes/no questions on figures, asked again on edited figures
(Visual Dependent, ``VD``) or with and without the figure (Visual Supplement, ``VS``).

Answer parsing: the official evaluation asks GPT-4 whether an answer is correct, wrong or uncertain;
vlmbench is judge-free and uses the keyword rule of VLMEvalKit's HallusionBench (``YOrN_Extraction``):
after lower-casing and the VQA punctuation normalisation, an answer holding the word "yes" but not "no"
is yes, "no" but not "yes" is no, and anything else is ``unknown`` (the judge's "uncertain"), counted
in ``unknown``. Correctness follows the official ``assign_correctness``: right when the parsed answer is
the ground truth (``gt_answer`` "1" = yes, "0" = no); an unknown answer is wrong, except on a VS
question without its figure (``figure_id`` "0"), where not knowing counts as right.

Metrics (official ``get_eval_all`` / ``get_eval_pair_all`` / ``get_eval_fig``):

* ``aacc`` -- right questions / questions;
* ``qacc`` -- question groups (same ``category``, ``subcategory``, ``set_id``, ``question_id``: one
  question asked across the figure variants) answered right on every variant / question groups;
* ``facc`` -- figure groups (same ``category``, ``subcategory``, ``set_id``, ``figure_id``; VS
  questions without a figure excluded) with every question right / figure groups;
* ``yes_ratio`` and ``unknown`` -- shares of parsed answers.

The release's key fields travel as ``hb_category``, ``hb_subcategory``, ``hb_set_id``, ``hb_figure_id``,
``hb_question_id`` (vlmbench's own ``question_id`` is unique per row). Bootstrap intervals resample questions; ``qacc`` and ``facc`` are then ratio estimators in which each
question carries the weight 1 / (size of its group), so on the full set every group counts once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np

from vlmbench.metrics.binary import yes_no_codes
from vlmbench.metrics.pope import UNKNOWN, YES
from vlmbench.metrics.scorer import (
    DEFAULT_RESAMPLES,
    SampleStats,
    Scorer,
    base_fields,
    ci,
    ratio_matrix,
    result,
)
from vlmbench.metrics.stats import bootstrap_ci_matrix
from vlmbench.metrics.vqa import process_punctuation

KEY_FIELDS: tuple[str, ...] = ("category", "subcategory", "set_id", "figure_id", "question_id")
METRICS: tuple[str, ...] = ("qacc", "facc", "aacc", "yes_ratio", "unknown")


def parse_keyword(text: str) -> str:
    """``yes`` / ``no`` / ``unknown`` by the yes-xor-no keyword rule (see the module docstring)."""
    words = process_punctuation(str(text).lower()).split()
    has_yes, has_no = "yes" in words, "no" in words
    if has_yes and not has_no:
        return "yes"
    if has_no and not has_yes:
        return "no"
    return "unknown"


def ground_truth(gt_answer: Any) -> str:
    """HallusionBench's ``gt_answer`` ("1"/"0", or yes/no) as ``yes``/``no``; ValueError otherwise."""
    label = str(gt_answer).strip().lower()
    if label in ("1", "yes"):
        return "yes"
    if label in ("0", "no"):
        return "no"
    raise ValueError(f"gt_answer must be '1' (yes) or '0' (no), got {gt_answer!r}")


def is_correct(parsed: str, truth: str, category: str, figure_id: str) -> bool:
    """The official correctness: right answer; an unknown answer counts as right only on a VS question
    asked without its figure."""
    if parsed == "unknown":
        return category == "VS" and figure_id == "0"
    return parsed == truth


def _weights(keys: Sequence[tuple[str, ...] | None]) -> tuple[np.ndarray, np.ndarray]:
    """(group index per row, -1 for none; weight 1/|group| per row, 0 for none)."""
    ids: dict[tuple[str, ...], int] = {}
    index = np.array([-1 if k is None else ids.setdefault(k, len(ids)) for k in keys], dtype=np.int64)
    valid = index >= 0
    sizes = np.bincount(index[valid], minlength=len(ids)).astype(np.float64)
    weight = np.zeros(index.size, dtype=np.float64)
    weight[valid] = 1.0 / sizes[index[valid]]
    return index, weight


class _Columns:
    """Per-question arrays; every metric is a (weighted) ratio of sums over any resample of questions."""

    def __init__(self, keys: Sequence[tuple[str, ...]], right: np.ndarray, pred: np.ndarray) -> None:
        q_index, self.q_weight = _weights([(c, s, st, q) for c, s, st, _f, q in keys])
        f_index, self.f_weight = _weights(
            [None if (c == "VS" and f == "0") else (c, s, st, f) for c, s, st, f, _q in keys]
        )
        self.right = right.astype(bool)
        # a group is right when all its questions are; each question carries its group's verdict
        self.q_right = self._group_all(q_index, self.right)
        self.f_right = self._group_all(f_index, self.right)
        self.yes = (pred == YES).astype(np.float64)
        self.unk = (pred == UNKNOWN).astype(np.float64)
        self.n = len(keys)

    @staticmethod
    def _group_all(index: np.ndarray, right: np.ndarray) -> np.ndarray:
        if index.size == 0 or index.max(initial=-1) < 0:
            return np.zeros(index.size, dtype=np.float64)
        wrong = np.bincount(index[index >= 0], weights=(~right[index >= 0]).astype(np.float64))
        return np.where(index >= 0, wrong[np.maximum(index, 0)] == 0, False).astype(np.float64)

    def compute(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        qw, fw = self.q_weight[idx], self.f_weight[idx]
        count = np.full(idx.shape[0], float(idx.shape[1]))
        return {
            "qacc": ratio_matrix((qw * self.q_right[idx]).sum(axis=1), qw.sum(axis=1)),
            "facc": ratio_matrix((fw * self.f_right[idx]).sum(axis=1), fw.sum(axis=1)),
            "aacc": ratio_matrix(self.right[idx].sum(axis=1), count),
            "yes_ratio": ratio_matrix(self.yes[idx].sum(axis=1), count),
            "unknown": ratio_matrix(self.unk[idx].sum(axis=1), count),
        }


def _key(row: Mapping[str, Any]) -> tuple[str, ...]:
    """The release's key fields of a row (``hb_category``, ...), as strings; ValueError when one is missing."""
    missing = [f"hb_{k}" for k in KEY_FIELDS if row.get(f"hb_{k}") in (None, "")]
    if missing:
        raise ValueError(
            f"missing field(s) {', '.join(missing)} (the HallusionBench.json keys of the question)"
        )
    return tuple(str(row[f"hb_{k}"]) for k in KEY_FIELDS)


class HallusionBenchScorer(Scorer):
    """HallusionBench: question accuracy (aAcc), question-pair accuracy (qAcc), figure accuracy (fAcc)."""

    name = "hallusionbench"
    directions = MappingProxyType(
        {"qacc": True, "facc": True, "aacc": True, "yes_ratio": None, "unknown": False}
    )
    default_metric = "qacc"
    conventions = (
        "HallusionBench (Guan et al. 2024) without the GPT judge: keyword yes/no parsing as VLMEvalKit "
        "(yes xor no as a word, else unknown, counted); correctness as the official assign_correctness "
        "(unknown is right only on a VS question without its figure). aAcc per question, qAcc per question "
        "across its figure variants, fAcc per figure (all its questions right)."
    )

    def score(
        self, rows: Sequence[Mapping[str, Any]], *, seed: int = 0, n_resamples: int = DEFAULT_RESAMPLES
    ) -> dict[str, Any]:
        """Score rows: ``prediction``, ``answer`` (gt_answer) and the release's key fields ``hb_category``,
        ``hb_subcategory``, ``hb_set_id``, ``hb_figure_id``, ``hb_question_id``."""
        parsed, right, keys, per_sample = [], [], [], []
        for row in rows:
            self.check_reference(row)
            key = _key(row)
            p = parse_keyword(str(row["prediction"]))
            truth = ground_truth(row["answer"])
            ok = is_correct(p, truth, key[0], key[3])
            parsed.append(p)
            right.append(ok)
            keys.append(key)
            per_sample.append(
                {**base_fields(row), "parsed": p, "truth": truth, "correct": ok,
                 **{f"hb_{k}": v for k, v in zip(KEY_FIELDS, key, strict=True)}}
            )  # fmt: skip
        columns = _Columns(keys, np.array(right, dtype=bool), yes_no_codes(parsed))
        identity = np.arange(len(rows))[None, :]
        metrics = {k: float(v[0]) for k, v in columns.compute(identity).items()}
        ci95 = {}
        for key in ("qacc", "facc"):
            low, high = bootstrap_ci_matrix(
                len(rows), lambda idx, k=key: columns.compute(idx)[k], n_resamples=n_resamples, seed=seed
            )
            ci95[key] = [low, high]
        ci95["aacc"] = ci(columns.right.astype(np.float64), None, seed, n_resamples)
        ci95["yes_ratio"] = ci(columns.yes, None, seed, n_resamples)
        return result(self.task_name, len(rows), {k: metrics[k] for k in METRICS}, ci95, per_sample)

    def outcome(self, fields: Mapping[str, Any]) -> tuple[float, bool | None]:
        correct = bool(fields.get("correct"))
        return float(correct), correct

    def statistics(self, rows: Sequence[Mapping[str, Any]]) -> SampleStats | None:
        """Every metric from sample-log rows (``correct``, ``parsed`` and the ``hb_*`` key fields)."""
        try:
            keys = [_key(r) for r in rows]
        except ValueError:
            return None
        if not all(isinstance(r.get("correct"), bool) for r in rows):
            return None
        right = np.array([r["correct"] for r in rows], dtype=bool)
        columns = _Columns(keys, right, yes_no_codes(r.get("parsed") for r in rows))
        return SampleStats(columns.compute, {"aacc": (right, np.ones(len(rows), dtype=bool))})

    def check_reference(self, row: Mapping[str, Any]) -> None:
        if "answer" not in row:
            raise ValueError("missing field 'answer' (HallusionBench gt_answer: '1' yes, '0' no)")
        ground_truth(row["answer"])
        _key(row)
