"""Crafted miniatures of the hallucination releases, in their published layouts (for the loader and
end-to-end tests): AMBER (JSON + image folder), HallusionBench (JSON + figure folders), RePOPE label
files (POPE's JSON-lines format) and lmms-lab/RefCOCO (parquet, one row per object)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from PIL import Image


def image_bytes(color: tuple[int, int, int], size: tuple[int, int] = (32, 24), fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt)
    return buffer.getvalue()


# --- AMBER: data/{annotations,relation}.json, data/safe_words.txt, data/query/query_*.json, image/ ---

AMBER_ANNOTATIONS: list[dict[str, Any]] = [
    {"id": 1, "type": "generative", "truth": ["dog", "grass", "sky"], "hallu": ["cat", "frisbee"]},
    {"id": 2, "type": "generative", "truth": ["car", "road"], "hallu": ["person"]},
    {"id": 3, "type": "discriminative-hallucination", "truth": "yes"},
    {"id": 4, "type": "discriminative-hallucination", "truth": "no"},
    {"id": 5, "type": "discriminative-attribute-state", "truth": "no"},
    {"id": 6, "type": "discriminative-attribute-number", "truth": "yes"},
    {"id": 7, "type": "discriminative-attribute-action", "truth": "no"},
    {"id": 8, "type": "discriminative-relation", "truth": "yes"},
    {"id": 9, "type": "relation", "truth": "no"},
]
AMBER_QUERIES: list[dict[str, Any]] = [
    {"id": 1, "image": "AMBER_1.jpg", "query": "Describe this image."},
    {"id": 2, "image": "AMBER_2.jpg", "query": "Describe this image."},
    {"id": 3, "image": "AMBER_1.jpg", "query": "Is there a dog in this image?"},
    {"id": 4, "image": "AMBER_1.jpg", "query": "Is there a cat in this image?"},
    {"id": 5, "image": "AMBER_1.jpg", "query": "Is the sky dark in this image?"},
    {"id": 6, "image": "AMBER_1.jpg", "query": "Is there one dog in this image?"},
    {"id": 7, "image": "AMBER_2.jpg", "query": "Is the car flying in this image?"},
    {"id": 8, "image": "AMBER_2.jpg", "query": "Is there direct contact between the car and road?"},
    {"id": 9, "image": "AMBER_1.jpg", "query": "Is there direct contact between the dog and sky?"},
]
AMBER_RELATION: dict[str, list[str]] = {
    "dog": ["puppy"], "grass": ["lawn"], "sky": [], "cat": ["kitten"], "frisbee": [], "car": ["vehicle"],
    "road": ["street"], "person": ["man", "woman"], "tree": [], "bench": [],
}  # fmt: skip
AMBER_SAFE_WORDS: list[str] = ["background", "color"]


def write_amber(root: Path, *, flat: bool = False) -> Path:
    """The AMBER layout under ``root`` (``flat``: without the ``data/`` level); returns ``root``."""
    data = root if flat else root / "data"
    (data / "query").mkdir(parents=True, exist_ok=True)
    (data / "annotations.json").write_text(json.dumps(AMBER_ANNOTATIONS))
    (data / "relation.json").write_text(json.dumps(AMBER_RELATION))
    (data / "safe_words.txt").write_text("\n".join(AMBER_SAFE_WORDS) + "\n")
    disc = [q for q in AMBER_QUERIES if q["id"] > 2]
    files = {
        "all": AMBER_QUERIES,
        "generative": AMBER_QUERIES[:2],
        "discriminative": disc,
        "discriminative-existence": [q for q in disc if q["id"] in (3, 4)],
    }
    for split, queries in files.items():
        (data / "query" / f"query_{split}.json").write_text(json.dumps(queries))
    (root / "image").mkdir(parents=True, exist_ok=True)
    for k, color in ((1, (30, 160, 40)), (2, (90, 90, 90))):
        (root / "image" / f"AMBER_{k}.jpg").write_bytes(image_bytes(color, fmt="JPEG"))
    return root


# --- HallusionBench: HallusionBench.json + hallusion_bench/<category>/<subcategory>/<set>_<figure>.png ---


def _hb(
    category: str, sub: str, set_id: str, figure: str, qid: str, gt: str, filename: str | None
) -> dict[str, Any]:
    return {
        "category": category, "subcategory": sub, "visual_input": "0" if filename is None else ("1" if figure == "0" else "2"),
        "set_id": set_id, "figure_id": figure, "sample_note": "note", "question_id": qid,
        "question": f"{category} {sub} set {set_id} figure {figure} question {qid}?", "gt_answer_details": "",
        "gt_answer": gt, "filename": filename,
    }  # fmt: skip


HALLUSIONBENCH: list[dict[str, Any]] = [
    _hb("VD", "illusion", "0", "0", "0", "1", "./VD/illusion/0_0.png"),
    _hb("VD", "illusion", "0", "0", "1", "0", "./VD/illusion/0_0.png"),
    _hb("VD", "illusion", "0", "1", "0", "0", "./VD/illusion/0_1.png"),
    _hb("VD", "illusion", "0", "1", "1", "1", "./VD/illusion/0_1.png"),
    _hb("VS", "chart", "0", "0", "0", "1", None),  # text-only: left out
    _hb("VS", "chart", "0", "1", "0", "0", "./VS/chart/0_1.png"),
]


def write_hallusionbench(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "HallusionBench.json").write_text(json.dumps(HALLUSIONBENCH))
    for k, entry in enumerate(HALLUSIONBENCH):
        if entry["filename"]:
            path = root / "hallusion_bench" / entry["filename"].removeprefix("./")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(image_bytes((20 * k, 100, 200)))
    return root


# --- RePOPE: coco_repope_<split>.json in POPE's JSON-lines format -------------------------------------


def write_repope_labels(
    folder: Path, pope_rows: list[dict[str, Any]], *, drop: set[str], flip: set[str]
) -> Path:
    """Label files for ``pope_rows`` (question_id, question, answer, image_source, category): the
    question ids in ``drop`` left out (RePOPE's ambiguous ones), those in ``flip`` relabelled."""
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("random", "popular", "adversarial"):
        lines = []
        for number, row in enumerate(r for r in pope_rows if r["category"] == split):
            if row["question_id"] in drop:
                continue
            label = (
                row["answer"]
                if row["question_id"] not in flip
                else ("no" if row["answer"] == "yes" else "yes")
            )
            lines.append(json.dumps({"question_id": number + 1, "image": row["image_source"] + ".jpg",
                                     "text": row["question"], "label": label}))  # fmt: skip
        (folder / f"coco_repope_{split}.json").write_text("\n".join(lines) + "\n")
    return folder


# --- lmms-lab/RefCOCO: data/val-00000-of-00001.parquet ------------------------------------------------

REFCOCO_ROWS: list[dict[str, Any]] = [
    {"question_id": "101", "answer": ["man on left", "guy in red"], "bbox": [2.0, 4.0, 10.0, 12.0], "file_name": "a.jpg"},
    {"question_id": "102", "answer": ["cup"], "bbox": [20.0, 10.0, 8.0, 6.0], "file_name": "a.jpg"},
    {"question_id": "103", "answer": ["dog", "brown dog", "the animal"], "bbox": [0.0, 0.0, 16.0, 12.0], "file_name": "b.jpg"},
]  # fmt: skip


def write_refcoco(root: Path) -> Path:
    """lmms-lab/RefCOCO's columns (question_id, image, question, answer, segmentation, bbox, iscrowd,
    file_name) for three objects on two images (32x24 and 40x30)."""
    import datasets

    images = {"a.jpg": image_bytes((200, 0, 0), fmt="JPEG"), "b.jpg": image_bytes((0, 0, 200), size=(40, 30), fmt="JPEG")}
    table = {
        "question_id": [r["question_id"] for r in REFCOCO_ROWS],
        "image": [{"bytes": images[r["file_name"]], "path": None} for r in REFCOCO_ROWS],
        "question": [
            "Please carefully observe the area circled in the image and come up with a caption for the area."
        ]
        * 3,
        "answer": [r["answer"] for r in REFCOCO_ROWS],
        "segmentation": [[0.0] * 8 for _ in REFCOCO_ROWS],
        "bbox": [r["bbox"] for r in REFCOCO_ROWS],
        "iscrowd": [0] * 3,
        "file_name": [r["file_name"] for r in REFCOCO_ROWS],
    }
    (root / "data").mkdir(parents=True, exist_ok=True)
    dataset = datasets.Dataset.from_dict(table).cast_column("image", datasets.Image())
    dataset.to_parquet(str(root / "data" / "val-00000-of-00001.parquet"))
    return root
