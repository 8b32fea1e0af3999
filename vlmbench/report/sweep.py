"""The report of a `vlmbench sweep`: accuracy against visual tokens against prefill time.

Per task: the headline of every grid point against the mean visual tokens the LLM saw and against
the mean prefill time per sample (two scatter plots with their Pareto fronts), and a table with
each point's paired comparison with the uncompressed run (`none`) — bootstrap CI of the headline
delta, McNemar where the headline is a mean of right/wrong outcomes (report/paired.py) — and the
question the compression literature asks: does a method beat the random-subset and downsampling
baselines at an equal token count? A baseline counts as equal when its mean token count is within
`EQUAL_TOKENS` (relative) of the method's; the verdict is the paired test at p < 0.05.

Everything from results.json or the sample files is escaped; the page is self-contained.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from markupsafe import Markup, escape

from vlmbench.errors import UserError
from vlmbench.report.metricspec import Headline, flatten, headline_of
from vlmbench.report.paired import MetricDelta, compare_task
from vlmbench.report.runs import Run, load_run
from vlmbench.report.svg import ScatterPoint, color, pareto_front, scatter

EQUAL_TOKENS = 0.10
ALPHA = 0.05
BASELINES = ("random", "downsample")
_CSS = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#111827;max-width:1100px}"
    "table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #e5e7eb;padding:4px 8px;font-size:13px;"
    "text-align:right}th{background:#f9fafb}td:first-child,th:first-child{text-align:left}.charts{display:flex;gap:16px;"
    "flex-wrap:wrap}.note{color:#4b5563;font-size:13px}"
)


@dataclass(frozen=True)
class Point:
    """One grid point of a sweep: its canonical spec and its finished run."""

    spec: str
    run: Run

    @property
    def kind(self) -> str:
        """'none', a baseline ('random', 'downsample' alone) or 'method'."""
        names = [op.split(":")[0] for op in self.spec.split(",")]
        if self.spec == "none":
            return "none"
        return names[0] if len(names) == 1 and names[0] in BASELINES else "method"

    def compression(self, task: str) -> dict[str, Any]:
        return self.run.tasks.get(task, {}).get("compression") or {}

    def tokens(self, task: str) -> float:
        value = self.compression(task).get("llm_visual_tokens_mean")
        if value is None:  # a run without per-sample counts: the encoded tokens per image
            value = (self.run.tasks.get(task, {}).get("visual_tokens_per_image") or {}).get("mean")
        return float(value) if value is not None else math.nan

    def prefill_ms(self, task: str) -> float:
        value = self.compression(task).get("prefill_ms_mean")
        return float(value) if value is not None else math.nan

    def warnings(self, task: str) -> list[str]:
        """The run's degenerate-answer warning codes for the task (chance accuracy, yes-bias, ...)."""
        found = self.run.tasks.get(task, {}).get("warnings") or []
        return sorted({str(w.get("code", "")) for w in found if isinstance(w, dict)} - {""})

    def headline(self, task: str, headline: Headline) -> float:
        value = flatten(self.run.tasks.get(task, {}).get("metrics", {})).get(headline.metric)
        return float(value) if isinstance(value, (int, float)) else math.nan


def load_points(sweep_dir: Path) -> list[Point]:
    """The finished points of the sweep in `sweep_dir`, in grid order (UserError when there is none)."""
    path = sweep_dir / "sweep.json"
    if not path.is_file():
        raise UserError(f"{sweep_dir}: no sweep.json; pass a directory written by `vlmbench sweep`")
    grid = json.loads(path.read_text(encoding="utf-8")).get("grid") or []
    points = []
    for entry in grid:
        run_dir = sweep_dir / str(entry.get("run", ""))
        if (run_dir / "results.json").is_file() and run_dir.resolve().parent == sweep_dir.resolve():
            points.append(Point(str(entry.get("visual_tokens", "")), load_run(run_dir)))
    if not points:
        raise UserError(f"{sweep_dir}: no grid point has finished yet; run `vlmbench sweep ... --resume`")
    return points


def render_sweep_report(sweep_dir: Path, out: Path | None = None) -> Path:
    """Write the sweep's self-contained HTML page (default `<sweep_dir>/sweep.html`)."""
    points = load_points(sweep_dir)
    out = out or sweep_dir / "sweep.html"
    body = sweep_section(points)
    title = f"vlmbench sweep: {points[0].run.model_name}"
    page = (
        f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{escape(title)}</h1>{body}</body></html>\n"
    )
    out.write_text(page, encoding="utf-8")
    return out


def sweep_section(points: list[Point]) -> Markup:
    """The report section: per task, the two charts, the comparison table and the baseline verdicts."""
    base = next((p for p in points if p.spec == "none"), None)
    tasks = list(points[0].run.tasks)
    parts = [
        "<p class=\"note\">Visual tokens: mean per sample of the tokens the LLM's input held (after every operator, "
        "FastV included). Prefill: mean per sample of the time to the first answer token's logits (a batch's time "
        "shared by its samples). Δ: point − none on the same samples, paired bootstrap 95% CI; p from McNemar where "
        "the headline is a mean of right/wrong outcomes, else the bootstrap. A point with warnings (the run found "
        "chance accuracy or one-sided answers) measures answer bias more than compression.</p>"
    ]
    for task in tasks:
        headline = headline_of(task, points[0].run.tasks[task])
        parts.append(f"<h2>{escape(task)} — {escape(headline.metric)} {escape(headline.arrow)}</h2>")
        parts.append(_charts(points, task, headline))
        deltas = {p.spec: _delta(base, p, task, headline) for p in points} if base is not None else {}
        parts.append(_table(points, task, headline, deltas))
        parts.append(_verdicts(points, task, headline))
    return Markup("".join(str(p) for p in parts))  # noqa: S704 - every piece above is escaped


def _charts(points: list[Point], task: str, headline: Headline) -> str:
    def chart(x_of: Any, label: str, title: str) -> str:
        pts = [ScatterPoint(p.spec, x_of(p), p.headline(task, headline), color(i)) for i, p in enumerate(points)]
        return str(scatter(pts, title=title, x_label=label, y_label=headline.metric, x_higher_better=False,
                           y_higher_better=headline.higher_is_better, y_clamp=None))

    return (
        "<div class=\"charts\">"
        + chart(lambda p: p.tokens(task), "visual tokens per sample", f"{task}: {headline.metric} vs visual tokens")
        + chart(lambda p: p.prefill_ms(task), "prefill ms per sample", f"{task}: {headline.metric} vs prefill time")
        + "</div>"
    )


def front(points: list[Point], task: str, headline: Headline) -> set[str]:
    """Specs on the Pareto front of (fewer visual tokens, better headline)."""
    usable = [p for p in points if math.isfinite(p.tokens(task)) and math.isfinite(p.headline(task, headline))]
    index = pareto_front([p.tokens(task) for p in usable], [p.headline(task, headline) for p in usable],
                         x_higher_better=False, y_higher_better=headline.higher_is_better)
    return {usable[i].spec for i in index}


def _delta(baseline: Point, candidate: Point, task: str, headline: Headline) -> MetricDelta | None:
    if task not in baseline.run.tasks or task not in candidate.run.tasks:
        return None
    comparison = compare_task(
        task, baseline.run.tasks[task], candidate.run.tasks[task], baseline.run.samples(task), candidate.run.samples(task),
        headline, seed=int((baseline.run.results.get("config") or {}).get("seed") or 0),
    )
    return comparison.headline_delta


def _table(points: list[Point], task: str, headline: Headline, deltas: dict[str, MetricDelta | None]) -> str:
    on_front = front(points, task, headline)
    rows = ["<table><tr><th>--visual-tokens</th><th>visual tokens</th><th>prefill ms</th>"
            f"<th>{escape(headline.metric)}</th><th>Δ vs none [95% CI]</th><th>p</th><th>Pareto</th><th>warnings</th></tr>"]
    for p in points:
        d = deltas.get(p.spec)
        rows.append(
            f"<tr><td>{escape(p.spec)}</td><td>{_num(p.tokens(task), 1)}</td><td>{_num(p.prefill_ms(task), 2)}</td>"
            f"<td>{_num(p.headline(task, headline), 4)}</td><td>{_delta_text(d)}</td>"
            f"<td>{_num(d.p, 3) if d is not None and d.p is not None else '–'}</td>"
            f"<td>{'★' if p.spec in on_front else ''}</td><td>{escape(', '.join(p.warnings(task)))}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def verdicts(points: list[Point], task: str, headline: Headline) -> list[tuple[str, str, str]]:
    """(method, baseline, verdict) for every method and each baseline at an equal token count."""
    out = []
    for method in (p for p in points if p.kind == "method"):
        tokens = method.tokens(task)
        matched = [b for b in points if b.kind in BASELINES and _equal(tokens, b.tokens(task))]
        if not matched:
            out.append((method.spec, "", f"no random/downsample point within ±{EQUAL_TOKENS:.0%} of its {_num(tokens, 1)} tokens"))
        for baseline in matched:
            d = _delta(baseline, method, task, headline)
            out.append((method.spec, baseline.spec, _verdict(d, headline)))
    return out


def _verdicts(points: list[Point], task: str, headline: Headline) -> str:
    found = verdicts(points, task, headline)
    if not found:
        return "<p class=\"note\">No compression method in the grid besides the baselines.</p>"
    rows = ["<table><tr><th>method</th><th>baseline at equal tokens</th><th>verdict (paired, p &lt; 0.05)</th></tr>"]
    rows += [f"<tr><td>{escape(m)}</td><td>{escape(b) or '–'}</td><td>{escape(v)}</td></tr>" for m, b, v in found]
    rows.append("</table>")
    return "".join(rows)


def _verdict(d: MetricDelta | None, headline: Headline) -> str:
    if d is None or d.delta is None:
        return "not comparable (no matched samples)"
    better = d.delta > 0 if headline.higher_is_better else d.delta < 0
    if d.p is None or d.p >= ALPHA:
        return f"no significant difference (Δ {d.delta:+.4f}, p {_num(d.p, 3)})"
    return f"{'beats' if better else 'loses to'} the baseline (Δ {d.delta:+.4f}, p {d.p:.3f})"


def _equal(a: float, b: float) -> bool:
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= EQUAL_TOKENS * max(a, b)


def _delta_text(d: MetricDelta | None) -> str:
    if d is None or d.delta is None:
        return "–"
    ci = f" [{d.ci[0]:+.4f}, {d.ci[1]:+.4f}]" if d.ci is not None else ""
    return f"{d.delta:+.4f}{ci}"


def _num(value: float | None, digits: int) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


__all__ = ["EQUAL_TOKENS", "Point", "front", "load_points", "render_sweep_report", "sweep_section", "verdicts"]
