"""Visual-dependence controls (`--controls blank,shuffled`): the derangement, blank images, the files a
run writes, exact resume, sharding, and a blind model's gain."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import make_image
from hypothesis import given, settings
from hypothesis import strategies as st

from vlmbench.cli import main
from vlmbench.errors import UserError
from vlmbench.runner.controls import (
    blank_like,
    content_id,
    control_samples,
    parse_controls,
    shuffle_plan,
)
from vlmbench.tasks.base import Sample, SampleError, SampleImage

PYTHON = sys.executable


def _png(seed: int, size: tuple[int, int] = (12, 9)) -> bytes:
    buffer = io.BytesIO()
    make_image(*size, seed=seed).save(buffer, format="PNG")
    return buffer.getvalue()


def _sample(qid: str, image: int, extra: tuple[int, ...] = (), pictures: dict[int, bytes] | None = None) -> Sample:
    pictures = pictures if pictures is not None else {}
    data = lambda i: pictures.setdefault(i, _png(i))  # noqa: E731
    return Sample(
        question_id=qid, image_key=f"img{image}", question="q", prompt="<image> q?", references=["yes"], meta={},
        image_bytes=data(image), extra_images=[SampleImage(f"img{i}", data(i)) for i in extra],
    )  # fmt: skip


# ---- the derangement --------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    images=st.lists(st.integers(0, 7), min_size=1, max_size=30),
    seed=st.integers(0, 2**32 - 1),
)
def test_shuffled_never_gives_a_sample_its_own_image(images: list[int], seed: int) -> None:
    pictures: dict[int, bytes] = {}
    samples = [_sample(str(i), image, pictures=pictures) for i, image in enumerate(images)]
    if len(set(images)) < 2:
        with pytest.raises(UserError, match="at least 2"):
            control_samples("t", samples, "shuffled", seed)
        return
    controls = control_samples("t", samples, "shuffled", seed)
    for real, control in zip(samples, controls, strict=True):
        assert control.question_id == real.question_id and control.prompt == real.prompt
        given_image = control.images[0].load(control.question_id)
        assert given_image.tobytes() != real.load_image().tobytes()  # never its own picture
        assert control.image_keys[0].startswith("shuffled|") and control.image_keys[0] != real.image_key


def test_byte_identical_images_under_two_keys_count_as_one() -> None:
    same = _png(1)
    samples = [
        Sample("a", "k1", "q", "q", ["yes"], {}, image_bytes=same),
        Sample("b", "k2", "q", "q", ["yes"], {}, image_bytes=same),  # the same picture under another key
        Sample("c", "k3", "q", "q", ["yes"], {}, image_bytes=_png(2)),
    ]
    controls = control_samples("t", samples, "shuffled", seed=0)
    assert [c.source_keys for c in controls] == [["k3"], ["k3"], ["k1"]]


def test_the_plan_depends_on_the_set_of_images_and_the_seed_only() -> None:
    pictures: dict[int, bytes] = {}
    samples = [_sample(str(i), i % 5, pictures=pictures) for i in range(20)]
    forward = control_samples("t", samples, "shuffled", seed=3)
    backward = control_samples("t", samples[::-1], "shuffled", seed=3)
    by_id = {c.question_id: c.source_keys for c in backward}
    assert all(c.source_keys == by_id[c.question_id] for c in forward)
    assert [c.source_keys for c in control_samples("t", samples, "shuffled", seed=3)] == [c.source_keys for c in forward]
    plans = {shuffle_plan(samples, seed).cycle for seed in range(6)}
    assert len(plans) > 1  # the seed matters


def test_multi_image_samples_get_none_of_their_own_images() -> None:
    pictures: dict[int, bytes] = {}
    samples = [_sample(str(i), i % 4, extra=((i + 1) % 4,), pictures=pictures) for i in range(8)]
    for real, control in zip(samples, control_samples("t", samples, "shuffled", seed=0), strict=True):
        own = set(real.image_keys)
        assert len(control.images) == 2 and not own & set(control.source_keys)
    everything = _sample("all", 0, extra=(1,), pictures=pictures)
    lonely = control_samples("t", [everything, _sample("x", 0, pictures=pictures)], "shuffled", seed=0)[0]
    with pytest.raises(SampleError, match="every image"):  # nothing left to give it: counted as an error
        lonely.images[0].load("all")


# ---- blank ------------------------------------------------------------------------------------
def test_blank_keeps_the_size_and_takes_the_mean_colour() -> None:
    image = make_image(37, 21, seed=4)
    blank = blank_like(image)
    assert blank.size == image.size and blank.mode == "RGB"
    colours = blank.getcolors()
    assert colours is not None and len(colours) == 1
    import numpy as np

    mean = np.asarray(image, dtype=np.float64).reshape(-1, 3).mean(axis=0)
    assert np.all(np.abs(np.array(colours[0][1]) - mean) <= 0.5)


def test_blank_samples_keep_questions_and_get_their_own_cache_keys() -> None:
    samples = [_sample("1", 1, extra=(2,)), _sample("2", 1)]
    blanks = control_samples("t", samples, "blank", seed=0)
    assert [b.image_keys for b in blanks] == [["blank|img1", "blank|img2"], ["blank|img1"]]
    assert all(not set(b.image_keys) & set(s.image_keys) for b, s in zip(blanks, samples, strict=True))
    loaded = blanks[0].images[1].load("1")
    assert loaded.size == samples[0].images[1].load("1").size and len(loaded.getcolors()) == 1


def test_parse_controls() -> None:
    assert parse_controls(None) == () and parse_controls("none") == ()
    assert parse_controls("shuffled,blank") == ("blank", "shuffled")
    with pytest.raises(UserError, match="unknown control"):
        parse_controls("blank,noise")
    with pytest.raises(UserError, match="more than once"):
        parse_controls("blank,blank")
    assert content_id(SampleImage("k", None, "/nonexistent.png")) == "key:k"


# ---- end to end -------------------------------------------------------------------------------
BASE = ["run", "--model", "llava-1.5-style", "--tasks", "pope", "--synthetic-n", "4", "--batch-size", "5",
        "--no-report", "--controls", "blank,shuffled"]  # fmt: skip


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "VLMBENCH_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _rows(run_dir: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "samples" / f"{name}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def controlled_run(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("controls")
    cache = root / "cache"
    proc = subprocess.run([PYTHON, "-m", "vlmbench", *BASE, "--output-dir", str(root / "runs"), "--run-name", "ref"],
                          env=_env(cache), capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "gain blank" in proc.stdout and "gain shuffled" in proc.stdout
    return root / "runs" / "ref", cache


def test_control_predictions_are_logged_beside_the_real_ones(controlled_run) -> None:
    run_dir, _ = controlled_run
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == ["pope.jsonl", "pope@blank.jsonl", "pope@shuffled.jsonl"]
    assert sorted(p.name for p in (run_dir / "logs").iterdir()) == [
        "pope.rank0.jsonl", "pope@blank.rank0.jsonl", "pope@shuffled.rank0.jsonl",
    ]  # fmt: skip
    real = {r["question_id"]: r for r in _rows(run_dir, "pope")}
    for control in ("blank", "shuffled"):
        rows = _rows(run_dir, f"pope@{control}")
        assert sorted(r["question_id"] for r in rows) == sorted(real)
        for row in rows:
            assert row["control"] == control and row["references"] == real[row["question_id"]]["references"]
            assert row["image_key"].startswith(f"{control}|")
            if control == "shuffled":
                assert row["control_source_keys"] != [real[row["question_id"]]["image_key"]]
    task = json.loads((run_dir / "results.json").read_text())["tasks"]["pope"]
    for control in ("blank", "shuffled"):
        entry = task["controls"][control]
        assert entry["n"] == 72 and set(entry["metrics"]) >= {"all", "f1_mean_of_splits"}
        gain = entry["visual_gain"]["f1_mean_of_splits"]
        low, high = entry["visual_gain_ci95"]["f1_mean_of_splits"]
        assert gain == pytest.approx(task["metrics"]["f1_mean_of_splits"] - entry["metrics"]["f1_mean_of_splits"])
        assert low <= gain <= high
        assert "yes_ratio" not in entry["visual_gain"]["all"]  # no direction, no gain
    assert isinstance(task["warnings"], list)


def test_resume_refuses_other_controls_and_resumes_exactly(controlled_run, tmp_path, capsys, monkeypatch) -> None:
    ref_dir, cache = controlled_run
    run_dir = tmp_path / "resumed"
    shutil.copytree(ref_dir, run_dir)
    monkeypatch.setenv("VLMBENCH_CACHE", str(cache))
    args = [*BASE[:-2], "--output-dir", str(tmp_path), "--run-name", "resumed", "--resume"]
    assert main([*args, "--controls", "blank"]) == 2
    assert "--controls differs" in capsys.readouterr().err
    assert main(args) == 2  # no controls now: refused too
    assert "--controls differs" in capsys.readouterr().err
    log = run_dir / "logs" / "pope@shuffled.rank0.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:20]) + lines[20][:15])  # 20 answers kept, then a torn write
    (run_dir / "results.json").unlink()
    # as a process like the reference: the thread count (which pytest's process may have changed) decides
    # float rounding, and a resume is exact against a run of the same settings
    proc = subprocess.run([PYTHON, "-m", "vlmbench", *args, "--controls", "shuffled,blank"], env=_env(cache),
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["throughput"]["samples_computed"] == 72 - 20
    reference = json.loads((ref_dir / "results.json").read_text())["tasks"]["pope"]["controls"]
    assert results["tasks"]["pope"]["controls"]["shuffled"]["visual_gain"] == reference["shuffled"]["visual_gain"]
    key = lambda r: (r["question_id"], r["prediction"], r["choice_logprobs"])  # noqa: E731
    assert list(map(key, _rows(run_dir, "pope@shuffled"))) == list(map(key, _rows(ref_dir, "pope@shuffled")))


@pytest.mark.slow
def test_two_gloo_processes_give_the_same_controls(controlled_run, tmp_path) -> None:
    ref_dir, cache = controlled_run
    proc = subprocess.run(
        [PYTHON, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29531", "-m", "vlmbench",
         *BASE, "--output-dir", str(tmp_path), "--run-name", "two"],
        env=_env(cache), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = tmp_path / "two"
    a = json.loads((ref_dir / "results.json").read_text())["tasks"]["pope"]
    b = json.loads((two / "results.json").read_text())["tasks"]["pope"]
    drop = lambda controls: {c: {k: v for k, v in e.items() if k != "throughput"} for c, e in controls.items()}  # noqa: E731
    assert drop(a["controls"]) == drop(b["controls"]) and a["metrics"] == b["metrics"]
    key = lambda r: (r["question_id"], r["prediction"], r["choice_logprobs"], r["control_source_keys"])  # noqa: E731
    for control in ("blank", "shuffled"):
        assert sorted(map(str, map(key, _rows(ref_dir, f"pope@{control}")))) == sorted(
            map(str, map(key, _rows(two, f"pope@{control}")))
        )


def test_a_blind_model_has_no_visual_gain(tmp_path, monkeypatch, capsys) -> None:
    from vlmbench.modeling.ablation import zero_vision
    from vlmbench.modeling.presets import demo_checkpoint

    blind = zero_vision(demo_checkpoint("internvl-style"), tmp_path / "blind")
    monkeypatch.setenv("VLMBENCH_CACHE", str(tmp_path / "cache"))
    code = main(["run", "--model", str(blind), "--tasks", "pope", "--synthetic-n", "6", "--no-report",
                 "--controls", "blank,shuffled", "--output-dir", str(tmp_path / "runs"), "--run-name", "blind"])  # fmt: skip
    assert code == 0
    capsys.readouterr()
    task = json.loads((tmp_path / "runs" / "blind" / "results.json").read_text())["tasks"]["pope"]
    for control in ("blank", "shuffled"):
        entry = task["controls"][control]
        for metric in ("f1_mean_of_splits", "all.accuracy"):
            group, _, leaf = metric.rpartition(".")
            low, high = (entry["visual_gain_ci95"][group] if group else entry["visual_gain_ci95"])[leaf]
            assert low <= 0.0 <= high, (control, metric, low, high)


def test_report_and_leaderboard_show_the_gains(controlled_run, tmp_path) -> None:
    from vlmbench.report.html import render_html
    from vlmbench.report.leaderboard import leaderboard_data
    from vlmbench.report.runs import load_run

    run_dir, _ = controlled_run
    run = load_run(run_dir)
    page = render_html([run])
    assert "Does the model look at the image?" in page and "visual gain of f1_mean_of_splits" in page
    assert page.count("<circle") >= 2  # one dot per control in the forest plot
    data = leaderboard_data([run], ["r"])
    assert data["gain_columns"] == [{"task": "pope", "control": "blank"}, {"task": "pope", "control": "shuffled"}]
    assert set(data["rows"][0]["tasks"]["pope"]["gains"]) == {"blank", "shuffled"}


# ---- degenerate-answer warnings ---------------------------------------------------------------
def test_pope_warnings_say_what_they_mean() -> None:
    from vlmbench.runner.diagnostics import pope_warnings

    metrics = {"all": {"yes_ratio": 0.9}, "random": {"accuracy": 0.52}, "popular": {"accuracy": 0.8}}
    ci95 = {"random": {"accuracy": [0.45, 0.6]}, "popular": {"accuracy": [0.74, 0.86]}}
    found = pope_warnings(metrics, ci95)
    assert [w["code"] for w in found] == ["yes_ratio_extreme", "chance_accuracy"]
    assert "random: answers do not depend on the image" in found[1]["message"]
    assert pope_warnings({"all": {"yes_ratio": 0.5}}, {"random": {"accuracy": [0.55, 0.7]}}) == []


def test_caption_warning_needs_nearly_identical_captions() -> None:
    from vlmbench.runner.diagnostics import caption_warnings

    assert caption_warnings(["A dog on grass."] * 6 + [f"caption {i}" for i in range(5)])[0]["code"] == "identical_captions"
    assert caption_warnings([f"a cat number {i}" for i in range(20)]) == []
    assert caption_warnings(["same"] * 9) == []  # too few captions to judge
