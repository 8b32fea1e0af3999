"""Paired comparison of two runs on the same samples (matched by ``question_id``).

For every metric that can be recomputed from the per-sample rows the delta ``candidate - baseline``
gets a paired-bootstrap interval and p-value. The task's scorer does the recomputation
(`vlmbench.metrics.scorer.Scorer.statistics`: POPE from ``parsed`` / references / ``category``;
CHAIR from ``mentioned`` / ``hallucinated``; mean-type metrics from the per-sample field of the
same name); a run whose scorer is not available here falls back to means of per-sample fields named
like the metrics, the headline falling back to ``score``. Metrics that are means of a right/wrong
outcome (POPE accuracy, CHAIR_s, exact match, ...) are tested with McNemar instead.

Baseline, candidate and delta of a metric the samples recompute are the samples' numbers, never
results.json's, so that value, interval and p-value describe the same thing; what results.json
records stays in `MetricDelta.recorded` for callers that check one against the other (`check`).
Sample rows of malformed data rows (which the runner logs but leaves out of the metrics) are left
out here too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlmbench.metrics.binary import nest
from vlmbench.metrics.registry import BUILTIN_SCORERS
from vlmbench.metrics.scorer import SampleStats, Scorer, mean_statistics
from vlmbench.metrics.stats import DEFAULT_RESAMPLES, mcnemar, paired_bootstrap_statistics
from vlmbench.report.metricspec import Headline, direction, flatten, headline_of, ordered_metrics, scorer_of
from vlmbench.tasks.base import MALFORMED_ERROR_PREFIX


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
    recomputed: bool = False
    """True when baseline and candidate are recomputed from the matched samples (else results.json's)."""
    recorded: tuple[float | None, float | None] = (None, None)
    """(baseline, candidate) as the runs' results.json record them."""

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


def sample_stats(
    task: str,
    rows: Sequence[Mapping[str, Any]],
    metric_names: Sequence[str],
    headline: str,
    scorer: Scorer | None = None,
) -> SampleStats:
    """The recomputation of ``task``'s metrics from its sample rows: the scorer's (``scorer``, else the
    built-in one named ``task``), or means of the per-sample fields when it has none for these rows."""
    scorer = scorer if scorer is not None else BUILTIN_SCORERS.get(task)
    special = scorer.statistics(rows) if scorer is not None else None
    return special if special is not None else mean_statistics(rows, metric_names, headline)


def scored_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows the runner's scorer saw: every sample row but those of malformed data rows."""
    return [
        row
        for row in rows
        if not (isinstance(row.get("error"), str) and row["error"].startswith(MALFORMED_ERROR_PREFIX))
    ]


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

    Every metric the samples recompute gets its baseline/candidate values from the matched samples
    (see the module docstring); the others keep results.json's values, untested, and only when both
    runs hold exactly the matched samples.
    """
    rows_a, rows_b = scored_rows(rows_a), scored_rows(rows_b)
    a, b = match_rows(rows_a, rows_b)
    scorer = scorer_of(task, result_a)
    recorded = result_a.get("directions")
    recorded_a = flatten(result_a.get("metrics", {}))
    recorded_b = flatten(result_b.get("metrics", {}))
    names = ordered_metrics(task, {**result_a.get("metrics", {}), **result_b.get("metrics", {})}, headline)
    n = len(a)
    complete = n == len(rows_a) == len(rows_b)
    boot: dict[str, tuple[float, tuple[float, float], float]] = {}
    stats_a = stats_b = None
    metrics_a = dict(recorded_a) if complete else {}
    metrics_b = dict(recorded_b) if complete else {}
    from_samples: set[str] = set()
    if n:
        stats_a = sample_stats(task, a, names, headline.metric, scorer)
        stats_b = sample_stats(task, b, names, headline.metric, scorer)
        boot = paired_bootstrap_statistics(
            n, stats_a.compute, stats_b.compute, n_resamples=n_resamples, seed=seed, alpha=alpha
        )
        identity = np.arange(n)[None, :]
        point_a, point_b = stats_a.compute(identity), stats_b.compute(identity)
        from_samples = {k for k in point_a if k in point_b}
        metrics_a.update({k: float(point_a[k][0]) for k in from_samples})
        metrics_b.update({k: float(point_b[k][0]) for k in from_samples})
        known = set(names)
        names = [k for k in names if k in metrics_a or k in metrics_b]
        names += [k for k in point_a if k in from_samples and k not in known]
    rows: list[MetricDelta] = []
    for name in names:
        base, cand = metrics_a.get(name), metrics_b.get(name)
        delta = cand - base if base is not None and cand is not None else None
        ci: tuple[float, float] | None = None
        p: float | None = None
        test = ""
        if name in boot:
            _, ci, p = boot[name]
            test = "bootstrap"
        if stats_a is not None and stats_b is not None and name in stats_a.binary and name in stats_b.binary:
            (out_a, mask_a), (out_b, mask_b) = stats_a.binary[name], stats_b.binary[name]
            mask = mask_a & mask_b
            p = mcnemar(out_a[mask], out_b[mask])
            test = "mcnemar"
        is_headline = name == headline.metric
        higher = headline.higher_is_better if is_headline else direction(name, scorer, recorded)
        rows.append(
            MetricDelta(
                name, base, cand, delta, ci, p, test, higher, is_headline,
                recomputed=name in from_samples,
                recorded=(recorded_a.get(name), recorded_b.get(name)),
            )
        )  # fmt: skip
    return TaskComparison(task, n, len(rows_a), len(rows_b), headline, rows)


def visual_gain(
    task: str,
    real_result: Mapping[str, Any],
    control_result: Mapping[str, Any],
    real_rows: Sequence[Mapping[str, Any]],
    control_rows: Sequence[Mapping[str, Any]],
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """The visual gain metric(real) - metric(control) of every metric with a direction that the
    samples recompute, matched by question id, with its paired-bootstrap interval (one resample of the
    sample ids recomputes both metrics) and p-value (McNemar for right/wrong metrics): MMStar's
    multi-modal gain. Returns results.json's ``visual_gain``, ``visual_gain_ci95`` and
    ``visual_gain_p``, nested like ``metrics``."""
    comparison = compare_task(
        task, control_result, real_result, control_rows, real_rows, headline_of(task, real_result),
        n_resamples=n_resamples, seed=seed, alpha=alpha,
    )  # fmt: skip
    kept = [m for m in comparison.metrics if m.recomputed and m.higher_is_better is not None and m.delta is not None]
    return {
        "visual_gain": nest({m.metric: m.delta for m in kept}),
        "visual_gain_ci95": nest({m.metric: list(m.ci) for m in kept if m.ci is not None}),
        "visual_gain_p": nest({m.metric: m.p for m in kept if m.p is not None}),
    }


def compare_gains(
    task: str,
    result_a: Mapping[str, Any],
    result_b: Mapping[str, Any],
    real_a: Sequence[Mapping[str, Any]],
    control_a: Sequence[Mapping[str, Any]],
    real_b: Sequence[Mapping[str, Any]],
    control_b: Sequence[Mapping[str, Any]],
    metrics: Sequence[str],
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    alpha: float = 0.05,
) -> list[MetricDelta]:
    """The change of visual gain, gain(B) - gain(A) with gain = metric(real) - metric(control), of each
    of ``metrics``, on the question ids all four row sets share: one resample of those ids recomputes
    the four metrics (paired bootstrap of the difference of gains). The rows' ``baseline`` and
    ``candidate`` are the two gains."""
    sets = [scored_rows(rows) for rows in (real_a, control_a, real_b, control_b)]
    common = set.intersection(*({str(r.get("question_id")) for r in rows} for rows in sets))
    order = [str(r.get("question_id")) for r in sets[0] if str(r.get("question_id")) in common]
    order = list(dict.fromkeys(order))
    if not order:
        return []
    aligned = []
    for rows in sets:
        index: dict[str, Mapping[str, Any]] = {}
        for row in rows:
            index.setdefault(str(row.get("question_id")), row)
        aligned.append([index[q] for q in order])
    headline = headline_of(task, result_a)
    scorer = scorer_of(task, result_a)
    names = ordered_metrics(task, result_a.get("metrics", {}), headline)
    stats = [sample_stats(task, rows, names, headline.metric, scorer) for rows in aligned]

    def gain(real: SampleStats, control: SampleStats):
        def compute(idx: np.ndarray) -> dict[str, np.ndarray]:
            r, c = real.compute(idx), control.compute(idx)
            return {m: r[m] - c[m] for m in metrics if m in r and m in c}

        return compute

    gain_a, gain_b = gain(stats[0], stats[1]), gain(stats[2], stats[3])
    boot = paired_bootstrap_statistics(len(order), gain_a, gain_b, n_resamples=n_resamples, seed=seed, alpha=alpha)
    identity = np.arange(len(order))[None, :]
    point_a, point_b = gain_a(identity), gain_b(identity)
    out = []
    for name in metrics:
        if name not in boot:
            continue
        delta, ci, p = boot[name]
        higher = headline.higher_is_better if name == headline.metric else direction(name, scorer, result_a.get("directions"))
        out.append(
            MetricDelta(
                name, float(point_a[name][0]), float(point_b[name][0]), delta, ci, p, "bootstrap", higher,
                name == headline.metric, recomputed=True,
            )
        )  # fmt: skip
    return out
