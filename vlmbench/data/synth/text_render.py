"""Shared text helpers for the text-heavy synthetic generators (documents, OCR, charts, TextVQA).

The vocabulary is deliberately small so that the tiny demo VLM, trained for minutes on CPU, can learn
to read it: short uppercase words from a fixed list, a few surnames, 2–4 digit numbers and uppercase
letter codes. Fonts come from Pillow's bundled scalable font (`ImageFont.load_default(size=...)`),
never from system fonts, so that images are identical across machines with the same Pillow version.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# ~50 short uppercase words (3–6 letters) shared by all text generators.
# fmt: off
WORDS: tuple[str, ...] = (
    "APPLE", "BREAD", "CAFE", "CLOSED", "DELTA", "EXIT", "FARM", "FISH", "GATE", "GOLD",
    "HOTEL", "HOUSE", "JAZZ", "KING", "LAKE", "LEMON", "MARKET", "MILK", "MOON", "NORTH",
    "OPEN", "PARK", "PIZZA", "PLUM", "QUEEN", "RIVER", "ROAD", "SALE", "SALT", "SHOP",
    "SOUTH", "STAR", "STOP", "SUN", "TAXI", "TEA", "TOWER", "TRAIN", "WEST", "WIND",
    "WOLF", "ZONE", "BANK", "BOOK", "CITY", "DOOR", "EAST", "FIRE", "HILL", "RAIN",
)
# fmt: on

# Short category labels for bar charts (3–4 letters, so five of them fit under a 160 px chart).
SHORT_WORDS: tuple[str, ...] = tuple(word for word in WORDS if len(word) <= 4)

# Surnames for the NAME field of forms.
# fmt: off
NAMES: tuple[str, ...] = (
    "ALVAREZ", "BAKER", "CHEN", "DIAZ", "EVANS", "FISCHER", "GARCIA", "HANSEN", "ITO", "JONES",
    "KOWALSKI", "LOPEZ", "MORENO", "NOVAK", "OKAFOR", "PATEL",
)
# fmt: on

UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
DIGITS = "0123456789"


@dataclass
class FontBook:
    """Pillow's bundled scalable font at several pixel sizes, loaded once per generator call.

    An instance is created inside each `generate_*` call (no module-level cache), so there is no
    state shared between calls.
    """

    _fonts: dict[int, ImageFont.FreeTypeFont | ImageFont.ImageFont] = field(default_factory=dict)

    def get(self, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
        """The font at `size` pixels per em."""
        if size not in self._fonts:
            self._fonts[size] = ImageFont.load_default(size=size)
        return self._fonts[size]

    def text_box(self, text: str, size: int) -> tuple[int, int, int, int]:
        """Ink bounding box (x0, y0, x1, y1) of `text` drawn at the origin (top-left anchor)."""
        x0, y0, x1, y1 = self.get(size).getbbox(text)
        return int(x0), int(y0), int(x1), int(y1)

    def text_width(self, text: str, size: int) -> int:
        """Advance width of `text` in pixels."""
        return int(round(self.get(size).getlength(text)))


def draw_text(
    draw: ImageDraw.ImageDraw,
    xy: tuple[int, int],
    text: str,
    fonts: FontBook,
    size: int,
    fill: tuple[int, int, int] | int,
) -> tuple[int, int, int, int]:
    """Draw `text` with its top-left anchor at `xy`; return the ink bounding box in image coordinates."""
    draw.text(xy, text, font=fonts.get(size), fill=fill)
    x0, y0, x1, y1 = fonts.text_box(text, size)
    return xy[0] + x0, xy[1] + y0, xy[0] + x1, xy[1] + y1


@dataclass(frozen=True)
class TextRun:
    """One piece of text as drawn: its string, top-left anchor and font size."""

    text: str
    xy: tuple[int, int]
    size: int


def glyph_boxes(run: TextRun, fonts: FontBook) -> list[tuple[str, tuple[int, int, int, int]]]:
    """The ink box (x0, y0, x1, y1) in image pixels of every non-space character of `run`: the character's
    own ink box, shifted by the advance of the text before it (Pillow's bundled font has no kerning, so
    the shifted boxes are where the characters land)."""
    font = fonts.get(run.size)
    out = []
    for i, char in enumerate(run.text):
        if char.isspace():
            continue
        offset = font.getlength(run.text[:i])
        x0, y0, x1, y1 = font.getbbox(char)
        if x1 <= x0 or y1 <= y0:
            continue
        out.append((char, (int(run.xy[0] + offset + x0), run.xy[1] + int(y0),
                           int(round(run.xy[0] + offset + x1)), run.xy[1] + int(y1))))
    return out


def choice(rng: np.random.Generator, items: tuple[str, ...] | list[str]) -> str:
    """One element of `items`, drawn with `rng`."""
    return items[int(rng.integers(len(items)))]


def sample_distinct(rng: np.random.Generator, items: tuple[str, ...] | list[str], k: int) -> list[str]:
    """`k` distinct elements of `items`, in random order."""
    picks = rng.choice(len(items), size=k, replace=False)
    return [items[int(i)] for i in picks]


def random_number(rng: np.random.Generator, min_digits: int = 2, max_digits: int = 4) -> str:
    """A number with `min_digits`..`max_digits` digits and no leading zero, as a string."""
    digits = int(rng.integers(min_digits, max_digits + 1))
    return str(int(rng.integers(10 ** (digits - 1), 10**digits)))


def random_code(rng: np.random.Generator, letters: int = 2, digits: int = 2) -> str:
    """An uppercase code such as "KX47"."""
    head = "".join(UPPER[int(i)] for i in rng.integers(0, 26, size=letters))
    tail = "".join(DIGITS[int(i)] for i in rng.integers(0, 10, size=digits))
    return head + tail


def with_thousands(number: str) -> str:
    """ "4821" -> "4,821"; shorter numbers are returned unchanged."""
    return f"{int(number):,}" if number.isdigit() and len(number) > 3 else number


def add_noise(
    image: Image.Image, rng: np.random.Generator, sigma: float, monochrome: bool = False
) -> Image.Image:
    """Add Gaussian pixel noise with standard deviation `sigma` (in 0..255 units).

    With `monochrome`, one noise value per pixel is shared by all channels (PNGs compress better).
    """
    array = np.asarray(image, dtype=np.float32)
    shape = array.shape[:2] + (1,) if monochrome and array.ndim == 3 else array.shape
    noisy = array + rng.normal(0.0, sigma, size=shape).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8), mode=image.mode)


def vertical_gradient(
    width: int, height: int, top: tuple[int, int, int], bottom: tuple[int, int, int]
) -> Image.Image:
    """An RGB image fading from `top` to `bottom`."""
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    colours = (1.0 - t) * np.asarray(top, np.float32) + t * np.asarray(bottom, np.float32)
    array = np.broadcast_to(colours, (height, width, 3))
    return Image.fromarray(np.rint(array).astype(np.uint8), mode="RGB")


def luminance(colour: tuple[int, int, int]) -> float:
    """Relative brightness of an RGB colour in 0..255."""
    r, g, b = colour
    return 0.299 * r + 0.587 * g + 0.114 * b


def random_colour(rng: np.random.Generator, low: int = 0, high: int = 256) -> tuple[int, int, int]:
    """A random RGB colour with channels in [low, high)."""
    r, g, b = (int(v) for v in rng.integers(low, high, size=3))
    return r, g, b


def contrasting_colour(rng: np.random.Generator, background: tuple[int, int, int]) -> tuple[int, int, int]:
    """A dark colour on a light background and a light one on a dark background."""
    if luminance(background) >= 128:
        return random_colour(rng, 0, 70)
    return random_colour(rng, 200, 256)
