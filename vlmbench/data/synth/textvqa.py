"""Synthetic TextVQA: outdoor-ish scenes with a sign, a number plate or a label carrying a word or number.

A scene (160×120 by default) has a sky/ground background with light noise, 2–5 distractor shapes
(trees, houses, clouds, a sun, bushes) and one or two text-bearing objects of different kinds:

- ``sign``: a coloured board on a pole with a word ("What word is written on the sign?"),
- ``plate``: a number plate on a car with a 2–4 digit number ("What number is on the plate?"),
- ``label``: a white label on a crate with a word ("What is written on the label?").

The question asks about one of them; with two, the other is a distractor that must not be read out.
Ten annotator answers per question mimic TextVQA: mostly the text in lower case, some in its printed
case, and 0–2 wrong answers (another word or number, a truncation, "unanswerable").

Columns follow the TextVQA release (question_id, question, answers, image, image_id, ocr_tokens) plus
font_px (font size of the asked-about text).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from vlmbench.data.synth.common import png_bytes, write_release
from vlmbench.data.synth.text_render import (
    WORDS,
    FontBook,
    add_noise,
    choice,
    contrasting_colour,
    draw_text,
    random_colour,
    random_number,
    vertical_gradient,
)

GENERATOR = "vlmbench.data.synth.textvqa"
OBJECT_KINDS: tuple[str, ...] = ("sign", "plate", "label")
QUESTIONS: dict[str, tuple[str, ...]] = {
    "sign": ("What word is written on the sign?", "What does the sign say?"),
    "plate": ("What number is on the plate?", "What is the number on the license plate?"),
    "label": ("What is written on the label?", "What word is on the label?"),
}
SIGN_COLOURS: tuple[tuple[int, int, int], ...] = (
    (20, 110, 50),
    (25, 70, 160),
    (180, 30, 30),
    (245, 245, 240),
    (240, 200, 40),
)
N_ANSWERS = 10


@dataclass(frozen=True)
class TextObject:
    """A text-bearing object drawn in a scene."""

    kind: str
    text: str
    font_px: int
    bbox: tuple[int, int, int, int]


def _draw_background(rng: np.random.Generator, width: int, height: int) -> tuple[Image.Image, int]:
    """Sky gradient over a ground band; returns the image and the horizon row."""
    horizon = int(height * float(rng.uniform(0.5, 0.7)))
    sky_top = (int(rng.integers(60, 140)), int(rng.integers(130, 200)), int(rng.integers(200, 256)))
    sky_bottom = (min(255, sky_top[0] + 80), min(255, sky_top[1] + 50), 255)
    image = vertical_gradient(width, height, sky_top, sky_bottom)
    ground = choice(rng, ("grass", "road", "sand"))
    colour = {"grass": (70, 140, 60), "road": (110, 110, 115), "sand": (200, 180, 130)}[ground]
    jitter = rng.integers(-15, 16, size=3)
    colour = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(colour, jitter, strict=True))
    ImageDraw.Draw(image).rectangle([0, horizon, width, height], fill=colour)
    return image, horizon


def _draw_distractors(draw: ImageDraw.ImageDraw, rng: np.random.Generator, width: int, horizon: int) -> None:
    """Trees, houses, clouds, at most one sun, and bushes (no text)."""
    shapes: tuple[str, ...] = ("tree", "house", "cloud", "sun", "bush")
    for _ in range(int(rng.integers(2, 6))):
        shape = choice(rng, shapes)
        if shape == "sun":
            shapes = ("tree", "house", "cloud", "bush")
        x = int(rng.integers(0, width))
        if shape == "tree":
            r = int(rng.integers(6, 14))
            draw.rectangle([x - 2, horizon - r, x + 2, horizon + 4], fill=(100, 70, 40))
            draw.ellipse(
                [x - r, horizon - 3 * r, x + r, horizon - r], fill=(30, int(rng.integers(100, 160)), 40)
            )
        elif shape == "house":
            w, h = int(rng.integers(16, 30)), int(rng.integers(12, 22))
            body = random_colour(rng, 120, 230)
            draw.rectangle([x, horizon - h, x + w, horizon + 2], fill=body)
            draw.polygon(
                [(x - 3, horizon - h), (x + w + 3, horizon - h), (x + w // 2, horizon - h - 10)],
                fill=(150, 50, 40),
            )
            draw.rectangle([x + w // 3, horizon - h // 2, x + w // 3 + 4, horizon + 2], fill=(70, 50, 30))
        elif shape == "cloud":
            y = int(rng.integers(4, max(5, horizon // 2)))
            w = int(rng.integers(14, 30))
            draw.ellipse([x, y, x + w, y + w // 2], fill=(250, 250, 250))
        elif shape == "sun":
            r = int(rng.integers(5, 10))
            draw.ellipse([x - r, 4, x + r, 4 + 2 * r], fill=(250, 220, 60))
        else:
            r = int(rng.integers(4, 9))
            draw.ellipse(
                [x - r, horizon - r // 2, x + r, horizon + r], fill=(40, int(rng.integers(90, 140)), 40)
            )


def _fit(fonts: FontBook, text: str, size: int, max_width: int) -> int:
    while size > 10 and fonts.text_width(text, size) > max_width:
        size -= 1
    return size


def _draw_object(
    draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    fonts: FontBook,
    kind: str,
    text: str,
    region: tuple[int, int],
    horizon: int,
    height: int,
) -> TextObject:
    """Draw one text object centred somewhere in the horizontal `region`; return what was drawn."""
    x_lo, x_hi = region
    pad = 4
    size = _fit(fonts, text, int(rng.integers(13, 21)), x_hi - x_lo - 2 * pad - 12)
    tx0, ty0, tx1, ty1 = fonts.text_box(text, size)
    text_w, text_h = tx1 - tx0, ty1 - ty0
    box_w, box_h = text_w + 2 * pad + int(rng.integers(0, 8)), text_h + 2 * pad + int(rng.integers(0, 4))
    if kind == "sign":
        cx = int(rng.integers(x_lo + box_w // 2 + 2, max(x_lo + box_w // 2 + 3, x_hi - box_w // 2 - 1)))
        top = int(rng.integers(6, max(7, horizon - box_h - 12)))
        draw.rectangle([cx - 1, top + box_h, cx + 1, min(height - 1, horizon + 12)], fill=(90, 90, 95))
        board = choice(rng, SIGN_COLOURS)
        x0 = cx - box_w // 2
        draw.rectangle([x0, top, x0 + box_w, top + box_h], fill=board, outline=(40, 40, 40))
        ink = contrasting_colour(rng, board)
    elif kind == "plate":
        car_w, car_h = box_w + 20, box_h + 16
        cx = int(rng.integers(x_lo + car_w // 2 + 1, max(x_lo + car_w // 2 + 2, x_hi - car_w // 2)))
        car_bottom = min(height - 6, horizon + int(rng.integers(car_h // 2, car_h)))
        car_top = car_bottom - car_h
        body = random_colour(rng, 30, 220)
        draw.rounded_rectangle([cx - car_w // 2, car_top, cx + car_w // 2, car_bottom], radius=5, fill=body)
        for wx in (cx - car_w // 2 + 6, cx + car_w // 2 - 6):
            draw.ellipse([wx - 5, car_bottom - 4, wx + 5, car_bottom + 6], fill=(20, 20, 20))
        x0, top = cx - box_w // 2, car_top + (car_h - box_h) // 2
        plate = (250, 250, 250) if rng.random() < 0.6 else (245, 210, 40)
        draw.rectangle([x0, top, x0 + box_w, top + box_h], fill=plate, outline=(20, 20, 20))
        ink = (15, 15, 15)
    else:
        crate_w, crate_h = box_w + 12, box_h + 14
        cx = int(rng.integers(x_lo + crate_w // 2 + 1, max(x_lo + crate_w // 2 + 2, x_hi - crate_w // 2)))
        crate_bottom = min(height - 2, horizon + int(rng.integers(4, crate_h)))
        crate_top = crate_bottom - crate_h
        draw.rectangle(
            [cx - crate_w // 2, crate_top, cx + crate_w // 2, crate_bottom],
            fill=(150, 105, 60),
            outline=(90, 60, 30),
        )
        x0, top = cx - box_w // 2, crate_top + (crate_h - box_h) // 2
        draw.rectangle([x0, top, x0 + box_w, top + box_h], fill=(245, 245, 235))
        ink = random_colour(rng, 0, 60)
    tx = x0 + (box_w - text_w) // 2 - tx0
    ty = top + (box_h - text_h) // 2 - ty0
    bbox = draw_text(draw, (tx, ty), text, fonts, size, ink)
    return TextObject(kind=kind, text=text, font_px=size, bbox=bbox)


def render_scene(
    rng: np.random.Generator, fonts: FontBook, width: int = 160, height: int = 120
) -> tuple[Image.Image, list[TextObject]]:
    """Draw a scene with one or two text objects of different kinds (left to right)."""
    image, horizon = _draw_background(rng, width, height)
    draw = ImageDraw.Draw(image)
    _draw_distractors(draw, rng, width, horizon)
    count = 2 if rng.random() < 0.4 else 1
    kinds = [OBJECT_KINDS[int(i)] for i in rng.choice(len(OBJECT_KINDS), size=count, replace=False)]
    regions = [(0, width)] if count == 1 else [(0, width // 2), (width // 2, width)]
    objects = []
    for kind, region in zip(kinds, regions, strict=True):
        text = random_number(rng, 2, 4) if kind == "plate" else choice(rng, WORDS)
        objects.append(_draw_object(draw, rng, fonts, kind, text, region, horizon, height))
    image = add_noise(image, rng, float(rng.uniform(2.0, 6.0)), monochrome=True)
    return image, objects


def annotator_answers(rng: np.random.Generator, text: str, kind: str) -> list[str]:
    """Ten TextVQA-like answers for `text`: mostly right (case varies), 0–2 wrong."""
    answers: list[str] = []
    for _ in range(N_ANSWERS):
        draw = rng.random()
        if draw < 0.65:
            answers.append(text.lower())
        elif draw < 0.85:
            answers.append(text)
        else:
            answers.append(text.title())
    n_wrong = int(rng.choice([0, 1, 2], p=[0.5, 0.35, 0.15]))
    for slot in rng.choice(N_ANSWERS, size=n_wrong, replace=False):
        mistake = rng.random()
        if mistake < 0.4:
            wrong = random_number(rng, 2, 4) if kind == "plate" else choice(rng, WORDS).lower()
        elif mistake < 0.8 and len(text) > 2:
            wrong = text[:-1].lower()
        else:
            wrong = "unanswerable"
        answers[int(slot)] = wrong
    return answers


def generate_textvqa(out: Path, seed: int, n: int, width: int = 160, height: int = 120) -> Path:
    """Write `n` TextVQA-style questions (one per scene) to `out` and return the parquet path."""
    rng = np.random.default_rng(seed)
    fonts = FontBook()
    rows: list[dict[str, Any]] = []
    for index in range(n):
        image, objects = render_scene(rng, fonts, width, height)
        target = objects[int(rng.integers(len(objects)))]
        rows.append(
            {
                "question_id": str(index),
                "question": choice(rng, QUESTIONS[target.kind]),
                "answers": annotator_answers(rng, target.text, target.kind),
                "image": png_bytes(image),
                "image_id": f"synth_{index:06d}",
                "ocr_tokens": [obj.text for obj in objects],
                "font_px": target.font_px,
            }
        )
    return write_release(out, rows, task="textvqa", generator=GENERATOR, seed=seed)
