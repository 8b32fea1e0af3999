"""Visual gains and degenerate-answer warnings as results.json records them, for the report and the
leaderboard (layout: docs/design.md, "results.json"), and the small SVG forest plot of the gains.

results.json is untrusted: every value read here is checked for its type, and every label that goes
into the SVG is escaped by `svg.el`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

from vlmbench.report import svg
from vlmbench.report.metricspec import finite, flatten, flatten_ci


@dataclass(frozen=True)
class Gain:
    """One visual gain: metric(real) - metric(control), with its paired 95% interval."""

    value: float
    ci: tuple[float, float] | None


def controls_of(result: Mapping[str, Any]) -> list[str]:
    """The controls a task result holds (``tasks.<task>.controls``), in recorded order."""
    controls = result.get("controls")
    return [str(c) for c, e in controls.items() if isinstance(e, Mapping)] if isinstance(controls, Mapping) else []


def gain_of(result: Mapping[str, Any], control: str, metric: str) -> Gain | None:
    """The recorded gain of ``metric`` under ``control``; None when the run has none."""
    entry = (result.get("controls") or {}).get(control) if isinstance(result.get("controls"), Mapping) else None
    if not isinstance(entry, Mapping) or not isinstance(entry.get("visual_gain"), Mapping):
        return None
    value = finite(flatten(entry["visual_gain"]).get(metric))
    if value is None:
        return None
    return Gain(value, flatten_ci(entry.get("visual_gain_ci95")).get(metric))


def warning_messages(result: Mapping[str, Any]) -> list[str]:
    """The degenerate-answer warnings of a task result, as text."""
    warnings = result.get("warnings")
    if not isinstance(warnings, list):
        return []
    return [str(w["message"]) for w in warnings if isinstance(w, Mapping) and isinstance(w.get("message"), str)]


@dataclass(frozen=True)
class ForestRow:
    label: str
    color: str
    gain: Gain


def forest(rows: Sequence[ForestRow], *, title: str, x_label: str, width: int = 420) -> Markup:
    """Each gain as a dot with its interval as a whisker, around a dashed zero line."""
    top, left, right, step = 36, 150, 16, 22
    height = top + step * max(len(rows), 1) + 34
    values = [v for r in rows for v in (r.gain.value, *(r.gain.ci or ())) if math.isfinite(v)]
    span = max([0.1, *(abs(v) for v in values)])
    lo, hi = -span * 1.1, span * 1.1
    pw = width - left - right

    def px(v: float) -> float:
        return left + (v - lo) / (hi - lo) * pw

    parts = [
        svg.el("title", text=title),
        svg.el("text", {"x": 8, "y": 18, "font_size": 13, "font_weight": 600, "fill": "#111827"}, text=title),
        svg.el("line", {"x1": px(0.0), "x2": px(0.0), "y1": top - 6, "y2": height - 30, "stroke": "#6b7280",
                        "stroke_dasharray": "4 3"}),
        svg.el("text", {"x": left + pw / 2, "y": height - 8, "text_anchor": "middle", "font_size": 10,
                        "fill": "#4b5563"}, text=x_label),
    ]  # fmt: skip
    for tick in (lo / 1.1, 0.0, hi / 1.1):
        parts.append(svg.el("text", {"x": px(tick), "y": height - 20, "text_anchor": "middle", "font_size": 10,
                                     "fill": "#4b5563"}, text=f"{tick:+.2f}"))  # fmt: skip
    for i, row in enumerate(rows):
        y = top + step * i + step / 2
        label = row.label if len(row.label) <= 24 else row.label[:23] + "…"
        parts.append(svg.el("text", {"x": left - 8, "y": y + 4, "text_anchor": "end", "font_size": 11,
                                     "fill": "#374151"}, text=label))  # fmt: skip
        if row.gain.ci is not None:
            parts.append(svg.el("line", {"x1": px(row.gain.ci[0]), "x2": px(row.gain.ci[1]), "y1": y, "y2": y,
                                         "stroke": row.color, "stroke_width": 2}))  # fmt: skip
        interval = "" if row.gain.ci is None else f" [{row.gain.ci[0]:+.3f}, {row.gain.ci[1]:+.3f}]"
        parts.append(svg.el("circle", {"cx": px(row.gain.value), "cy": y, "r": 4, "fill": row.color},
                            svg.el("title", text=f"{row.label}: {row.gain.value:+.3f}{interval}")))  # fmt: skip
    body = "".join(parts)
    return Markup(  # noqa: S704 - built only from escaped pieces
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" class="chart">{body}</svg>'
    )
