"""Synthetic object scenes: COCO files, the POPE/CHAIR/VQAv2 sets, training data and the dispatcher."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from vlmbench.data.layout import META_FILE, RELEASE_COLUMNS
from vlmbench.data.synth import DEFAULT_N, SYNTH_TASKS, generate
from vlmbench.data.synth.scenes import (
    CAPTIONS_FILE,
    CATEGORIES,
    CATEGORY_BY_NAME,
    COLORS,
    GROUPS,
    INSTANCES_FILE,
    generate_chair,
    generate_instructions,
    generate_preference_pairs,
    generate_training_captions,
    generate_vqav2,
    render_scenes,
)
from vlmbench.errors import UserError


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _rows(parquet: Path) -> list[dict]:
    import datasets

    return list(datasets.load_dataset("parquet", data_files=str(parquet), split="train"))  # images decoded


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render_scenes(tmp_path_factory.mktemp("scenes"), seed=0, n=40)


def test_render_is_deterministic(scenes: Path, tmp_path: Path) -> None:
    assert _files(render_scenes(tmp_path / "same", seed=0, n=40)) == _files(scenes)
    other = _files(render_scenes(tmp_path / "other", seed=1, n=40))
    assert other.keys() == _files(scenes).keys() and other != _files(scenes)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools mask decode under numpy 2
def test_coco_instances_load_and_are_consistent(scenes: Path) -> None:
    import contextlib
    import io

    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(scenes / INSTANCES_FILE))
    assert len(coco.getImgIds()) == 40
    assert {c["name"] for c in coco.loadCats(coco.getCatIds())} == {c.name for c in CATEGORIES}
    assert (
        coco.loadCats(18)[0]["name"] == "dog" and coco.loadCats(67)[0]["name"] == "dining table"
    )  # COCO ids
    sizes = []
    for img in coco.loadImgs(coco.getImgIds()):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
        assert 1 <= len(anns) <= 5
        assert (scenes / "images" / img["file_name"]).is_file()
        boxes = [a["bbox"] for a in anns]
        for i, (x, y, w, h) in enumerate(boxes):
            assert x >= 0 and y >= 0 and x + w <= img["width"] and y + h <= img["height"]
            for x2, y2, w2, h2 in boxes[i + 1 :]:
                assert x + w <= x2 or x2 + w2 <= x or y + h <= y2 or y2 + h2 <= y  # no overlap
        for ann in anns:
            name = coco.loadCats(ann["category_id"])[0]["name"]
            assert ann["color"] in CATEGORY_BY_NAME[name].colors and ann["color"] in COLORS
            x, _, w, _ = ann["bbox"]
            centre = x + w / 2
            expected = "left" if centre < 128 / 3 else "right" if centre > 256 / 3 else "center"
            assert ann["position"] == expected
            assert coco.annToMask(ann).sum() == ann["area"]
            sizes.append(max(ann["bbox"][2:]))
    assert min(sizes) <= 10 and max(sizes) >= 30  # small and large objects


def test_captions_mention_every_object(scenes: Path) -> None:
    instances = json.loads((scenes / INSTANCES_FILE).read_text())
    captions = json.loads((scenes / CAPTIONS_FILE).read_text())
    names = {c["id"]: c["name"] for c in instances["categories"]}
    per_image = Counter(a["image_id"] for a in captions["annotations"])
    assert set(per_image) == {img["id"] for img in instances["images"]} and set(per_image.values()) <= {1, 2}
    for cap in captions["annotations"]:
        objects = [
            names[a["category_id"]] for a in instances["annotations"] if a["image_id"] == cap["image_id"]
        ]
        text = cap["caption"].lower()
        for name, count in Counter(objects).items():
            # by count in the listing caption; the position caption may split them by region
            plural = CATEGORY_BY_NAME[name].plural
            assert re.search(rf"\ban? (\w+ )?{name}\b", text) or plural in text, (name, text)
            if count > 1 and not any(p in text for p in (" on the ", " in the center")):
                assert plural in text, (name, text)
    chair = pytest.importorskip("vlmbench.metrics.chair")
    for cap in captions["annotations"]:
        objects = {
            names[a["category_id"]] for a in instances["annotations"] if a["image_id"] == cap["image_id"]
        }
        assert set(chair.extract_objects(cap["caption"])) == objects, cap["caption"]


def test_scene_groups_make_co_occurrence(tmp_path: Path) -> None:
    out = render_scenes(tmp_path, seed=0, n=200)
    instances = json.loads((out / INSTANCES_FILE).read_text())
    names = {c["id"]: c["name"] for c in instances["categories"]}
    group = {img["id"]: img["scene_group"] for img in instances["images"]}
    in_group = [names[a["category_id"]] in GROUPS[group[a["image_id"]]] for a in instances["annotations"]]
    assert sum(in_group) / len(in_group) > 0.8


def test_pope_set(tmp_path: Path) -> None:
    parquet = generate("pope", tmp_path / "a", seed=0, n=12)
    rows = _rows(parquet)
    assert set(RELEASE_COLUMNS["pope"]) <= set(rows[0]) and len(rows) == 12 * 18
    meta = json.loads((tmp_path / "a" / META_FILE).read_text())
    assert meta["synthetic"] is True and meta["task"] == "pope" and meta["generator"] == "pope-from-coco"
    assert generate("pope", tmp_path / "b", seed=0, n=12).read_bytes() == parquet.read_bytes()
    assert generate("pope", tmp_path / "c", seed=1, n=12).read_bytes() != parquet.read_bytes()


def test_pope_adversarial_negatives_co_occur_more_than_random(tmp_path: Path) -> None:
    """By construction adversarial negatives share a scene group with the positives far more often than random ones."""
    rows = _rows(generate("pope", tmp_path, seed=0, n=30))

    def name(question: str) -> str:
        return re.sub(r"^Is there an? | in the image\?$", "", question)

    positives: dict[str, set[str]] = {}
    for row in rows:
        if row["answer"] == "yes":
            positives.setdefault(row["image_source"], set()).add(name(row["question"]))
    share: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for row in rows:
        if row["answer"] == "no":
            negative = name(row["question"])
            related = any(negative in m and positives[row["image_source"]] & set(m) for m in GROUPS.values())
            share[row["category"]] += related
            total[row["category"]] += 1
    rate = {setting: share[setting] / total[setting] for setting in total}
    assert rate["adversarial"] > rate["random"] + 0.15, rate


def test_chair_set(tmp_path: Path) -> None:
    parquet = generate_chair(tmp_path / "a", seed=0, n=15)
    rows = _rows(parquet)
    assert len(rows) == 15 and set(RELEASE_COLUMNS["chair"]) <= set(rows[0])
    for row in rows:
        assert row["question_id"] == str(row["image_id"])
        assert row["gt_objects"] and set(row["gt_objects"]) <= set(CATEGORY_BY_NAME)
        assert 1 <= len(row["captions"]) <= 2
        assert row["image"].size == (128, 128)
    assert generate_chair(tmp_path / "b", seed=0, n=15).read_bytes() == parquet.read_bytes()


def test_vqav2_set(tmp_path: Path) -> None:
    parquet = generate_vqav2(tmp_path / "a", seed=0, n=60)
    rows = _rows(parquet)
    assert len(rows) == 60 and set(RELEASE_COLUMNS["vqav2"]) <= set(rows[0])
    assert len({r["question_id"] for r in rows}) == 60
    assert {r["answer_type"] for r in rows} == {"yes/no", "number", "other"}
    kinds = Counter(r["question"].split()[0] + " " + r["question"].split()[1] for r in rows)
    assert {"What color", "How many", "Is the", "Is there"} <= set(kinds)
    noisy = 0
    for row in rows:
        answers = row["answers"]
        assert [a["answer_id"] for a in answers] == list(range(1, 11))
        assert {a["answer_confidence"] for a in answers} == {"yes"}
        tally = Counter(a["answer"] for a in answers)
        assert tally[row["multiple_choice_answer"]] >= 6
        noisy += len(tally) > 1
        if row["answer_type"] == "yes/no":
            assert row["multiple_choice_answer"] in ("yes", "no")
    assert 0 < noisy < 60  # some annotator noise, but not everywhere
    assert generate_vqav2(tmp_path / "b", seed=0, n=60).read_bytes() == parquet.read_bytes()
    assert generate_vqav2(tmp_path / "c", seed=5, n=60).read_bytes() != parquet.read_bytes()


def test_training_captions_and_instructions(tmp_path: Path) -> None:
    captions = json.loads(generate_training_captions(tmp_path / "cap", seed=0, n=10).read_text())
    assert len(captions) >= 10
    for record in captions:
        assert (tmp_path / "cap" / record["image"]).is_file()
        human, gpt = record["conversations"]
        assert human["from"] == "human" and human["value"].startswith("<image>\n") and gpt["from"] == "gpt"

    path = generate_instructions(tmp_path / "ins", seed=0, n=40)
    records = json.loads(path.read_text())
    assert path.read_bytes() == generate_instructions(tmp_path / "ins2", seed=0, n=40).read_bytes()
    answers: Counter[str] = Counter()
    for record in records:
        assert (tmp_path / "ins" / record["image"]).is_file()
        turns = record["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
        assert turns[0]["value"].startswith("<image>\n")
        assert sum("<image>" in t["value"] for t in turns) == 1
        for q, a in zip(turns[0::2], turns[1::2], strict=True):
            if q["value"].removeprefix("<image>\n").startswith("Is there"):
                answers[a["value"]] += 1
    assert answers["yes"] > 0 and abs(answers["yes"] - answers["no"]) <= 0.1 * answers["yes"]


def test_preference_pairs(tmp_path: Path) -> None:
    pairs = json.loads(generate_preference_pairs(tmp_path, seed=0, n=30).read_text())
    assert len(pairs) == 30
    kinds = Counter()
    for pair in pairs:
        assert set(pair) == {"image", "prompt", "chosen", "rejected"}
        assert (tmp_path / pair["image"]).is_file() and pair["chosen"] != pair["rejected"]
        kinds["yes/no" if pair["chosen"] in ("yes", "no") else "caption"] += 1
    assert kinds["yes/no"] and kinds["caption"]


def test_dispatcher() -> None:
    assert SYNTH_TASKS == (
        "pope", "chair", "vqav2", "docvqa", "textvqa", "ocr", "chartqa", "pair_compare", "probes", "grounding",
    )
    assert set(DEFAULT_N) == set(SYNTH_TASKS)
    with pytest.raises(UserError, match="pope, chair, vqav2"):
        generate("nope", Path("unused"))
    with pytest.raises(UserError, match="at least 1"):
        generate("pope", Path("unused"), n=0)
