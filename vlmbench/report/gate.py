"""The regression gate behind `vlmbench check`: is the candidate significantly worse than the baseline?

A task regresses when a judged metric gets worse (in the metric's own direction: the task's
scorer's, else the one results.json records) by more than ``max_drop`` *and* the paired test on the
matched samples (the scorer's statistics) gives ``p < alpha``. The judged metrics are the headline
and the task's pooled accuracy when it has one (`ALSO_JUDGED`: POPE's ``all.accuracy``, tested with
McNemar's exact/chi-square test on the paired per-question correctness), so a shift in POPE's
yes-ratio that keeps F1 level cannot mask a model that answers worse. When both runs hold a
visual-dependence control of a task (``--controls``), the visual gain (metric(real) -
metric(control)) of the same metrics is judged too: a drop of the gain beyond ``max_drop`` with a
paired-bootstrap p < alpha over the question ids (the four metrics recomputed on each resample)
fails, which is how a model that stopped looking at the image is caught. Runs that
cannot be compared sample by sample (different tasks, data fingerprints or question ids) are bad
input (UserError), never a pass.

A run directory is untrusted input, and the gate judges the samples: every metric is recomputed
from the samples of both runs, and a run whose results.json records another number than its
samples give (or another sample count), or whose samples cannot recompute the headline, is refused
with both numbers named -- an edited results.json can neither pass a regression nor hide one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from vlmbench.errors import UserError
from vlmbench.metrics.stats import DEFAULT_RESAMPLES
from vlmbench.report.metricspec import fmt_number, fmt_p, headline_of, scorer_of
from vlmbench.report.paired import (
    MetricDelta,
    TaskComparison,
    compare_gains,
    compare_task,
    id_examples,
    question_id_problems,
)
from vlmbench.report.runs import RESULTS_FILE, Run, load_run

_SHOW = 5
# How far a recorded metric may lie from its recomputation: float noise of a different summation
# order, far below any printed digit.
_TOLERANCE = 1e-9

ALSO_JUDGED: tuple[str, ...] = ("accuracy", "all.accuracy")
"""Judged besides the headline when a task reports them: the pooled share of right answers."""


@dataclass(frozen=True)
class Regression:
    """A judged metric (or its visual gain under ``control``) that dropped significantly."""

    task: str
    row: MetricDelta
    control: str | None = None

    @property
    def what(self) -> str:
        return self.row.metric if self.control is None else f"visual gain ({self.control}) of {self.row.metric}"


@dataclass(frozen=True)
class GainComparison:
    """The visual gains of a task under one control, baseline against candidate."""

    task: str
    control: str
    rows: list[MetricDelta]


@dataclass(frozen=True)
class CheckOutcome:
    baseline: Run
    candidate: Run
    alpha: float
    max_drop: float
    comparisons: list[TaskComparison]
    regressions: list[Regression]
    gains: list[GainComparison] = field(default_factory=list)


def _examples(ids: set[str]) -> str:
    return id_examples(ids, _SHOW)


def ensure_comparable(baseline: Run, candidate: Run) -> None:
    """Raise UserError naming the first difference that makes a paired comparison meaningless."""
    tasks_a, tasks_b = set(baseline.tasks), set(candidate.tasks)
    if tasks_a != tasks_b:
        parts = []
        if tasks_a - tasks_b:
            parts.append(f"only in the baseline: {', '.join(sorted(tasks_a - tasks_b))}")
        if tasks_b - tasks_a:
            parts.append(f"only in the candidate: {', '.join(sorted(tasks_b - tasks_a))}")
        raise UserError(f"the runs have different task sets ({'; '.join(parts)}); run both on the same tasks")
    for task in baseline.tasks:
        fp_a = (baseline.tasks[task].get("data") or {}).get("fingerprint")
        fp_b = (candidate.tasks[task].get("data") or {}).get("fingerprint")
        if fp_a != fp_b:
            raise UserError(
                f"task {task}: the data fingerprints differ (baseline {fp_a}, candidate {fp_b}); "
                "the runs were evaluated on different data and cannot be compared sample by sample"
            )
        for run, role in ((baseline, "baseline"), (candidate, "candidate")):
            if not run.has_samples(task):
                raise UserError(
                    f"{role} run {run.dir} has no samples/{task}.jsonl; `check` needs the per-sample outputs"
                )
        repeated, only = question_id_problems(
            {
                "baseline": [str(r.get("question_id")) for r in baseline.samples(task)],
                "candidate": [str(r.get("question_id")) for r in candidate.samples(task)],
            }
        )
        for role, dupes in repeated.items():
            raise UserError(f"task {task}: the {role} repeats question ids ({_examples(dupes)})")
        if only:
            parts = [f"{len(extra)} only in the {role} ({_examples(extra)})" for role, extra in only.items()]
            raise UserError(f"task {task}: the question ids differ: {'; '.join(parts)}")


def _pair(recorded: float, recomputed: float) -> tuple[str, str]:
    """Both numbers with as few decimals (4 at least) as it takes to tell them apart."""
    for digits in range(4, 17):
        a, b = f"{recorded:.{digits}f}", f"{recomputed:.{digits}f}"
        if a != b:
            break
    return a, b


def ensure_sample_counts(run: Run, role: str) -> None:
    """Raise UserError when a task's results.json ``n`` is not the number of its sample rows."""
    for task, result in run.tasks.items():
        n = result.get("n")
        rows = len(run.samples(task))
        if isinstance(n, int) and not isinstance(n, bool) and n != rows:
            raise UserError(
                f"task {task}: the {role}'s {run.dir / RESULTS_FILE} records n={n} but its "
                f"samples/{task}.jsonl has {rows} rows; the run was edited or is incomplete: re-run it"
            )


def _missing_scorer(run: Run, task: str) -> str:
    """The note " (its scorer X is not available here)" when the run names a scorer that this install
    cannot load (its samples are then read as means of their fields), else ""."""
    spec = run.tasks[task].get("scorer")
    return (
        f" (its scorer {spec} is not available here)"
        if spec and scorer_of(task, run.tasks[task]) is None
        else ""
    )


def ensure_judged_from_samples(comparison: TaskComparison, baseline: Run, candidate: Run) -> None:
    """Raise UserError unless the headline is recomputed from the samples and every recomputed
    metric equals what each run's results.json records (naming both numbers where one does not)."""
    task = comparison.task
    headline = comparison.headline_delta
    if headline is not None and not headline.recomputed:
        raise UserError(
            f"task {task}: the headline metric {headline.metric!r} cannot be recomputed from the runs' "
            f"samples/{task}.jsonl{_missing_scorer(baseline, task)}; `check` judges only numbers it can "
            "recompute from the samples"
        )
    for index, run, role in ((0, baseline, "baseline"), (1, candidate, "candidate")):
        wrong = []
        for row in comparison.metrics:
            value = row.baseline if index == 0 else row.candidate
            claimed = row.recorded[index]
            if not row.recomputed or claimed is None or value is None:
                continue
            if not math.isclose(claimed, value, rel_tol=_TOLERANCE, abs_tol=_TOLERANCE):
                shown = _pair(claimed, value)
                wrong.append(f"{row.metric} {shown[0]} in results.json, {shown[1]} from the samples")
        if wrong:
            more = f" (and {len(wrong) - 3} more)" if len(wrong) > 3 else ""
            missing = _missing_scorer(run, task)
            cause = "unless that is why, " if missing else ""
            raise UserError(
                f"task {task}: the {role}'s {run.dir / RESULTS_FILE} disagrees with its samples/{task}.jsonl"
                f"{missing}: {'; '.join(wrong[:3])}{more}; {cause}the run was edited or is damaged: re-run it"
            )


def run_check(
    baseline_path: Path,
    candidate_path: Path,
    *,
    alpha: float = 0.05,
    max_drop: float = 0.0,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> CheckOutcome:
    """Compare the candidate with the baseline task by task (see the module docstring)."""
    if not 0.0 < alpha < 1.0:
        raise UserError(f"--alpha {alpha} must lie strictly between 0 and 1")
    if max_drop < 0.0:
        raise UserError(f"--max-drop {max_drop} must be >= 0 (it is a size of drop, in metric units)")
    if n_resamples < 1:
        raise UserError(f"--resamples {n_resamples} must be positive")
    baseline, candidate = load_run(baseline_path), load_run(candidate_path)
    ensure_comparable(baseline, candidate)
    ensure_sample_counts(baseline, "baseline")
    ensure_sample_counts(candidate, "candidate")
    comparisons: list[TaskComparison] = []
    regressions: list[Regression] = []
    gains: list[GainComparison] = []
    for task, result_a in baseline.tasks.items():
        result_b = candidate.tasks[task]
        headline = headline_of(task, result_a)
        comparison = compare_task(
            task,
            result_a,
            result_b,
            baseline.samples(task),
            candidate.samples(task),
            headline,
            n_resamples=n_resamples,
            seed=seed,
            alpha=alpha,
        )
        row = comparison.headline_delta
        if row is None:
            raise UserError(f"task {task}: headline metric {headline.metric!r} is missing from the results")
        ensure_judged_from_samples(comparison, baseline, candidate)
        comparisons.append(comparison)
        judged = [m for m in comparison.metrics if m.headline or (m.metric in ALSO_JUDGED and m.recomputed)]
        regressions += [Regression(task, m) for m in judged if _dropped(m, alpha, max_drop)]
        for control in sorted(set(result_a.get("controls") or {}) & set(result_b.get("controls") or {})):
            rows = compare_gains(
                task, result_a, result_b,
                baseline.samples(task), _control_rows(baseline, task, control, "baseline"),
                candidate.samples(task), _control_rows(candidate, task, control, "candidate"),
                [m.metric for m in judged], n_resamples=n_resamples, seed=seed, alpha=alpha,
            )  # fmt: skip
            gains.append(GainComparison(task, control, rows))
            regressions += [Regression(task, m, control) for m in rows if _dropped(m, alpha, max_drop)]
    return CheckOutcome(baseline, candidate, alpha, max_drop, comparisons, regressions, gains)


def _dropped(row: MetricDelta, alpha: float, max_drop: float) -> bool:
    worse = row.worse_by
    return worse is not None and worse > 0 and worse > max_drop and row.p is not None and row.p < alpha


def _control_rows(run: Run, task: str, control: str, role: str) -> list[dict]:
    """The sample rows of ``task`` under ``control``; UserError when the file is missing or its
    question ids are not the task's own."""
    from vlmbench.runner.controls import pass_name

    name = pass_name(task, control)
    if not run.has_samples(name):
        raise UserError(
            f"{role} run {run.dir} records control {control} of task {task} but has no samples/{name}.jsonl; "
            "`check` recomputes visual gains from the samples: re-run it"
        )
    rows = run.samples(name)
    real = sorted(str(r.get("question_id")) for r in run.samples(task))
    if sorted(str(r.get("question_id")) for r in rows) != real:
        raise UserError(
            f"task {task}: the {role}'s samples/{name}.jsonl does not hold the task's question ids once each; "
            "the run was edited or is damaged: re-run it"
        )
    return rows


def _signed(value: float | None) -> str:
    return "—" if value is None else f"{value:+.4f}"


def format_table(outcome: CheckOutcome) -> str:
    """The plain-text table `vlmbench check` prints: every metric of every task."""
    header = ("task", "metric", "baseline", "candidate", "delta", "95% CI of delta", "p", "test", "")
    lines = [header]
    flagged = {(r.task, r.control, r.row.metric) for r in outcome.regressions}
    gains: dict[str, list[GainComparison]] = {}
    for gain in outcome.gains:
        gains.setdefault(gain.task, []).append(gain)
    for comparison in outcome.comparisons:
        listed = [(None, row) for row in comparison.metrics]
        listed += [(g.control, row) for g in gains.get(comparison.task, []) for row in g.rows]
        for control, row in listed:
            ci = "—" if row.ci is None else f"[{row.ci[0]:+.4f}, {row.ci[1]:+.4f}]"
            mark = ""
            if (comparison.task, control, row.metric) in flagged:
                mark = "REGRESSION"
            elif control is not None or row.headline or row.metric in ALSO_JUDGED:
                mark = f"{'headline' if row.headline else 'judged'} {'↑' if row.higher_is_better else '↓'}"
            lines.append(
                (
                    comparison.task,
                    row.metric if control is None else f"gain[{control}] {row.metric}",
                    fmt_number(row.baseline, 4),
                    fmt_number(row.candidate, 4),
                    _signed(row.delta),
                    ci,
                    fmt_p(row.p),
                    row.test or "—",
                    mark,
                )
            )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip() for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths).rstrip())
    return "\n".join(text)


def summary(outcome: CheckOutcome) -> str:
    """One line per regression, or the all-clear, naming alpha and max-drop."""
    rule = f"p < {outcome.alpha:g} and drop > {outcome.max_drop:g}"
    if not outcome.regressions:
        also = "pooled accuracy" + (" and visual gains" if outcome.gains else "")
        return (
            f"OK: no headline metric dropped significantly ({rule}) on {len(outcome.comparisons)} task(s); "
            f"also judged: {also}"
        )
    parts = [
        f"{r.task} {r.what} {fmt_number(r.row.baseline, 4)} -> {fmt_number(r.row.candidate, 4)} "
        f"(delta {_signed(r.row.delta)}, p={fmt_p(r.row.p)}, {r.row.test})"
        for r in outcome.regressions
    ]
    return f"significant regression ({rule}): " + "; ".join(parts)
