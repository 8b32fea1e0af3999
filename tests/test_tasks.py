"""Task configs, the task registry and data loading from every layout (tiny hand-made releases)."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from vlmbench.cli import main
from vlmbench.data import loaders
from vlmbench.data.layout import META_FILE, RELEASE_COLUMNS
from vlmbench.data.loaders import default_cache_dir
from vlmbench.errors import UserError
from vlmbench.tasks.base import SampleError, TaskAdapter
from vlmbench.tasks.registry import default_tasks_dir, list_tasks, load_task, read_task_config

TASKS = ("chair", "chartqa", "docvqa", "ocr", "pope", "textvqa", "vqav2")  # one per public benchmark (and scorer)
SYNTHETIC_ONLY = {"pair_compare": "vqav2"}  # task → the existing scorer it uses; no public release
HALLUCINATION = {  # task → scorer (docs/hallucination.md; tested in test_hallucination_*.py)
    "probes": "probes", "grounding": "grounding", "refcoco": "grounding", "repope": "pope", "amber": "amber",
    "amber_discriminative": "amber", "amber_generative": "amber", "hallusionbench": "hallusionbench",
}  # fmt: skip
N_ROWS = 6


def png(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def release_rows(task: str, n: int = N_ROWS) -> list[dict[str, Any]]:
    """Rows with the public release's column names (images as PNG bytes)."""
    rows = []
    for i in range(n):
        image = png((10 * i, 100, 50))
        if task == "pope":
            split = ("random", "popular", "adversarial")[i % 3]
            rows.append(
                {
                    "id": str(i),
                    "question_id": str(i + 1),
                    "question": f"Is there a dog{i} in the image?",
                    "answer": "yes" if i % 2 == 0 else "no",
                    "image_source": f"COCO_val2014_{i // 2:012d}",
                    "image": image,
                    "category": split,
                }
            )
        elif task == "docvqa":
            rows.append(
                {
                    "questionId": 100 + i,
                    "question": f"What is field {i}?",
                    "answers": [f"v{i}", f"V{i}"],
                    "image": image,
                    "docId": i // 2,
                }
            )
        elif task == "textvqa":
            rows.append(
                {
                    "question_id": i,
                    "question": f"What does sign {i} say?",
                    "answers": [f"w{i}"] * 10,
                    "image": image,
                    "image_id": f"img{i // 2}",
                }
            )
        elif task == "vqav2":
            answers = [{"answer": f"a{i}", "answer_confidence": "yes", "answer_id": k + 1} for k in range(10)]
            rows.append(
                {
                    "question_id": 5000 + i,
                    "question": f"What color is thing {i}?",
                    "answers": answers,
                    "image": image,
                    "image_id": i // 2,
                }
            )
        elif task == "chartqa":
            rows.append(
                {"type": "human_test", "question": f"What is bar {i}?", "answer": str(i * 3), "image": image}
            )
        elif task == "ocr":
            rows.append(
                {
                    "question": "What is written in the image?",
                    "answer": [f"TEXT{i}"],
                    "image": image,
                    "dataset": "x",
                    "question_type": "Regular Text Recognition",
                }
            )
        elif task == "chair":
            rows.append({"image_id": 900 + i, "image": image, "gt_objects": ["dog", "cup"][: 1 + i % 2]})
        else:
            raise AssertionError(task)
    return rows


def _dataset(rows: list[dict[str, Any]]):
    import datasets

    table = {key: [row[key] for row in rows] for key in rows[0]}
    table["image"] = [{"bytes": b, "path": None} if isinstance(b, bytes) else b for b in table["image"]]
    return datasets.Dataset.from_dict(table).cast_column("image", datasets.Image())


def write_parquet(
    out: Path, rows: list[dict[str, Any]], split: str = "test", name: str | None = None
) -> Path:
    (out / "data").mkdir(parents=True, exist_ok=True)
    path = out / "data" / (name or f"{split}-00000-of-00001.parquet")
    _dataset(rows).to_parquet(str(path))
    return out


def write_layout(layout: str, out: Path, rows: list[dict[str, Any]], split: str) -> Path:
    import datasets

    if layout == "parquet":
        return write_parquet(out, rows, split)
    if layout == "save_to_disk":
        _dataset(rows).save_to_disk(str(out))
    elif layout == "dataset_dict":
        datasets.DatasetDict({split: _dataset(rows), "other": _dataset(rows[:1])}).save_to_disk(str(out))
    else:
        raise AssertionError(layout)
    return out


@pytest.fixture(autouse=True)
def empty_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never look at this machine's real Hugging Face cache."""
    roots = (tmp_path / "hf-datasets", tmp_path / "hf-hub")
    monkeypatch.setattr(loaders, "_hf_cache_roots", lambda: roots)


# --- configs and registry ---------------------------------------------------------------------------


def test_task_yamls_parse_and_match_release_columns() -> None:
    configs = {c.name: c for c in list_tasks()}
    assert tuple(configs) == tuple(sorted((*TASKS, *SYNTHETIC_ONLY, *HALLUCINATION)))
    for name, scorer in HALLUCINATION.items():
        config = configs.pop(name)
        adapter = load_task(name)
        assert config.scorer == scorer and config.primary_metric in adapter.scorer.metric_names()
    for name, scorer in SYNTHETIC_ONLY.items():
        config = configs.pop(name)
        assert config.scorer == scorer and config.hf_dataset is None and name not in RELEASE_COLUMNS
    for name, config in configs.items():
        adapter = load_task(name)
        assert isinstance(adapter, TaskAdapter) and adapter.config == config
        assert set(RELEASE_COLUMNS[name]) <= set(adapter.required_columns())
        assert config.primary_metric and config.scorer == name
        assert config.build_prompt("Q?")
    assert configs["pope"].answer_mode == "choices" and configs["pope"].choices == ("Yes", "No")
    assert configs["docvqa"].split == "validation" and configs["docvqa"].hf_config == "DocVQA"


def test_tasks_dir_is_the_repository_folder() -> None:
    assert default_tasks_dir() == Path(__file__).resolve().parents[1] / "tasks"


def test_unknown_task_lists_available() -> None:
    with pytest.raises(UserError, match="unknown task 'nope'.*pope"):
        load_task("nope")


def _yaml(tmp_path: Path, **changes: Any) -> Path:
    """A copy of tasks/ with pope.yaml changed (None deletes a field)."""
    import yaml

    tasks_dir = tmp_path / "tasks"
    shutil.copytree(default_tasks_dir(), tasks_dir)
    data = yaml.safe_load((tasks_dir / "pope.yaml").read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    (tasks_dir / "pope.yaml").write_text(yaml.safe_dump(data))
    return tasks_dir


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"colour": "red"}, r"unknown field\(s\) 'colour'"),
        ({"scorer": None}, r"missing field\(s\) 'scorer'"),
        ({"answer_mode": "guess"}, r"field 'answer_mode': expected one of generate, choices"),
        ({"choices": ["Yes"]}, r"field 'choices'"),
        ({"max_new_tokens": 0}, r"field 'max_new_tokens'"),
        ({"name": "pope2"}, r"field 'name'.*does not match"),
        ({"prompt_template": "{question} {extra}"}, r"field 'prompt_template'"),
        ({"columns": {"question": "question", "bogus": "x"}}, r"field 'columns': unknown role"),
        ({"columns": {"question": "question", "image": "image"}}, r"field 'columns'.*answer"),
        ({"adapter": "nosuch"}, r"field 'adapter': unknown adapter 'nosuch'; available: amber, chair, generic"),
    ],
)
def test_yaml_validation_errors_name_file_and_field(tmp_path: Path, changes: dict, message: str) -> None:
    tasks_dir = _yaml(tmp_path, **changes)
    with pytest.raises(UserError, match=message) as info:
        load_task("pope", tasks_dir)
    assert "pope.yaml" in str(info.value)


def test_invalid_yaml_syntax(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(UserError, match="bad.yaml: not valid YAML"):
        read_task_config(path)


# --- loading from a data directory ---------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["parquet", "save_to_disk", "dataset_dict"])
@pytest.mark.parametrize("task", TASKS)
def test_load_each_task_from_each_layout(tmp_path: Path, task: str, layout: str) -> None:
    adapter = load_task(task)
    rows = release_rows(task)
    data_dir = write_layout(layout, tmp_path / "data", rows, adapter.config.split)
    samples, info = adapter.load(data_dir)
    assert len(samples) == N_ROWS
    assert info.source == f"local:{data_dir}" and not info.synthetic and len(info.fingerprint) == 64
    assert len({s.question_id for s in samples}) == N_ROWS
    for sample in samples:
        assert "error" not in sample.meta
        assert sample.image_key and sample.image_bytes
        assert sample.load_image().mode == "RGB"
        row = sample.reference_row()
        assert row["question_id"] == sample.question_id
    first = samples[0]
    expected_refs = {
        "pope": ["yes"],
        "docvqa": ["v0", "V0"],
        "textvqa": ["w0"] * 10,
        "vqav2": ["a0"] * 10,
        "chartqa": ["0"],
        "ocr": ["TEXT0"],
        "chair": ["dog"],
    }[task]
    assert first.references == expected_refs
    expected_row = {
        "pope": {"answer": "yes", "category": "random"},
        "docvqa": {"answers": ["v0", "V0"]},
        "textvqa": {"answers": ["w0"] * 10},
        "vqav2": {"answers": ["a0"] * 10},
        "chartqa": {"answer": "0"},
        "ocr": {"answers": ["TEXT0"]},
        "chair": {"gt_objects": ["dog"]},
    }[task]
    assert first.reference_row() == {"question_id": first.question_id, **expected_row}
    expected_qid = {
        "pope": "1",
        "docvqa": "100",
        "textvqa": "0",
        "vqav2": "5000",
        "chartqa": "0",
        "ocr": "0",
        "chair": "900",
    }[task]
    assert first.question_id == expected_qid
    if task == "chair":
        assert first.prompt == adapter.config.prompt_template and first.meta["gt_objects"] == ["dog"]
    else:
        assert first.prompt == adapter.config.prompt_template.format(question=first.question)
    if task == "pope":
        assert [s.meta["category"] for s in samples[:3]] == ["random", "popular", "adversarial"]
        assert samples[0].image_key == samples[1].image_key == "COCO_val2014_000000000000"
    if task in ("chartqa", "ocr"):  # no image id column: content hash
        assert first.image_key.startswith("sha1:")


def test_corrupt_image_fails_only_that_sample(tmp_path: Path) -> None:
    rows = release_rows("textvqa")
    rows[2]["image"] = b"\x89PNG\r\n\x1a\nnot really a png"
    samples, _ = load_task("textvqa").load(write_parquet(tmp_path, rows, "validation"))
    assert len(samples) == N_ROWS
    with pytest.raises(SampleError, match="cannot read image for question_id 2"):
        samples[2].load_image()
    for i in (0, 1, 3):
        samples[i].load_image()


def test_image_path_column_is_resolved_and_missing_file_is_sample_error(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(png())
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = release_rows("chartqa", 2)
    rows[0]["image"] = "images/a.png"  # a plain path column, relative to the data folder
    rows[1]["image"] = "images/missing.png"
    (tmp_path / "data").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "data" / "test-00000-of-00001.parquet")
    samples, _ = load_task("chartqa").load(tmp_path)
    assert samples[0].load_image().size == (8, 6)
    with pytest.raises(SampleError, match="question_id 1"):
        samples[1].load_image()


def test_missing_column_names_it_and_the_expected_ones(tmp_path: Path) -> None:
    rows = [{k: v for k, v in row.items() if k != "category"} for row in release_rows("pope")]
    with pytest.raises(
        UserError, match=r"lacks the column\(s\) category; expected the columns of lmms-lab/POPE"
    ):
        load_task("pope").load(write_parquet(tmp_path, rows))


def test_duplicate_question_ids(tmp_path: Path) -> None:
    rows = release_rows("docvqa")
    rows[3]["questionId"] = rows[1]["questionId"]
    with pytest.raises(UserError, match="duplicate question ids .*: 101"):
        load_task("docvqa").load(write_parquet(tmp_path, rows, "validation"))


def test_pope_ids_repeating_per_split_are_scoped_by_category(tmp_path: Path) -> None:
    rows = release_rows("pope")
    for i, row in enumerate(rows):
        row["question_id"] = str(i // 3)  # each split numbers its own questions 0, 1, ...
    samples, _ = load_task("pope").load(write_parquet(tmp_path, rows))
    assert [s.question_id for s in samples[:4]] == ["random/0", "popular/0", "adversarial/0", "random/1"]
    rows[3]["category"] = "random"
    rows[3]["question_id"] = rows[0]["question_id"]  # a true duplicate
    with pytest.raises(UserError, match="duplicate question ids"):
        load_task("pope").load(write_parquet(tmp_path / "dup", rows))


def test_pope_unknown_category_lists_the_splits(tmp_path: Path) -> None:
    rows = release_rows("pope")
    rows[4]["category"] = "hard"
    with pytest.raises(UserError, match="unknown POPE category 'hard'.*adversarial, popular, random"):
        load_task("pope").load(write_parquet(tmp_path, rows))


def test_malformed_rows_are_marked_not_dropped(tmp_path: Path) -> None:
    rows = release_rows("pope")
    rows[1]["question"] = "  "
    rows[2]["answer"] = "maybe"
    samples, info = load_task("pope").load(write_parquet(tmp_path, rows))
    assert len(samples) == N_ROWS and info.meta["malformed"] == 2
    assert "empty question" in samples[1].meta["error"]
    assert "neither yes nor no" in samples[2].meta["error"]
    assert samples[2].reference_row() == {"question_id": "3", "answer": "", "category": "adversarial"}
    assert "error" not in samples[0].meta


def test_malformed_chair_and_empty_ids(tmp_path: Path) -> None:
    rows = release_rows("chair")
    rows[1]["gt_objects"] = ["dog", "unicorn"]
    samples, _ = load_task("chair").load(write_parquet(tmp_path / "chair", rows))
    assert "'unicorn' is not a COCO category name" in samples[1].meta["error"]
    assert samples[1].reference_row() == {"question_id": "901", "gt_objects": []}
    rows = release_rows("textvqa")
    rows[4]["question_id"] = None
    samples, _ = load_task("textvqa").load(write_parquet(tmp_path / "tv", rows, "validation"))
    assert samples[4].question_id == "row-4" and "empty question id" in samples[4].meta["error"]


def test_all_rows_malformed_is_a_user_error(tmp_path: Path) -> None:
    rows = release_rows("docvqa")
    for row in rows:
        row["answers"] = None  # DocVQA's test split has no public answers
    with pytest.raises(UserError, match="all 6 rows .* unusable.*no reference answers"):
        load_task("docvqa").load(write_parquet(tmp_path, rows, "validation"))


def test_limit_keeps_file_order(tmp_path: Path) -> None:
    data_dir = write_parquet(tmp_path, release_rows("pope"))
    full, _ = load_task("pope").load(data_dir)
    some, _ = load_task("pope").load(data_dir, limit=4)
    assert [s.question_id for s in some] == [s.question_id for s in full[:4]]
    with pytest.raises(UserError, match="--limit"):
        load_task("pope").load(data_dir, limit=0)


def test_fingerprint_changes_with_data_and_prompt(tmp_path: Path) -> None:
    import dataclasses

    rows = release_rows("chartqa")
    one = write_parquet(tmp_path / "one", rows)
    two = write_parquet(tmp_path / "two", rows)
    adapter = load_task("chartqa")
    fp1 = adapter.load(one)[1].fingerprint
    assert adapter.load(two)[1].fingerprint == fp1  # same bytes, different folder
    rows[0]["answer"] = "999"
    three = write_parquet(tmp_path / "three", rows)
    assert adapter.load(three)[1].fingerprint != fp1
    changed = TaskAdapter(dataclasses.replace(adapter.config, prompt_template="Q: {question}"))
    assert changed.load(one)[1].fingerprint != fp1


def test_no_data_and_unreadable_data(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        UserError, match=r"no data found at .*empty: expected a Hugging Face release of lmms-lab/POPE"
    ):
        load_task("pope").load(tmp_path / "empty")
    with pytest.raises(UserError, match="does not exist"):
        load_task("pope").load(tmp_path / "absent")
    (tmp_path / "bad" / "data").mkdir(parents=True)
    (tmp_path / "bad" / "data" / "test-00000-of-00001.parquet").write_bytes(b"not parquet")
    with pytest.raises(UserError, match="cannot read the data"):
        load_task("pope").load(tmp_path / "bad")


def test_split_files_are_preferred(tmp_path: Path) -> None:
    rows = release_rows("vqav2")
    write_parquet(tmp_path, rows[:2], name="validation-00000-of-00001.parquet")
    write_parquet(tmp_path, rows[2:], name="testdev-00000-of-00001.parquet")
    samples, info = load_task("vqav2").load(tmp_path)
    assert [s.question_id for s in samples] == ["5000", "5001"]
    assert info.meta["files"] == ["data/validation-00000-of-00001.parquet"]


def test_config_folders_and_missing_shards(tmp_path: Path) -> None:
    rows = release_rows("docvqa")
    write_parquet(tmp_path / "DocVQA", rows[:3], name="validation-00000-of-00001.parquet")
    write_parquet(tmp_path / "InfographicVQA", rows[3:], name="validation-00000-of-00001.parquet")
    for sub in ("DocVQA", "InfographicVQA"):  # the release keeps config folders at the top level
        shutil.move(
            tmp_path / sub / "data" / "validation-00000-of-00001.parquet",
            tmp_path / sub / "validation.parquet",
        )
    samples, _ = load_task("docvqa").load(tmp_path)  # hf_config: DocVQA
    assert [s.question_id for s in samples] == ["100", "101", "102"]
    with pytest.raises(UserError, match="several data sets"):
        load_task("textvqa").load(tmp_path)  # no config to choose with
    shards = tmp_path / "shards"
    write_parquet(shards, rows[:3], name="validation-00000-of-00002.parquet")
    with pytest.raises(UserError, match="missing shard.*validation-00001-of-00002"):
        load_task("docvqa").load(shards)


def test_hf_cache_lookup(tmp_path: Path) -> None:
    datasets_cache, hub_cache = tmp_path / "ds", tmp_path / "hub"
    assert loaders.find_in_hf_cache("lmms-lab/POPE", "test", None, datasets_cache, hub_cache) is None
    snapshot = hub_cache / "datasets--lmms-lab--POPE" / "snapshots" / "abc123"
    write_parquet(snapshot, release_rows("pope"))
    assert loaders.find_in_hf_cache("lmms-lab/POPE", "test", None, datasets_cache, hub_cache) == snapshot
    assert loaders.find_in_hf_cache("lmms-lab/POPE", "validation", None, datasets_cache, hub_cache) is None
    prepared = datasets_cache / "lmms-lab___doc_vqa" / "DocVQA" / "0.0.0" / "f00"
    prepared.mkdir(parents=True)
    _dataset(release_rows("docvqa")).save_to_disk(str(tmp_path / "tmp_save"))
    shutil.copy(next((tmp_path / "tmp_save").glob("*.arrow")), prepared / "doc_vqa-validation.arrow")
    assert (
        loaders.find_in_hf_cache("lmms-lab/DocVQA", "validation", "DocVQA", datasets_cache, hub_cache)
        == prepared
    )
    assert (
        loaders.find_in_hf_cache("lmms-lab/DocVQA", "validation", "Other", datasets_cache, hub_cache) is None
    )


def test_default_source_prefers_the_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = tmp_path / "hf-hub" / "datasets--lmms-lab--POPE" / "snapshots" / "abc"
    write_parquet(snapshot, release_rows("pope"))
    samples, info = load_task("pope").load(cache_dir=tmp_path / "cache")
    assert info.source == "hf-cache:lmms-lab/POPE" and not info.synthetic and len(samples) == N_ROWS
    assert not (tmp_path / "cache").exists()


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VLMBENCH_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("VLMBENCH_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "vlmbench"


# --- the synthetic default set -------------------------------------------------------------------------


def _fake_generator(task: str, calls: list[str]) -> Callable[..., Path]:
    def generate(name: str, out: Path, seed: int = 0, n: int | None = None) -> Path:
        calls.append(name)
        assert name == task
        write_parquet(Path(out), release_rows(task, n or 3))
        (Path(out) / META_FILE).write_text(json.dumps({"synthetic": True, "split": "test", "n": n}))
        return Path(out)

    return generate


def test_synthetic_set_is_generated_once_into_cache_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vlmbench.data.synth as synth

    calls: list[str] = []
    monkeypatch.setattr(synth, "generate", _fake_generator("textvqa", calls))
    cache = tmp_path / "cache"
    samples, info = load_task("textvqa").load(cache_dir=cache, synthetic_n=4)
    target = cache / "data" / "textvqa-seed0-n4"
    assert info.source == f"synthetic:{target}" and info.synthetic and len(samples) == 4
    assert info.meta["generator"]["synthetic"] is True
    load_task("textvqa").load(cache_dir=cache, synthetic_n=4)
    assert calls == ["textvqa"]  # reused
    assert sorted(p.name for p in (cache / "data").iterdir()) == ["textvqa-seed0-n4"]


def test_failed_generation_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import vlmbench.data.synth as synth

    def broken(task: str, out: Path, seed: int = 0, n: int | None = None) -> Path:
        (Path(out) / "partial").write_text("x")
        raise RuntimeError("killed")

    monkeypatch.setattr(synth, "generate", broken)
    with pytest.raises(RuntimeError):
        load_task("chair").load(cache_dir=tmp_path, synthetic_n=2)
    assert list((tmp_path / "data").iterdir()) == []


def test_generation_race_keeps_the_winner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import vlmbench.data.synth as synth

    calls: list[str] = []
    inner = _fake_generator("chair", calls)

    def racing(task: str, out: Path, seed: int = 0, n: int | None = None) -> Path:
        inner(task, tmp_path / "data" / f"chair-seed0-n{n}", seed, n)  # another rank finishes first
        return inner(task, out, seed, n)

    monkeypatch.setattr(synth, "generate", racing)
    samples, info = load_task("chair").load(cache_dir=tmp_path, synthetic_n=2)
    assert len(samples) == 2 and info.synthetic
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["chair-seed0-n2"]


@pytest.mark.parametrize("task", ["pope", "chair", "ocr"])
def test_real_synthetic_generators_load(tmp_path: Path, task: str) -> None:
    pytest.importorskip("vlmbench.data.synth", reason="synthetic generators not present")
    samples, info = load_task(task).load(cache_dir=tmp_path, synthetic_n=2)
    assert info.synthetic and info.source.startswith("synthetic:") and samples
    assert all("error" not in s.meta for s in samples)
    samples[0].load_image()


# --- scoring and the CLI -----------------------------------------------------------------------------


def test_score_delegates_to_the_task_metric(tmp_path: Path) -> None:
    samples, _ = load_task("pope").load(write_parquet(tmp_path, release_rows("pope")))
    rows = [{**s.reference_row(), "prediction": s.references[0].capitalize()} for s in samples]
    result = load_task("pope").score(rows)
    assert result["n"] == N_ROWS and result["metrics"]["all"]["accuracy"] == 1.0


def test_tasks_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["TASK", "ANSWER", "MODE"]
    pope = next(line for line in out if line.startswith("pope "))
    assert "choices" in pope and "f1_mean_of_splits" in pope and "synthetic (n=30" in pope
    assert main(["tasks", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert [t["name"] for t in listing] == sorted((*TASKS, *SYNTHETIC_ONLY, *HALLUCINATION))


# --- multi-image samples -----------------------------------------------------------------------------


def test_two_image_task_samples_carry_both_images(tmp_path: Path) -> None:
    """pair_compare: two images per sample, each scene in two pairs (so in two samples' key lists)."""
    from vlmbench.data.synth.pairs import generate_pair_compare

    adapter = load_task("pair_compare")
    assert "image_2" in adapter.required_columns()
    samples, info = adapter.load(cache_dir=tmp_path, synthetic_n=8)
    assert info.synthetic and len(samples) == 8 and all("error" not in s.meta for s in samples)
    for sample in samples:
        assert len(sample.image_keys) == 2 and sample.image_keys[0] == sample.image_key
        first, second = sample.load_images()
        assert first.size == second.size == (128, 128) and first.tobytes() != second.tobytes()
        assert sample.prompt.count("<image>") == 2
        assert sample.references[0] in ({"first", "second"} if sample.meta["question_type"] == "which_image" else {"yes", "no"})
    firsts, seconds = {s.image_keys[0] for s in samples}, {s.image_keys[1] for s in samples}
    assert firsts & seconds  # a scene is the second image of one pair and the first of the next
    again = generate_pair_compare(tmp_path / "again", seed=0, n=8)
    assert again.read_bytes() == next((tmp_path / "data").glob("pair_compare-*/data/*.parquet")).read_bytes()


def test_extra_images_role_reads_each_column_and_names_a_missing_one(tmp_path: Path) -> None:
    import datasets

    rows = release_rows("ocr")
    table = {key: [row[key] for row in rows] for key in rows[0]}
    second = [png((0, 0, 10 * i)) for i in range(N_ROWS)]
    corrupt = b"not a png"
    second[2] = corrupt
    data = datasets.Dataset.from_dict({**table, "image": [{"bytes": b, "path": None} for b in table["image"]],
                                       "image_b": [{"bytes": b, "path": None} for b in second]})
    data = data.cast_column("image", datasets.Image()).cast_column("image_b", datasets.Image())
    (tmp_path / "d" / "data").mkdir(parents=True)
    data.to_parquet(str(tmp_path / "d" / "data" / "test-00000-of-00001.parquet"))
    config = load_task("ocr").config
    two = TaskAdapter(dataclasses.replace(config, columns={**config.columns, "extra_images": "image_b"}))
    samples, _ = two.load(tmp_path / "d")
    assert [s.images[1].image_bytes for s in samples] == second
    assert all(len(set(s.image_keys)) == 2 for s in samples)
    with pytest.raises(SampleError, match="cannot read image"):
        samples[2].load_images()
    assert samples[3].load_images()[1].getpixel((0, 0)) == (0, 0, 30)
    missing = TaskAdapter(dataclasses.replace(config, columns={**config.columns, "extra_images": "image_c"}))
    with pytest.raises(UserError, match="image_c"):
        missing.load(tmp_path / "d")
