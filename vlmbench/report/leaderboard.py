"""The static leaderboard site (`vlmbench leaderboard`).

Layout of SITE_DIR::

    index.html            sortable, filterable table (data inlined; app.js builds the rows)
    data.json             the same data, for scripts
    app.js, style.css     copied from leaderboard/
    models/<slug>.html    one page per run: model, throughput, every metric with CI, provenance
    reports/<slug>.html   the run's report (plots, samples), rendered here from its results and samples
    thumbs/<key>.<ext>    the sample thumbnails, each distinct image once (runs share their images)

Slugs come from the run name and model name (sanitised), so rebuilding the site keeps every URL.
A run's own report.html is never copied: it is foreign HTML, and it would inline its thumbnails
again in every report, which is what made the site grow by about a megabyte per run.
"""

from __future__ import annotations

import datetime
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlmbench import __version__
from vlmbench.errors import UserError
from vlmbench.report.gains import controls_of, gain_of, warning_messages
from vlmbench.report.html import render_html
from vlmbench.report.metricspec import Headline, finite, flatten, flatten_ci, headline_of, ordered_metrics
from vlmbench.report.runs import Run, find_runs, unique_slugs
from vlmbench.report.templating import asset_dir, json_text, make_environment, nonce_for, script_json
from vlmbench.report.thumbnails import FolderThumbnails

STATIC_FILES: tuple[str, ...] = ("app.js", "style.css")
THUMBS_DIR = "thumbs"
# Sample-browser cap of the per-run reports (per task): the README's comparison uses 40 as well.
# A sample costs ~0.7 KB of HTML per report (question, references, answer), so ten demo runs with
# 40 per task come to ~1.3 MB of reports plus ~0.2 MB of shared thumbnails; 100 per task would need
# ~2.8 MB. `--max-samples N` raises the cap; `vlmbench report` compares runs on more samples.
SITE_MAX_SAMPLES = 40


def _task_headlines(runs: Sequence[Run]) -> list[tuple[str, Headline]]:
    order: list[tuple[str, Headline]] = []
    seen: set[str] = set()
    for run in runs:
        for task, result in run.tasks.items():
            if task not in seen:
                seen.add(task)
                order.append((task, headline_of(task, result)))
    return order


def _provenance(run: Run) -> dict[str, Any]:
    flags = [bool((r.get("data") or {}).get("synthetic")) for r in run.tasks.values()]
    kind = "synthetic" if flags and all(flags) else "mixed" if any(flags) else "real"
    sources = sorted(
        {
            str((r.get("data") or {}).get("source"))
            for r in run.tasks.values()
            if (r.get("data") or {}).get("source")
        }
    )
    return {"kind": kind, "sources": sources}


def leaderboard_row(run: Run, slug: str, tasks: Sequence[tuple[str, Headline]]) -> dict[str, Any]:
    """One row of data.json."""
    model = run.model
    res = model.get("resolution")
    resolution = str(res.get("name")) if isinstance(res, dict) and res.get("name") else str(res or "unknown")
    vt = (
        model.get("visual_tokens_per_image") if isinstance(model.get("visual_tokens_per_image"), dict) else {}
    )
    params = model.get("params") if isinstance(model.get("params"), dict) else {}
    throughput = run.results.get("throughput") if isinstance(run.results.get("throughput"), dict) else {}
    cells: dict[str, Any] = {}
    for task, _ in tasks:
        result = run.tasks.get(task)
        if result is None:
            continue
        own = headline_of(task, result)
        data = result.get("data") or {}
        ci = flatten_ci(result.get("ci95")).get(own.metric)
        cells[task] = {
            "metric": own.metric,
            "value": flatten(result["metrics"]).get(own.metric),
            "ci": list(ci) if ci else None,
            "synthetic": bool(data.get("synthetic")),
            "source": data.get("source"),
            "n": result.get("n"),
            "gains": {
                control: {"value": gain.value, "ci": list(gain.ci) if gain.ci else None}
                for control in controls_of(result)
                if (gain := gain_of(result, control, own.metric)) is not None
            },
            "warnings": warning_messages(result),
        }
    return {
        "slug": slug,
        "run_name": run.name,
        "model": run.model_name,
        "preset": model.get("preset"),
        "vision_encoder": model.get("vision_encoder"),
        "projector": model.get("projector"),
        "resolution": resolution,
        "llm": model.get("llm"),
        "visual_tokens": finite(vt.get("mean")),
        "params": finite(params.get("total")),
        "throughput": finite(throughput.get("samples_per_s")),
        "created": str(run.results.get("created") or ""),
        "trained": bool(model.get("trained")),
        "provenance": _provenance(run),
        "tasks": cells,
        "page": f"models/{slug}.html",
        "report": f"reports/{slug}.html",
    }


def leaderboard_data(runs: Sequence[Run], slugs: Sequence[str]) -> dict[str, Any]:
    """The whole data.json document."""
    tasks = _task_headlines(runs)
    rows = [leaderboard_row(run, slug, tasks) for run, slug in zip(runs, slugs, strict=True)]
    rows.sort(key=lambda r: (r["created"], r["run_name"]), reverse=True)
    gain_columns = list(dict.fromkeys(
        (task, control) for row in rows for task, cell in row["tasks"].items() for control in cell["gains"]
    ))  # fmt: skip
    return {
        "vlmbench_version": __version__,
        "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tasks": [{"name": t, "metric": h.metric, "higher_is_better": h.higher_is_better} for t, h in tasks],
        "rows": rows,
        "gain_columns": [{"task": t, "control": c} for t, c in gain_columns],
    }


def _model_page_context(run: Run, row: dict[str, Any]) -> dict[str, Any]:
    tasks = []
    for task, result in run.tasks.items():
        headline = headline_of(task, result)
        values = flatten(result["metrics"])
        cis = flatten_ci(result.get("ci95"))
        metrics = [
            {
                "name": name,
                "value": values.get(name),
                "ci": cis.get(name),
                "headline": name == headline.metric,
            }
            for name in ordered_metrics(task, result["metrics"], headline)
        ]
        tasks.append(
            {
                "name": task,
                "headline": headline,
                "metrics": metrics,
                "result": result,
                "data": result.get("data") or {},
            }
        )
    model = run.model
    return {
        "row": row,
        "run": run,
        "model": model,
        "tasks": tasks,
        "throughput": run.results.get("throughput") or {},
        "environment": run.results.get("environment") or {},
    }


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def build_leaderboard(
    paths: Sequence[Path], out: Path, *, max_samples_per_task: int = SITE_MAX_SAMPLES
) -> Path:
    """Build the static site for every run found under ``paths`` into ``out``; returns index.html."""
    runs = find_runs(paths)
    if not runs:
        raise UserError("no runs found; pass run directories or folders that contain them")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    for run in runs:
        if out.resolve() == run.dir.resolve():
            raise UserError(f"--out {out} is a run directory; choose a separate folder for the site")
    (out / "models").mkdir(parents=True, exist_ok=True)
    (out / "reports").mkdir(parents=True, exist_ok=True)
    slugs = unique_slugs(runs)
    thumbs = FolderThumbnails(out / THUMBS_DIR, f"../{THUMBS_DIR}/")
    for run, slug in zip(runs, slugs, strict=True):
        page = render_html([run], max_samples_per_task=max_samples_per_task, thumbs=thumbs)
        _write(out / "reports" / f"{slug}.html", page)
    thumbs.prune()
    data = leaderboard_data(runs, slugs)
    assets = asset_dir("leaderboard")
    env = make_environment(assets)
    for name in STATIC_FILES:
        shutil.copyfile(assets / name, out / name)
    _write(out / "data.json", json_text(data) + "\n")
    index_nonce = nonce_for(str(script_json(data)))
    _write(out / "index.html", env.get_template("index.html.j2").render(data=data, nonce=index_nonce))
    by_slug = {row["slug"]: row for row in data["rows"]}
    page = env.get_template("model.html.j2")
    for run, slug in zip(runs, slugs, strict=True):
        _write(
            out / "models" / f"{slug}.html",
            page.render(**_model_page_context(run, by_slug[slug]), version=__version__),
        )
    return out / "index.html"
