"""Synthetic OCR: rendered words, numbers, codes and short lines on plain, noisy or gradient backgrounds.

Images are 128×32, 160×40 or 192×48 with one line of 1–3 tokens from the shared small vocabulary,
drawn at the largest font size that fits or a little smaller. Columns follow the lmms-lab OCRBench
release (question, answer (list with the exact text), image, dataset, question_type) plus question_id
and font_px.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from vlmbench.data.synth.common import png_bytes, write_release
from vlmbench.data.synth.text_render import (
    WORDS,
    FontBook,
    add_noise,
    contrasting_colour,
    random_code,
    random_colour,
    random_number,
    sample_distinct,
    vertical_gradient,
)

GENERATOR = "vlmbench.data.synth.ocr"
QUESTION = "What is written in the image?"
QUESTION_TYPE = "Regular Text Recognition"
IMAGE_SIZES: tuple[tuple[int, int], ...] = ((128, 32), (160, 40), (192, 48))
BACKGROUNDS: tuple[str, ...] = ("plain", "noisy", "gradient", "dark")
MIN_FONT_PX = 10


def _text(rng: np.random.Generator) -> str:
    """1–3 tokens: mostly words, sometimes a 2–4 digit number or a letter code."""
    kind = rng.random()
    if kind < 0.2:
        return random_number(rng, 2, 4)
    if kind < 0.3:
        return random_code(rng, int(rng.integers(2, 4)), int(rng.integers(1, 3)))
    count = int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
    words = sample_distinct(rng, WORDS, count)
    if rng.random() < 0.2:
        words[-1] = random_number(rng, 2, 3)
    return " ".join(words) if count > 1 else words[0]


def _background(
    rng: np.random.Generator, kind: str, size: tuple[int, int]
) -> tuple[Image.Image, tuple[int, int, int]]:
    """The background image and its mean colour (to pick a contrasting ink)."""
    width, height = size
    if kind == "dark":
        colour = random_colour(rng, 0, 80)
        return Image.new("RGB", size, colour), colour
    colour = random_colour(rng, 185, 256)
    if kind == "gradient":
        other = random_colour(rng, 185, 256)
        mean = (
            (colour[0] + other[0]) // 2,
            (colour[1] + other[1]) // 2,
            (colour[2] + other[2]) // 2,
        )
        return vertical_gradient(width, height, colour, other), mean
    return Image.new("RGB", size, colour), colour


def render_text_image(rng: np.random.Generator, text: str, fonts: FontBook) -> tuple[Image.Image, int]:
    """Draw `text` on a random background; return the image and the font size used."""
    size = IMAGE_SIZES[int(rng.integers(len(IMAGE_SIZES)))]
    width, height = size
    kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    image, mean = _background(rng, kind, size)
    # Largest size whose ink fits with a 3 px margin, then maybe a little smaller.
    font_px = int(height * 0.8)
    while font_px > MIN_FONT_PX:
        x0, y0, x1, y1 = fonts.text_box(text, font_px)
        if x1 - x0 <= width - 6 and y1 - y0 <= height - 6:
            break
        font_px -= 1
    font_px = max(MIN_FONT_PX, font_px - int(rng.integers(0, max(1, font_px // 4))))
    x0, y0, x1, y1 = fonts.text_box(text, font_px)
    x = int(rng.integers(0, max(1, width - (x1 - x0) - 6 + 1))) + 3 - x0
    y = int(rng.integers(0, max(1, height - (y1 - y0) - 6 + 1))) + 3 - y0
    ImageDraw.Draw(image).text((x, y), text, font=fonts.get(font_px), fill=contrasting_colour(rng, mean))
    if kind == "noisy":
        image = add_noise(image, rng, float(rng.uniform(8.0, 20.0)))
    return image, font_px


def generate_ocr(out: Path, seed: int, n: int) -> Path:
    """Write `n` OCRBench-style text-recognition samples to `out` and return the parquet path."""
    rng = np.random.default_rng(seed)
    fonts = FontBook()
    rows: list[dict[str, Any]] = []
    for index in range(n):
        text = _text(rng)
        image, font_px = render_text_image(rng, text, fonts)
        rows.append(
            {
                "question_id": str(index),
                "dataset": "synthetic",
                "question": QUESTION,
                "question_type": QUESTION_TYPE,
                "answer": [text],
                "image": png_bytes(image),
                "font_px": font_px,
            }
        )
    return write_release(out, rows, task="ocr", generator=GENERATOR, seed=seed)
