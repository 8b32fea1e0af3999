"""Ground-truth object sets for CHAIR (Rohrbach et al. 2018).

As in the original, an image's ground truth is the union of the COCO categories annotated in its
instances (segmentations) and the objects its reference captions mention (read with the same
synonym table that reads the model's captions, `vlmbench.metrics.chair.extract_objects`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlmbench.data.pope_coco import load_image_objects
from vlmbench.errors import UserError


def _caption_annotations(captions: Path) -> list[dict[str, Any]]:
    captions = Path(captions)
    if not captions.is_file():
        raise UserError(f"COCO captions file not found: {captions} (pass a captions_*.json file)")
    try:
        payload = json.loads(captions.read_text())
        annotations = payload["annotations"]
        return [{"image_id": a["image_id"], "caption": a["caption"]} for a in annotations]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UserError(
            f"{captions} is not a COCO captions file ({type(exc).__name__}: {exc}); "
            "it needs 'annotations' with 'image_id' and 'caption'"
        ) from exc


def chair_ground_truth(instances: Path, captions: Path | None = None) -> dict[int, list[str]]:
    """{image_id: sorted COCO category names} for every image in the instances file.

    Images without annotations map to an empty list; caption entries for images absent from the
    instances file are ignored (CHAIR scores only images it has segmentations for).
    """
    _files, objects = load_image_objects(Path(instances))
    truth: dict[int, set[str]] = {img_id: set(names) for img_id, names in objects.items()}
    if captions is not None:
        from vlmbench.metrics.chair import extract_objects

        for entry in _caption_annotations(captions):
            if entry["image_id"] in truth:
                truth[entry["image_id"]].update(extract_objects(entry["caption"]))
    return {img_id: sorted(names) for img_id, names in truth.items()}
