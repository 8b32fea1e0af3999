"""Per-character boxes of rendered documents, in the COCO instances layout the region-tag stage reads.

The region-tag pre-training of the vision tower (training/region_tags.py) teaches every patch to say
which scene objects cover it. The same signal, with characters as the categories, teaches it glyphs:
every patch of a document page learns which characters have ink in it — the offline stand-in for the
OCR pre-training a real document VLM's tower gets. Category ids start at `GLYPH_ID_BASE` so that they
can never collide with the COCO ids (1–90) of the scene sets when both are tagged in one stage.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlmbench.data.synth.text_render import DIGITS, UPPER, FontBook, TextRun, glyph_boxes

GLYPHS_FILE = "annotations/glyphs_synth.json"
GLYPH_ID_BASE = 1000
GLYPHS = UPPER + DIGITS + ":/,._-"
"""Every character a synthetic document can draw (anything else is skipped, never mislabelled)."""


def glyph_category_id(char: str) -> int:
    """The category id of a character of `GLYPHS`."""
    return GLYPH_ID_BASE + GLYPHS.index(char)


def glyph_payload(
    pages: Sequence[tuple[str, int, int, Sequence[TextRun]]], fonts: FontBook
) -> dict[str, Any]:
    """COCO instances for pages given as (file name under images/, width, height, text runs): one
    annotation per drawn character with its ink box as [x, y, w, h]."""
    images, annotations = [], []
    for image_id, (file_name, width, height, runs) in enumerate(pages, start=1):
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for run in runs:
            for char, (x0, y0, x1, y1) in glyph_boxes(run, fonts):
                if char not in GLYPHS:
                    continue
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": glyph_category_id(char),
                        "bbox": [x0, y0, x1 - x0, y1 - y0],
                    }
                )
    categories = [{"id": glyph_category_id(c), "name": c} for c in GLYPHS]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_glyph_annotations(
    out: Path, pages: Sequence[tuple[str, int, int, Sequence[TextRun]]], fonts: FontBook
) -> Path:
    """Write `out/annotations/glyphs_synth.json` for `pages` (see `glyph_payload`)."""
    path = Path(out) / GLYPHS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(glyph_payload(pages, fonts)) + "\n")
    return path
