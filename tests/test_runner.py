"""The evaluation runner: results files, sharding (torchrun + gloo), kill -9 + resume, errors, choices."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vlmbench.cli import main

PYTHON = sys.executable


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "VLMBENCH_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _samples(run_dir: Path, task: str) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "samples" / f"{task}.jsonl").read_text().splitlines()]


def _cli(args: list[str], cache: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "vlmbench", *args], env=_env(cache), capture_output=True, text=True, **kw)


BASE = ["run", "--model", "llava-1.5-style", "--tasks", "pope", "--synthetic-n", "4", "--batch-size", "3", "--no-report"]


def _two_gloo_processes(args: list[str], out: Path, cache: Path, port: int) -> Path:
    """The run directory of `args` under torchrun with two CPU (gloo) processes."""
    proc = subprocess.run(
        [PYTHON, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port), "-m", "vlmbench",
         *args, "--output-dir", str(out), "--run-name", "two"],
        env=_env(cache), capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "two"


def _single_process_run(root: Path, args: list[str]) -> tuple[Path, Path]:
    """(run directory, data cache) of an uninterrupted single-process run named `ref` under `root`."""
    cache = root / "cache"
    proc = _cli([*args, "--output-dir", str(root / "runs"), "--run-name", "ref"], cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "runs" / "ref", cache


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> tuple[Path, Path]:
    """An uninterrupted single-process run that other tests compare with."""
    return _single_process_run(tmp_path_factory.mktemp("ref"), BASE)


def test_results_files_follow_the_contract(reference_run) -> None:
    run_dir, _ = reference_run
    results = json.loads((run_dir / "results.json").read_text())
    assert {"vlmbench_version", "run_name", "created", "model", "tasks", "throughput", "config", "environment"} <= set(results)
    assert {"name", "preset", "vision_encoder", "projector", "resolution", "llm", "params", "visual_tokens_per_image"} <= set(results["model"])
    from vlmbench.modeling.presets import demo_checkpoint

    # random weights are flagged; once the preset ships a demo checkpoint, that is used and flagged trained
    assert results["model"]["trained"] is (demo_checkpoint("llava-1.5-style") is not None)
    pope = results["tasks"]["pope"]
    assert pope["n"] == 72 and pope["errors"] == 0
    assert pope["data"]["synthetic"] is True and pope["data"]["fingerprint"]
    assert set(pope["metrics"]) >= {"random", "popular", "adversarial", "all", "f1_mean_of_splits"}
    assert "f1_mean_of_splits" in pope["ci95"] or "f1_mean_of_splits" in json.dumps(pope["ci95"])
    rows = _samples(run_dir, "pope")
    assert len(rows) == 72 and len({r["question_id"] for r in rows}) == 72
    assert all(set(r["choice_logprobs"]) == {"Yes", "No"} for r in rows)  # kept for ROC-AUC
    assert results["throughput"]["samples_per_s"] > 0
    assert results["model"]["visual_tokens_per_image"]["mean"] == 64


@pytest.mark.slow
def test_two_gloo_processes_give_the_same_results(reference_run, tmp_path) -> None:
    ref_dir, cache = reference_run
    two = _two_gloo_processes(BASE, tmp_path, cache, port=29517)
    assert sorted(p.name for p in (two / "logs").iterdir()) == ["pope.rank0.jsonl", "pope.rank1.jsonl"]
    a = json.loads((ref_dir / "results.json").read_text())["tasks"]["pope"]
    b = json.loads((two / "results.json").read_text())["tasks"]["pope"]
    assert a["metrics"] == b["metrics"] and a["ci95"] == b["ci95"]
    key = lambda r: (r["question_id"], r["prediction"], r["choice_logprobs"])  # noqa: E731
    assert sorted(map(str, map(key, _samples(ref_dir, "pope")))) == sorted(map(str, map(key, _samples(two, "pope"))))


@pytest.mark.slow
def test_kill_9_then_resume_equals_uninterrupted(reference_run, tmp_path) -> None:
    ref_dir, cache = reference_run
    args = [*BASE, "--batch-size", "2", "--output-dir", str(tmp_path), "--run-name", "killed"]
    proc = subprocess.Popen([PYTHON, "-m", "vlmbench", *args], env=_env(cache), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp_path / "killed" / "logs" / "pope.rank0.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) >= 10:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(log.read_text().splitlines())
    assert 10 <= done_before < 72
    assert not (tmp_path / "killed" / "results.json").exists()
    resumed = _cli([*args, "--resume"], cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = _samples(tmp_path / "killed", "pope")
    assert len(rows) == 72 and len({r["question_id"] for r in rows}) == 72
    a = json.loads((ref_dir / "results.json").read_text())["tasks"]["pope"]
    b = json.loads((tmp_path / "killed" / "results.json").read_text())["tasks"]["pope"]
    assert a["metrics"] == b["metrics"]
    assert [r["prediction"] for r in _samples(ref_dir, "pope")] == [r["prediction"] for r in rows]
    # finished samples were not recomputed: the log holds each question once
    logged = [json.loads(line)["question_id"] for line in log.read_text().splitlines()]
    assert len(logged) == len(set(logged)) == 72


def test_resume_with_a_different_setup_is_refused(reference_run, tmp_path, capsys, monkeypatch) -> None:
    ref_dir, cache = reference_run
    monkeypatch.setenv("VLMBENCH_CACHE", str(cache))
    code = main(["run", "--model", "blip2-style", "--tasks", "pope", "--synthetic-n", "4", "--no-report",
                 "--output-dir", str(ref_dir.parent), "--run-name", "ref", "--resume"])
    assert code == 2
    assert "model differs" in capsys.readouterr().err


def test_unknown_task_and_model_exit_2(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("VLMBENCH_CACHE", str(tmp_path))
    assert main(["run", "--model", "llava-1.5-style", "--tasks", "popee", "--output-dir", str(tmp_path)]) == 2
    assert "popee" in capsys.readouterr().err
    assert main(["run", "--model", "nope-style", "--tasks", "pope", "--synthetic-n", "2", "--output-dir", str(tmp_path)]) == 2
    assert "unknown model" in capsys.readouterr().err


def _corrupt_pope(src: Path, dst: Path) -> None:
    """Copy a POPE set and break the image bytes of every question about the first image."""
    import datasets

    files = sorted(src.rglob("*.parquet"))
    table = datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train")
    table = table.cast_column("image", datasets.Image(decode=False))
    first = table[0]["image_source"]
    rows = table.to_list()
    for row in rows:
        if row["image_source"] == first:
            row["image"] = {"bytes": b"this is not a png", "path": None}
    out = datasets.Dataset.from_list(rows).cast_column("image", datasets.Image(decode=False))
    (dst / "data").mkdir(parents=True)
    out.to_parquet(str(dst / "data" / "test-00000-of-00001.parquet"))


def test_corrupt_image_is_counted_as_error_and_run_completes(reference_run, tmp_path, monkeypatch) -> None:
    _, cache = reference_run
    src = next(p for p in (cache / "data").iterdir() if p.name.startswith("pope"))
    _corrupt_pope(src, tmp_path / "pope")
    monkeypatch.setenv("VLMBENCH_CACHE", str(cache))
    code = main(["run", "--model", "llava-1.5-style", "--tasks", "pope", "--data-dir", str(tmp_path / "pope"),
                 "--output-dir", str(tmp_path / "runs"), "--run-name", "bad", "--no-report"])
    assert code == 0
    results = json.loads((tmp_path / "runs" / "bad" / "results.json").read_text())["tasks"]["pope"]
    rows = _samples(tmp_path / "runs" / "bad", "pope")
    assert results["errors"] == 18 and results["n"] == 72
    bad = [r for r in rows if r["error"]]
    assert len(bad) == 18 and all("cannot read image" in r["error"] for r in bad)
    assert all(r["prediction"] for r in rows if not r["error"])


def test_choices_mode_matches_greedy_generation_on_a_trained_model() -> None:
    """Train a tiny model to answer yes/no, then compare the two answer modes on every question."""
    from PIL import Image

    from tests.helpers import make_image
    from vlmbench.modeling.presets import build_random, load_preset

    torch.manual_seed(0)
    model = build_random(load_preset("llava-1.5-style"), seed=0).train()
    # the answer is visible: a red square means "Yes" to "Is there a red square?", else "No"
    def picture(i: int, red: bool) -> Image.Image:
        img = make_image(64, 64, seed=i).point(lambda v: v // 4)
        if red:
            img.paste((255, 0, 0), (16 + i % 8, 16, 44 + i % 8, 44))
        return img

    suffix = "\nAnswer the question using a single word or phrase."
    q = "Is there a red square in the image?"
    items = [(model.prepare_image(picture(i, i % 2 == 0)), q, "Yes" if i % 2 == 0 else "No") for i in range(10)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(60):
        optimizer.zero_grad()
        loss = model([i for i, _, _ in items], [model.format_prompt(q + suffix) for _, q, _ in items], [a for *_, a in items]).loss
        loss.backward()
        optimizer.step()
    model.eval()
    prompts = [model.format_prompt(question + suffix) for _, question, _ in items]
    imgs = [i for i, _, _ in items]
    generated = model.generate(imgs, prompts, max_new_tokens=4)
    scored = model.score_choices(imgs, prompts, ["Yes", "No"])
    chosen = ["Yes" if row[0] > row[1] else "No" for row in scored.tolist()]
    assert generated == [a for *_, a in items]  # the model learned the task ...
    assert chosen == generated  # ... and both answer modes agree


def test_feature_cache_hits_for_questions_sharing_an_image(reference_run) -> None:
    run_dir, _ = reference_run
    cache = json.loads((run_dir / "results.json").read_text())["throughput"]["feature_cache"]
    assert cache["misses"] == 4 and cache["hits"] == 68  # 4 images, 18 questions each


def test_thumbnail_bytes_are_png(reference_run) -> None:
    from PIL import Image

    run_dir, _ = reference_run
    rows = _samples(run_dir, "pope")
    with Image.open(io.BytesIO((run_dir / rows[0]["thumbnail"]).read_bytes())) as img:
        assert img.format == "PNG" and max(img.size) <= 96


def _worker_pid(tag: str, rank: int) -> int | None:
    """The pid of the torchrun worker with this RANK whose environment carries our tag."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"VLMBENCH_TEST_TAG={tag}".encode() in env and f"RANK={rank}".encode() in env and b"LOCAL_RANK=" + str(rank).encode() in env:
            return int(entry.name)
    return None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc to find the worker process")
def test_a_dying_rank_fails_the_run_without_hanging_and_it_resumes(reference_run, tmp_path) -> None:
    ref_dir, cache = reference_run
    tag = f"dying-rank-{os.getpid()}"
    args = [*BASE, "--batch-size", "2", "--output-dir", str(tmp_path), "--run-name", "dying", "--dist-timeout", "60"]
    launcher = subprocess.Popen(
        [PYTHON, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29519", "-m", "vlmbench", *args],
        env={**_env(cache), "VLMBENCH_TEST_TAG": tag}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    log1 = tmp_path / "dying" / "logs" / "pope.rank1.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and launcher.poll() is None and not (log1.exists() and log1.read_text().count("\n") >= 4):
        time.sleep(0.02)
    pid = _worker_pid(tag, 1)
    assert launcher.poll() is None and pid is not None, "rank 1 finished before it could be killed"
    os.kill(pid, signal.SIGKILL)
    _, stderr = launcher.communicate(timeout=240)  # must not hang
    assert launcher.returncode != 0
    assert not (tmp_path / "dying" / "results.json").exists()
    resumed = _cli([*args, "--resume"], cache)  # one process picks up both ranks' leftovers
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = _samples(tmp_path / "dying", "pope")
    assert [r["prediction"] for r in rows] == [r["prediction"] for r in _samples(ref_dir, "pope")]


# ---- multi-image samples: the two-image synthetic task ------------------------------------------
PAIR = ["run", "--model", "llava-1.5-style", "--tasks", "pair_compare", "--synthetic-n", "10", "--batch-size", "3", "--no-report"]


@pytest.fixture(scope="module")
def pair_run(tmp_path_factory) -> tuple[Path, Path]:
    return _single_process_run(tmp_path_factory.mktemp("pair"), PAIR)


def test_two_image_task_runs_and_encodes_each_image_once(pair_run) -> None:
    run_dir, _ = pair_run
    results = json.loads((run_dir / "results.json").read_text())
    task = results["tasks"]["pair_compare"]
    assert task["n"] == 10 and task["errors"] == 0 and "accuracy" in task["metrics"]
    rows = _samples(run_dir, "pair_compare")
    assert all(len(r["image_keys"]) == 2 and r["image_keys"][0] == r["image_key"] for r in rows)
    assert all(r["prediction"] and r["visual_tokens"] == sum(r["visual_tokens_each"]) for r in rows)
    assert all(r["tiles"] == 2 and len(r["image_sizes"]) == 2 for r in rows)
    distinct = {key for r in rows for key in r["image_keys"]}
    assert len(distinct) < 2 * len(rows)  # scenes are shared between pairs ...
    cache = results["throughput"]["feature_cache"]
    assert cache["misses"] == len(distinct) and cache["hits"] == 2 * len(rows) - len(distinct)  # ... and encoded once
    assert task["visual_tokens_per_image"] == {"mean": 64.0, "min": 64, "max": 64}  # per image, not per sample


def test_two_image_task_resumes_per_sample(pair_run, tmp_path) -> None:
    ref_dir, cache = pair_run
    run_dir = tmp_path / "resumed"
    shutil.copytree(ref_dir, run_dir)
    log = run_dir / "logs" / "pair_compare.rank0.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:4]) + lines[4][:10])  # four answers kept, then a torn write
    (run_dir / "results.json").unlink()
    resumed = _cli([*PAIR, "--output-dir", str(tmp_path), "--run-name", "resumed", "--resume"], cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    throughput = json.loads((run_dir / "results.json").read_text())["throughput"]
    assert throughput["samples_computed"] == 6
    key = lambda r: (r["question_id"], r["prediction"])  # noqa: E731
    assert list(map(key, _samples(run_dir, "pair_compare"))) == list(map(key, _samples(ref_dir, "pair_compare")))


@pytest.mark.slow
def test_two_image_task_two_gloo_processes_give_the_same_predictions(pair_run, tmp_path) -> None:
    ref_dir, cache = pair_run
    two = _two_gloo_processes(PAIR, tmp_path, cache, port=29521)
    key = lambda r: (r["question_id"], r["prediction"], r["visual_tokens"])  # noqa: E731
    assert sorted(map(key, _samples(two, "pair_compare"))) == sorted(map(key, _samples(ref_dir, "pair_compare")))
