"""`vlmbench effects`: do five effects the VLM literature reports show up in the demo checkpoints?

Each effect is measured from the per-sample rows of finished runs (``samples/<task>.jsonl``), addressed
by preset name (``llava-1.5-style``, ``blip2-style``...). Every estimate comes with a 95% percentile
bootstrap interval (seeded, so the table is deterministic) and a verdict:

1. Adversarial POPE below random (within one run): F1(adversarial) - F1(random). The splits are
   different questions, so each split is resampled on its own (unpaired bootstrap).
2. Higher resolution beats fixed 64 px on small-font documents: DocVQA mean ANLS of a high-resolution
   run minus ``llava-1.5-style`` on the rows with ``font_px <= 12`` (paired by question id).
3. A 32-query Q-Former loses fine detail: ``blip2-style`` minus ``llava-1.5-style`` on POPE
   ``f1_mean_of_splits`` and DocVQA mean ANLS (paired).
4. Pixel shuffle 4:1 loses little: ``ablation-llava-pixel-shuffle`` minus ``llava-1.5-style``, same
   statistics as (3).
5. DPO lowers CHAIR_i without collapsing recall: ``internvl-style`` minus ``ablation-no-dpo`` on CHAIR_i
   and object recall (paired over images).

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
from vlmbench.metrics.stats import DEFAULT_RESAMPLES, paired_bootstrap, paired_bootstrap_statistics
from vlmbench.report.metricspec import finite
from vlmbench.report.paired import gt_objects, id_examples, match_rows, question_id_problems, sample_stats
from vlmbench.report.runs import Run, load_run

Rows = list[dict[str, Any]]
Interval = tuple[float, float]
Statistic = Callable[[np.ndarray], dict[str, np.ndarray]]

ALPHA = 0.05
LOW_RES = "llava-1.5-style"
HIGH_RES: tuple[str, ...] = (
    "llava-next-style",
    "ablation-llava-dynamic-tiles",
    "internvl-style",
    "qwen2vl-style",
)
QFORMER = "blip2-style"
PIXEL_SHUFFLE = "ablation-llava-pixel-shuffle"
DPO, NO_DPO = "internvl-style", "ablation-no-dpo"
PRESETS: tuple[str, ...] = (
    LOW_RES,
    "llava-next-style",
    "internvl-style",
    "qwen2vl-style",
    QFORMER,
    "honeybee-style",
    "flamingo-style",
    PIXEL_SHUFFLE,
    "ablation-llava-dynamic-tiles",
    NO_DPO,
)

# Same threshold as vlmbench.data.synth.documents.SMALL_FONT_PX (not imported: that pulls in PIL).
SMALL_FONT_PX = 12
# Effect 4: a change within this many metric units counts as "little".
LITTLE_LOSS = 0.05
# Effect 5: a recall change at or below this (point estimate) counts as a collapse.
RECALL_COLLAPSE = -0.1

POPE_STAT = "f1_mean_of_splits"

EFFECT_TITLES: Mapping[int, str] = {
    1: "1. Adversarial POPE below random",
    2: "2. High resolution beats fixed 64 px on small fonts",
    3: "3. 32-query Q-Former loses fine detail",
    4: "4. Pixel shuffle 4:1 loses little",
    5: "5. DPO lowers CHAIR_i, keeps recall",
}


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


def _task_rows(runs: Mapping[str, Run], name: str, task: str, effect: int) -> Rows:
    """The sample rows of ``task`` in run ``name``; a missing task or samples file is a UserError."""
    run = runs[name]
    if task not in run.tasks:
        raise UserError(
            f"run {name} ({run.dir}) has no task {task!r}, which effect {EFFECT_TITLES[effect]!r} needs; "
            f"evaluate it on {task} or leave the run out"
        )
    if not run.has_samples(task):
        raise UserError(
            f"run {name} ({run.dir}) has no samples/{task}.jsonl; effect {EFFECT_TITLES[effect]!r} "
            "needs the per-sample outputs"
        )
    return run.samples(task)


def _examples(ids: set[str]) -> str:
    return id_examples(ids, 3)


def _paired_rows(
    runs: Mapping[str, Run], name_a: str, name_b: str, task: str, effect: int
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
    stats = sample_stats("pope", rows, [], POPE_STAT)
    if key not in stats.compute(_identity(len(rows))):
        raise UserError(f"{who}: POPE rows need yes/no references and a split `category` to recompute {key}")
    return lambda idx: {key: stats.compute(idx)[key]}


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


def pope_split_difference(rows: Rows, who: str, *, seed: int, n_resamples: int) -> Estimate | None:
    """F1(adversarial) - F1(random) with each split resampled independently; None if a split is absent.

    F1 is POPE's (vlmbench.metrics.pope): unknown answers are not positive predictions and are misses
    when the truth is yes; a zero denominator gives 0.
    """
    by_split = {s: [r for r in rows if r.get("category") == s] for s in ("random", "adversarial")}
    if not all(by_split.values()):
        return None
    seeds = np.random.SeedSequence(seed).spawn(2)
    values: dict[str, tuple[float, np.ndarray]] = {}
    for (split, split_rows), seq in zip(by_split.items(), seeds, strict=True):
        stat = _pope_statistic(split_rows, "all.f1", who)
        n = len(split_rows)
        point = float(stat(_identity(n))["all.f1"][0])
        values[split] = (point, _resampled(stat, "all.f1", n, n_resamples, np.random.default_rng(seq)))
    (a, boot_a), (b, boot_b) = values["random"], values["adversarial"]
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


def _chair_statistic(rows: Rows, who: str) -> Statistic:
    """CHAIR_i and recall over resampled images, pooled as vlmbench.metrics.chair defines them.

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
    return lambda idx: {k: v for k, v in stats.compute(idx).items() if k in ("chair_i", "recall")}


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


def little_loss_verdict(ci: Interval, margin: float = LITTLE_LOSS) -> str:
    """Effect 4: is the loss of B against A within ``margin``?

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


def dpo_verdict(chair_i: Estimate, recall: Estimate) -> str:
    """Effect 5: CHAIR_i significantly lower and recall (point estimate) not down by 0.1 or more."""
    base = sign_verdict(chair_i.ci, expected_negative=True)
    if base == "appears" and recall.delta <= RECALL_COLLAPSE:
        return f"CHAIR_i lower but recall collapses ({recall.delta:+.3f})"
    return base


def _recall_verdict(recall: Estimate) -> str:
    if recall.delta <= RECALL_COLLAPSE:
        return f"recall collapses (drop ≥ {-RECALL_COLLAPSE:g})"
    return f"recall kept (drop < {-RECALL_COLLAPSE:g})"


# --- effects ----------------------------------------------------------------------------------


def _not_measured(effect: int, runs: str, metric: str, missing: Sequence[str]) -> EffectRow:
    return EffectRow(effect, runs, metric, None, f"not measured (needs runs: {', '.join(missing)})")


def _missing(runs: Mapping[str, Run], *names: str) -> list[str]:
    return [name for name in names if name not in runs]


def effect_adversarial_pope(runs: Mapping[str, Run], *, seed: int, n_resamples: int) -> list[EffectRow]:
    """Effect 1 for every run that has task pope (others are skipped: the effect is within a run)."""
    rows: list[EffectRow] = []
    for name, run in runs.items():
        if "pope" not in run.tasks:
            continue
        samples = _task_rows(runs, name, "pope", 1)
        label = f"{name}: adversarial vs random"
        estimate = pope_split_difference(samples, f"run {name}", seed=seed, n_resamples=n_resamples)
        if estimate is None:
            present = sorted({str(r.get("category")) for r in samples})
            rows.append(
                EffectRow(
                    1, label, "POPE F1", None, f"not measured (splits in samples: {', '.join(present)})"
                )
            )
            continue
        rows.append(
            EffectRow(1, label, "POPE F1", estimate, sign_verdict(estimate.ci, expected_negative=True))
        )
    if not rows:
        rows.append(_not_measured(1, "adversarial vs random", "POPE F1", ["any run with task pope"]))
    return rows


def _small_font(rows_a: Rows, rows_b: Rows) -> tuple[list[int], str]:
    """Indices of small-font rows and the metric label; all rows when no row carries ``font_px``."""
    fonts = [finite(ra.get("font_px", rb.get("font_px"))) for ra, rb in zip(rows_a, rows_b, strict=True)]
    if all(f is None for f in fonts):
        return list(range(len(rows_a))), f"ANLS, all rows: no font_px in samples (n={len(rows_a)})"
    keep = [i for i, f in enumerate(fonts) if f is not None and f <= SMALL_FONT_PX]
    return keep, f"ANLS, font_px ≤ {SMALL_FONT_PX} (n={len(keep)})"


def effect_high_resolution(runs: Mapping[str, Run], *, seed: int, n_resamples: int) -> list[EffectRow]:
    """Effect 2: each high-resolution run against the fixed 64-px LLaVA-1.5 run on small fonts."""
    out: list[EffectRow] = []
    for high in HIGH_RES:
        label = f"{high} vs {LOW_RES}"
        missing = _missing(runs, high, LOW_RES)
        if missing:
            out.append(_not_measured(2, label, f"ANLS, font_px ≤ {SMALL_FONT_PX}", missing))
            continue
        rows_a, rows_b = _paired_rows(runs, LOW_RES, high, "docvqa", 2)
        keep, metric = _small_font(rows_a, rows_b)
        if not keep:
            out.append(
                EffectRow(2, label, metric, None, f"not measured (no rows with font_px ≤ {SMALL_FONT_PX})")
            )
            continue
        scores_a, scores_b = anls_scores(rows_a, f"run {LOW_RES}"), anls_scores(rows_b, f"run {high}")
        a, b = [scores_a[i] for i in keep], [scores_b[i] for i in keep]
        estimate = paired_mean(a, b, seed=seed, n_resamples=n_resamples)
        out.append(EffectRow(2, label, metric, estimate, sign_verdict(estimate.ci, expected_negative=False)))
    return out


def _projector_pair(
    runs: Mapping[str, Run], effect: int, name_b: str, *, seed: int, n_resamples: int
) -> list[tuple[str, str, Estimate | None]]:
    """(label, metric, estimate) on POPE f1_mean_of_splits and DocVQA ANLS: ``name_b`` vs LLaVA-1.5."""
    label = f"{name_b} vs {LOW_RES}"
    metrics = (f"POPE {POPE_STAT}", "DocVQA ANLS")
    if _missing(runs, name_b, LOW_RES):
        return [(label, m, None) for m in metrics]
    pope_a, pope_b = _paired_rows(runs, LOW_RES, name_b, "pope", effect)
    doc_a, doc_b = _paired_rows(runs, LOW_RES, name_b, "docvqa", effect)
    pope = paired_statistic(
        _pope_statistic(pope_a, POPE_STAT, f"run {LOW_RES}"),
        _pope_statistic(pope_b, POPE_STAT, f"run {name_b}"),
        POPE_STAT,
        len(pope_a),
        seed=seed,
        n_resamples=n_resamples,
    )
    doc = paired_mean(
        anls_scores(doc_a, f"run {LOW_RES}"),
        anls_scores(doc_b, f"run {name_b}"),
        seed=seed,
        n_resamples=n_resamples,
    )
    return [(label, metrics[0], pope), (label, metrics[1], doc)]


def _projector_effect(
    runs: Mapping[str, Run], effect: int, name_b: str, verdict: Callable[[Interval], str], **kw: int
) -> list[EffectRow]:
    out: list[EffectRow] = []
    for label, metric, estimate in _projector_pair(runs, effect, name_b, **kw):
        if estimate is None:
            out.append(_not_measured(effect, label, metric, _missing(runs, name_b, LOW_RES)))
        else:
            out.append(EffectRow(effect, label, metric, estimate, verdict(estimate.ci)))
    return out


def effect_qformer(runs: Mapping[str, Run], *, seed: int, n_resamples: int) -> list[EffectRow]:
    """Effect 3: BLIP-2's 32 queries vs LLaVA-1.5's MLP keeping every patch token (expected: lower)."""
    return _projector_effect(
        runs,
        3,
        QFORMER,
        lambda ci: sign_verdict(ci, expected_negative=True),
        seed=seed,
        n_resamples=n_resamples,
    )


def effect_pixel_shuffle(runs: Mapping[str, Run], *, seed: int, n_resamples: int) -> list[EffectRow]:
    """Effect 4: pixel shuffle 4:1 vs the full token grid (expected: a loss within ±0.05)."""
    return _projector_effect(runs, 4, PIXEL_SHUFFLE, little_loss_verdict, seed=seed, n_resamples=n_resamples)


def effect_dpo(runs: Mapping[str, Run], *, seed: int, n_resamples: int) -> list[EffectRow]:
    """Effect 5: InternVL-style after DPO vs the same model before DPO on CHAIR."""
    label = f"{DPO} vs {NO_DPO}"
    missing = _missing(runs, DPO, NO_DPO)
    if missing:
        return [_not_measured(5, label, m, missing) for m in ("CHAIR_i", "CHAIR recall")]
    rows_a, rows_b = _paired_rows(runs, NO_DPO, DPO, "chair", 5)
    stat_a, stat_b = _chair_statistic(rows_a, f"run {NO_DPO}"), _chair_statistic(rows_b, f"run {DPO}")
    n = len(rows_a)
    chair_i = paired_statistic(stat_a, stat_b, "chair_i", n, seed=seed, n_resamples=n_resamples)
    recall = paired_statistic(stat_a, stat_b, "recall", n, seed=seed, n_resamples=n_resamples)
    return [
        EffectRow(5, label, f"CHAIR_i, lower is better (n={n})", chair_i, dpo_verdict(chair_i, recall)),
        EffectRow(5, label, f"CHAIR recall (n={n})", recall, _recall_verdict(recall)),
    ]


EFFECTS: tuple[Callable[..., list[EffectRow]], ...] = (
    effect_adversarial_pope,
    effect_high_resolution,
    effect_qformer,
    effect_pixel_shuffle,
    effect_dpo,
)


def compute_effects(
    runs: Mapping[str, Run], *, seed: int = 0, n_resamples: int = DEFAULT_RESAMPLES
) -> list[EffectRow]:
    """Every effect's rows, in effect order (see the module docstring)."""
    if n_resamples < 1:
        raise UserError(f"--resamples {n_resamples} must be positive")
    rows: list[EffectRow] = []
    for effect in EFFECTS:
        rows.extend(effect(runs, seed=seed, n_resamples=n_resamples))
    return rows


# --- output -----------------------------------------------------------------------------------


def _cell(value: object) -> str:
    """A table cell: any object as one line of text, with the column separator escaped."""
    return " ".join(str(value).split()).replace("|", "\\|")


def _delta_cell(estimate: Estimate) -> str:
    low, high = estimate.ci
    return f"{estimate.delta:+.4f} [{low:+.4f}, {high:+.4f}]"


def format_markdown(rows: Sequence[EffectRow], *, seed: int, n_resamples: int) -> str:
    """The effects table as Markdown, with a line on how the intervals were computed."""
    header = ("effect", "runs (B vs A)", "metric", "A", "B", "B − A [95% CI]", "verdict")
    lines = [
        "## VLM literature effects",
        "",
        f"95% percentile bootstrap intervals, {n_resamples} resamples, seed {seed}; "
        "pairs are matched by question_id (effect 1 resamples each POPE split on its own).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for row in rows:
        est = row.estimate
        cells = (
            EFFECT_TITLES.get(row.effect, str(row.effect)),
            row.runs,
            row.metric,
            "—" if est is None else f"{est.a:.4f}",
            "—" if est is None else f"{est.b:.4f}",
            "—" if est is None else _delta_cell(est),
            row.verdict,
        )
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def run_effects(
    specs: Sequence[str], *, seed: int = 0, n_resamples: int = DEFAULT_RESAMPLES
) -> tuple[list[EffectRow], str]:
    """Parse ``NAME=RUN_DIR`` specs, load the runs, compute every effect; (rows, Markdown table)."""
    runs = load_named_runs(parse_run_specs(specs))
    rows = compute_effects(runs, seed=seed, n_resamples=n_resamples)
    return rows, format_markdown(rows, seed=seed, n_resamples=n_resamples)
