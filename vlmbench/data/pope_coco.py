"""Build POPE (Li et al., EMNLP 2023) from COCO-format instance annotations.

The construction follows the official POPE recipe:

* keep images annotated with at least 3 distinct object categories, sample `n_images` of them;
* per image, 3 ground-truth categories (drawn at random, shared by the three settings) are asked as
  "yes" questions, each immediately followed by one "no" question about an absent category;
* the negative depends on the setting: `random` draws uniformly among the absent categories,
  `popular` takes the most frequent categories, `adversarial` the categories that co-occur most often
  with that positive; frequency and co-occurrence are counted over the sampled images (number of
  images holding the category / the pair), as the official code does. A category is never asked twice
  about the same image in one setting; when the ordered list is exhausted the negative falls back to a
  random absent category, again as the official code does. Ties are broken by category name;
* the candidate categories are those present in the sampled images (the official `gt_objects_list`);
  only when an image leaves none of them to ask, the file's other categories are used too;
* the template is "Is there a {object} in the image?", with "an" before a vowel-initial name.

The output is the lmms-lab POPE layout: one `test` split with all three settings in its `category` column.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from vlmbench.data.synth.common import write_release
from vlmbench.errors import UserError

SETTINGS: tuple[str, ...] = ("random", "popular", "adversarial")
TEMPLATE = "Is there {article} {object} in the image?"
GENERATOR = "pope-from-coco"
MIN_CATEGORIES = 3


def pope_question(name: str) -> str:
    """'Is there a dog in the image?' / 'Is there an apple in the image?'."""
    article = "an" if name[:1].lower() in "aeiou" else "a"
    return TEMPLATE.format(article=article, object=name)


def load_image_objects(annotations: Path) -> tuple[dict[int, str], dict[int, list[str]]]:
    """COCO instances -> ({image_id: file_name}, {image_id: distinct category names in category-id order}).

    See `load_categories` for the category names themselves.
    """
    files, objects, _ = _load(annotations)
    return files, objects


def load_categories(annotations: Path) -> list[str]:
    """All category names of a COCO instances file, in category-id order."""
    return _load(annotations)[2]


def _load(annotations: Path) -> tuple[dict[int, str], dict[int, list[str]], list[str]]:
    from pycocotools.coco import COCO

    annotations = Path(annotations)
    if not annotations.is_file():
        raise UserError(f"COCO annotation file not found: {annotations} (pass an instances_*.json file)")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco = COCO(str(annotations))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise UserError(
            f"{annotations} is not a COCO instances file ({type(exc).__name__}: {exc}); "
            "it needs 'images', 'annotations' and 'categories'"
        ) from exc
    if "categories" not in coco.dataset:
        raise UserError(f"{annotations} has no 'categories': pass a COCO instances file, not a captions file")
    cat_names = {cat_id: cat["name"] for cat_id, cat in coco.cats.items()}
    files = {img_id: img["file_name"] for img_id, img in coco.imgs.items()}
    objects: dict[int, list[str]] = {}
    for img_id in sorted(coco.imgs):
        cat_ids = sorted({ann["category_id"] for ann in coco.imgToAnns.get(img_id, [])})
        objects[img_id] = [cat_names[c] for c in cat_ids if c in cat_names]
    return files, objects, [cat_names[c] for c in sorted(cat_names)]


def _read_image(images: Path | None, file_name: str) -> bytes:
    """The image file's bytes, unchanged (PNG for the synthetic scenes, JPEG for COCO, as the HF release)."""
    if images is None:
        raise UserError(
            f"POPE rows embed the images, but no image folder was given (needed first: {file_name}); "
            "pass --images DIR holding the COCO image files"
        )
    path = Path(images) / file_name
    if not path.is_file():
        raise UserError(
            f"image file not found: {path} (the annotation file names it; "
            "pass the --images folder that holds it)"
        )
    return path.read_bytes()


def _statistics(sampled: list[int], objects: dict[int, list[str]]) -> tuple[list[str], dict[str, list[str]]]:
    """(categories by popularity, {category: co-occurring categories by count}); ties by name."""
    frequency: Counter[str] = Counter()
    co_occur: dict[str, Counter[str]] = {}
    for img_id in sampled:
        names = objects[img_id]
        frequency.update(names)
        for a in names:
            row = co_occur.setdefault(a, Counter())
            row.update(b for b in names if b != a)
    popular = sorted(frequency, key=lambda name: (-frequency[name], name))
    co_sorted = {a: sorted(row, key=lambda b: (-row[b], b)) for a, row in co_occur.items()}
    return popular, co_sorted


def _universe(sampled: list[int], objects: dict[int, list[str]]) -> list[str]:
    """Categories present in the sampled images (the candidates for negatives), sorted by name."""
    return sorted({name for img_id in sampled for name in objects[img_id]})


def build_pope_questions(
    objects: dict[int, list[str]],
    seed: int = 0,
    n_images: int = 500,
    n_pos: int = 3,
    all_categories: list[str] | None = None,
) -> list[dict[str, Any]]:
    """POPE questions without images: rows {image_id, object, answer, category}, in output order.

    `all_categories` (the file's categories) are the last-resort candidates for an image whose
    absent candidates are used up. Split from the file handling so the rules are testable on dicts.
    """
    if n_pos < 1:
        raise UserError(f"n_pos must be at least 1 (got {n_pos})")
    if n_images < 1:
        raise UserError(f"n_images must be at least 1 (got {n_images})")
    threshold = max(MIN_CATEGORIES, n_pos)
    eligible = sorted(img_id for img_id, names in objects.items() if len(names) >= threshold)
    if not eligible:
        raise UserError(
            f"no image has at least {threshold} annotated object categories, so POPE cannot be built; "
            "pass a COCO instances file with richer annotations"
        )
    rng = np.random.default_rng(seed)
    k = min(n_images, len(eligible))
    sampled = sorted(int(i) for i in rng.choice(np.array(eligible), size=k, replace=False))
    universe = _universe(sampled, objects)
    popular, co_occur = _statistics(sampled, objects)
    positives = {
        img_id: [objects[img_id][int(i)] for i in rng.choice(len(objects[img_id]), size=n_pos, replace=False)]
        for img_id in sampled
    }

    rows: list[dict[str, Any]] = []
    for setting in SETTINGS:
        for img_id in sampled:
            present = set(objects[img_id])
            asked: set[str] = set(positives[img_id])
            for positive in positives[img_id]:
                if setting == "popular":
                    ordered = popular
                elif setting == "adversarial":
                    ordered = co_occur.get(positive, [])
                else:
                    ordered = []  # random: uniform over the absent candidates
                negative = next((c for c in ordered if c not in present and c not in asked), None)
                if negative is None:
                    pool = [c for c in universe if c not in present and c not in asked]
                    if not pool:
                        rest = sorted(set(all_categories or []) - set(universe))
                        pool = [c for c in rest if c not in present and c not in asked]
                    if not pool:
                        raise UserError(
                            f"image {img_id} leaves no absent category to ask about; the annotation file "
                            "needs more categories than any single image holds"
                        )
                    negative = pool[int(rng.integers(len(pool)))]
                asked.add(negative)
                rows.append({"image_id": img_id, "object": positive, "answer": "yes", "category": setting})
                rows.append({"image_id": img_id, "object": negative, "answer": "no", "category": setting})
    return rows


def build_pope_from_coco(
    annotations: Path,
    images: Path | None,
    out: Path,
    seed: int = 0,
    n_images: int = 500,
    n_pos: int = 3,
    *,
    synthetic: bool = False,
    extra_meta: dict[str, Any] | None = None,
) -> Path:
    """Write POPE built from a COCO instances file to `out` (lmms-lab layout); returns the parquet path.

    Rows: question_id ("1", "2", ... in output order), question, answer ("yes"/"no"), image_source
    (the image file's stem), image (the file's bytes), category ("random"/"popular"/"adversarial").
    `n_images` images are used, or all eligible ones when fewer; each gives 2 * n_pos rows per setting.
    """
    annotations = Path(annotations)
    files, objects, categories = _load(annotations)
    questions = build_pope_questions(
        objects, seed=seed, n_images=n_images, n_pos=n_pos, all_categories=categories
    )
    image_bytes: dict[int, bytes] = {}
    for row in questions:  # check every file before writing anything
        if row["image_id"] not in image_bytes:
            image_bytes[row["image_id"]] = _read_image(images, files[row["image_id"]])
    rows = [
        {
            "question_id": str(i + 1),
            "question": pope_question(row["object"]),
            "answer": row["answer"],
            "image_source": Path(files[row["image_id"]]).stem,
            "image": image_bytes[row["image_id"]],
            "category": row["category"],
        }
        for i, row in enumerate(questions)
    ]
    meta = {
        "synthetic": synthetic,
        "source_annotations": annotations.name,
        "n_images": len(image_bytes),
        "n_pos": n_pos,
        **(extra_meta or {}),
    }
    return write_release(Path(out), rows, task="pope", generator=GENERATOR, seed=seed, extra_meta=meta)
