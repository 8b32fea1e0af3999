"""COCO-style export: `images/`, `annotations/instances_synth.json` and `annotations/captions_synth.json`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlmbench.data.synth.common import GENERATOR_VERSION, png_bytes
from vlmbench.data.synth.scenes.captions import scene_captions
from vlmbench.data.synth.scenes.glyphs import draw_scene
from vlmbench.data.synth.scenes.sampling import STREAM_RENDER, rng_for, sample_scenes
from vlmbench.data.synth.scenes.vocabulary import CATEGORIES, DEFAULT_IMAGE_SIZE, Scene

INSTANCES_FILE = "annotations/instances_synth.json"
CAPTIONS_FILE = "annotations/captions_synth.json"


def write_json(path: Path, payload: Any) -> None:
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


def render_into(
    out: Path, scenes: Sequence[Scene], seed: int, caption_rng: np.random.Generator
) -> list[list[str]]:
    out = Path(out)
    _write_images(out, scenes)
    captions = [scene_captions(scene, caption_rng) for scene in scenes]
    instances, captions_payload = _coco_payloads(scenes, captions, seed)
    write_json(out / INSTANCES_FILE, instances)
    write_json(out / CAPTIONS_FILE, captions_payload)
    return captions


def render_scenes(
    out: Path,
    seed: int,
    n: int,
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    *,
    min_categories: int = 1,
    stream: int = STREAM_RENDER,
) -> Path:
    """Write `n` scenes as `out/images/synth_NNNNNN.png`, `out/annotations/instances_synth.json` (COCO
    instances, plus `color`/`position` per annotation) and `out/annotations/captions_synth.json`.

    Returns `out`. `min_categories` re-draws scenes with fewer distinct categories (POPE needs 3).
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    scenes = sample_scenes(seed, n, image_size, min_categories, stream=stream)
    render_into(Path(out), scenes, seed, rng_for(seed, 100 + stream))
    return Path(out)
