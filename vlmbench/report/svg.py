"""Hand-written inline SVG charts: scatter with Pareto front, grouped bars with markers.

Every text and attribute value goes through :func:`html.escape`, so labels taken from results
files (model names, run names) cannot inject markup; the returned strings are therefore safe to
embed as ``Markup``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup

PALETTE: tuple[str, ...] = (
    "#2563eb",
    "#dc2626",
    "#059669",
    "#9333ea",
    "#ea580c",
    "#0891b2",
    "#ca8a04",
    "#db2777",
    "#4b5563",
    "#65a30d",
)

_FONT = "font-family:system-ui,-apple-system,'Segoe UI',sans-serif"
_MARGIN = {"left": 52, "right": 16, "top": 40, "bottom": 44}


def color(index: int) -> str:
    """The colour of the run at ``index`` (cycled)."""
    return PALETTE[index % len(PALETTE)]


def _fmt(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)


def el(tag: str, attrs: dict[str, object] | None = None, *children: str, text: str | None = None) -> str:
    """``<tag a="v">children</tag>`` with every attribute value and ``text`` escaped."""
    parts = [tag]
    for key, value in (attrs or {}).items():
        if value is None:
            continue
        value = _fmt(value) if isinstance(value, float) else value
        parts.append(f'{key.rstrip("_").replace("_", "-")}="{html.escape(str(value), quote=True)}"')
    body = "".join(children) + (html.escape(text) if text is not None else "")
    return f"<{' '.join(parts)}>{body}</{tag}>"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low]
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start = math.floor(low / step + 1e-9) * step
    ticks = []
    value = start
    while value <= high + step * 1e-6:
        if value >= low - step * 1e-6:
            ticks.append(round(value, 10))
        value += step
    return ticks


def _padded_range(values: Sequence[float], clamp: tuple[float, float] | None) -> tuple[float, float]:
    low, high = min(values), max(values)
    span = high - low
    pad = span * 0.12 if span > 0 else max(abs(high) * 0.1, 0.05)
    low, high = low - pad, high + pad
    if clamp is not None:
        low, high = max(low, clamp[0]), min(high, clamp[1])
    return low, high


def pareto_front(
    xs: Sequence[float], ys: Sequence[float], x_higher_better: bool, y_higher_better: bool
) -> list[int]:
    """Indices of the points no other point dominates, sorted by x."""
    sx = [x if x_higher_better else -x for x in xs]
    sy = [y if y_higher_better else -y for y in ys]
    front = []
    for i in range(len(xs)):
        dominated = any(
            sx[j] >= sx[i] and sy[j] >= sy[i] and (sx[j] > sx[i] or sy[j] > sy[i])
            for j in range(len(xs))
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (xs[i], ys[i]))


@dataclass(frozen=True)
class ScatterPoint:
    label: str
    x: float
    y: float
    color: str


def _svg(width: int, height: int, title: str, *children: str) -> Markup:
    body = el("title", text=title) + "".join(children)
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{html.escape(title, quote=True)}" class="chart" style="{_FONT}">{body}</svg>'
    )
    return Markup(svg)  # noqa: S704 - built only from escaped pieces


def _short(label: str, limit: int = 22) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"


def scatter(
    points: Sequence[ScatterPoint],
    *,
    title: str,
    x_label: str,
    y_label: str,
    x_higher_better: bool,
    y_higher_better: bool,
    y_clamp: tuple[float, float] | None = (0.0, 1.0),
    width: int = 400,
    height: int = 270,
) -> Markup:
    """A scatter plot with the Pareto front (dashed) over the points; log x when x spans > 20x."""
    pts = [p for p in points if math.isfinite(p.x) and math.isfinite(p.y)]
    m = _MARGIN
    pw, ph = width - m["left"] - m["right"], height - m["top"] - m["bottom"]
    parts: list[str] = [
        el(
            "text",
            {"x": m["left"], "y": 18, "font_size": 13, "font_weight": 600, "fill": "#111827"},
            text=title,
        )
    ]
    if not pts:
        parts.append(
            el(
                "text",
                {
                    "x": width / 2,
                    "y": height / 2,
                    "text_anchor": "middle",
                    "fill": "#6b7280",
                    "font_size": 12,
                },
                text="no data",
            )
        )
        return _svg(width, height, title, *parts)
    xs, ys = [p.x for p in pts], [p.y for p in pts]
    log_x = min(xs) > 0 and max(xs) / min(xs) > 20
    tx = [math.log10(x) for x in xs] if log_x else xs
    x_lo, x_hi = _padded_range(tx, None)
    if not log_x and min(xs) >= 0:  # token counts and throughput: the axis starts at zero
        x_lo, x_hi = 0.0, max(x_hi, max(xs) * 1.1)
    y_lo, y_hi = _padded_range(ys, y_clamp)

    def px(v: float) -> float:
        t = math.log10(v) if log_x else v
        return m["left"] + (t - x_lo) / (x_hi - x_lo) * pw

    def py(v: float) -> float:
        return m["top"] + ph - (v - y_lo) / (y_hi - y_lo) * ph

    grid: list[str] = []
    for t in nice_ticks(y_lo, y_hi, 5):
        y = py(t)
        grid.append(
            el("line", {"x1": m["left"], "x2": m["left"] + pw, "y1": y, "y2": y, "stroke": "#e5e7eb"})
        )
        grid.append(
            el(
                "text",
                {"x": m["left"] - 6, "y": y + 4, "text_anchor": "end", "font_size": 10, "fill": "#4b5563"},
                text=f"{t:.2f}",
            )
        )
    if log_x:
        x_ticks = [10**k for k in range(math.floor(x_lo), math.ceil(x_hi) + 1) if x_lo <= k <= x_hi]
        x_ticks = x_ticks or [10 ** round((x_lo + x_hi) / 2)]
    else:
        x_ticks = nice_ticks(x_lo, x_hi, 5)
    for t in x_ticks:
        x = px(t)
        grid.append(el("line", {"x1": x, "x2": x, "y1": m["top"], "y2": m["top"] + ph, "stroke": "#f3f4f6"}))
        grid.append(
            el(
                "text",
                {
                    "x": x,
                    "y": m["top"] + ph + 14,
                    "text_anchor": "middle",
                    "font_size": 10,
                    "fill": "#4b5563",
                },
                text=f"{t:g}",
            )
        )
    parts.extend(grid)
    parts.append(
        el(
            "rect",
            {"x": m["left"], "y": m["top"], "width": pw, "height": ph, "fill": "none", "stroke": "#9ca3af"},
        )
    )
    parts.append(
        el(
            "text",
            {
                "x": m["left"] + pw / 2,
                "y": height - 8,
                "text_anchor": "middle",
                "font_size": 11,
                "fill": "#374151",
            },
            text=x_label + (" (log scale)" if log_x else ""),
        )
    )
    parts.append(_y_axis_label(m, ph, y_label))
    front = pareto_front(xs, ys, x_higher_better, y_higher_better)
    if len(front) > 1:
        coords = " ".join(f"{px(xs[i]):.1f},{py(ys[i]):.1f}" for i in front)
        parts.append(
            el(
                "polyline",
                {
                    "points": coords,
                    "fill": "none",
                    "stroke": "#111827",
                    "stroke_width": 1.2,
                    "stroke_dasharray": "4 3",
                    "class": "pareto",
                },
            )
        )
    on_front = set(front)
    for i, p in enumerate(pts):
        cx, cy = px(p.x), py(p.y)
        if i in on_front:
            parts.append(
                el(
                    "circle",
                    {"cx": cx, "cy": cy, "r": 8, "fill": "none", "stroke": "#111827", "stroke_width": 1},
                )
            )
        parts.append(
            el(
                "circle",
                {"cx": cx, "cy": cy, "r": 5, "fill": p.color, "stroke": "#fff"},
                el("title", text=f"{p.label}: {y_label} {p.y:.3f}, {x_label} {p.x:g}"),
            )
        )
        anchor = "end" if cx > m["left"] + pw * 0.7 else "start"
        dx = -10 if anchor == "end" else 10
        parts.append(
            el(
                "text",
                {"x": cx + dx, "y": cy - 7, "text_anchor": anchor, "font_size": 10, "fill": "#1f2937"},
                text=_short(p.label),
            )
        )
    legend_x = m["left"] + pw - 86
    parts.append(
        el(
            "line",
            {
                "x1": legend_x,
                "x2": legend_x + 18,
                "y1": 30,
                "y2": 30,
                "stroke": "#111827",
                "stroke_dasharray": "4 3",
            },
        )
    )
    parts.append(
        el("text", {"x": legend_x + 22, "y": 33, "font_size": 10, "fill": "#374151"}, text="Pareto front")
    )
    return _svg(width, height, title, *parts)


@dataclass(frozen=True)
class BarSeries:
    label: str
    color: str
    values: Sequence[float | None]
    markers: Sequence[float | None] | None = None


def grouped_bars(
    groups: Sequence[str],
    series: Sequence[BarSeries],
    *,
    title: str,
    y_label: str,
    marker_label: str | None = None,
    reference: tuple[float, str] | None = None,
    y_max: float = 1.0,
    width: int = 420,
    height: int = 270,
) -> Markup:
    """Bars for each series within each group; optional diamond markers and a dashed reference line."""
    m = {**_MARGIN, "bottom": 62}
    pw, ph = width - m["left"] - m["right"], height - m["top"] - m["bottom"]
    parts = [
        el(
            "text",
            {"x": m["left"], "y": 18, "font_size": 13, "font_weight": 600, "fill": "#111827"},
            text=title,
        )
    ]

    def py(v: float) -> float:
        return m["top"] + ph - max(0.0, min(v, y_max)) / y_max * ph

    for t in nice_ticks(0.0, y_max, 5):
        y = py(t)
        parts.append(
            el("line", {"x1": m["left"], "x2": m["left"] + pw, "y1": y, "y2": y, "stroke": "#e5e7eb"})
        )
        parts.append(
            el(
                "text",
                {"x": m["left"] - 6, "y": y + 4, "text_anchor": "end", "font_size": 10, "fill": "#4b5563"},
                text=f"{t:.2f}",
            )
        )
    parts.append(_y_axis_label(m, ph, y_label))
    n_groups, n_series = max(len(groups), 1), max(len(series), 1)
    group_w = pw / n_groups
    bar_w = min(28.0, group_w * 0.8 / n_series)
    for g, group in enumerate(groups):
        gx = m["left"] + g * group_w + (group_w - bar_w * n_series) / 2
        for s, ser in enumerate(series):
            value = ser.values[g] if g < len(ser.values) else None
            x = gx + s * bar_w
            if value is not None and math.isfinite(value):
                top = py(value)
                parts.append(
                    el(
                        "rect",
                        {
                            "x": x + 1,
                            "y": top,
                            "width": bar_w - 2,
                            "height": m["top"] + ph - top,
                            "fill": ser.color,
                            "rx": 1.5,
                        },
                        el("title", text=f"{ser.label} · {group}: {value:.3f}"),
                    )
                )
            marker = ser.markers[g] if ser.markers is not None and g < len(ser.markers) else None
            if marker is not None and math.isfinite(marker):
                cx, cy = x + bar_w / 2, py(marker)
                diamond = (
                    f"{cx:.1f},{cy - 5:.1f} {cx + 5:.1f},{cy:.1f} {cx:.1f},{cy + 5:.1f} {cx - 5:.1f},{cy:.1f}"
                )
                parts.append(
                    el(
                        "polygon",
                        {"points": diamond, "fill": "#fff", "stroke": "#111827", "stroke_width": 1.3},
                        el("title", text=f"{ser.label} · {group}: {marker_label or 'marker'} {marker:.3f}"),
                    )
                )
        parts.append(
            el(
                "text",
                {
                    "x": m["left"] + (g + 0.5) * group_w,
                    "y": m["top"] + ph + 15,
                    "text_anchor": "middle",
                    "font_size": 11,
                    "fill": "#1f2937",
                },
                text=group,
            )
        )
    if reference is not None:
        y = py(reference[0])
        parts.append(
            el(
                "line",
                {
                    "x1": m["left"],
                    "x2": m["left"] + pw,
                    "y1": y,
                    "y2": y,
                    "stroke": "#6b7280",
                    "stroke_dasharray": "5 3",
                },
            )
        )
    parts.append(
        el(
            "line",
            {
                "x1": m["left"],
                "x2": m["left"] + pw,
                "y1": m["top"] + ph,
                "y2": m["top"] + ph,
                "stroke": "#9ca3af",
            },
        )
    )
    # Legend: one row under the axis, wrapping is avoided by truncating labels.
    lx, ly = m["left"], height - 22
    items: list[tuple[str, str]] = [(ser.color, _short(ser.label, 18)) for ser in series]
    for swatch, label in items:
        parts.append(el("rect", {"x": lx, "y": ly - 8, "width": 10, "height": 10, "fill": swatch, "rx": 2}))
        parts.append(el("text", {"x": lx + 14, "y": ly + 1, "font_size": 10, "fill": "#374151"}, text=label))
        lx += 22 + 6 * len(label)
        if lx > width - 90:
            lx, ly = m["left"], ly + 14
    if marker_label:
        parts.append(
            el(
                "text",
                {"x": width - m["right"], "y": 32, "text_anchor": "end", "font_size": 10, "fill": "#374151"},
                text=f"◇ {marker_label}" + (f"   ┄ {reference[1]}" if reference else ""),
            )
        )
    return _svg(width, height, title, *parts)


def _y_axis_label(m: dict, ph: float, label: str) -> str:
    """The rotated y-axis title, centred on the plot area's height."""
    return el(
        "text",
        {
            "x": 12,
            "y": m["top"] + ph / 2,
            "text_anchor": "middle",
            "font_size": 11,
            "fill": "#374151",
            "transform": f"rotate(-90 12 {m['top'] + ph / 2:.1f})",
        },
        text=label,
    )
