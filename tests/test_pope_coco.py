"""POPE construction from COCO instances (official rules) and CHAIR ground truth, on synthetic and hand-made COCO files."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlmbench.data.chair_gt import chair_ground_truth
from vlmbench.data.layout import META_FILE, RELEASE_COLUMNS
from vlmbench.data.pope_coco import build_pope_from_coco, pope_question
from vlmbench.data.synth.scenes import CAPTIONS_FILE, INSTANCES_FILE, render_scenes
from vlmbench.errors import UserError

QUESTION = re.compile(r"^Is there (a|an) (.+) in the image\?$")


def _object(question: str) -> str:
    match = QUESTION.match(question)
    assert match, question
    article, name = match.groups()
    assert article == ("an" if name[0] in "aeiou" else "a"), question
    return name


def _load_rows(parquet: Path) -> list[dict]:
    import datasets

    dataset = datasets.load_dataset("parquet", data_files=str(parquet), split="train")
    assert set(RELEASE_COLUMNS["pope"]) <= set(dataset.column_names)
    return dataset.remove_columns("image").to_list()


def _coco_objects(instances: Path) -> tuple[dict[str, set[str]], dict[str, int]]:
    """{file stem: category names}, recomputed from the raw JSON (independently of the code under test)."""
    data = json.loads(instances.read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    stems = {img["id"]: Path(img["file_name"]).stem for img in data["images"]}
    objects: dict[str, set[str]] = {stem: set() for stem in stems.values()}
    for ann in data["annotations"]:
        objects[stems[ann["image_id"]]].add(names[ann["category_id"]])
    return objects, {stem: img_id for img_id, stem in stems.items()}


@pytest.fixture(scope="module")
def synth_coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Default scenes (1–5 objects), so some images have fewer than 3 categories; 60 images, so fewer than 500 eligible.
    return render_scenes(tmp_path_factory.mktemp("coco"), seed=3, n=60)


@pytest.fixture(scope="module")
def pope(synth_coco: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    parquet = build_pope_from_coco(
        synth_coco / INSTANCES_FILE, synth_coco / "images", tmp_path_factory.mktemp("pope")
    )
    return parquet, _load_rows(parquet)


def test_all_eligible_images_used_and_counts(synth_coco: Path, pope: tuple[Path, list[dict]]) -> None:
    objects, _ = _coco_objects(synth_coco / INSTANCES_FILE)
    eligible = {stem for stem, names in objects.items() if len(names) >= 3}
    ineligible = {stem for stem, names in objects.items() if len(names) < 3}
    assert eligible and ineligible  # the fixture exercises both
    _, rows = pope
    used = {r["image_source"] for r in rows}
    assert used == eligible  # fewer than 500 eligible: all used; < 3 categories: never used
    assert len(rows) == 18 * len(eligible)
    per = Counter((r["image_source"], r["category"], r["answer"]) for r in rows)
    assert set(per.values()) == {3}
    assert Counter(r["category"] for r in rows) == {
        s: 6 * len(eligible) for s in ("random", "popular", "adversarial")
    }
    assert [r["question_id"] for r in rows] == [str(i) for i in range(1, len(rows) + 1)]


def test_questions_follow_pope_rules(synth_coco: Path, pope: tuple[Path, list[dict]]) -> None:
    objects, _ = _coco_objects(synth_coco / INSTANCES_FILE)
    _, rows = pope
    sampled = sorted({r["image_source"] for r in rows})
    frequency = Counter(name for stem in sampled for name in objects[stem])
    co_occur: dict[str, Counter] = defaultdict(Counter)
    for stem in sampled:
        for a in objects[stem]:
            co_occur[a].update(b for b in objects[stem] if b != a)

    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["image_source"], row["category"])].append(row)
    positives_by_image: dict[str, list[str]] = {}
    for (stem, setting), block in groups.items():
        assert [r["answer"] for r in block] == ["yes", "no"] * 3  # each yes immediately followed by its no
        names = [_object(r["question"]) for r in block]
        assert len(set(names)) == 6  # no repeats within an image and setting
        positives = names[0::2]
        assert set(positives) <= objects[stem]
        assert positives_by_image.setdefault(stem, positives) == positives  # same positives in every setting
        asked = set(positives)
        for positive, negative in zip(names[0::2], names[1::2], strict=True):
            assert negative not in objects[stem]
            candidates = [c for c in frequency if c not in objects[stem] and c not in asked]
            assert negative in candidates
            if setting == "popular":
                assert frequency[negative] == max(frequency[c] for c in candidates)
            elif setting == "adversarial":
                best = max(co_occur[positive][c] for c in candidates)
                if best > 0:  # else the official code falls back to a random absent category
                    assert co_occur[positive][negative] == best
            asked.add(negative)


def test_output_layout_and_meta(pope: tuple[Path, list[dict]], synth_coco: Path) -> None:
    parquet, rows = pope
    assert parquet.name == "test-00000-of-00001.parquet"
    meta = json.loads((parquet.parent.parent / META_FILE).read_text())
    assert meta["synthetic"] is False and meta["generator"] == "pope-from-coco"
    assert meta["source_annotations"] == "instances_synth.json"
    import datasets

    first = datasets.load_dataset("parquet", data_files=str(parquet), split="train")[0]
    assert first["image"].size == (128, 128)
    assert isinstance(first["question_id"], str) and first["answer"] in ("yes", "no")
    source = synth_coco / "images" / f"{first['image_source']}.png"
    assert np.array_equal(
        np.asarray(first["image"].convert("RGB")), np.asarray(Image.open(source).convert("RGB"))
    )


def test_deterministic_and_seeded(synth_coco: Path, pope: tuple[Path, list[dict]], tmp_path: Path) -> None:
    parquet, rows = pope
    again = build_pope_from_coco(synth_coco / INSTANCES_FILE, synth_coco / "images", tmp_path / "a")
    assert again.read_bytes() == parquet.read_bytes()
    other = build_pope_from_coco(synth_coco / INSTANCES_FILE, synth_coco / "images", tmp_path / "b", seed=1)
    assert [r["question"] for r in _load_rows(other)] != [r["question"] for r in rows]


def test_n_images_subsample(synth_coco: Path, tmp_path: Path) -> None:
    rows = _load_rows(
        build_pope_from_coco(synth_coco / INSTANCES_FILE, synth_coco / "images", tmp_path, n_images=4)
    )
    assert len({r["image_source"] for r in rows}) == 4 and len(rows) == 4 * 18


def test_article() -> None:
    assert pope_question("apple") == "Is there an apple in the image?"
    assert pope_question("umbrella") == "Is there an umbrella in the image?"
    assert pope_question("dining table") == "Is there a dining table in the image?"


def _tiny_coco(root: Path) -> Path:
    """A hand-made COCO file: two images with >= 3 categories (JPEG files), one with 2."""
    cats = ["person", "dog", "cup", "apple", "car", "bus", "umbrella", "chair"]
    images = [
        {"id": 11, "file_name": "COCO_val2014_000000000011.jpg", "width": 32, "height": 24},
        {"id": 12, "file_name": "COCO_val2014_000000000012.jpg", "width": 32, "height": 24},
        {"id": 13, "file_name": "COCO_val2014_000000000013.jpg", "width": 32, "height": 24},
    ]
    objects = {
        11: ["person", "dog", "cup", "dog"],
        12: ["person", "apple", "car", "umbrella"],
        13: ["bus", "chair"],
    }
    annotations = []
    for img_id, names in objects.items():
        for name in names:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": img_id,
                    "category_id": cats.index(name) + 1,
                    "bbox": [1.0, 1.0, 4.0, 4.0],
                    "area": 16.0,
                    "iscrowd": 0,
                    "segmentation": [[1.0, 1.0, 5.0, 1.0, 5.0, 5.0, 1.0, 5.0]],
                }
            )
    payload = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": n, "supercategory": "x"} for i, n in enumerate(cats)],
    }
    (root / "images").mkdir(parents=True)
    for image in images:
        Image.new("RGB", (32, 24), (image["id"] * 10, 50, 90)).save(
            root / "images" / image["file_name"], "JPEG"
        )
    instances = root / "instances_val2014.json"
    instances.write_text(json.dumps(payload))
    return instances


def test_real_coco_style_files(tmp_path: Path) -> None:
    instances = _tiny_coco(tmp_path / "coco")
    parquet = build_pope_from_coco(instances, tmp_path / "coco" / "images", tmp_path / "out")
    rows = _load_rows(parquet)
    assert {r["image_source"] for r in rows} == {"COCO_val2014_000000000011", "COCO_val2014_000000000012"}
    assert len(rows) == 36
    meta = json.loads((tmp_path / "out" / META_FILE).read_text())
    assert meta["synthetic"] is False and meta["source_annotations"] == "instances_val2014.json"
    import pyarrow.parquet as pq

    stored = pq.read_table(parquet).column("image").to_pylist()[0]["bytes"]
    name = f"{rows[0]['image_source']}.jpg"
    assert stored == (tmp_path / "coco" / "images" / name).read_bytes()  # the file's bytes, unchanged


def test_missing_images_are_user_errors(tmp_path: Path) -> None:
    instances = _tiny_coco(tmp_path / "coco")
    with pytest.raises(UserError, match=r"COCO_val2014_0000000000\d\d\.jpg"):
        build_pope_from_coco(instances, None, tmp_path / "out")
    (tmp_path / "coco" / "images" / "COCO_val2014_000000000012.jpg").unlink()
    with pytest.raises(UserError, match="COCO_val2014_000000000012.jpg"):
        build_pope_from_coco(instances, tmp_path / "coco" / "images", tmp_path / "out")
    with pytest.raises(UserError, match="not found"):
        build_pope_from_coco(tmp_path / "nope.json", None, tmp_path / "out")


def test_chair_ground_truth_from_instances(synth_coco: Path) -> None:
    truth = chair_ground_truth(synth_coco / INSTANCES_FILE)
    objects, ids = _coco_objects(synth_coco / INSTANCES_FILE)
    assert truth == {ids[stem]: sorted(names) for stem, names in objects.items()}


def test_chair_ground_truth_adds_caption_objects(synth_coco: Path, tmp_path: Path) -> None:
    pytest.importorskip("vlmbench.metrics.chair")
    instances = _tiny_coco(tmp_path / "coco")
    captions = tmp_path / "captions.json"
    captions.write_text(
        json.dumps(
            {"annotations": [{"id": 1, "image_id": 13, "caption": "Two men sit on a sofa near a bus."}]}
        )
    )
    truth = chair_ground_truth(instances, captions)
    assert truth[13] == ["bus", "chair", "couch", "person"]
    assert truth[11] == ["cup", "dog", "person"]
    # The synthetic captions name exactly the annotated objects.
    synth = synth_coco / INSTANCES_FILE
    assert chair_ground_truth(synth, synth_coco / CAPTIONS_FILE) == chair_ground_truth(synth)
