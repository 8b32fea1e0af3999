"""`vlmbench effects`: measure an effects study on finished runs and give each effect a verdict.

A study (`vlmbench.report.effects_study`; by default the five literature effects of
``effects_study.yaml``) names runs by preset (``llava-1.5-style``, ``blip2-style``...), the metrics
to compare and the verdict rules. Every estimate is measured from the per-sample rows of the runs
(``samples/<task>.jsonl``) and comes with a 95% percentile bootstrap interval (seeded, so the table is
deterministic):

- a ``within_run`` effect compares two splits of one run (split B minus split A); the splits are
  different questions, so each is resampled on its own (unpaired bootstrap);
- a ``pairs`` effect compares each candidate run B with the baseline run A, paired by question id:
  a mean of per-row ANLS, or a POPE/CHAIR statistic recomputed on every resample.

An effect whose runs were not all given is listed as "not measured"; a given run that lacks a task the
effect needs, or two runs evaluated on different question ids, is bad input (UserError).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlmbench.errors import UserError
from vlmbench.metrics.chair import gt_objects
from vlmbench.metrics.stats import DEFAULT_RESAMPLES, paired_bootstrap, paired_bootstrap_statistics
from vlmbench.report.effects_study import Effect, Metric, Study, Verdict, load_study
from vlmbench.report.metricspec import finite
from vlmbench.report.paired import id_examples, match_rows, question_id_problems, sample_stats
from vlmbench.report.runs import Run, load_run

Rows = list[dict[str, Any]]
Interval = tuple[float, float]
Statistic = Callable[[np.ndarray], dict[str, np.ndarray]]

ALPHA = 0.05


@dataclass(frozen=True)
class Estimate:
    """A - B comparison: the two values, ``delta = b - a`` and its 95% interval."""

    a: float
    b: float
    delta: float
    ci: Interval


@dataclass(frozen=True)
class EffectRow:
    """One line of the effects table (``estimate`` is None when the effect was not measured)."""

    effect: int
    runs: str
    metric: str
    estimate: Estimate | None
    verdict: str


# --- loading ----------------------------------------------------------------------------------


def parse_run_specs(specs: Sequence[str]) -> dict[str, Path]:
    """``["NAME=RUN_DIR", ...]`` -> ``{NAME: Path}``; a malformed or repeated NAME is a UserError."""
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = str(spec).partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise UserError(f"--run {spec!r}: expected NAME=RUN_DIR, e.g. --run llava-1.5-style=runs/llava")
        if name in out:
            raise UserError(f"--run {name}: given twice ({out[name]} and {path}); give each run once")
        out[name] = Path(path)
    return out


def load_named_runs(paths: Mapping[str, Path]) -> dict[str, Run]:
    """Load every named run; a missing or malformed directory is a UserError naming the run."""
    runs: dict[str, Run] = {}
    for name, path in paths.items():
        try:
            runs[name] = load_run(path)
        except UserError as exc:
            raise UserError(f"run {name}: {exc}") from None
    return runs


def _task_rows(runs: Mapping[str, Run], name: str, task: str, effect: Effect) -> Rows:
    """The sample rows of ``task`` in run ``name``; a missing task or samples file is a UserError."""
    run = runs[name]
    if task not in run.tasks:
        raise UserError(
            f"run {name} ({run.dir}) has no task {task!r}, which effect {effect.heading!r} needs; "
            f"evaluate it on {task} or leave the run out"
        )
    if not run.has_samples(task):
        raise UserError(
            f"run {name} ({run.dir}) has no samples/{task}.jsonl; effect {effect.heading!r} "
            "needs the per-sample outputs"
        )
    return run.samples(task)


def _examples(ids: set[str]) -> str:
    return id_examples(ids, 3)


def _paired_rows(
    runs: Mapping[str, Run], name_a: str, name_b: str, task: str, effect: Effect
) -> tuple[Rows, Rows]:
    """Rows of A and B aligned by question_id; different or repeated ids are a UserError."""
    rows_a = _task_rows(runs, name_a, task, effect)
    rows_b = _task_rows(runs, name_b, task, effect)
    repeated, only = question_id_problems(
        {name: [str(r.get("question_id")) for r in rows] for name, rows in ((name_a, rows_a), (name_b, rows_b))}
    )
    for name, dupes in repeated.items():
        raise UserError(f"task {task}: run {name} repeats question ids ({_examples(dupes)})")
    if only:
        parts = [f"{len(extra)} only in {who} ({_examples(extra)})" for who, extra in only.items()]
        raise UserError(
            f"task {task}: runs {name_a} and {name_b} have different question ids ({'; '.join(parts)}); "
            "they were evaluated on different data and cannot be paired"
        )
    a, b = match_rows(rows_a, rows_b)
    return [dict(r) for r in a], [dict(r) for r in b]


# --- statistics -------------------------------------------------------------------------------


def _identity(n: int) -> np.ndarray:
    return np.arange(n)[None, :]


def _pope_statistic(rows: Rows, key: str, who: str) -> Statistic:
    """Vectorised POPE recomputation (as `vlmbench check` does) reduced to the one metric ``key``."""
    stats = sample_stats("pope", rows, [], "f1_mean_of_splits")
    if key not in stats.compute(_identity(len(rows))):
        raise UserError(f"{who}: POPE rows need yes/no references and a split `category` to recompute {key}")
    return lambda idx: {key: stats.compute(idx)[key]}


def _chair_statistic(rows: Rows, key: str, who: str) -> Statistic:
    """CHAIR_i or recall over resampled images, pooled as vlmbench.metrics.chair defines them.

    Sample rows keep the ground-truth objects in ``references`` (the runner writes no ``gt_objects``);
    `sample_stats` reads either. A row with neither counts as having no ground-truth objects.
    """
    prepared: Rows = []
    for row in rows:
        if not isinstance(row.get("mentioned"), list) or not isinstance(row.get("hallucinated"), list):
            raise UserError(
                f"{who}: chair row {row.get('question_id')!r} lacks the 'mentioned'/'hallucinated' lists; "
                "rescore the run with this vlmbench version"
            )
        prepared.append(row if gt_objects(row) is not None else {**row, "gt_objects": []})
    stats = sample_stats("chair", prepared, [], "chair_i")
    if key not in stats.compute(_identity(len(prepared))):
        raise UserError(f"{who}: CHAIR rows do not give the statistic {key!r}")
    return lambda idx: {key: stats.compute(idx)[key]}


_RECOMPUTED: Mapping[str, Callable[[Rows, str, str], Statistic]] = {
    "pope": _pope_statistic,
    "chair": _chair_statistic,
}


def _resampled(stat: Statistic, key: str, n: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``n_resamples`` bootstrap values of ``stat``, drawn in chunks to bound the index-matrix memory."""
    per_chunk = max(1, 2_000_000 // max(n, 1))
    chunks: list[np.ndarray] = []
    done = 0
    while done < n_resamples:
        k = min(per_chunk, n_resamples - done)
        chunks.append(np.asarray(stat(rng.integers(0, n, size=(k, n)))[key], dtype=np.float64))
        done += k
    return np.concatenate(chunks)


def pope_split_difference(
    rows: Rows,
    who: str,
    *,
    seed: int,
    n_resamples: int,
    splits: tuple[str, str] = ("random", "adversarial"),
    key: str = "all.f1",
    task: str = "pope",
    field: str = "category",
) -> Estimate | None:
    """``key`` of split B minus split A of one run, each split resampled independently; None if a split
    is absent. By default F1(adversarial) - F1(random) on POPE.

    F1 is POPE's (vlmbench.metrics.pope): unknown answers are not positive predictions and are misses
    when the truth is yes; a zero denominator gives 0.
    """
    by_split = {s: [r for r in rows if r.get(field) == s] for s in splits}
    if not all(by_split.values()):
        return None
    seeds = np.random.SeedSequence(seed).spawn(2)
    values: dict[str, tuple[float, np.ndarray]] = {}
    for (split, split_rows), seq in zip(by_split.items(), seeds, strict=True):
        stat = _RECOMPUTED[task](split_rows, key, who)
        n = len(split_rows)
        point = float(stat(_identity(n))[key][0])
        values[split] = (point, _resampled(stat, key, n, n_resamples, np.random.default_rng(seq)))
    (a, boot_a), (b, boot_b) = values[splits[0]], values[splits[1]]
    low, high = np.quantile(boot_b - boot_a, [ALPHA / 2, 1 - ALPHA / 2])
    return Estimate(a, b, b - a, (float(low), float(high)))


def paired_statistic(
    stat_a: Statistic, stat_b: Statistic, key: str, n: int, *, seed: int, n_resamples: int
) -> Estimate:
    """Paired bootstrap of ``key(B) - key(A)``, recomputing the metric on every resample."""
    point_a = float(stat_a(_identity(n))[key][0])
    point_b = float(stat_b(_identity(n))[key][0])
    delta, ci, _ = paired_bootstrap_statistics(
        n, stat_a, stat_b, n_resamples=n_resamples, seed=seed, alpha=ALPHA
    )[key]
    return Estimate(point_a, point_b, delta, ci)


def paired_mean(a: Sequence[float], b: Sequence[float], *, seed: int, n_resamples: int) -> Estimate:
    """Paired bootstrap of ``mean(b) - mean(a)``."""
    delta, ci, _ = paired_bootstrap(a, b, n_resamples=n_resamples, seed=seed, alpha=ALPHA)
    return Estimate(float(np.mean(a)), float(np.mean(b)), delta, ci)


def anls_scores(rows: Rows, who: str) -> list[float]:
    """Per-question ANLS: the ``anls`` field, else the per-sample headline ``score``."""
    out: list[float] = []
    for row in rows:
        value = finite(row.get("anls"))
        value = finite(row.get("score")) if value is None else value
        if value is None:
            raise UserError(f"{who}: docvqa row {row.get('question_id')!r} has neither 'anls' nor 'score'")
        out.append(value)
    return out


def _measure_pair(
    metric: Metric, rows_a: Rows, rows_b: Rows, names: tuple[str, str], *, seed: int, n_resamples: int
) -> tuple[str, Estimate | None, str]:
    """(label, estimate, why not measured) of one metric on paired rows, after the metric's row filter."""
    keep = list(range(len(rows_a)))
    label = metric.base_label
    if metric.rows is not None:
        field, limit = metric.rows.field, metric.rows.at_most
        values = [finite(ra.get(field, rb.get(field))) for ra, rb in zip(rows_a, rows_b, strict=True)]
        if all(v is None for v in values):
            label = f"{metric.label}, all rows: no {field} in samples"
        else:
            keep = [i for i, v in enumerate(values) if v is not None and v <= limit]
    if metric.note:
        label += f", {metric.note}"
    if metric.show_n:
        label += f" (n={len(keep)})"
    if not keep:
        why = f"no rows with {metric.rows.text}" if metric.rows is not None else "no rows"
        return label, None, f"not measured ({why})"
    who_a, who_b = (f"run {name}" for name in names)
    if metric.statistic == "anls":
        scores_a, scores_b = anls_scores(rows_a, who_a), anls_scores(rows_b, who_b)
        a, b = [scores_a[i] for i in keep], [scores_b[i] for i in keep]
        return label, paired_mean(a, b, seed=seed, n_resamples=n_resamples), ""
    kept_a, kept_b = [rows_a[i] for i in keep], [rows_b[i] for i in keep]
    build = _RECOMPUTED[metric.task]
    stat_a, stat_b = build(kept_a, metric.statistic, who_a), build(kept_b, metric.statistic, who_b)
    estimate = paired_statistic(stat_a, stat_b, metric.statistic, len(keep), seed=seed, n_resamples=n_resamples)
    return label, estimate, ""


# --- verdicts ---------------------------------------------------------------------------------


def sign_verdict(ci: Interval, expected_negative: bool) -> str:
    """The verdict from the CI of B - A: "appears" when it excludes 0 on the expected side,
    "reversed" when it excludes 0 on the other side, else "not significant"."""
    low, high = ci
    if high < 0:
        return "appears" if expected_negative else "reversed"
    if low > 0:
        return "reversed" if expected_negative else "appears"
    return "not significant"


def little_loss_verdict(ci: Interval, margin: float) -> str:
    """Is the loss of B against A within ``margin``?

    The brief's rule reads "appears (loses little)" for a CI within +-margin *or* containing 0; a CI
    that contains 0 but reaches past the margin is labelled as such, since it does not show equivalence.
    """
    low, high = ci
    if high < -margin:
        return "loses a lot"
    if -margin <= low and high <= margin:
        return "appears (loses little)"
    if low <= 0 <= high:
        return f"appears (loses little; CI wider than ±{margin:g})"
    if low > 0:
        return "reversed (gains)"
    return f"inconclusive (significant loss, may exceed {margin:g})"


def verdict_for(metric: Metric, estimate: Estimate, pair: Mapping[str, Estimate]) -> str:
    """The verdict of one measured metric; ``pair`` holds the estimates of the same pair by statistic."""
    rule: Verdict = metric.verdict
    if rule.rule == "little_loss":
        return little_loss_verdict(estimate.ci, rule.margin)
    if rule.rule == "collapse":
        drop = f"{-rule.at_most:g}"
        if estimate.delta <= rule.at_most:
            return f"{metric.statistic} collapses (drop ≥ {drop})"
        return f"{metric.statistic} kept (drop < {drop})"
    verdict = sign_verdict(estimate.ci, expected_negative=rule.expected == "lower")
    guard = rule.guard
    if verdict == "appears" and guard is not None and guard.statistic in pair:
        delta = pair[guard.statistic].delta
        if delta <= guard.at_most:
            return f"{metric.label} {rule.expected} but {guard.statistic} collapses ({delta:+.3f})"
    return verdict


# --- effects ----------------------------------------------------------------------------------


def _not_measured(effect: Effect, runs: str, metric: str, missing: Sequence[str]) -> EffectRow:
    return EffectRow(effect.number, runs, metric, None, f"not measured (needs runs: {', '.join(missing)})")


def _within_run(effect: Effect, runs: Mapping[str, Run], *, seed: int, n_resamples: int) -> list[EffectRow]:
    """One row per run (and metric) that has the metric's task; the others are skipped."""
    assert effect.splits is not None
    splits = effect.splits
    rows: list[EffectRow] = []
    for metric in effect.metrics:
        for name, run in runs.items():
            if metric.task not in run.tasks:
                continue
            samples = _task_rows(runs, name, metric.task, effect)
            label = f"{name}: {splits.b} vs {splits.a}"
            estimate = pope_split_difference(
                samples,
                f"run {name}",
                seed=seed,
                n_resamples=n_resamples,
                splits=(splits.a, splits.b),
                key=metric.statistic,
                task=metric.task,
                field=splits.field,
            )
            if estimate is None:
                present = sorted({str(r.get(splits.field)) for r in samples})
                why = f"not measured (splits in samples: {', '.join(present)})"
                rows.append(EffectRow(effect.number, label, metric.label, None, why))
                continue
            rows.append(EffectRow(effect.number, label, metric.label, estimate, verdict_for(metric, estimate, {})))
    if not rows:
        for metric in effect.metrics:
            label = f"{splits.b} vs {splits.a}"
            rows.append(_not_measured(effect, label, metric.label, [f"any run with task {metric.task}"]))
    return rows


def _pairs(effect: Effect, runs: Mapping[str, Run], *, seed: int, n_resamples: int) -> list[EffectRow]:
    """Per candidate B: every metric of B against the baseline A."""
    a = effect.baseline
    out: list[EffectRow] = []
    for b in effect.candidates:
        label = f"{b} vs {a}"
        missing = [name for name in (b, a) if name not in runs]
        if missing:
            out.extend(_not_measured(effect, label, m.base_label, missing) for m in effect.metrics)
            continue
        paired: dict[str, tuple[Rows, Rows]] = {}
        measured: list[tuple[Metric, str, Estimate | None, str]] = []
        for metric in effect.metrics:
            if metric.task not in paired:
                paired[metric.task] = _paired_rows(runs, a, b, metric.task, effect)
            rows_a, rows_b = paired[metric.task]
            measured.append((metric, *_measure_pair(metric, rows_a, rows_b, (a, b), seed=seed, n_resamples=n_resamples)))
        estimates = {m.statistic: est for m, _, est, _ in measured if est is not None}
        for metric, metric_label, estimate, why in measured:
            verdict = why if estimate is None else verdict_for(metric, estimate, estimates)
            out.append(EffectRow(effect.number, label, metric_label, estimate, verdict))
    return out


_KINDS: Mapping[str, Callable[..., list[EffectRow]]] = {"within_run": _within_run, "pairs": _pairs}


def compute_effects(
    runs: Mapping[str, Run],
    *,
    seed: int = 0,
    n_resamples: int = DEFAULT_RESAMPLES,
    study: Study | None = None,
) -> list[EffectRow]:
    """Every effect's rows, in the study's order (default: the bundled study)."""
    if n_resamples < 1:
        raise UserError(f"--resamples {n_resamples} must be positive")
    study = study or load_study()
    rows: list[EffectRow] = []
    for effect in study.effects:
        rows.extend(_KINDS[effect.kind](effect, runs, seed=seed, n_resamples=n_resamples))
    return rows


# --- output -----------------------------------------------------------------------------------


def _cell(value: object) -> str:
    """A table cell: any object as one line of text, with the column separator escaped."""
    return " ".join(str(value).split()).replace("|", "\\|")


def _delta_cell(estimate: Estimate) -> str:
    low, high = estimate.ci
    return f"{estimate.delta:+.4f} [{low:+.4f}, {high:+.4f}]"


def format_markdown(rows: Sequence[EffectRow], *, seed: int, n_resamples: int, study: Study | None = None) -> str:
    """The effects table as Markdown, with a line on how the intervals were computed."""
    study = study or load_study()
    headings = {effect.number: effect.heading for effect in study.effects}
    unpaired = "; ".join(
        f"effect {e.number} resamples each {m.task.upper()} split on its own"
        for e in study.within_run
        for m in e.metrics
    )
    header = ("effect", "runs (B vs A)", "metric", "A", "B", "B − A [95% CI]", "verdict")
    lines = [
        f"## {study.title}",
        "",
        f"95% percentile bootstrap intervals, {n_resamples} resamples, seed {seed}; "
        f"pairs are matched by question_id{f' ({unpaired})' if unpaired else ''}.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for row in rows:
        est = row.estimate
        cells = (
            headings.get(row.effect, str(row.effect)),
            row.runs,
            row.metric,
            "—" if est is None else f"{est.a:.4f}",
            "—" if est is None else f"{est.b:.4f}",
            "—" if est is None else _delta_cell(est),
            row.verdict,
        )
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def unknown_run_note(study: Study) -> str:
    """What a run the study does not name takes part in (for the command's note on stderr)."""
    within = [
        f"effect {e.number} ({e.splits.b} vs {e.splits.a} {m.task.upper()})"
        for e in study.within_run
        if e.splits is not None
        for m in e.metrics
    ]
    return f"it only enters {'; '.join(within)}" if within else "it enters no effect"


def run_effects(
    specs: Sequence[str],
    *,
    seed: int = 0,
    n_resamples: int = DEFAULT_RESAMPLES,
    study: Study | Path | None = None,
) -> tuple[list[EffectRow], str]:
    """Parse ``NAME=RUN_DIR`` specs, load the runs, compute every effect; (rows, Markdown table).

    ``study`` is a loaded `Study`, a study file, or None for the bundled one."""
    loaded = study if isinstance(study, Study) else load_study(study)
    runs = load_named_runs(parse_run_specs(specs))
    rows = compute_effects(runs, seed=seed, n_resamples=n_resamples, study=loaded)
    return rows, format_markdown(rows, seed=seed, n_resamples=n_resamples, study=loaded)
