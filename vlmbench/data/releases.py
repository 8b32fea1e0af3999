"""Release layouts that are not a Hugging Face parquet/Arrow set: JSON files beside an image folder
(AMBER, HallusionBench), and RefCOCO's one-row-per-object layout that is read one row per expression.

Each reader takes the release's root folder and returns ``(dataset, files)``: a `datasets.Dataset`
whose ``image`` column holds image paths relative to the root (read, undecoded, by the task adapter)
and the files the data fingerprint hashes. A problem is a `UserError` naming the folder and what it
should hold. Image paths from a release are untrusted: one that leaves the root is refused.

Expected layouts (the folder `--data-dir` names, else ``$VLMBENCH_CACHE/releases/<task>/``):

* AMBER (github.com/junyangwang0410/AMBER, images from its Google-Drive link): ``data/annotations.json``,
  ``data/relation.json``, ``data/safe_words.txt``, ``data/query/query_<split>.json`` and the images
  ``AMBER_<n>.jpg`` in ``image/`` (or ``images/``, ``data/image/``); the ``data/`` level may be left out.
* HallusionBench (github.com/tianyi-lab/HallusionBench): ``HallusionBench.json`` and the unzipped
  ``hallusion_bench.zip`` beside it, the ``filename`` of each question resolved against the root or
  its ``hallusion_bench/`` folder. Questions without a figure (``filename`` null) are left out.
* RefCOCO (lmms-lab/RefCOCO parquet files): rows with ``answer`` (list of expressions), ``bbox``
  ([x, y, w, h] pixels), ``image``; each expression becomes its own row (as lmms-eval does).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmbench.errors import UserError

if TYPE_CHECKING:
    import datasets

    from vlmbench.tasks.config import TaskConfig

AMBER_SPLITS: tuple[str, ...] = ("all", "generative", "discriminative", "discriminative-existence",
                                 "discriminative-attribute", "discriminative-relation")  # fmt: skip
_AMBER_IMAGE_DIRS: tuple[str, ...] = ("image", "images", "data/image", "data/images")


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {what} {path}: {type(exc).__name__}: {exc}") from exc


def inside(root: Path, relative: str) -> Path:
    """``root / relative`` resolved; a path that leaves ``root`` (absolute, ``..``) is a `UserError`."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise UserError(
            f"the release at {root} names an image outside its folder ({relative!r}); refusing it"
        )
    return path


def _dataset(rows: list[dict[str, Any]]) -> datasets.Dataset:
    import datasets

    return datasets.Dataset.from_list(rows)


# --- AMBER ---------------------------------------------------------------------------------------


def amber_root(root: Path) -> Path:
    """The folder holding ``annotations.json`` (``root/data`` or ``root``); `UserError` when neither does."""
    for candidate in (root / "data", root):
        if (candidate / "annotations.json").is_file():
            return candidate
    raise UserError(
        f"no AMBER release at {root}: expected data/annotations.json, data/query/query_all.json, "
        "data/relation.json, data/safe_words.txt (clone github.com/junyangwang0410/AMBER) and the images "
        "AMBER_<n>.jpg in image/ (the release's Google-Drive download)"
    )


def amber_vocabulary(root: Path) -> tuple[dict[str, list[str]], list[str]]:
    """(association words of each object from ``relation.json``, the ``safe_words.txt`` list)."""
    data = amber_root(root)
    association = _read_json(data / "relation.json", "AMBER's word associations")
    if not isinstance(association, dict) or not all(isinstance(v, list) for v in association.values()):
        raise UserError(f"{data / 'relation.json'} is not AMBER's relation.json (a mapping word -> [words])")
    safe_path = data / "safe_words.txt"
    try:
        safe = [line.strip() for line in safe_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as exc:
        raise UserError(f"cannot read AMBER's safe words {safe_path}: {exc}") from exc
    return {str(k): [str(w) for w in v] for k, v in association.items()}, safe


def read_amber(root: Path, config: TaskConfig) -> tuple[datasets.Dataset, list[Path]]:
    """AMBER's query file for ``config.split`` joined with ``annotations.json`` by ``id``."""
    split = config.split
    if split not in AMBER_SPLITS:
        raise UserError(
            f"task {config.name}: split {split!r} is not an AMBER query file; use one of {', '.join(AMBER_SPLITS)}"
        )
    data = amber_root(root)
    query_path = next(
        (p for p in (data / "query" / f"query_{split}.json", data / f"query_{split}.json") if p.is_file()),
        None,
    )
    if query_path is None:
        raise UserError(f"no AMBER query file query_{split}.json in {data / 'query'} or {data}")
    images = next((root / d for d in _AMBER_IMAGE_DIRS if (root / d).is_dir()), None)
    if images is None:
        raise UserError(
            f"no AMBER image folder in {root} (looked for {', '.join(_AMBER_IMAGE_DIRS)}); download the images "
            "from the link in github.com/junyangwang0410/AMBER and unzip them there"
        )
    annotations = _read_json(data / "annotations.json", "AMBER annotations")
    queries = _read_json(query_path, "AMBER queries")
    if not isinstance(annotations, list) or not isinstance(queries, list):
        raise UserError(f"{data} does not hold AMBER's JSON lists (annotations.json, {query_path.name})")
    by_id = {a.get("id"): a for a in annotations if isinstance(a, Mapping)}
    rows = []
    for query in queries:
        if not isinstance(query, Mapping) or query.get("id") not in by_id:
            raise UserError(
                f"{query_path}: query {query!r} has no annotation of the same id in annotations.json"
            )
        note = by_id[query["id"]]
        generative = note.get("type") == "generative"
        rows.append(
            {
                "question_id": str(query["id"]),
                "question": str(query.get("query", "")),
                "image": str(inside(images, str(query.get("image", ""))).relative_to(root.resolve())),
                "image_key": str(query.get("image", "")),
                "amber_type": str(note.get("type", "")),
                "answer": "" if generative else str(note.get("truth", "")),
                "truth": [str(t) for t in note.get("truth", [])] if generative else [],
                "hallu": [str(t) for t in note.get("hallu", [])] if generative else [],
            }
        )
    if not rows:
        raise UserError(f"{query_path} holds no AMBER queries")
    files = [data / "annotations.json", query_path, data / "relation.json", data / "safe_words.txt"]
    return _dataset(rows), [p for p in files if p.is_file()]


# --- HallusionBench --------------------------------------------------------------------------------

_HB_KEYS: tuple[str, ...] = ("category", "subcategory", "set_id", "figure_id", "question_id")


def read_hallusionbench(root: Path, config: TaskConfig) -> tuple[datasets.Dataset, list[Path]]:
    """``HallusionBench.json``'s questions that have a figure, one row each."""
    path = root / "HallusionBench.json"
    if not path.is_file():
        raise UserError(
            f"no HallusionBench release at {root}: expected HallusionBench.json (github.com/tianyi-lab/HallusionBench) "
            "and the unzipped hallusion_bench.zip (its figures) beside it"
        )
    questions = _read_json(path, "HallusionBench questions")
    if not isinstance(questions, list):
        raise UserError(f"{path} is not HallusionBench.json (a JSON list of questions)")
    rows = []
    for q in questions:
        if not isinstance(q, Mapping) or any(
            k not in q for k in (*_HB_KEYS, "question", "gt_answer", "filename")
        ):
            raise UserError(
                f"{path}: an entry lacks the fields {', '.join((*_HB_KEYS, 'question', 'gt_answer', 'filename'))}"
            )
        if not q["filename"]:
            continue  # text-only question: image-based harnesses leave it out
        relative = str(q["filename"]).removeprefix("./")
        image = inside(root, relative)
        if not image.exists() and (root / "hallusion_bench").is_dir():
            image = inside(root / "hallusion_bench", relative.removeprefix("hallusion_bench/"))
        keys = {k: str(q[k]) for k in _HB_KEYS}
        rows.append(
            {
                "question_id": "_".join(keys[k] for k in _HB_KEYS),
                "question": str(q["question"]),
                "answer": str(q["gt_answer"]),
                "image": str(image.relative_to(root.resolve())),
                "image_key": relative,
                "visual_input": str(q.get("visual_input", "")),
                **{f"hb_{k}": v for k, v in keys.items()},
            }
        )
    if not rows:
        raise UserError(f"{path} holds no question with a figure")
    return _dataset(rows), [path]


# --- RefCOCO ------------------------------------------------------------------------------------------


def explode_expressions(dataset: datasets.Dataset, column: str) -> datasets.Dataset:
    """One row per referring expression: row i repeated once per entry of its ``column`` list (rows
    keep their order; a text cell counts as one expression). The images are not copied: `select`
    maps indices."""
    counts = [len(v) if isinstance(v, list) else 1 for v in dataset[column]]
    indices = [i for i, count in enumerate(counts) for _ in range(max(count, 1))]
    return dataset if len(indices) == len(dataset) else dataset.select(indices)


@dataclass(frozen=True)
class ReleaseReader:
    """How a task family's release is read, and what to tell a user who does not have it."""

    read: Callable[[Path, TaskConfig], tuple[datasets.Dataset, list[Path]]]
    download: str
    """What to download, for the error when the release is absent."""


JSON_RELEASES: Mapping[str, ReleaseReader] = {
    "amber": ReleaseReader(
        read_amber,
        "clone github.com/junyangwang0410/AMBER (its data/ folder) and unzip the AMBER images into image/",
    ),
    "hallusionbench": ReleaseReader(
        read_hallusionbench,
        "put github.com/tianyi-lab/HallusionBench's HallusionBench.json there and unzip hallusion_bench.zip beside it",
    ),
}
"""Adapter family -> reader of its JSON + image-folder release."""
