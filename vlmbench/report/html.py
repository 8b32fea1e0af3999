"""The self-contained HTML report for one or more runs (`vlmbench report`, and RUN/report.html).

Everything is inline (CSS, JS, SVG charts, thumbnails as data: URIs) so the file opens from
file:// with no network; the leaderboard passes a FolderThumbnails store instead, so that its
per-run pages share one copy of each image. Each distinct thumbnail is stored once per page and
each sample's prompt, references and image once, however many runs answered it. Untrusted text (predictions, model names) is only ever rendered through
Jinja2 autoescaping or as escaped JSON inside ``<script type="application/json">``.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

from vlmbench import __version__
from vlmbench.errors import UserError
from vlmbench.metrics.stats import DEFAULT_RESAMPLES
from vlmbench.mitigation.summary import mitigation_rows
from vlmbench.report import svg
from vlmbench.report.gains import ForestRow, controls_of, forest, gain_of, warning_messages
from vlmbench.report.metricspec import (
    POPE_SPLITS,
    Headline,
    direction,
    finite,
    flatten,
    flatten_ci,
    headline_of,
    ordered_metrics,
    scorer_of,
)
from vlmbench.report.paired import compare_task
from vlmbench.report.runs import Run, load_run, unique_slugs
from vlmbench.report.samples import BrowserTask, browser_items, browser_rows
from vlmbench.report.templating import asset_dir, make_environment, nonce_for, script_json
from vlmbench.report.thumbnails import InlineThumbnails, ThumbnailStore

DEFAULT_MAX_SAMPLES = 100
# With more runs than this, significance compares every run with the first one only.
ALL_PAIRS_UP_TO = 6


@dataclass
class RunView:
    """What the templates show about one run."""

    index: int
    slug: str
    name: str
    label: str
    color: str
    model: dict[str, Any]
    resolution_name: str
    resolution_detail: str
    params: dict[str, Any]
    vt_mean: float | None
    vt_min: float | None
    vt_max: float | None
    throughput: dict[str, Any]
    created: str
    headlines: dict[str, float | None] = field(default_factory=dict)
    synthetic_tasks: list[str] = field(default_factory=list)


@dataclass
class TaskView:
    name: str
    headline: Headline
    synthetic: bool
    sources: list[str]
    conventions: list[str]
    n: list[int | None]
    errors: list[int | None]
    fingerprints: list[str | None]
    synthetic_runs: list[bool] = field(default_factory=list)

    @property
    def mixed(self) -> bool:
        """Some runs used a synthetic set for this task and others did not."""
        return self.synthetic and not all(self.synthetic_runs)


def _resolution(model: dict[str, Any]) -> tuple[str, str]:
    res = model.get("resolution")
    if isinstance(res, dict):
        detail = ", ".join(
            f"{k} {v}" for k, v in res.items() if k != "name" and not isinstance(v, (dict, list))
        )
        return str(res.get("name") or "unknown"), detail
    return (str(res) if res else "unknown"), ""


def run_view(run: Run, index: int, slug: str) -> RunView:
    model = run.model
    vt = (
        model.get("visual_tokens_per_image") if isinstance(model.get("visual_tokens_per_image"), dict) else {}
    )
    res_name, res_detail = _resolution(model)
    view = RunView(
        index=index,
        slug=slug,
        name=run.name,
        label=run.label,
        color=svg.color(index),
        model=model,
        resolution_name=res_name,
        resolution_detail=res_detail,
        params=model.get("params") if isinstance(model.get("params"), dict) else {},
        vt_mean=finite(vt.get("mean")),
        vt_min=finite(vt.get("min")),
        vt_max=finite(vt.get("max")),
        throughput=run.results.get("throughput") if isinstance(run.results.get("throughput"), dict) else {},
        created=str(run.results.get("created") or ""),
    )
    for task, result in run.tasks.items():
        headline = headline_of(task, result)
        view.headlines[task] = flatten(result["metrics"]).get(headline.metric)
        if (result.get("data") or {}).get("synthetic"):
            view.synthetic_tasks.append(task)
    return view


def _task_views(runs: Sequence[Run]) -> list[TaskView]:
    names: list[str] = []
    for run in runs:
        names.extend(t for t in run.tasks if t not in names)
    views = []
    for name in names:
        results = [run.tasks.get(name) for run in runs]
        first = next(r for r in results if r is not None)
        data = [(r.get("data") or {}) if r else {} for r in results]
        conventions = []
        for r in results:
            text = str(r.get("conventions") or "").strip() if r else ""
            if text and text not in conventions:
                conventions.append(text)
        views.append(
            TaskView(
                name=name,
                headline=headline_of(name, first),
                synthetic=any(d.get("synthetic") for d in data),
                sources=sorted({str(d["source"]) for d in data if d.get("source")}),
                conventions=conventions,
                n=[r.get("n") if r else None for r in results],
                errors=[r.get("errors") if r else None for r in results],
                fingerprints=[d.get("fingerprint") for d in data],
                synthetic_runs=[
                    bool(d.get("synthetic")) for d, r in zip(data, results, strict=True) if r is not None
                ],
            )
        )
    return views


def _metric_table(runs: Sequence[Run], tasks: Sequence[TaskView]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for task in tasks:
        merged: dict[str, Any] = {}
        for run in runs:
            if task.name in run.tasks:
                merged.update(run.tasks[task.name]["metrics"])
        first = next(run.tasks[task.name] for run in runs if task.name in run.tasks)
        scorer, recorded = scorer_of(task.name, first), first.get("directions")
        for metric in ordered_metrics(task.name, merged, task.headline):
            cells = []
            for run in runs:
                result = run.tasks.get(task.name)
                if result is None:
                    cells.append(None)
                    continue
                value = flatten(result["metrics"]).get(metric)
                ci = flatten_ci(result.get("ci95")).get(metric)
                cells.append({"value": value, "ci": ci})
            is_headline = metric == task.headline.metric
            rows.append(
                {
                    "task": task,
                    "metric": metric,
                    "headline": is_headline,
                    "cells": cells,
                    "direction": task.headline.higher_is_better if is_headline else direction(metric, scorer, recorded),
                }
            )
    return rows


def _gain_rows(runs: Sequence[Run], tasks: Sequence[TaskView]) -> list[dict[str, Any]]:
    """One row per task and control that some run holds: each run's headline visual gain and CI."""
    rows: list[dict[str, Any]] = []
    for task in tasks:
        results = [run.tasks.get(task.name) or {} for run in runs]
        controls = list(dict.fromkeys(c for r in results for c in controls_of(r)))
        for control in controls:
            gains = [gain_of(r, control, task.headline.metric) for r in results]
            cells = [None if g is None else {"value": g.value, "ci": g.ci} for g in gains]
            rows.append({"task": task, "control": control, "cells": cells})
    return rows


def _warnings(runs: Sequence[Run], views: Sequence[RunView]) -> list[dict[str, Any]]:
    """Every degenerate-answer warning of every run and task."""
    return [
        {"run": view, "task": task, "message": message}
        for run, view in zip(runs, views, strict=True)
        for task, result in run.tasks.items()
        for message in warning_messages(result)
    ]


def _gain_plots(views: Sequence[RunView], tasks: Sequence[TaskView], runs: Sequence[Run]) -> list[dict[str, Any]]:
    plots = []
    for task in tasks:
        rows = [
            ForestRow(f"{view.name} · {control}", view.color, gain)
            for view, run in zip(views, runs, strict=True)
            for control in controls_of(run.tasks.get(task.name) or {})
            if (gain := gain_of(run.tasks[task.name], control, task.headline.metric)) is not None
        ]
        if rows:
            plots.append({
                "kind": "gain",
                "task": task,
                "svg": forest(rows, title=f"{task.name}: visual gain of {task.headline.metric}",
                              x_label=f"{task.headline.metric}(real) − {task.headline.metric}(control)"),
            })  # fmt: skip
    return plots


def _groups(views: Sequence[RunView], key: str) -> list[dict[str, Any]]:
    groups: dict[str, list[RunView]] = {}
    for view in views:
        value = view.resolution_name if key == "resolution" else str(view.model.get("projector") or "unknown")
        groups.setdefault(value, []).append(view)
    return [{"key": k, "runs": groups[k]} for k in sorted(groups)]


def _plots(views: Sequence[RunView], tasks: Sequence[TaskView], runs: Sequence[Run]) -> list[dict[str, Any]]:
    plots: list[dict[str, Any]] = []
    for task in tasks:
        label = f"{task.name} {task.headline.metric} {task.headline.arrow}"
        tokens = [
            svg.ScatterPoint(v.name, v.vt_mean, v.headlines[task.name], v.color)
            for v in views
            if v.vt_mean is not None and v.headlines.get(task.name) is not None
        ]
        plots.append(
            {
                "kind": "tokens",
                "task": task,
                "svg": svg.scatter(
                    tokens,
                    title=f"{task.name}: {task.headline.metric} vs visual tokens",
                    x_label="visual tokens per image (mean)",
                    y_label=label,
                    x_higher_better=False,
                    y_higher_better=task.headline.higher_is_better,
                ),
            }
        )
    for task in tasks:
        label = f"{task.name} {task.headline.metric} {task.headline.arrow}"
        speed = [
            svg.ScatterPoint(
                v.name, finite(v.throughput.get("samples_per_s")) or 0.0, v.headlines[task.name], v.color
            )
            for v in views
            if finite(v.throughput.get("samples_per_s")) is not None
            and v.headlines.get(task.name) is not None
        ]
        plots.append(
            {
                "kind": "throughput",
                "task": task,
                "svg": svg.scatter(
                    speed,
                    title=f"{task.name}: {task.headline.metric} vs throughput",
                    x_label="throughput (samples/s)",
                    y_label=label,
                    x_higher_better=True,
                    y_higher_better=task.headline.higher_is_better,
                ),
            }
        )
    by_name = {t.name: t for t in tasks}
    if "pope" in by_name:
        pope_metrics = [run.tasks.get("pope", {}).get("metrics", {}) for run in runs]
        splits = [s for s in POPE_SPLITS if any(isinstance(m.get(s), dict) for m in pope_metrics)]
        series = [
            svg.BarSeries(
                view.name,
                view.color,
                [finite((metrics.get(s) or {}).get("f1")) for s in splits],
                [finite((metrics.get(s) or {}).get("yes_ratio")) for s in splits],
            )
            for view, metrics in zip(views, pope_metrics, strict=True)
            if metrics
        ]
        plots.append(
            {
                "kind": "pope",
                "task": by_name["pope"],
                "svg": svg.grouped_bars(
                    splits,
                    series,
                    title="POPE F1 per split",
                    y_label="F1 ↑",
                    marker_label="yes_ratio",
                    reference=(0.5, "0.5 = balanced"),
                ),
            }
        )
    if "chair" in by_name:
        series = []
        for view, run in zip(views, runs, strict=True):
            metrics = run.tasks.get("chair", {}).get("metrics", {})
            if metrics:
                series.append(
                    svg.BarSeries(
                        view.name,
                        view.color,
                        [finite(metrics.get("chair_i")), finite(metrics.get("chair_s"))],
                    )
                )
        y_max = max([v for s in series for v in s.values if v is not None] + [0.1])
        plots.append(
            {
                "kind": "chair",
                "task": by_name["chair"],
                "svg": svg.grouped_bars(
                    ["CHAIR_i", "CHAIR_s"],
                    series,
                    title="CHAIR (lower is better)",
                    y_label="rate ↓",
                    y_max=min(1.0, max(0.1, round(y_max * 1.25 + 0.049, 1))),
                ),
            }
        )
    return plots


def _significance(
    runs: Sequence[Run],
    views: Sequence[RunView],
    tasks: Sequence[TaskView],
    alpha: float,
    seed: int,
    n_resamples: int,
) -> tuple[list[dict[str, Any]], str]:
    if len(runs) < 2:
        return [], "one run: nothing to compare"
    if len(runs) <= ALL_PAIRS_UP_TO:
        pairs = list(combinations(range(len(runs)), 2))
        scope = "every pair of runs"
    else:
        pairs = [(0, j) for j in range(1, len(runs))]
        scope = f"every run against the first one ({len(runs)} runs: all pairs would be too many)"
    out: list[dict[str, Any]] = []
    for i, j in pairs:
        for task in tasks:
            a, b = runs[i], runs[j]
            if task.name not in a.tasks or task.name not in b.tasks:
                continue
            rows_a, rows_b = a.samples(task.name), b.samples(task.name)
            if not rows_a or not rows_b:
                continue
            fp_a = (a.tasks[task.name].get("data") or {}).get("fingerprint")
            fp_b = (b.tasks[task.name].get("data") or {}).get("fingerprint")
            if fp_a and fp_b and fp_a != fp_b:
                out.append(
                    {
                        "a": views[i],
                        "b": views[j],
                        "task": task,
                        "row": None,
                        "comparison": None,
                        "note": "different data sets (fingerprints differ): not compared",
                        "significant": False,
                        "better": None,
                    }
                )
                continue
            comparison = compare_task(
                task.name,
                a.tasks[task.name],
                b.tasks[task.name],
                rows_a,
                rows_b,
                task.headline,
                n_resamples=n_resamples,
                seed=seed,
                alpha=alpha,
            )
            if comparison.n_matched == 0:
                out.append(
                    {
                        "a": views[i],
                        "b": views[j],
                        "task": task,
                        "row": None,
                        "comparison": comparison,
                        "note": "no common question ids: the runs used different samples",
                        "significant": False,
                        "better": None,
                    }
                )
                continue
            for row in comparison.metrics:
                top_level = "." not in row.metric or row.metric.startswith("all.")
                if row.headline or (row.test == "mcnemar" and top_level):
                    significant = row.p is not None and row.p < alpha
                    better = None
                    worse = row.worse_by
                    if significant and worse is not None and worse != 0:
                        better = worse < 0
                    out.append(
                        {
                            "a": views[i],
                            "b": views[j],
                            "task": task,
                            "row": row,
                            "comparison": comparison,
                            "significant": significant,
                            "better": better,
                        }
                    )
    return out, scope


def _capped_summary(browser: Sequence[BrowserTask]) -> list[str]:
    """One phrase per task whose browser list is cut: 'pope: 30 of 400'."""
    totals: dict[str, set[int]] = {}
    shown: dict[str, int] = {}
    for bt in browser:
        if bt.capped:
            totals.setdefault(bt.task, set()).add(bt.total)
            shown[bt.task] = max(shown.get(bt.task, 0), len(bt.rows))
    return [f"{task}: {shown[task]} of {'/'.join(str(t) for t in sorted(totals[task]))}" for task in totals]


def _report_data(views: Sequence[RunView], tasks: Sequence[TaskView], runs: Sequence[Run]) -> dict[str, Any]:
    """The machine-readable summary embedded in the page."""
    return {
        "vlmbench_version": __version__,
        "runs": [
            {
                "slug": v.slug,
                "name": v.name,
                "model": v.model.get("name"),
                "projector": v.model.get("projector"),
                "resolution": v.resolution_name,
                "visual_tokens_per_image": v.vt_mean,
                "params_total": v.params.get("total"),
                "throughput": v.throughput,
                "tasks": {t: r["metrics"] for t, r in run.tasks.items()},
            }
            for v, run in zip(views, runs, strict=True)
        ],
        "tasks": [
            {
                "name": t.name,
                "headline": t.headline.metric,
                "higher_is_better": t.headline.higher_is_better,
                "synthetic": t.synthetic,
            }
            for t in tasks
        ],
    }


def build_context(
    runs: Sequence[Run],
    *,
    max_samples_per_task: int = DEFAULT_MAX_SAMPLES,
    alpha: float = 0.05,
    seed: int = 0,
    n_resamples: int = DEFAULT_RESAMPLES,
    thumbs: ThumbnailStore | None = None,
) -> dict[str, Any]:
    """Everything report.html.j2 needs; thumbnails go into ``thumbs`` (data: URIs by default)."""
    thumbs = InlineThumbnails() if thumbs is None else thumbs
    slugs = unique_slugs(list(runs))
    views = [run_view(run, i, slug) for i, (run, slug) in enumerate(zip(runs, slugs, strict=True))]
    tasks = _task_views(runs)
    browser: list[BrowserTask] = [
        browser_rows(run, i, task, max_samples_per_task, thumbs)
        for i, run in enumerate(runs)
        for task in run.tasks
        if run.has_samples(task)
    ]
    items = browser_items(browser, [t.name for t in tasks])
    used = sorted({item.thumb for item in items if item.thumb})
    significance, scope = _significance(runs, views, tasks, alpha, seed, n_resamples)
    splits = sorted(
        {row.split for bt in browser for row in bt.rows if row.split},
        key=lambda s: (POPE_SPLITS.index(s) if s in POPE_SPLITS else 99, s),
    )
    data = _report_data(views, tasks, runs)
    return {
        "title": "vlmbench report: "
        + ", ".join(v.name for v in views[:4])
        + (" …" if len(views) > 4 else ""),
        "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "version": __version__,
        "runs": views,
        "tasks": tasks,
        "synthetic_tasks": [t.name for t in tasks if t.synthetic],
        "mixed_tasks": [t.name for t in tasks if t.mixed],
        "metric_rows": _metric_table(runs, tasks),
        "by_projector": _groups(views, "projector"),
        "by_resolution": _groups(views, "resolution"),
        "plots": _plots(views, tasks, runs) + _gain_plots(views, tasks, runs),
        "gain_rows": _gain_rows(runs, tasks),
        "mitigation_rows": mitigation_rows([run.tasks for run in runs], tasks),
        "warnings": _warnings(runs, views),
        "significance": significance,
        "significance_scope": scope,
        "alpha": alpha,
        "items": items,
        "thumb_urls": {key: thumbs.urls[key] for key in used},
        "img_sources": thumbs.csp_sources,
        "thumbs_inline": thumbs.inline,
        "browser_limit": max_samples_per_task,
        "browser_capped": _capped_summary(browser),
        "splits": splits,
        "outcomes": sorted(
            {row.outcome for bt in browser for row in bt.rows},
            key=["right", "partial", "wrong", "error"].index,
        ),
        "data": data,
        "nonce": nonce_for(str(script_json(data)), str(max_samples_per_task)),
    }


def render_html(runs: Sequence[Run], **options: Any) -> str:
    """The report page as a string."""
    if not runs:
        raise UserError("no runs to report on; pass at least one run directory")
    env = make_environment(asset_dir("reports"))
    return env.get_template("report.html.j2").render(**build_context(runs, **options))


def render_report(
    run_dirs: list[Path],
    out: Path,
    *,
    max_samples_per_task: int = DEFAULT_MAX_SAMPLES,
    alpha: float = 0.05,
    seed: int = 0,
    n_resamples: int = DEFAULT_RESAMPLES,
    thumbs: ThumbnailStore | None = None,
) -> Path:
    """Render the HTML report for ``run_dirs`` (run directories or results.json paths) to ``out``.

    Self-contained unless ``thumbs`` stores the images elsewhere (the leaderboard's shared folder).
    """
    runs = [load_run(Path(p)) for p in run_dirs]
    page = render_html(
        runs,
        max_samples_per_task=max_samples_per_task,
        alpha=alpha,
        seed=seed,
        n_resamples=n_resamples,
        thumbs=thumbs,
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed write (out is a directory, a full disk) leaves no debris
        raise
    return out
