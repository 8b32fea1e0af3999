"""Region-tag pre-training of the vision encoder from COCO-style boxes (stage kind `vision_tagging`).

Offline there is no pretrained ViT, and a contrastive loss on ~1k synthetic captions teaches a tiny
ViT little about *where* things are. Detection annotations give a much denser signal: every patch
predicts, through a linear head, the categories whose boxes cover it (multi-label BCE). Patch tokens
are exactly what the projector passes on, so this makes each visual token say what it shows, which is
what an LLM needs to answer "Is there a cup in the image?" by attending to it. (Supervised tagging
pre-training of the ViT, in the spirit of ImageNet-21k / object-tag pre-training; the head is
discarded after the stage.)

Views: a random native-scale crop of the ViT's input size (what a tile of a high-resolution strategy
sees) or the whole image resized to it (a thumbnail / fixed-resolution view); native-resolution ViTs
see the image as the resolution strategy prepares it. A box covers a patch when their overlap is at
least `cover` of the smaller of the two areas, so a 7-px object still lights the patch it sits in.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from vlmbench.data.synth.glyph_annotations import GLYPHS_FILE
from vlmbench.errors import UserError

INSTANCES_FILE = "annotations/instances_synth.json"

Box = tuple[float, float, float, float]  # x, y, w, h in image pixels


@dataclass(frozen=True)
class RegionLabels:
    """The boxes of every image of the scene training sets, keyed by resolved image path."""

    categories: tuple[int, ...]  # COCO category ids, in label-index order
    boxes: dict[Path, tuple[tuple[int, Box], ...]]  # image → (label index, box) pairs
    text_images: frozenset[Path] = frozenset()  # images whose boxes are characters (document pages)

    def of(self, image: Path) -> tuple[tuple[int, Box], ...]:
        try:
            return self.boxes[Path(image).resolve()]
        except KeyError:
            raise UserError(
                f"vision_tagging: no box annotations for {image}; the stage reads scene sets "
                f"(captions / instructions) whose directory holds {INSTANCES_FILE}"
            ) from None


def load_region_labels(directories: Sequence[Path]) -> RegionLabels:
    """Read the box annotations of every directory: `annotations/instances_synth.json` (scene
    generators write one) and/or `annotations/glyphs_synth.json` (the documents generator: one box per
    character). Categories of both kinds share one label space (glyph ids start at 1000)."""
    categories: list[int] = []
    raw: list[tuple[Path, dict[str, Any], bool]] = []
    for directory in directories:
        found = False
        for name, is_text in ((INSTANCES_FILE, False), (GLYPHS_FILE, True)):
            path = Path(directory) / name
            if not path.exists():
                continue
            found = True
            payload = json.loads(path.read_text())
            raw.append((Path(directory), payload, is_text))
            for category in payload["categories"]:
                if category["id"] not in categories:
                    categories.append(int(category["id"]))
        if not found:
            raise UserError(
                f"vision_tagging: {Path(directory) / INSTANCES_FILE} (or {GLYPHS_FILE}) is missing; "
                "regenerate the data set (delete its directory)"
            )
    categories.sort()
    index = {cid: i for i, cid in enumerate(categories)}
    boxes: dict[Path, list[tuple[int, Box]]] = {}
    text_images: set[Path] = set()
    for directory, payload, is_text in raw:
        files = {im["id"]: (directory / "images" / im["file_name"]).resolve() for im in payload["images"]}
        for path in files.values():
            boxes.setdefault(path, [])
        if is_text:
            text_images.update(files.values())
        for ann in payload["annotations"]:
            x, y, w, h = (float(v) for v in ann["bbox"])
            boxes[files[ann["image_id"]]].append((index[int(ann["category_id"])], (x, y, w, h)))
    return RegionLabels(tuple(categories), {k: tuple(v) for k, v in boxes.items()}, frozenset(text_images))


def category_name_tokens(tokenizer: Any, categories: Sequence[int]) -> list[list[int]]:
    """The token ids of each category's name (label-index order), as it appears inside a question."""
    from vlmbench.data.synth.scenes.vocabulary import CATEGORIES

    names = {c.id: c.name for c in CATEGORIES}
    missing = [cid for cid in categories if cid not in names]
    if missing:
        raise UserError(f"word_alignment: category id {missing[0]} is not one of the synthetic scene categories")
    return [tokenizer(" " + names[cid], add_special_tokens=False)["input_ids"] for cid in categories]


def patch_labels(
    boxes: Sequence[tuple[int, Box]],
    crop: tuple[float, float, float, float],
    scale: tuple[float, float],
    grid: tuple[int, int],
    patch: int,
    num_labels: int,
    cover: float = 0.2,
) -> torch.Tensor:
    """Multi-hot labels (rows*cols, num_labels) for the patches of a view.

    The view is the image region `crop` = (x0, y0, x1, y1) scaled by `scale` = (sx, sy) onto a
    `grid` = (rows, cols) of `patch`-pixel patches."""
    rows, cols = grid
    labels = torch.zeros(rows, cols, num_labels)
    px0 = np.arange(cols) * patch
    py0 = np.arange(rows) * patch
    for label, (x, y, w, h) in boxes:
        x0, x1 = (x - crop[0]) * scale[0], (x + w - crop[0]) * scale[0]
        y0, y1 = (y - crop[1]) * scale[1], (y + h - crop[1]) * scale[1]
        ix = np.clip(np.minimum(x1, px0 + patch) - np.maximum(x0, px0), 0, None)  # (cols,)
        iy = np.clip(np.minimum(y1, py0 + patch) - np.maximum(y0, py0), 0, None)  # (rows,)
        area = max(1e-6, min(patch * patch, (x1 - x0) * (y1 - y0)))
        hit = np.outer(iy, ix) >= cover * area
        labels[..., label] = torch.maximum(labels[..., label], torch.from_numpy(hit).float())
    return labels.flatten(0, 1)


def tile_view(
    image: Image.Image, boxes: Sequence[tuple[int, Box]], size: int, patch: int, num_labels: int,
    rng: np.random.Generator, crop_p: float,
) -> tuple[Image.Image, torch.Tensor]:
    """A `size`×`size` view: a native-scale random crop (probability `crop_p`, when the image is large
    enough) or the whole image resized; with its patch labels."""
    width, height = image.size
    grid = (size // patch, size // patch)
    if width >= size and height >= size and rng.random() < crop_p:
        x0 = int(rng.integers(0, width - size + 1))
        y0 = int(rng.integers(0, height - size + 1))
        view = image.crop((x0, y0, x0 + size, y0 + size))
        return view, patch_labels(boxes, (x0, y0, x0 + size, y0 + size), (1.0, 1.0), grid, patch, num_labels)
    view = image.resize((size, size), resample=Image.Resampling.BICUBIC)
    scale = (size / width, size / height)
    return view, patch_labels(boxes, (0, 0, width, height), scale, grid, patch, num_labels)


def planned_tile_view(
    image: Image.Image, boxes: Sequence[tuple[int, Box]], resized: tuple[int, int], grid: tuple[int, int],
    size: int, patch: int, num_labels: int, rng: np.random.Generator,
) -> tuple[Image.Image, torch.Tensor]:
    """One tile of the image exactly as a tiling resolution strategy cuts it (resized to `resized`,
    a `grid` of `size`-pixel tiles), with its patch labels: glyphs are learned at the scale the model
    reads them at. The tile is drawn among those holding a box (any tile when none does)."""
    width, height = image.size
    sx, sy = resized[0] / width, resized[1] / height
    cols, rows = grid
    occupied = sorted(
        {
            (min(cols - 1, int((x + w / 2) * sx // size)), min(rows - 1, int((y + h / 2) * sy // size)))
            for _, (x, y, w, h) in boxes
        }
    )
    if occupied:
        col, row = occupied[int(rng.integers(len(occupied)))]
    else:
        col, row = int(rng.integers(cols)), int(rng.integers(rows))
    view = image.resize(resized, resample=Image.Resampling.BICUBIC).crop(
        (col * size, row * size, (col + 1) * size, (row + 1) * size)
    )
    crop = (col * size / sx, row * size / sy, (col + 1) * size / sx, (row + 1) * size / sy)
    return view, patch_labels(boxes, crop, (sx, sy), (size // patch, size // patch), patch, num_labels)


class RegionTagHead(nn.Module):
    """Linear per-patch classifier over the ViT's output features (discarded after the stage)."""

    def __init__(self, dim: int, num_labels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, num_labels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(features))
