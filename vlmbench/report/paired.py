"""Paired comparison of two runs on the same samples (matched by ``question_id``).

For every metric that can be recomputed from the per-sample rows (POPE from ``parsed`` /
references / ``category``; CHAIR from ``mentioned`` / ``hallucinated``; mean-type metrics from the
per-sample field of the same name, the headline falling back to ``score``) the delta
``candidate - baseline`` gets a paired-bootstrap interval and p-value. Metrics that are means of
a right/wrong outcome (POPE accuracy, CHAIR_s, exact match, ...) are tested with McNemar instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlmbench.metrics.stats import DEFAULT_RESAMPLES, mcnemar, paired_bootstrap_statistics
from vlmbench.report.metricspec import POPE_SPLITS, Headline, direction, finite, flatten, ordered_metrics

Statistic = Callable[[np.ndarray], dict[str, np.ndarray]]


@dataclass
class SampleStats:
    """Vectorised recomputation of a task's metrics from aligned per-sample rows.

    ``compute(idx)`` takes an index matrix ``(k, n)`` and returns ``{metric: array (k,)}``;
    ``binary[metric] = (outcome, mask)``: the metric is the mean of the boolean ``outcome`` over
    the rows where ``mask`` holds, so McNemar applies.
    """

    compute: Statistic
    binary: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricDelta:
    """One metric of a paired comparison."""

    metric: str
    baseline: float | None
    candidate: float | None
    delta: float | None
    ci: tuple[float, float] | None
    p: float | None
    test: str  # "mcnemar", "bootstrap" or "" (not testable from the samples)
    higher_is_better: bool | None
    headline: bool

    @property
    def worse_by(self) -> float | None:
        """How much the candidate is worse (positive) in the metric's own direction; None if neutral."""
        if self.delta is None or self.higher_is_better is None:
            return None
        return -self.delta if self.higher_is_better else self.delta


@dataclass(frozen=True)
class TaskComparison:
    """A task compared between a baseline and a candidate run."""

    task: str
    n_matched: int
    n_baseline: int
    n_candidate: int
    headline: Headline
    metrics: list[MetricDelta]

    @property
    def headline_delta(self) -> MetricDelta | None:
        return next((m for m in self.metrics if m.headline), None)

    @property
    def complete(self) -> bool:
        """Whether both runs hold exactly the matched samples."""
        return self.n_matched == self.n_baseline == self.n_candidate


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def _summed(indicators: Mapping[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    return {name: ind[idx].sum(axis=1) for name, ind in indicators.items()}


def _yes_no(text: Any) -> int:
    label = str(text).strip().lower()
    return 1 if label.startswith("yes") else 0 if label.startswith("no") else -1


def _pope_stats(rows: Sequence[Mapping[str, Any]]) -> SampleStats | None:
    from vlmbench.metrics.pope import parse_yes_no

    pred = np.empty(len(rows), dtype=np.int8)
    gt = np.empty(len(rows), dtype=np.int8)
    split = np.empty(len(rows), dtype=object)
    for i, row in enumerate(rows):
        parsed = row.get("parsed")
        if parsed not in ("yes", "no", "unknown"):
            parsed = parse_yes_no(str(row.get("prediction") or ""))
        pred[i] = _yes_no(parsed)
        refs = row.get("references")
        answer = refs[0] if isinstance(refs, list) and refs else row.get("answer")
        gt[i] = _yes_no(answer)
        split[i] = row.get("category")
    if np.any(gt < 0):
        return None
    groups: dict[str, np.ndarray] = {s: split == s for s in POPE_SPLITS if np.any(split == s)}
    present = list(groups)
    groups["all"] = np.ones(len(rows), dtype=bool)
    right = pred == gt
    indicators: dict[str, dict[str, np.ndarray]] = {}
    for name, mask in groups.items():
        indicators[name] = {
            "n": mask.astype(np.float64),
            "right": (mask & right).astype(np.float64),
            "pred_yes": (mask & (pred == 1)).astype(np.float64),
            "gt_yes": (mask & (gt == 1)).astype(np.float64),
            "tp": (mask & (pred == 1) & (gt == 1)).astype(np.float64),
            "unk": (mask & (pred == -1)).astype(np.float64),
        }

    def compute(idx: np.ndarray) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for name, ind in indicators.items():
            c = _summed(ind, idx)
            precision = _div(c["tp"], c["pred_yes"])
            recall = _div(c["tp"], c["gt_yes"])
            out[f"{name}.accuracy"] = _div(c["right"], c["n"])
            out[f"{name}.precision"] = precision
            out[f"{name}.recall"] = recall
            out[f"{name}.f1"] = _div(2 * precision * recall, precision + recall)
            out[f"{name}.yes_ratio"] = _div(c["pred_yes"], c["n"])
            out[f"{name}.unknown"] = _div(c["unk"], c["n"])
        if present:
            out["f1_mean_of_splits"] = np.mean([out[f"{s}.f1"] for s in present], axis=0)
        return out

    binary = {f"{name}.accuracy": (right, mask) for name, mask in groups.items()}
    return SampleStats(compute, binary)


def gt_objects(row: Mapping[str, Any]) -> list[str] | None:
    """An image's ground-truth objects: `gt_objects` when a row has it, else `references` (where the
    runner's CHAIR sample logs keep them)."""
    for key in ("gt_objects", "references"):
        if isinstance(row.get(key), list):
            return list(row[key])
    return None


def _chair_stats(rows: Sequence[Mapping[str, Any]]) -> SampleStats | None:
    if not all(
        isinstance(r.get("mentioned"), list) and isinstance(r.get("hallucinated"), list) for r in rows
    ):
        return None
    mentions = np.array([len(r["mentioned"]) for r in rows], dtype=np.float64)
    halluc = np.array([len(r["hallucinated"]) for r in rows], dtype=np.float64)
    any_halluc = halluc > 0
    gts = [gt_objects(r) for r in rows]
    has_gt = all(gt is not None for gt in gts)
    gt_n = np.array([len(gt or []) for gt in gts], dtype=np.float64)
    covered = np.array(
        [len(set(gt or []) & set(r["mentioned"])) for gt, r in zip(gts, rows, strict=True)], dtype=np.float64
    )

    def compute(idx: np.ndarray) -> dict[str, np.ndarray]:
        out = {
            "chair_i": _div(halluc[idx].sum(axis=1), mentions[idx].sum(axis=1)),
            "chair_s": any_halluc[idx].mean(axis=1),
        }
        if has_gt:
            out["recall"] = _div(covered[idx].sum(axis=1), gt_n[idx].sum(axis=1))
        return out

    return SampleStats(compute, {"chair_s": (any_halluc, np.ones(len(rows), dtype=bool))})


def _mean_stats(rows: Sequence[Mapping[str, Any]], names: Sequence[str], headline: str) -> SampleStats:
    columns: dict[str, np.ndarray] = {}
    for name in names:
        if "." in name:
            continue
        values = [finite(r.get(name)) for r in rows]
        if rows and all(v is not None for v in values):
            columns[name] = np.array(values, dtype=np.float64)
    if headline not in columns:
        scores = [finite(r.get("score")) for r in rows]
        if rows and all(v is not None for v in scores):
            columns[headline] = np.array(scores, dtype=np.float64)
    binary = {
        name: (col >= 1.0, np.ones(col.size, dtype=bool))
        for name, col in columns.items()
        if np.all((col == 0.0) | (col == 1.0))
    }

    def compute(idx: np.ndarray) -> dict[str, np.ndarray]:
        return {name: col[idx].mean(axis=1) for name, col in columns.items()}

    return SampleStats(compute, binary)


def sample_stats(
    task: str, rows: Sequence[Mapping[str, Any]], metric_names: Sequence[str], headline: str
) -> SampleStats:
    """The recomputation for ``task`` (POPE and CHAIR need their task fields; else means)."""
    special: SampleStats | None = None
    if task == "pope" or headline == "f1_mean_of_splits":
        special = _pope_stats(rows)
    elif task == "chair" or headline == "chair_i":
        special = _chair_stats(rows)
    return special if special is not None else _mean_stats(rows, metric_names, headline)


def id_examples(ids: set[str], limit: int) -> str:
    """Up to `limit` of `ids`, sorted, for an error message."""
    shown = sorted(ids)[:limit]
    return ", ".join(shown) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def question_id_problems(
    ids: Mapping[str, Sequence[str]],
) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """For two runs' question ids (name → ids): the ids each repeats, and the ids only each has
    (names without a problem are left out)."""
    repeated = {
        name: dupes
        for name, values in ids.items()
        if (dupes := {qid for qid, count in Counter(values).items() if count > 1})
    }
    (name_a, a), (name_b, b) = ((name, set(values)) for name, values in ids.items())
    only = {name: extra for name, extra in ((name_a, a - b), (name_b, b - a)) if extra}
    return repeated, only


def match_rows(
    rows_a: Sequence[Mapping[str, Any]], rows_b: Sequence[Mapping[str, Any]]
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """Rows of A and B with the same question_id, aligned in A's order (first occurrence wins)."""
    index_b: dict[str, Mapping[str, Any]] = {}
    for row in rows_b:
        index_b.setdefault(str(row.get("question_id")), row)
    aligned_a: list[Mapping[str, Any]] = []
    aligned_b: list[Mapping[str, Any]] = []
    seen: set[str] = set()
    for row in rows_a:
        qid = str(row.get("question_id"))
        if qid in index_b and qid not in seen:
            seen.add(qid)
            aligned_a.append(row)
            aligned_b.append(index_b[qid])
    return aligned_a, aligned_b


def compare_task(
    task: str,
    result_a: Mapping[str, Any],
    result_b: Mapping[str, Any],
    rows_a: Sequence[Mapping[str, Any]],
    rows_b: Sequence[Mapping[str, Any]],
    headline: Headline,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    alpha: float = 0.05,
) -> TaskComparison:
    """Compare every metric of ``task`` between baseline A and candidate B on their common samples.

    When both runs hold exactly the matched samples, baseline/candidate values come from
    results.json; otherwise they are recomputed on the matched subset so that delta, interval and
    p-value all describe the same samples.
    """
    a, b = match_rows(rows_a, rows_b)
    metrics_a = flatten(result_a.get("metrics", {}))
    metrics_b = flatten(result_b.get("metrics", {}))
    names = ordered_metrics(task, {**result_a.get("metrics", {}), **result_b.get("metrics", {})}, headline)
    n = len(a)
    complete = n == len(rows_a) == len(rows_b)
    boot: dict[str, tuple[float, tuple[float, float], float]] = {}
    stats_a = stats_b = None
    if n:
        stats_a = sample_stats(task, a, names, headline.metric)
        stats_b = sample_stats(task, b, names, headline.metric)
        boot = paired_bootstrap_statistics(
            n, stats_a.compute, stats_b.compute, n_resamples=n_resamples, seed=seed, alpha=alpha
        )
        if not complete:
            point_a = stats_a.compute(np.arange(n)[None, :])
            point_b = stats_b.compute(np.arange(n)[None, :])
            metrics_a = {k: float(v[0]) for k, v in point_a.items()}
            metrics_b = {k: float(v[0]) for k, v in point_b.items()}
            names = [k for k in names if k in metrics_a] + [k for k in metrics_a if k not in names]
    rows: list[MetricDelta] = []
    for name in names:
        base, cand = metrics_a.get(name), metrics_b.get(name)
        delta = cand - base if base is not None and cand is not None else None
        ci: tuple[float, float] | None = None
        p: float | None = None
        test = ""
        if name in boot:
            boot_delta, ci, p = boot[name]
            test = "bootstrap"
            if delta is None:
                delta = boot_delta
        if stats_a is not None and stats_b is not None and name in stats_a.binary and name in stats_b.binary:
            (out_a, mask_a), (out_b, mask_b) = stats_a.binary[name], stats_b.binary[name]
            mask = mask_a & mask_b
            p = mcnemar(out_a[mask], out_b[mask])
            test = "mcnemar"
        is_headline = name == headline.metric
        higher = headline.higher_is_better if is_headline else direction(name)
        rows.append(MetricDelta(name, base, cand, delta, ci, p, test, higher, is_headline))
    return TaskComparison(task, n, len(rows_a), len(rows_b), headline, rows)
