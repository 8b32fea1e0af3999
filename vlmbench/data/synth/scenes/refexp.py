"""A synthetic referring-expression set over scenes, in the layout of lmms-lab's RefCOCO release.

Each row refers to one object by its colour and category ("the red cup"), asked only when no other
object in the scene has both; ``bbox`` is its box in COCO's [x, y, w, h] pixels, ``answer`` the list
of expressions (one here; RefCOCO has several per object). Up to two objects per scene are used.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from vlmbench.data.synth.common import png_bytes, write_release
from vlmbench.data.synth.scenes.glyphs import draw_scene
from vlmbench.data.synth.scenes.sampling import STREAM_REFEXP, rng_for, sample_scene
from vlmbench.data.synth.scenes.vocabulary import DEFAULT_IMAGE_SIZE, Scene, SceneObject

QUESTION = "Give the bounding box of the object the expression describes."
_PER_SCENE = 2


def referable(scene: Scene) -> list[SceneObject]:
    """Objects whose (colour, category) pair is unique in the scene, in scene order."""
    counts = Counter((o.color, o.category.id) for o in scene.objects)
    return [o for o in scene.objects if counts[(o.color, o.category.id)] == 1]


def expression(obj: SceneObject) -> str:
    return f"the {obj.color} {obj.category.name}"


def generate_refexp(out: Path, seed: int, n: int) -> Path:
    """`n` referring expressions over as many scenes as needed (up to two per scene)."""
    rng = rng_for(seed, STREAM_REFEXP)
    rows: list[dict[str, Any]] = []
    image_id = 0
    while len(rows) < n:
        image_id += 1
        scene = sample_scene(rng, image_id)
        candidates = referable(scene)
        order = [candidates[int(i)] for i in rng.permutation(len(candidates))][:_PER_SCENE]
        image = png_bytes(draw_scene(scene)) if order else b""
        for k, obj in enumerate(order):
            if len(rows) >= n:
                break
            x, y, w, h = obj.bbox
            rows.append(
                {
                    "question_id": f"{image_id}.{k}",
                    "question": QUESTION,
                    "answer": [expression(obj)],
                    "bbox": [float(x), float(y), float(w), float(h)],
                    "iscrowd": 0,
                    "file_name": scene.file_name,
                    "width": scene.width,
                    "height": scene.height,
                    "image": image,
                }
            )
    meta = {"scene_generator": "vlmbench.data.synth.scenes", "image_size": list(DEFAULT_IMAGE_SIZE)}
    return write_release(
        Path(out), rows, task="grounding", generator="synth-scenes-refexp", seed=seed, extra_meta=meta
    )
