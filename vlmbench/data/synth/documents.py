"""Synthetic DocVQA: form- and receipt-like pages with key–value fields at several font sizes.

Each page is white, carries a title, 3–6 fields such as ``TOTAL: 4821`` or ``NAME: ALVAREZ``, rules and
boxes, and (receipts) a few distractor item lines. Every page has at least one SMALL field
(font size <= `SMALL_FONT_PX`, capitals 7–9 px high): legible at full resolution or from a 64-px tile of
the page, illegible once the whole page is squeezed to 64×64. Each page gets 1–2 questions about its
fields; the `font_px` column records the font size of the answered field so that analyses can split
small from large text, and `answer_bbox` its ink box ``[x0, y0, x1, y1]`` in page pixels.

Columns: the lmms-lab DocVQA release's (questionId, question, answers, image, docId, question_types)
plus font_px and answer_bbox.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from vlmbench.data.synth.common import png_bytes, write_release
from vlmbench.data.synth.text_render import (
    NAMES,
    WORDS,
    FontBook,
    TextRun,
    choice,
    draw_text,
    random_code,
    random_number,
    sample_distinct,
    with_thousands,
)

GENERATOR = "vlmbench.data.synth.documents"
SMALL_FONT_PX = 12
"""Fields drawn at this font size (pixels per em) or below count as small text."""
SMALL_SIZES: tuple[int, ...] = (10, 11, 12)
LARGE_SIZES: tuple[int, ...] = (15, 16, 18, 20)
TITLE_SIZES: tuple[int, ...] = (20, 22, 24)
MARGIN = 10
INK = (0, 0, 0)
RULE = (90, 90, 90)


@dataclass(frozen=True)
class FieldKind:
    """A kind of key–value field: its printed key, the question about it and how values are drawn."""

    key: str
    question: str
    make_value: Callable[[np.random.Generator], str]
    make_answers: Callable[[str], list[str]]


@dataclass(frozen=True)
class Field:
    """One field as rendered on a page."""

    key: str
    value: str
    question: str
    answers: tuple[str, ...]
    font_px: int
    bbox: tuple[int, int, int, int]


@dataclass(frozen=True)
class Page:
    """A rendered page and the fields drawn on it (in reading order)."""

    image: Image.Image
    style: str
    title: str
    fields: tuple[Field, ...]
    runs: tuple[TextRun, ...] = ()
    """Every piece of text drawn (title, keys, values, item lines, footer), for glyph annotations."""


def _date(rng: np.random.Generator) -> str:
    return f"{int(rng.integers(1, 29)):02d}/{int(rng.integers(1, 13)):02d}"


def _same(value: str) -> list[str]:
    return [value]


def _number_variants(value: str) -> list[str]:
    return list(dict.fromkeys([value, with_thousands(value)]))


def _word_variants(value: str) -> list[str]:
    return list(dict.fromkeys([value, value.title()]))


FIELD_KINDS: tuple[FieldKind, ...] = (
    FieldKind("TOTAL", "What is the total?", lambda rng: random_number(rng, 2, 4), _number_variants),
    FieldKind("DATE", "What is the date?", _date, _same),
    FieldKind("NAME", "What is the name?", lambda rng: choice(rng, NAMES), _word_variants),
    FieldKind("ITEM COUNT", "What is the item count?", lambda rng: str(int(rng.integers(1, 20))), _same),
    FieldKind("INVOICE NO", "What is the invoice number?", lambda rng: random_number(rng, 4, 4), _same),
    FieldKind("TAX", "What is the tax?", lambda rng: random_number(rng, 2, 3), _same),
    FieldKind("REF", "What is the reference code?", lambda rng: random_code(rng, 2, 2), _word_variants),
    FieldKind("STORE", "What is the store name?", lambda rng: choice(rng, WORDS), _word_variants),
)

FORM_TITLES: tuple[str, ...] = ("INVOICE", "ORDER FORM", "APPLICATION", "REGISTRATION", "STATEMENT")
RECEIPT_TITLES: tuple[str, ...] = ("RECEIPT", "SALES SLIP", "CASH BILL", "TICKET")
QUESTION_TYPES = {"form": ["form"], "receipt": ["table/list"]}


def _fit_size(fonts: FontBook, text: str, size: int, max_width: int) -> int:
    """The largest font size <= `size` at which `text` fits in `max_width` (never below 8)."""
    while size > 8 and fonts.text_width(text, size) > max_width:
        size -= 1
    return size


def _dashed_rule(draw: ImageDraw.ImageDraw, y: int, x0: int, x1: int) -> None:
    for x in range(x0, x1, 6):
        draw.line([(x, y), (min(x + 3, x1), y)], fill=RULE, width=1)


def render_page(
    rng: np.random.Generator, width: int = 256, height: int = 320, fonts: FontBook | None = None
) -> Page:
    """Draw one form- or receipt-like page; the returned `Page` lists every field drawn on it."""
    fonts = fonts or FontBook()
    runs: list[TextRun] = []

    def write(xy: tuple[int, int], text: str, size: int, fill: tuple[int, int, int]) -> tuple[int, int, int, int]:
        runs.append(TextRun(text, xy, size))
        return draw_text(draw, xy, text, fonts, size, fill)

    style = "form" if rng.random() < 0.5 else "receipt"
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    inner = width - 2 * MARGIN

    # Title, centred, underlined.
    title = choice(rng, FORM_TITLES if style == "form" else RECEIPT_TITLES)
    title_size = _fit_size(fonts, title, int(rng.choice(TITLE_SIZES)), inner)
    title_w = fonts.text_width(title, title_size)
    write(((width - title_w) // 2, MARGIN), title, title_size, INK)
    y = MARGIN + title_size + 6
    draw.line([(MARGIN, y), (width - MARGIN, y)], fill=INK, width=2 if style == "form" else 1)
    y += 8

    # Distractor item lines (receipts): small "WORD  NN" rows.
    if style == "receipt":
        for word in sample_distinct(rng, WORDS, int(rng.integers(1, 4))):
            size = int(rng.choice(SMALL_SIZES))
            write((MARGIN + 2, y), word, size, INK)
            price = random_number(rng, 1, 3)
            write((width - MARGIN - 2 - fonts.text_width(price, size), y), price, size, INK)
            y += size + 5
        _dashed_rule(draw, y, MARGIN, width - MARGIN)
        y += 6

    # Fields: plan them first (at least one small and one large), drop large ones that do not fit,
    # then spread the spare height over random gaps so fields land at varied positions.
    n_fields = int(rng.integers(3, 7))
    kinds = [FIELD_KINDS[int(i)] for i in rng.choice(len(FIELD_KINDS), size=n_fields, replace=False)]
    small = rng.random(n_fields) < 0.45
    small[int(rng.integers(n_fields))] = True
    if small.all():
        small[int(rng.integers(n_fields))] = False
    pad = 8 if style == "form" else 4
    planned: list[tuple[FieldKind, str, int]] = []
    for kind, is_small in zip(kinds, small, strict=True):
        value = kind.make_value(rng)
        size = int(rng.choice(SMALL_SIZES if is_small else LARGE_SIZES))
        gap = 2 * fonts.text_width(" ", size)
        planned.append((kind, value, _fit_size(fonts, f"{kind.key}: {value}", size, inner - 12 - gap)))
    bottom = height - MARGIN - max(SMALL_SIZES) - 8  # room kept for the footer
    min_gap = 3

    def needed(rows: list[tuple[FieldKind, str, int]]) -> int:
        return sum(size + pad + min_gap for _, _, size in rows)

    while len(planned) > 1 and y + needed(planned) > bottom:
        largest = max(range(len(planned)), key=lambda i: (planned[i][2], i))
        planned.pop(largest)
    if y + needed(planned) > bottom:
        raise ValueError(f"a {width}x{height} page is too small for even one field; use a larger page")
    slack = bottom - y - needed(planned)
    shares = rng.dirichlet(np.ones(len(planned) + 1)) * slack * float(rng.uniform(0.2, 0.8))
    gaps = [min_gap + int(share) for share in shares]
    y += gaps[-1] // 2
    fields: list[Field] = []
    value_column = MARGIN + 6 + int(rng.integers(70, 110))
    for (kind, value, size), gap_after in zip(planned, gaps, strict=False):
        label = f"{kind.key}:"
        row_h = size + pad
        text_y = y + pad // 2
        write((MARGIN + 6, text_y), label, size, INK)
        label_end = MARGIN + 6 + fonts.text_width(label, size) + 2 * fonts.text_width(" ", size)
        value_w = fonts.text_width(value, size)
        if style == "form":
            x = max(label_end, value_column) if rng.random() < 0.5 else label_end
            x = min(x, width - MARGIN - 6 - value_w)
            draw.rectangle([MARGIN, y, width - MARGIN, y + row_h], outline=RULE, width=1)
        else:
            x = width - MARGIN - 6 - value_w
        bbox = write((x, text_y), value, size, INK)
        fields.append(Field(kind.key, value, kind.question, tuple(kind.make_answers(value)), size, bbox))
        y += row_h + gap_after

    # Footer: a small line of boilerplate.
    footer = "THANK YOU" if style == "receipt" else "SIGNATURE ________"
    write((MARGIN + 2, height - MARGIN - max(SMALL_SIZES)), footer, min(SMALL_SIZES), RULE)
    if style == "form":
        draw.rectangle([2, 2, width - 3, height - 3], outline=RULE, width=1)
    return Page(image=image, style=style, title=title, fields=tuple(fields), runs=tuple(runs))


def generate_docvqa(out: Path, seed: int, n: int, width: int = 256, height: int = 320) -> Path:
    """Write `n` DocVQA-style questions (1–2 per page) to `out` and return the parquet path."""
    rng = np.random.default_rng(seed)
    fonts = FontBook()
    rows: list[dict[str, Any]] = []
    doc_id = 0
    while len(rows) < n:
        page = render_page(rng, width, height, fonts)
        wanted = min(int(rng.integers(1, 3)), n - len(rows), len(page.fields))
        image = png_bytes(page.image)
        for index in rng.choice(len(page.fields), size=wanted, replace=False):
            field = page.fields[int(index)]
            rows.append(
                {
                    "questionId": str(len(rows)),
                    "question": field.question,
                    "question_types": list(QUESTION_TYPES[page.style]),
                    "docId": doc_id,
                    "answers": list(field.answers),
                    "image": image,
                    "font_px": field.font_px,
                    "answer_bbox": list(field.bbox),
                }
            )
        doc_id += 1
    return write_release(
        out,
        rows,
        task="docvqa",
        generator=GENERATOR,
        seed=seed,
        extra_meta={"width": width, "height": height, "small_font_px": SMALL_FONT_PX},
    )
