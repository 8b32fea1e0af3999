"""Drawing scenes at random: scene group, objects, colours, sizes and non-overlapping positions.

Everything comes from a numpy `Generator` seeded from ``(seed, stream)`` (`rng_for`); each public
generator has its own stream, so equal seeds never give overlapping image sets.
"""

from __future__ import annotations

import numpy as np

from vlmbench.data.synth.scenes.vocabulary import (
    CATEGORIES,
    DEFAULT_IMAGE_SIZE,
    GROUPS,
    RGB,
    Category,
    Scene,
    SceneObject,
)

# Generator streams: one per public generator so equal seeds never give overlapping image sets.
STREAM_RENDER = 0
STREAM_POPE = 1
STREAM_CHAIR = 2
STREAM_VQAV2 = 3
STREAM_CAPTIONS = 4
STREAM_INSTRUCTIONS = 5
STREAM_PREFERENCE = 6
STREAM_PROBES = 7
STREAM_REFEXP = 8
STREAM_EXISTENCE = 9
STREAM_ATTRIBUTES = 10
STREAM_GROUNDING = 11

_IN_GROUP_P = 0.9  # share of objects drawn from the scene's group
_SMALL_P = 0.3  # share of small objects (7–10 px long side at 128 px)


_BACKGROUNDS: tuple[tuple[RGB, RGB], ...] = (
    ((238, 236, 222), (222, 218, 200)),  # beige
    ((226, 236, 246), (206, 220, 236)),  # light blue
    ((230, 242, 228), (210, 228, 206)),  # light green
    ((242, 232, 236), (228, 214, 220)),  # light rose
    ((236, 236, 236), (214, 214, 214)),  # light grey
)


def rng_for(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), stream])


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
    stream: int = STREAM_RENDER,
) -> list[Scene]:
    rng = rng_for(seed, stream)
    return [sample_scene(rng, i + 1, image_size, min_categories) for i in range(n)]
