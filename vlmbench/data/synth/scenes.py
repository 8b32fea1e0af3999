"""Synthetic object scenes: COCO-style images, instances and captions, and the object-centric task sets.

Each scene is a light background with 1–5 non-overlapping objects of 16 COCO categories. Every
category has its own simple glyph (so a tiny ViT can learn it) and a small fixed colour palette; the
colour and the horizontal position (left/center/right) of every object are annotated. Sizes vary from
~7 px to ~40 px at 128×128, so small objects need resolution.

Co-occurrence is built in on purpose: the categories form four overlapping groups of six (kitchen,
street, park, living room) and a scene draws most of its objects from one group; categories in two
groups are also more frequent. POPE's adversarial negatives (the categories
that co-occur most with a present one) are therefore harder than random ones, as on real COCO.

Everything is drawn from a numpy `Generator` seeded from `(seed, stream)`, where `stream` differs per
generator: the same seed gives byte-identical outputs, and the evaluation sets and the training sets
built with the same seed do not share images.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from vlmbench.data.synth.common import GENERATOR_VERSION, png_bytes, write_release

DEFAULT_IMAGE_SIZE: tuple[int, int] = (128, 128)
INSTANCES_FILE = "annotations/instances_synth.json"
CAPTIONS_FILE = "annotations/captions_synth.json"
CAPTION_PROMPT = "Describe this image briefly."

# Generator streams: one per public generator so equal seeds never give overlapping image sets.
_STREAM_RENDER = 0
_STREAM_POPE = 1
_STREAM_CHAIR = 2
_STREAM_VQAV2 = 3
_STREAM_CAPTIONS = 4
_STREAM_INSTRUCTIONS = 5
_STREAM_PREFERENCE = 6

_SUPERSAMPLE = 4  # draw at 4x and box-filter down: smooth glyph edges even for 7 px objects
_IN_GROUP_P = 0.9  # share of objects drawn from the scene's group
_SMALL_P = 0.3  # share of small objects (7–10 px long side at 128 px)

RGB = tuple[int, int, int]

COLORS: MappingProxyType[str, RGB] = MappingProxyType(
    {
        "red": (210, 40, 40),
        "blue": (40, 80, 210),
        "green": (40, 160, 60),
        "yellow": (235, 200, 30),
        "pink": (235, 115, 170),
        "purple": (130, 60, 170),
        "brown": (125, 75, 35),
        "black": (30, 30, 30),
        "gray": (125, 125, 125),
    }
)

_BACKGROUNDS: tuple[tuple[RGB, RGB], ...] = (
    ((238, 236, 222), (222, 218, 200)),  # beige
    ((226, 236, 246), (206, 220, 236)),  # light blue
    ((230, 242, 228), (210, 228, 206)),  # light green
    ((242, 232, 236), (228, 214, 220)),  # light rose
    ((236, 236, 236), (214, 214, 214)),  # light grey
)

_DARK: RGB = (35, 35, 35)
_SKIN: RGB = (225, 180, 140)
_GLASS: RGB = (170, 210, 235)
_WHITE: RGB = (248, 248, 248)


@dataclass(frozen=True)
class Category:
    """A COCO category as drawn here: glyph aspect ratio (width / height) and colour palette."""

    id: int
    name: str
    plural: str
    aspect: float
    colors: tuple[str, ...]
    supercategory: str


CATEGORIES: tuple[Category, ...] = (
    Category(1, "person", "people", 0.5, ("red", "blue", "green"), "person"),
    Category(2, "bicycle", "bicycles", 1.6, ("red", "blue", "black"), "vehicle"),
    Category(3, "car", "cars", 1.8, ("red", "blue", "yellow"), "vehicle"),
    Category(6, "bus", "buses", 2.3, ("yellow", "red", "green"), "vehicle"),
    Category(10, "traffic light", "traffic lights", 0.45, ("red", "yellow", "green"), "outdoor"),
    Category(13, "stop sign", "stop signs", 1.0, ("red",), "outdoor"),
    Category(17, "cat", "cats", 1.0, ("yellow", "gray", "black"), "animal"),
    Category(18, "dog", "dogs", 1.5, ("brown", "black", "gray"), "animal"),
    Category(28, "umbrella", "umbrellas", 1.0, ("red", "blue", "purple", "pink"), "accessory"),
    Category(44, "bottle", "bottles", 0.4, ("green", "brown", "blue"), "kitchen"),
    Category(47, "cup", "cups", 1.1, ("red", "blue", "yellow"), "kitchen"),
    Category(52, "banana", "bananas", 1.8, ("yellow", "green"), "food"),
    Category(53, "apple", "apples", 1.0, ("red", "green", "yellow"), "food"),
    Category(62, "chair", "chairs", 0.8, ("brown", "black", "red"), "furniture"),
    Category(67, "dining table", "dining tables", 2.0, ("brown", "gray"), "furniture"),
    Category(74, "clock", "clocks", 1.0, ("black", "red", "blue"), "indoor"),
)
CATEGORY_BY_NAME: MappingProxyType[str, Category] = MappingProxyType({c.name: c for c in CATEGORIES})
# Scene types: a scene draws most of its objects from one of these (overlapping) groups.
GROUPS: MappingProxyType[str, tuple[str, ...]] = MappingProxyType(
    {
        "kitchen": ("dining table", "cup", "bottle", "chair", "banana", "apple"),
        "street": ("car", "bus", "traffic light", "stop sign", "bicycle", "person"),
        "park": ("person", "dog", "umbrella", "bicycle", "bottle", "banana"),
        "living room": ("cat", "clock", "chair", "cup", "dog", "apple"),
    }
)

_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_POSITION_PHRASE = MappingProxyType(
    {"left": "on the left", "center": "in the center", "right": "on the right"}
)


@dataclass(frozen=True)
class SceneObject:
    category: Category
    color: str
    bbox: tuple[int, int, int, int]  # x, y, w, h in pixels
    position: str  # left / center / right, by the bbox centre in thirds of the width


@dataclass(frozen=True)
class Scene:
    image_id: int
    width: int
    height: int
    group: str  # the scene type most objects were drawn from (a key of GROUPS)
    background: tuple[RGB, RGB]
    objects: tuple[SceneObject, ...]

    @property
    def file_name(self) -> str:
        return f"synth_{self.image_id:06d}.png"

    @property
    def category_names(self) -> list[str]:
        """Distinct categories present, in COCO id order."""
        present = {o.category.name for o in self.objects}
        return [c.name for c in CATEGORIES if c.name in present]


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), stream])


# --------------------------------------------------------------------------------------------- sampling


def _position(x: int, w: int, width: int) -> str:
    centre = x + w / 2
    if centre < width / 3:
        return "left"
    if centre > 2 * width / 3:
        return "right"
    return "center"


def _object_size(rng: np.random.Generator, category: Category, scale: float) -> tuple[int, int]:
    small = rng.random() < _SMALL_P
    long_side = int(rng.integers(7, 11)) if small else int(rng.integers(14, 42))
    long_side = max(6, round(long_side * scale))
    if category.aspect >= 1:
        return long_side, max(4, round(long_side / category.aspect))
    return max(4, round(long_side * category.aspect)), long_side


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int) -> bool:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return not (ax + aw + gap <= bx or bx + bw + gap <= ax or ay + ah + gap <= by or by + bh + gap <= ay)


def sample_scene(
    rng: np.random.Generator,
    image_id: int,
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    min_categories: int = 1,
) -> Scene:
    """Draw one scene; re-draws until it holds at least `min_categories` distinct categories."""
    width, height = image_size
    if min_categories > 5:
        raise ValueError("a scene holds at most 5 objects, so min_categories must be <= 5")
    scale = min(width, height) / 128
    while True:
        group = tuple(GROUPS)[int(rng.integers(len(GROUPS)))]
        in_group = [c for c in CATEGORIES if c.name in GROUPS[group]]
        out_group = [c for c in CATEGORIES if c.name not in GROUPS[group]]
        n_objects = int(rng.integers(max(1, min_categories), 6))
        background = _BACKGROUNDS[int(rng.integers(len(_BACKGROUNDS)))]
        objects: list[SceneObject] = []
        for _ in range(n_objects):
            pool = in_group if rng.random() < _IN_GROUP_P else out_group
            category = pool[int(rng.integers(len(pool)))]
            color = category.colors[int(rng.integers(len(category.colors)))]
            w, h = _object_size(rng, category, scale)
            w, h = min(w, width - 2), min(h, height - 2)
            for _attempt in range(60):
                x = int(rng.integers(1, width - w))
                y = int(rng.integers(1, height - h))
                bbox = (x, y, w, h)
                if not any(_overlaps(bbox, o.bbox, gap=3) for o in objects):
                    objects.append(SceneObject(category, color, bbox, _position(x, w, width)))
                    break
        if len({o.category.id for o in objects}) >= min_categories:
            objects.sort(key=lambda o: (o.bbox[0], o.bbox[1]))
            return Scene(image_id, width, height, group, background, tuple(objects))


def sample_scenes(
    seed: int,
    n: int,
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    min_categories: int = 1,
    *,
    stream: int = _STREAM_RENDER,
) -> list[Scene]:
    rng = _rng(seed, stream)
    return [sample_scene(rng, i + 1, image_size, min_categories) for i in range(n)]


# --------------------------------------------------------------------------------------------- drawing


def _dim(rgb: RGB, factor: float) -> RGB:
    return (int(rgb[0] * factor), int(rgb[1] * factor), int(rgb[2] * factor))


def _draw_object(draw: ImageDraw.ImageDraw, obj: SceneObject) -> None:
    s = _SUPERSAMPLE
    x, y, w, h = obj.bbox
    x0, y0, W, H = x * s, y * s, w * s, h * s  # noqa: N806 - box size in supersampled pixels
    x1, y1 = x0 + W - 1, y0 + H - 1
    rgb = COLORS[obj.color]
    lw = max(2, round(min(W, H) * 0.09))  # stroke width for line-drawn parts
    name = obj.category.name

    if name == "person":
        head = min(W * 0.8, H * 0.26)
        cx = x0 + W / 2
        draw.ellipse((cx - head / 2, y0, cx + head / 2, y0 + head), fill=_SKIN)
        draw.rectangle((x0, y0 + H * 0.28, x1, y0 + H * 0.65), fill=rgb)  # shirt and arms
        draw.rectangle((x0 + W * 0.18, y0 + H * 0.64, x0 + W * 0.45, y1), fill=_DARK)
        draw.rectangle((x0 + W * 0.55, y0 + H * 0.64, x1 - W * 0.18, y1), fill=_DARK)
    elif name == "bicycle":
        r = H * 0.36
        rear, front = (x0 + r, y1 - r), (x1 - r, y1 - r)
        crank = (x0 + W * 0.45, y1 - r)
        seat = (x0 + W * 0.36, y0 + H * 0.2)
        head = (x0 + W * 0.68, y0 + H * 0.16)
        for cx, cy in (rear, front):
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=_DARK, width=lw)
        draw.line(
            (rear, crank, head, seat, rear), fill=rgb, width=lw
        )  # chain stay, down tube, top tube, seat stay
        draw.line((seat, crank), fill=rgb, width=lw)
        draw.line((front, head, (x0 + W * 0.62, y0)), fill=rgb, width=lw)  # fork and stem
        draw.line(((x0 + W * 0.55, y0), (x0 + W * 0.72, y0)), fill=_DARK, width=lw)  # handlebar
        draw.line(
            ((x0 + W * 0.3, y0 + H * 0.14), (x0 + W * 0.42, y0 + H * 0.14)), fill=_DARK, width=lw
        )  # saddle
    elif name == "car":
        r = H * 0.2
        draw.polygon(
            [
                (x0 + W * 0.22, y0 + H * 0.4),
                (x0 + W * 0.34, y0),
                (x0 + W * 0.68, y0),
                (x0 + W * 0.8, y0 + H * 0.4),
            ],
            fill=rgb,
        )
        draw.polygon(
            [
                (x0 + W * 0.3, y0 + H * 0.38),
                (x0 + W * 0.38, y0 + H * 0.1),
                (x0 + W * 0.64, y0 + H * 0.1),
                (x0 + W * 0.72, y0 + H * 0.38),
            ],
            fill=_GLASS,
        )
        draw.rounded_rectangle((x0, y0 + H * 0.38, x1, y1 - r), radius=H * 0.1, fill=rgb)
        for cx in (x0 + W * 0.24, x0 + W * 0.76):
            draw.ellipse((cx - r, y1 - 2 * r, cx + r, y1), fill=_DARK)
    elif name == "bus":
        r = H * 0.14
        draw.rounded_rectangle((x0, y0, x1, y1 - r), radius=H * 0.1, fill=rgb)
        n_win = 5
        pitch = W * 0.9 / n_win
        for i in range(n_win):
            wx = x0 + W * 0.05 + i * pitch
            draw.rectangle((wx + pitch * 0.12, y0 + H * 0.14, wx + pitch * 0.88, y0 + H * 0.48), fill=_GLASS)
        for cx in (x0 + W * 0.2, x0 + W * 0.8):
            draw.ellipse((cx - r, y1 - 2 * r, cx + r, y1), fill=_DARK)
    elif name == "traffic light":
        draw.rounded_rectangle((x0, y0, x1, y1), radius=W * 0.2, fill=_DARK)
        lamps = ("red", "yellow", "green")
        d = min(W * 0.7, H * 0.26)
        cx = x0 + W / 2
        for i, lamp in enumerate(lamps):
            cy = y0 + H * (0.18 + 0.32 * i)
            fill = COLORS[lamp] if lamp == obj.color else _dim(COLORS[lamp], 0.3)
            draw.ellipse((cx - d / 2, cy - d / 2, cx + d / 2, cy + d / 2), fill=fill)
    elif name == "stop sign":
        cx, cy, r = x0 + W / 2, y0 + H / 2, min(W, H) / 2
        octagon = [
            (
                cx + r * math.cos(math.pi / 8 + k * math.pi / 4),
                cy + r * math.sin(math.pi / 8 + k * math.pi / 4),
            )
            for k in range(8)
        ]
        draw.polygon(octagon, fill=rgb)
        draw.rectangle((x0 + W * 0.22, y0 + H * 0.42, x1 - W * 0.22, y0 + H * 0.58), fill=_WHITE)
    elif name == "cat":
        draw.polygon([(x0, y0), (x0 + W * 0.4, y0 + H * 0.35), (x0 + W * 0.05, y0 + H * 0.55)], fill=rgb)
        draw.polygon([(x1, y0), (x1 - W * 0.4, y0 + H * 0.35), (x1 - W * 0.05, y0 + H * 0.55)], fill=rgb)
        draw.ellipse((x0, y0 + H * 0.22, x1, y1), fill=rgb)
        eye = W * 0.1
        for ex in (x0 + W * 0.32, x0 + W * 0.68):
            draw.ellipse((ex - eye, y0 + H * 0.5, ex + eye, y0 + H * 0.5 + 2 * eye), fill=(60, 170, 90))
    elif name == "dog":
        draw.ellipse((x0 + W * 0.1, y0 + H * 0.3, x0 + W * 0.78, y0 + H * 0.75), fill=rgb)  # body
        for lx in (0.18, 0.32, 0.56, 0.68):
            draw.rectangle((x0 + W * lx, y0 + H * 0.6, x0 + W * (lx + 0.08), y1), fill=rgb)
        draw.line(((x0 + W * 0.14, y0 + H * 0.45), (x0, y0 + H * 0.12)), fill=rgb, width=lw)  # tail
        draw.ellipse((x0 + W * 0.64, y0, x1 - W * 0.02, y0 + H * 0.48), fill=rgb)  # head
        draw.polygon(
            [(x1 - W * 0.08, y0 + H * 0.2), (x1, y0 + H * 0.26), (x1 - W * 0.08, y0 + H * 0.4)], fill=rgb
        )  # snout
        draw.ellipse((x0 + W * 0.66, y0 + H * 0.05, x0 + W * 0.76, y0 + H * 0.45), fill=_dim(rgb, 0.6))  # ear
    elif name == "umbrella":
        cx = x0 + W / 2
        draw.pieslice((x0, y0, x1, y0 + H * 1.1), 180, 360, fill=rgb)
        draw.line(((cx, y0 + H * 0.5), (cx, y1 - H * 0.12)), fill=_DARK, width=lw)
        hook = H * 0.14
        draw.arc((cx - hook, y1 - 2 * hook, cx + hook, y1), 0, 180, fill=_DARK, width=lw)
    elif name == "bottle":
        draw.rectangle((x0 + W * 0.3, y0, x1 - W * 0.3, y0 + H * 0.1), fill=_DARK)  # cap
        draw.rectangle((x0 + W * 0.3, y0 + H * 0.1, x1 - W * 0.3, y0 + H * 0.35), fill=rgb)  # neck
        draw.rounded_rectangle((x0, y0 + H * 0.3, x1, y1), radius=W * 0.2, fill=rgb)
        draw.rectangle((x0, y0 + H * 0.55, x1, y0 + H * 0.72), fill=_WHITE)  # label
    elif name == "cup":
        draw.ellipse((x0 + W * 0.55, y0 + H * 0.2, x1, y0 + H * 0.7), outline=rgb, width=lw)  # handle
        draw.polygon([(x0, y0), (x0 + W * 0.76, y0), (x0 + W * 0.66, y1), (x0 + W * 0.1, y1)], fill=rgb)
    elif name == "banana":
        cx = x0 + W / 2
        outer = [(cx + W / 2 * math.cos(t), y0 + H * math.sin(t)) for t in np.linspace(0, math.pi, 24)]
        inner = [
            (cx + W * 0.42 * math.cos(t), y0 + H * 0.45 * math.sin(t)) for t in np.linspace(math.pi, 0, 24)
        ]
        draw.polygon(outer + inner, fill=rgb)
        tip = max(2, lw)
        draw.ellipse((x0, y0, x0 + tip, y0 + tip), fill=_DARK)
        draw.ellipse((x1 - tip, y0, x1, y0 + tip), fill=_DARK)
    elif name == "apple":
        cx = x0 + W / 2
        draw.ellipse((x0, y0 + H * 0.18, x1, y1), fill=rgb)
        draw.line(((cx, y0 + H * 0.3), (cx, y0)), fill=(90, 55, 25), width=lw)
        leaf = (20, 110, 40) if obj.color != "green" else (20, 80, 30)
        draw.ellipse((cx + W * 0.04, y0, cx + W * 0.34, y0 + H * 0.16), fill=leaf)
    elif name == "chair":
        draw.rectangle((x0, y0, x0 + W * 0.2, y1), fill=rgb)  # back and back leg
        draw.rectangle((x0, y0 + H * 0.5, x1, y0 + H * 0.64), fill=rgb)  # seat
        draw.rectangle((x1 - W * 0.18, y0 + H * 0.5, x1, y1), fill=rgb)  # front leg
    elif name == "dining table":
        draw.rectangle((x0, y0, x1, y0 + H * 0.22), fill=rgb)
        for lx in (0.08, 0.84):
            draw.rectangle((x0 + W * lx, y0, x0 + W * (lx + 0.08), y1), fill=rgb)
    elif name == "clock":
        draw.ellipse((x0, y0, x1, y1), fill=rgb)
        inset = min(W, H) * 0.14
        draw.ellipse((x0 + inset, y0 + inset, x1 - inset, y1 - inset), fill=_WHITE)
        cx, cy = x0 + W / 2, y0 + H / 2
        draw.line(((cx, cy), (cx, y0 + H * 0.24)), fill=_DARK, width=lw)
        draw.line(((cx, cy), (x0 + W * 0.7, cy)), fill=_DARK, width=lw)
    else:  # pragma: no cover - every category above has a glyph
        raise ValueError(f"no glyph for category {name!r}")


def draw_scene(scene: Scene) -> Image.Image:
    """Render a scene (RGB). The background is a vertical two-colour gradient."""
    s = _SUPERSAMPLE
    top, bottom = (np.array(c, dtype=np.float64) for c in scene.background)
    t = np.linspace(0.0, 1.0, scene.height * s)[:, None]
    column = np.rint(top * (1 - t) + bottom * t).astype(np.uint8)  # (H*s, 3)
    pixels = np.broadcast_to(column[:, None, :], (scene.height * s, scene.width * s, 3))
    canvas = Image.fromarray(np.ascontiguousarray(pixels), mode="RGB")
    draw = ImageDraw.Draw(canvas)
    for obj in scene.objects:
        _draw_object(draw, obj)
    return canvas.reduce(s)


# --------------------------------------------------------------------------------------------- language


def with_article(phrase: str) -> str:
    """'a red cup', 'an apple', 'an umbrella' (by the first letter, as POPE's template does)."""
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def _join(parts: Sequence[str]) -> str:
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _counted_phrase(category: Category, colors: Sequence[str]) -> str:
    """'a red cup', 'two brown dogs', 'three cups' (colour only when all of them share it)."""
    count = len(colors)
    color = colors[0] + " " if len(set(colors)) == 1 else ""
    if count == 1:
        return with_article(color + category.name)
    return f"{_NUMBER_WORDS[count]} {color}{category.plural}"


def _grouped(objects: Sequence[SceneObject]) -> list[tuple[Category, list[str]]]:
    """Objects grouped by category in left-to-right order of first appearance, with their colours."""
    groups: dict[int, tuple[Category, list[str]]] = {}
    for obj in objects:
        groups.setdefault(obj.category.id, (obj.category, []))[1].append(obj.color)
    return list(groups.values())


def object_phrases(objects: Sequence[SceneObject]) -> list[str]:
    return [_counted_phrase(category, colors) for category, colors in _grouped(objects)]


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


_LIST_PREFIXES = ("A picture of {}.", "An image with {}.", "A simple scene with {}.", "This image shows {}.")


def listing_caption(phrases: Sequence[str], rng: np.random.Generator) -> str:
    template = _LIST_PREFIXES[int(rng.integers(len(_LIST_PREFIXES)))]
    return template.format(_join(phrases))


def position_caption(objects: Sequence[SceneObject]) -> str:
    """'A red cup on the left, two brown dogs in the center and a blue umbrella on the right.'"""
    parts = []
    for position in ("left", "center", "right"):
        here = [o for o in objects if o.position == position]
        if here:
            parts.append(f"{_join(object_phrases(here))} {_POSITION_PHRASE[position]}")
    return _capitalise(_join(parts)) + "."


def scene_captions(scene: Scene, rng: np.random.Generator) -> list[str]:
    """One or two reference captions that mention every object (with counts, colours, positions)."""
    captions = [listing_caption(object_phrases(scene.objects), rng)]
    if rng.random() < 0.75:
        captions.append(position_caption(scene.objects))
    return captions


# --------------------------------------------------------------------------------------------- COCO files


def _write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n")


def _write_images(out: Path, scenes: Sequence[Scene]) -> list[bytes]:
    (out / "images").mkdir(parents=True, exist_ok=True)
    encoded = []
    for scene in scenes:
        data = png_bytes(draw_scene(scene))
        (out / "images" / scene.file_name).write_bytes(data)
        encoded.append(data)
    return encoded


def _coco_payloads(
    scenes: Sequence[Scene], captions: Sequence[Sequence[str]], seed: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    info = {
        "description": "vlmbench synthetic object scenes",
        "version": GENERATOR_VERSION,
        "seed": seed,
    }
    images = [
        {
            "id": s.image_id,
            "file_name": s.file_name,
            "width": s.width,
            "height": s.height,
            "scene_group": s.group,
        }
        for s in scenes
    ]
    annotations = []
    for scene in scenes:
        for obj in scene.objects:
            x, y, w, h = obj.bbox
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": scene.image_id,
                    "category_id": obj.category.id,
                    "bbox": [float(x), float(y), float(w), float(h)],
                    "area": float(w * h),
                    "iscrowd": 0,
                    "segmentation": [
                        [
                            float(x),
                            float(y),
                            float(x + w),
                            float(y),
                            float(x + w),
                            float(y + h),
                            float(x),
                            float(y + h),
                        ]
                    ],
                    "color": obj.color,
                    "position": obj.position,
                }
            )
    categories = [{"id": c.id, "name": c.name, "supercategory": c.supercategory} for c in CATEGORIES]
    instances = {
        "info": info,
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    caption_annotations = []
    for scene, texts in zip(scenes, captions, strict=True):
        for text in texts:
            caption_annotations.append(
                {"id": len(caption_annotations) + 1, "image_id": scene.image_id, "caption": text}
            )
    captions_payload = {"info": info, "licenses": [], "images": images, "annotations": caption_annotations}
    return instances, captions_payload


def _render(
    out: Path, scenes: Sequence[Scene], seed: int, caption_rng: np.random.Generator
) -> list[list[str]]:
    out = Path(out)
    _write_images(out, scenes)
    captions = [scene_captions(scene, caption_rng) for scene in scenes]
    instances, captions_payload = _coco_payloads(scenes, captions, seed)
    _write_json(out / INSTANCES_FILE, instances)
    _write_json(out / CAPTIONS_FILE, captions_payload)
    return captions


def render_scenes(
    out: Path,
    seed: int,
    n: int,
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    *,
    min_categories: int = 1,
    stream: int = _STREAM_RENDER,
) -> Path:
    """Write `n` scenes as `out/images/synth_NNNNNN.png`, `out/annotations/instances_synth.json` (COCO
    instances, plus `color`/`position` per annotation) and `out/annotations/captions_synth.json`.

    Returns `out`. `min_categories` re-draws scenes with fewer distinct categories (POPE needs 3).
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    scenes = sample_scenes(seed, n, image_size, min_categories, stream=stream)
    _render(Path(out), scenes, seed, _rng(seed, 100 + stream))
    return Path(out)


# --------------------------------------------------------------------------------------------- task sets


def generate_pope(out: Path, seed: int, n: int) -> Path:
    """POPE over `n` synthetic scenes (each with >= 3 categories): 18 questions per image."""
    from vlmbench.data.pope_coco import build_pope_from_coco

    with tempfile.TemporaryDirectory(prefix="vlmbench-scenes-") as tmp:
        source = render_scenes(Path(tmp), seed, n, min_categories=3, stream=_STREAM_POPE)
        return build_pope_from_coco(
            source / INSTANCES_FILE,
            source / "images",
            Path(out),
            seed=seed,
            n_images=n,
            synthetic=True,
            extra_meta={
                "scene_generator": "vlmbench.data.synth.scenes",
                "image_size": list(DEFAULT_IMAGE_SIZE),
            },
        )


def generate_chair(out: Path, seed: int, n: int) -> Path:
    """CHAIR set: `n` scenes with their ground-truth objects and reference captions (prompt lives in the task YAML)."""
    scenes = sample_scenes(seed, n, stream=_STREAM_CHAIR)
    caption_rng = _rng(seed, 100 + _STREAM_CHAIR)
    rows = []
    for scene in scenes:
        rows.append(
            {
                "question_id": str(scene.image_id),
                "image_id": scene.image_id,
                "image": png_bytes(draw_scene(scene)),
                "gt_objects": scene.category_names,
                "captions": scene_captions(scene, caption_rng),
            }
        )
    return write_release(Path(out), rows, task="chair", generator="synth-scenes-chair", seed=seed)


@dataclass(frozen=True)
class _QA:
    kind: str  # color / count / position / exists
    question: str
    answer: str
    wrong: tuple[str, ...]  # plausible wrong answers, for annotator noise and preference pairs


def _absent_negative(scene: Scene, rng: np.random.Generator, adversarial: bool) -> Category | None:
    """An absent category: with `adversarial`, one from the scene's group (a co-occurring one) when any is absent."""
    present = {o.category.id for o in scene.objects}
    absent = [c for c in CATEGORIES if c.id not in present]
    if adversarial:
        same_group = [c for c in absent if c.name in GROUPS[scene.group]]
        if same_group:
            absent = same_group
    return absent[int(rng.integers(len(absent)))] if absent else None


def _exists_question(category: Category) -> str:
    return f"Is there {with_article(category.name)} in the image?"


def _scene_questions(scene: Scene, rng: np.random.Generator) -> dict[str, list[_QA]]:
    """Candidate questions per kind about one scene; only unambiguous ones (colour/position of a unique object)."""
    counts = Counter(o.category.id for o in scene.objects)
    unique = [o for o in scene.objects if counts[o.category.id] == 1]
    out: dict[str, list[_QA]] = {"color": [], "count": [], "position": [], "exists": []}
    for obj in unique:
        others = tuple(c for c in COLORS if c != obj.color)
        out["color"].append(_QA("color", f"What color is the {obj.category.name}?", obj.color, others))
        if obj.position != "center":
            other = "right" if obj.position == "left" else "left"
            out["position"].append(
                _QA(
                    "position",
                    f"Is the {obj.category.name} on the left or the right?",
                    obj.position,
                    (other,),
                )
            )
    for category, colors in _grouped(scene.objects):
        count = len(colors)
        wrong = tuple(str(k) for k in (count - 1, count + 1) if k >= 1)
        out["count"].append(_QA("count", f"How many {category.plural} are there?", str(count), wrong))
    present = [CATEGORY_BY_NAME[name] for name in scene.category_names]
    yes = present[int(rng.integers(len(present)))]
    out["exists"].append(_QA("exists", _exists_question(yes), "yes", ("no",)))
    negative = _absent_negative(scene, rng, adversarial=bool(rng.random() < 0.5))
    if negative is not None:
        out["exists"].append(_QA("exists", _exists_question(negative), "no", ("yes",)))
    return out


_VQA_TYPES = MappingProxyType(
    {
        "color": ("what color is the", "other"),
        "count": ("how many", "number"),
        "position": ("is the", "other"),
        "exists": ("is there a", "yes/no"),
    }
)


def _annotator_answers(qa: _QA, rng: np.random.Generator, noise: float = 0.12) -> list[str]:
    """Ten human-style answers: mostly the right one, a few wrong, and some counts spelled out."""
    answers = []
    for _ in range(10):
        if qa.wrong and rng.random() < noise:
            answers.append(qa.wrong[int(rng.integers(len(qa.wrong)))])
        elif qa.kind == "count" and rng.random() < 0.1:
            answers.append(_NUMBER_WORDS[int(qa.answer)])  # "two": the official normalisation maps it to "2"
        else:
            answers.append(qa.answer)
    return answers


def generate_vqav2(out: Path, seed: int, n: int) -> Path:
    """`n` VQAv2-style questions (colour, count, position, yes/no existence) with ten noisy human answers each."""
    rng = _rng(seed, _STREAM_VQAV2)
    rows: list[dict[str, Any]] = []
    kinds = tuple(_VQA_TYPES)
    image_id = 0
    while len(rows) < n:
        image_id += 1
        scene = sample_scene(rng, image_id)
        image = png_bytes(draw_scene(scene))
        candidates = _scene_questions(scene, rng)
        order = [kinds[i] for i in rng.permutation(len(kinds))]
        picked = 0
        for kind in order:
            pool = candidates[kind]
            if not pool or len(rows) >= n or picked >= 3:
                continue
            qa = pool[int(rng.integers(len(pool)))]
            answers = _annotator_answers(qa, rng)
            tally = Counter(answers)
            top = max(tally.values())
            mc = qa.answer if tally[qa.answer] == top else tally.most_common(1)[0][0]
            question_type, answer_type = _VQA_TYPES[kind]
            rows.append(
                {
                    "question_id": image_id * 1000 + picked,
                    "question": qa.question,
                    "answers": [
                        {"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                        for i, a in enumerate(answers)
                    ],
                    "multiple_choice_answer": mc,
                    "image": image,
                    "image_id": image_id,
                    "question_type": question_type,
                    "answer_type": answer_type,
                }
            )
            picked += 1
    return write_release(Path(out), rows, task="vqav2", generator="synth-scenes-vqav2", seed=seed)


# --------------------------------------------------------------------------------------------- training sets


_CAPTION_PROMPTS = (
    "Describe this image briefly.",
    "Give a short description of the image.",
    "What is in this picture?",
    "Summarize the visual content of the image.",
    "Write a brief caption for this image.",
)


def _turns(pairs: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    """LLaVA conversation turns; the first human turn carries the `<image>` placeholder."""
    turns = []
    for i, (question, answer) in enumerate(pairs):
        turns.append({"from": "human", "value": ("<image>\n" if i == 0 else "") + question})
        turns.append({"from": "gpt", "value": answer})
    return turns


def generate_training_captions(out: Path, seed: int, n: int) -> Path:
    """Alignment data: `n` scenes, one LLaVA record per (image, reference caption) in `out/captions.json`."""
    out = Path(out)
    scenes = sample_scenes(seed, n, stream=_STREAM_CAPTIONS)
    rng = _rng(seed, 100 + _STREAM_CAPTIONS)
    captions = _render(out, scenes, seed, rng)
    records = []
    for scene, texts in zip(scenes, captions, strict=True):
        for k, text in enumerate(texts):
            prompt = _CAPTION_PROMPTS[int(rng.integers(len(_CAPTION_PROMPTS)))]
            records.append(
                {
                    "id": f"{scene.image_id:06d}-cap{k}",
                    "image": f"images/{scene.file_name}",
                    "conversations": _turns([(prompt, text)]),
                }
            )
    path = out / "captions.json"
    _write_json(path, records)
    return path


def generate_instructions(out: Path, seed: int, n: int) -> Path:
    """Instruction-tuning data over `n` scenes in `out/instructions.json` (LLaVA conversation format).

    Per image: a captioning record, and a multi-turn QA record with balanced yes/no existence questions
    (as many "no" as "yes"; negatives alternate between random and co-occurring absent categories) and
    colour/count/position questions. Answers are short ("yes", "red", "2", "left").
    """
    out = Path(out)
    scenes = sample_scenes(seed, n, stream=_STREAM_INSTRUCTIONS)
    rng = _rng(seed, 100 + _STREAM_INSTRUCTIONS)
    captions = _render(out, scenes, seed, rng)
    records = []
    adversarial = False
    for scene, texts in zip(scenes, captions, strict=True):
        image = f"images/{scene.file_name}"
        prompt = _CAPTION_PROMPTS[int(rng.integers(len(_CAPTION_PROMPTS)))]
        caption = texts[int(rng.integers(len(texts)))]
        records.append(
            {"id": f"{scene.image_id:06d}-cap", "image": image, "conversations": _turns([(prompt, caption)])}
        )
        present = scene.category_names
        n_yes = min(2, len(present))
        pairs: list[tuple[str, str]] = []
        for idx in rng.permutation(len(present))[:n_yes]:
            pairs.append((_exists_question(CATEGORY_BY_NAME[present[int(idx)]]), "yes"))
        asked: set[int] = set()
        for _ in range(n_yes):
            negative = _absent_negative(scene, rng, adversarial=adversarial)
            adversarial = not adversarial
            if negative is None or negative.id in asked:
                continue
            asked.add(negative.id)
            pairs.append((_exists_question(negative), "no"))
        candidates = _scene_questions(scene, rng)
        for kind in ("color", "count", "position"):
            if candidates[kind]:
                qa = candidates[kind][int(rng.integers(len(candidates[kind])))]
                pairs.append((qa.question, qa.answer))
        pairs = [pairs[int(i)] for i in rng.permutation(len(pairs))]
        records.append({"id": f"{scene.image_id:06d}-qa", "image": image, "conversations": _turns(pairs)})
    path = out / "instructions.json"
    _write_json(path, records)
    return path


def generate_preference_pairs(out: Path, seed: int, n: int) -> Path:
    """`n` preference pairs over `n` scenes in `out/preferences.json`: {image, prompt, chosen, rejected}.

    Half are captions whose rejected side mentions an extra absent object (preferably one that co-occurs
    with the scene's objects); half are yes/no existence questions whose rejected answer is flipped
    (two thirds about an absent co-occurring object, the hallucination case).
    """
    out = Path(out)
    scenes = sample_scenes(seed, n, stream=_STREAM_PREFERENCE)
    rng = _rng(seed, 100 + _STREAM_PREFERENCE)
    _render(out, scenes, seed, rng)
    records = []
    for scene in scenes:
        image = f"images/{scene.file_name}"
        negative = _absent_negative(scene, rng, adversarial=True)
        if rng.random() < 0.5 and negative is not None:
            phrases = object_phrases(scene.objects)
            chosen = listing_caption(phrases, rng)
            injected = with_article(
                f"{negative.colors[int(rng.integers(len(negative.colors)))]} {negative.name}"
            )
            position = int(rng.integers(len(phrases) + 1))
            # Same wording as the chosen caption except for the injected object.
            rejected = chosen.replace(
                _join(phrases), _join([*phrases[:position], injected, *phrases[position:]])
            )
            prompt = _CAPTION_PROMPTS[int(rng.integers(len(_CAPTION_PROMPTS)))]
        else:
            if negative is not None and rng.random() < 2 / 3:
                prompt, chosen, rejected = _exists_question(negative), "no", "yes"
            else:
                present = scene.category_names
                category = CATEGORY_BY_NAME[present[int(rng.integers(len(present)))]]
                prompt, chosen, rejected = _exists_question(category), "yes", "no"
        records.append(
            {"image": image, "prompt": "<image>\n" + prompt, "chosen": chosen, "rejected": rejected}
        )
    path = out / "preferences.json"
    _write_json(path, records)
    return path
