"""The hallucination tasks end to end: the probe and referring-expression generators, the release
loaders on crafted miniatures (AMBER, HallusionBench, RePOPE, lmms-lab/RefCOCO), their errors, and
`vlmbench run` over all of them with the bundled demo model."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
import release_miniatures as mini

from vlmbench.cli import main
from vlmbench.data.synth import generate
from vlmbench.data.synth.scenes.probes import probe_rows
from vlmbench.data.synth.scenes.refexp import referable
from vlmbench.data.synth.scenes.sampling import (
    STREAM_PROBES,
    STREAM_REFEXP,
    rng_for,
    sample_scene,
    sample_scenes,
)
from vlmbench.errors import UserError
from vlmbench.tasks.registry import load_task


def _rows(parquet: Path) -> list[dict]:
    import datasets

    return datasets.Dataset.from_parquet(str(parquet)).remove_columns("image").to_list()


# --- generators ----------------------------------------------------------------------------------------

_COLOR = re.compile(r"^Is the (.+) (\w+)\?$")
_POSITION = re.compile(r"^Is the (.+) to the (left|right) of the (.+)\?$")
_COUNT = re.compile(r"^(?:Is there exactly one (.+)|Are there exactly (\w+) (.+)) in the image\?$")
_NUMBERS = {"two": 2, "three": 3, "four": 4, "five": 5}


def _truth(scene, row: dict) -> bool:
    """Whether a probe question is true of the scene (recomputed from the annotations)."""
    by_name = {}
    for obj in scene.objects:
        by_name.setdefault(obj.category.name, []).append(obj)
    question = row["question"]
    if row["probe_type"] == "color":
        name, color = _COLOR.match(question).groups()
        assert len(by_name[name]) == 1  # only categories present once
        return by_name[name][0].color == color
    if row["probe_type"] == "position":
        a, side, b = _POSITION.match(question).groups()
        assert len(by_name[a]) == len(by_name[b]) == 1
        (oa,), (ob,) = by_name[a], by_name[b]
        left, right = (oa, ob) if oa.bbox[0] < ob.bbox[0] else (ob, oa)
        assert left.bbox[0] + left.bbox[2] < right.bbox[0]  # no horizontal overlap: unambiguous
        return (side == "left") == (oa is left)
    one, word, plural = _COUNT.match(question).groups()
    count = 1 if one else _NUMBERS[word]
    name = one or next(o.category.name for o in scene.objects if o.category.plural == plural)
    return len(by_name.get(name, [])) == count


def test_probe_questions_are_true_or_false_as_labelled_and_balanced() -> None:
    scenes = sample_scenes(5, 40, min_categories=3, stream=STREAM_PROBES)
    rows = probe_rows(scenes, rng_for(5, 100 + STREAM_PROBES))
    by_id = {s.image_id: s for s in scenes}
    for row in rows:
        assert _truth(by_id[row["image_id"]], row) == (row["answer"] == "yes"), row
    tally = Counter((r["probe_type"], r["category"], r["answer"]) for r in rows)
    for probe in ("color", "position", "count"):
        for regime in ("random", "popular", "adversarial"):
            assert tally[(probe, regime, "yes")] == tally[(probe, regime, "no")] > 0
    # adversarial colours come from the scene (unless a fallback was needed); off-by-one counts
    for row in rows:
        if (
            row["answer"] == "no"
            and row["category"] == "adversarial"
            and row["probe_type"] == "color"
            and not row["fallback"]
        ):
            color = _COLOR.match(row["question"]).group(2)
            assert color in {o.color for o in by_id[row["image_id"]].objects}
    for yes, no in zip(rows[::2], rows[1::2], strict=True):
        if yes["probe_type"] == "count" and yes["category"] == "adversarial":
            counts = [
                int(_NUMBERS.get(m, 1))
                for m in (_COUNT.match(q["question"]).group(2) or "one" for q in (yes, no))
            ]
            assert abs(counts[0] - counts[1]) == 1


def test_probe_and_refexp_sets_are_deterministic_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for task, n in (("probes", 3), ("grounding", 5)):
        first, second = tmp_path / f"{task}-a", tmp_path / f"{task}-b"
        for out in (first, second):
            assert (
                main(["data", "synth", "--task", task, "--out", str(out), "--seed", "2", "--n", str(n)]) == 0
            )
        files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
        assert files and all((first / f).read_bytes() == (second / f).read_bytes() for f in files)
    assert "probes" in capsys.readouterr().out
    refs = _rows(next((tmp_path / "grounding-a").rglob("*.parquet")))
    assert len(refs) == 5 and all(len(r["answer"]) == 1 and r["answer"][0].startswith("the ") for r in refs)


def test_referring_expressions_name_one_object() -> None:
    rng = rng_for(0, STREAM_REFEXP)
    for image_id in range(1, 30):
        scene = sample_scene(rng, image_id)
        for obj in referable(scene):
            assert [(o.color, o.category.name) for o in scene.objects].count(
                (obj.color, obj.category.name)
            ) == 1


# --- release loaders -------------------------------------------------------------------------------


def test_amber_loader_reads_the_release_layout(tmp_path: Path) -> None:
    root = mini.write_amber(tmp_path / "amber")
    samples, info = load_task("amber").load(root)
    assert [s.question_id for s in samples] == [str(i) for i in range(1, 10)]
    assert info.source == f"local:{root}" and not info.synthetic
    gen = samples[0].reference_row()
    assert (
        gen["amber_type"] == "generative"
        and gen["truth"] == ["dog", "grass", "sky"]
        and gen["association"]["dog"] == ["puppy"]
    )
    assert samples[3].reference_row()["answer"] == "no" and samples[0].image_path.endswith("AMBER_1.jpg")
    assert samples[0].load_image().size == (32, 24)
    disc, _ = load_task("amber_discriminative").load(root)
    assert len(disc) == 7 and {s.reference_row()["amber_type"] for s in disc} >= {
        "relation",
        "discriminative-relation",
    }
    flat, _ = load_task("amber").load(mini.write_amber(tmp_path / "flat", flat=True))
    assert len(flat) == 9


def test_amber_loader_errors_name_the_folder_and_the_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VLMBENCH_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UserError, match=r"no amber release at .*releases/amber.*junyangwang0410/AMBER"):
        load_task("amber").load()
    root = mini.write_amber(tmp_path / "noimages")
    for image in (root / "image").iterdir():
        image.unlink()
    (root / "image").rmdir()
    with pytest.raises(UserError, match="no AMBER image folder"):
        load_task("amber").load(root)
    evil = mini.write_amber(tmp_path / "evil")
    queries = json.loads((evil / "data/query/query_all.json").read_text())
    queries[0]["image"] = "../../outside.jpg"
    (evil / "data/query/query_all.json").write_text(json.dumps(queries))
    with pytest.raises(UserError, match="outside its folder"):
        load_task("amber").load(evil)


def test_hallusionbench_loader_keeps_the_questions_with_a_figure(tmp_path: Path) -> None:
    root = mini.write_hallusionbench(tmp_path / "hb")
    samples, _ = load_task("hallusionbench").load(root)
    assert len(samples) == 5  # the text-only VS question is left out
    row = samples[0].reference_row()
    assert row["hb_category"] == "VD" and row["hb_figure_id"] == "0" and row["answer"] == "1"
    assert samples[0].question_id == "VD_illusion_0_0_0" and samples[0].load_image().size == (32, 24)
    with pytest.raises(UserError, match="HallusionBench.json"):
        load_task("hallusionbench").load(tmp_path)


def test_refcoco_loader_asks_every_expression(tmp_path: Path) -> None:
    root = mini.write_refcoco(tmp_path / "refcoco")
    samples, _ = load_task("refcoco").load(root)
    assert [s.question_id for s in samples] == ["101/0", "101/1", "102", "103/0", "103/1", "103/2"]
    assert samples[1].prompt.startswith("Give the bounding box of guy in red")
    assert samples[1].reference_row()["bbox"] == [2.0, 4.0, 10.0, 12.0]
    assert [s.reference_row()["image_size"] for s in samples] == [[32, 24]] * 3 + [[40, 30]] * 3
    assert [s.load_image().size for s in samples] == [(32, 24)] * 3 + [(40, 30)] * 3
    limited, _ = load_task("refcoco").load(root, limit=2)
    assert [s.question_id for s in limited] == ["101/0", "101/1"]


def test_refcoco_without_the_release_says_what_to_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VLMBENCH_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    from vlmbench.data import loaders

    monkeypatch.setattr(loaders, "_hf_cache_roots", lambda: (tmp_path / "datasets", tmp_path / "hub"))
    with pytest.raises(UserError, match="refcoco has no synthetic stand-in.*lmms-lab/RefCOCO"):
        load_task("refcoco").load()


def _pope_with_labels(tmp_path: Path) -> tuple[Path, list[dict]]:
    root = tmp_path / "pope"
    rows = _rows(generate("pope", root, seed=1, n=3))
    mini.write_repope_labels(root / "annotations", rows, drop={"1", "30"}, flip={"2", "3", "40"})
    return root, rows


def test_repope_relabels_and_drops_as_the_release(tmp_path: Path) -> None:
    root, rows = _pope_with_labels(tmp_path)
    pope_samples, pope_info = load_task("pope").load(root)
    samples, info = load_task("repope").load(root)
    assert len(pope_samples) == len(rows) == 54 and len(samples) == 52
    ids = [s.question_id for s in samples]
    assert "1" not in ids and "30" not in ids
    original = {r["question_id"]: r["answer"] for r in rows}
    for sample in samples:
        flipped = sample.question_id in ("2", "3", "40")
        assert (sample.reference_row()["answer"] != original[sample.question_id]) == flipped
    assert (
        info.source.endswith(f"+ RePOPE labels:{root / 'annotations'}")
        and info.fingerprint != pope_info.fingerprint
    )
    assert info.meta["dropped"] == 2 and info.meta["relabelled"] == 3 and info.meta["labels"] == "RePOPE"
    limited, _ = load_task("repope").load(root, limit=3)
    assert [s.question_id for s in limited] == ids[:3]


def test_repope_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLMBENCH_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "pope"
    generate("pope", root, seed=1, n=3)
    with pytest.raises(UserError, match=r"coco_repope_random.json.*github.com/YanNeu/RePOPE"):
        load_task("repope").load(root)
    other = _rows(generate("pope", tmp_path / "other", seed=9, n=3))
    mini.write_repope_labels(
        root / "repope", [{**r, "image_source": "COCO_x"} for r in other], drop=set(), flip=set()
    )
    with pytest.raises(UserError, match="has a RePOPE label"):
        load_task("repope").load(root)


# --- end to end ---------------------------------------------------------------------------------------


def test_every_hallucination_task_runs_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLMBENCH_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    mini.write_amber(data / "amber")
    mini.write_hallusionbench(data / "hallusionbench")
    mini.write_refcoco(data / "refcoco")
    _pope_with_labels(data)
    (data / "pope").rename(data / "repope")
    for task in ("probes", "grounding"):
        generate(task, data / task, seed=0, n=4)
    tasks = "probes,grounding,amber,hallusionbench,refcoco,repope"
    code = main(["run", "--model", "internvl-style", "--tasks", tasks, "--data-dir", str(data), "--limit", "20",
                 "--output-dir", str(tmp_path / "runs"), "--run-name", "h", "--device", "cpu"])  # fmt: skip
    assert code == 0
    run = tmp_path / "runs" / "h"
    results = json.loads((run / "results.json").read_text())
    expected = {"probes": "f1_mean_of_types", "grounding": "acc_iou50", "amber": "amber_score",
                "hallusionbench": "qacc", "refcoco": "acc_iou50", "repope": "f1_mean_of_splits"}  # fmt: skip
    for task, metric in expected.items():
        entry = results["tasks"][task]
        assert entry["headline"]["metric"] == metric and entry["errors"] == 0, task
        assert entry["conventions"] and entry["ci95"], task
    assert "RePOPE labels" in results["tasks"]["repope"]["data"]["source"]
    html = (run / "report.html").read_text()
    assert all(metric in html for metric in expected.values())
    assert main(["check", "--baseline", str(run), "--candidate", str(run)]) == 0


def test_a_release_only_task_without_data_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.setenv("VLMBENCH_CACHE", str(tmp_path))
    code = main(
        ["run", "--model", "internvl-style", "--tasks", "hallusionbench", "--output-dir", str(tmp_path / "r")]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "no hallusionbench release at" in err and "tianyi-lab/HallusionBench" in err
