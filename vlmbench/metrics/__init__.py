"""Task scorers: official metrics, per-sample score fields and bootstrap 95% intervals.

``score_task(task, rows, seed=0)`` returns ``{"task", "n", "metrics", "ci95", "per_sample"}``:

* ``metrics`` -- the DESIGN.md metric keys (all floats in [0, 1]); POPE nests per split;
* ``ci95`` -- ``[low, high]`` percentile-bootstrap intervals for the headline metrics, nested like
  ``metrics`` (POPE: ``f1``/``accuracy`` of each split and of ``all``, plus ``f1_mean_of_splits``;
  the other tasks: every metric);
* ``per_sample`` -- one dict per input row, in order, with ``question_id`` (when the row has one)
  and that row's score fields.

Input rows carry ``prediction`` plus the references: ``answers`` (list) or ``answer`` (string),
``category`` for POPE, ``gt_objects`` for CHAIR. Bad rows raise ValueError.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np

from vlmbench.metrics import chair, pope
from vlmbench.metrics.anls import anls_score
from vlmbench.metrics.ocr import cer, exact_match
from vlmbench.metrics.relaxed import relaxed_accuracy
from vlmbench.metrics.stats import DEFAULT_RESAMPLES, bootstrap_ci
from vlmbench.metrics.vqa import vqa_accuracy

Scorer = Callable[..., dict[str, Any]]


def reference_answers(row: Mapping[str, Any]) -> list[str]:
    """The reference answers of a row: ``answers`` (non-empty list) or ``[answer]``, as strings."""
    if "answers" in row:
        answers = row["answers"]
        if not isinstance(answers, (list, tuple)) or not answers:
            raise ValueError("'answers' must be a non-empty list of strings")
        return [str(a) for a in answers]
    if "answer" in row:
        return [str(row["answer"])]
    raise ValueError("row has neither 'answers' nor 'answer'")


def _base(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"question_id": row["question_id"]} if "question_id" in row else {}


def _ci(values: Sequence[Any], statistic: Callable[[np.ndarray], float] | None, seed: int, n_resamples: int):
    low, high = bootstrap_ci(values, statistic, n_resamples=n_resamples, seed=seed)
    return [low, high]


def _result(task: str, n: int, metrics: dict, ci95: dict, per_sample: list) -> dict[str, Any]:
    return {"task": task, "n": n, "metrics": metrics, "ci95": ci95, "per_sample": per_sample}


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else 0.0


def _per_question_scorer(task: str, fields: Mapping[str, Callable[[str, list[str]], float]]) -> Scorer:
    """A scorer for tasks whose metrics are means of per-question values (docvqa, vqa, chartqa, ocr)."""

    def score(
        rows: Sequence[Mapping[str, Any]], *, seed: int = 0, n_resamples: int = DEFAULT_RESAMPLES
    ) -> dict[str, Any]:
        per_sample = []
        columns: dict[str, list[float]] = {name: [] for name in fields}
        for row in rows:
            answers = reference_answers(row)
            sample = _base(row)
            for name, fn in fields.items():
                value = float(fn(str(row["prediction"]), answers))
                sample[name] = value
                columns[name].append(value)
            per_sample.append(sample)
        metrics = {name: _mean(values) for name, values in columns.items()}
        ci95 = {name: _ci(values, None, seed, n_resamples) for name, values in columns.items()}
        return _result(task, len(rows), metrics, ci95, per_sample)

    score.__name__ = f"score_{task}"
    score.__doc__ = f"Score {task} rows: {', '.join(fields)} (means over questions) with bootstrap CIs."
    return score


def score_pope(
    rows: Sequence[Mapping[str, Any]], *, seed: int = 0, n_resamples: int = DEFAULT_RESAMPLES
) -> dict[str, Any]:
    """Score POPE rows (``prediction``, ``answer`` yes/no, ``category`` split)."""
    parsed, pred, gt, split = pope.encode_rows(rows)
    metrics = pope.pope_metrics_from_codes(pred, gt, split)
    per_sample = [
        {**_base(row), "parsed": p, "correct": bool(pc == g)}
        for row, p, pc, g in zip(rows, parsed, pred, gt, strict=True)
    ]
    ci95: dict[str, Any] = {}
    for k, name in enumerate(pope.POPE_SPLITS):
        if name not in metrics:
            continue
        sp, sg = pred[split == k], gt[split == k]
        ci95[name] = {
            "f1": _ci(sp, lambda i, sp=sp, sg=sg: pope.f1_accuracy(sp[i], sg[i])[0], seed, n_resamples),
            "accuracy": _ci(sp, lambda i, sp=sp, sg=sg: pope.f1_accuracy(sp[i], sg[i])[1], seed, n_resamples),
        }
    ci95["all"] = {
        "f1": _ci(pred, lambda i: pope.f1_accuracy(pred[i], gt[i])[0], seed, n_resamples),
        "accuracy": _ci(pred, lambda i: pope.f1_accuracy(pred[i], gt[i])[1], seed, n_resamples),
    }
    present = [k for k, name in enumerate(pope.POPE_SPLITS) if name in metrics]

    def f1_mean(i: np.ndarray) -> float:
        p, g, s = pred[i], gt[i], split[i]
        return float(np.mean([pope.f1_accuracy(p[s == k], g[s == k])[0] for k in present]))

    ci95["f1_mean_of_splits"] = _ci(pred, f1_mean, seed, n_resamples) if present else [0.0, 0.0]
    return _result("pope", len(rows), metrics, ci95, per_sample)


def score_chair(
    rows: Sequence[Mapping[str, Any]], *, seed: int = 0, n_resamples: int = DEFAULT_RESAMPLES
) -> dict[str, Any]:
    """Score CHAIR rows (``prediction`` caption, ``gt_objects`` COCO category names)."""
    per_sample = []
    counts = []
    for row in rows:
        c = chair.caption_counts(str(row["prediction"]), chair.check_categories(row["gt_objects"]))
        counts.append(c)
        per_sample.append(
            {**_base(row), "mentioned": c["mentioned"], "hallucinated": c["hallucinated"],
             "chair_s": 1.0 if c["n_hallucinated"] else 0.0}
        )  # fmt: skip
    mentions = np.array([c["n_mentions"] for c in counts], dtype=np.float64)
    halluc = np.array([c["n_hallucinated"] for c in counts], dtype=np.float64)
    gt_n = np.array([c["n_gt"] for c in counts], dtype=np.float64)
    covered = np.array([c["n_gt_covered"] for c in counts], dtype=np.float64)
    any_halluc = (halluc > 0).astype(np.float64)

    def pooled(num: np.ndarray, den: np.ndarray) -> Callable[[np.ndarray], float]:
        def stat(i: np.ndarray) -> float:
            d = den[i].sum()
            return float(num[i].sum() / d) if d else 0.0

        return stat

    metrics = {
        "chair_i": pooled(halluc, mentions)(np.arange(len(rows))),
        "chair_s": _mean(any_halluc),
        "recall": pooled(covered, gt_n)(np.arange(len(rows))),
    }
    ci95 = {
        "chair_i": _ci(halluc, pooled(halluc, mentions), seed, n_resamples),
        "chair_s": _ci(any_halluc, None, seed, n_resamples),
        "recall": _ci(covered, pooled(covered, gt_n), seed, n_resamples),
    }
    return _result("chair", len(rows), metrics, ci95, per_sample)


SCORERS: Mapping[str, Scorer] = MappingProxyType(
    {
        "pope": score_pope,
        "docvqa": _per_question_scorer("docvqa", {"anls": anls_score}),
        "textvqa": _per_question_scorer("textvqa", {"accuracy": vqa_accuracy}),
        "vqav2": _per_question_scorer("vqav2", {"accuracy": vqa_accuracy}),
        "chartqa": _per_question_scorer("chartqa", {"relaxed_accuracy": relaxed_accuracy}),
        "ocr": _per_question_scorer("ocr", {"exact_match": exact_match, "cer": cer}),
        "chair": score_chair,
    }
)

TASKS: tuple[str, ...] = tuple(SCORERS)


def score_task(
    task: str, rows: Sequence[Mapping[str, Any]], seed: int = 0, n_resamples: int = DEFAULT_RESAMPLES
) -> dict[str, Any]:
    """Score ``rows`` for ``task`` (one of :data:`TASKS`); see the module docstring for the result."""
    if task not in SCORERS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    return SCORERS[task](rows, seed=seed, n_resamples=n_resamples)


__all__ = ["SCORERS", "TASKS", "reference_answers", "score_task"]
