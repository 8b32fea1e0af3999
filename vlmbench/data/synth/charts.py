"""Synthetic ChartQA: small vertical bar charts with labelled categories and ChartQA-style questions.

A chart (160×128 by default) has 3–5 bars with distinct integer values 1–99, short category labels
from the shared vocabulary, a labelled y axis (0..50 or 0..100) with light grid lines, and, on about
60% of charts, the values printed above the bars. Each chart gets 1–2 questions: the value of a bar, the
difference or sum of two bars, or the category with the highest / lowest value.

Columns follow the lmms-lab ChartQA release (type, question, answer, image) plus question_id and
values_shown (whether the bar values are printed, i.e. whether the question can be answered by reading
rather than estimating).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from vlmbench.data.synth.common import png_bytes, write_release
from vlmbench.data.synth.text_render import SHORT_WORDS, FontBook, draw_text, sample_distinct

GENERATOR = "vlmbench.data.synth.charts"
SPLIT_TYPE = "augmented_test"
TICK_PX = 9
LABEL_PX = 9
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (23, 190, 207),
)


@dataclass(frozen=True)
class Chart:
    """A rendered bar chart and the data drawn in it."""

    image: Image.Image
    labels: tuple[str, ...]
    values: tuple[int, ...]
    values_shown: bool


def render_chart(rng: np.random.Generator, fonts: FontBook, width: int = 160, height: int = 128) -> Chart:
    """Draw a bar chart with 3–5 bars of distinct values; return it with its data."""
    n_bars = int(rng.integers(3, 6))
    left = fonts.text_width("100", TICK_PX) + 6
    right = width - 3
    top = 12
    bottom = height - LABEL_PX - 6
    plot_h = bottom - top
    slot = (right - left) / n_bars
    # Only labels that fit their slot with room to spare, so neighbouring labels never touch.
    fitting = [word for word in SHORT_WORDS if fonts.text_width(word, LABEL_PX) <= slot - 3]
    if len(fitting) < n_bars:
        raise ValueError(f"a {width}x{height} chart is too narrow for {n_bars} labelled bars")
    labels = tuple(sample_distinct(rng, fitting, n_bars))
    values = tuple(int(v) + 1 for v in rng.choice(99, size=n_bars, replace=False))
    values_shown = bool(rng.random() < 0.6)
    axis_max, step = (50, 10) if max(values) <= 50 else (100, 25)

    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)

    def y_of(value: float) -> int:
        return int(round(bottom - value / axis_max * plot_h))

    for tick in range(0, axis_max + 1, step):
        y = y_of(tick)
        if tick:
            draw.line([(left + 1, y), (right, y)], fill=(225, 225, 225))
        draw.line([(left - 2, y), (left, y)], fill=(0, 0, 0))
        tx0, ty0, tx1, ty1 = fonts.text_box(str(tick), TICK_PX)
        draw_text(draw, (left - 3 - tx1, y - (ty0 + ty1) // 2), str(tick), fonts, TICK_PX, (60, 60, 60))
    draw.line([(left, top), (left, bottom)], fill=(0, 0, 0))
    draw.line([(left, bottom), (right, bottom)], fill=(0, 0, 0))

    bar_w = max(6, int(slot * float(rng.uniform(0.5, 0.7))))
    single = bool(rng.random() < 0.5)
    colours = [PALETTE[int(i)] for i in rng.choice(len(PALETTE), size=n_bars, replace=False)]
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        centre = left + slot * (i + 0.5)
        x0 = int(round(centre - bar_w / 2))
        draw.rectangle([x0, y_of(value), x0 + bar_w - 1, bottom - 1], fill=colours[0 if single else i])
        lw = fonts.text_width(label, LABEL_PX)
        draw_text(draw, (int(round(centre - lw / 2)), bottom + 3), label, fonts, LABEL_PX, (0, 0, 0))
        if values_shown:
            text = str(value)
            vx0, vy0, vx1, vy1 = fonts.text_box(text, TICK_PX)
            draw_text(
                draw,
                (int(round(centre - (vx0 + vx1) / 2)), y_of(value) - 2 - vy1),
                text,
                fonts,
                TICK_PX,
                (0, 0, 0),
            )
    return Chart(image=image, labels=labels, values=values, values_shown=values_shown)


def make_question(rng: np.random.Generator, chart: Chart, kind: str) -> tuple[str, str]:
    """A (question, answer) pair of the given kind about `chart`."""
    i, j = (int(k) for k in rng.choice(len(chart.labels), size=2, replace=False))
    a, b = chart.labels[i], chart.labels[j]
    va, vb = chart.values[i], chart.values[j]
    if kind == "value":
        return f"What is the value of {a}?", str(va)
    if kind == "difference":
        return f"What is the difference between {a} and {b}?", str(abs(va - vb))
    if kind == "sum":
        return f"What is the sum of {a} and {b}?", str(va + vb)
    if kind == "highest":
        return "Which category has the highest value?", chart.labels[int(np.argmax(chart.values))]
    if kind == "lowest":
        return "Which category has the lowest value?", chart.labels[int(np.argmin(chart.values))]
    raise ValueError(f"unknown chart question kind {kind!r}")


QUESTION_KINDS: tuple[str, ...] = ("value", "difference", "sum", "highest", "lowest")
KIND_WEIGHTS: tuple[float, ...] = (0.4, 0.15, 0.15, 0.2, 0.1)


def generate_chartqa(out: Path, seed: int, n: int, width: int = 160, height: int = 128) -> Path:
    """Write `n` ChartQA-style questions (1–2 per chart) to `out` and return the parquet path."""
    rng = np.random.default_rng(seed)
    fonts = FontBook()
    rows: list[dict[str, Any]] = []
    while len(rows) < n:
        chart = render_chart(rng, fonts, width, height)
        image = png_bytes(chart.image)
        wanted = min(int(rng.integers(1, 3)), n - len(rows))
        kinds = rng.choice(len(QUESTION_KINDS), size=wanted, replace=False, p=KIND_WEIGHTS)
        for k in kinds:
            question, answer = make_question(rng, chart, QUESTION_KINDS[int(k)])
            rows.append(
                {
                    "question_id": str(len(rows)),
                    "type": SPLIT_TYPE,
                    "question": question,
                    "answer": answer,
                    "image": image,
                    "values_shown": chart.values_shown,
                }
            )
    return write_release(out, rows, task="chartqa", generator=GENERATOR, seed=seed)
