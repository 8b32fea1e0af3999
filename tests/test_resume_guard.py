"""`--resume` refuses changed settings and foreign log lines; one process writes a run directory at a time.

Every refusal here must come before any data is generated or any model is loaded: the tests make
loading explode, so a check that came late would show up as an error instead of exit code 2.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vlmbench.cli import main
from vlmbench.runner.lock import HOLDER_FILE, RunLock, read_holder

BASE = ["run", "--model", "llava-1.5-style", "--tasks", "pope", "--synthetic-n", "4", "--limit", "8",
        "--batch-size", "4", "--no-report"]
LOG = Path("logs") / "pope.rank0.jsonl"


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> tuple[Path, Path]:
    """(run directory, data cache) of a finished 8-sample POPE run in choices mode."""
    root = tmp_path_factory.mktemp("resume")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLMBENCH_CACHE", str(root / "cache"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        assert main([*BASE, "--output-dir", str(root / "runs"), "--run-name", "base"]) == 0
    return root / "runs" / "base", root / "cache"


@pytest.fixture
def copy_of_base(base_run, tmp_path, monkeypatch) -> Path:
    """A private copy of the base run, with the data cache the base run used."""
    run_dir, cache = base_run
    monkeypatch.setenv("VLMBENCH_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    target = tmp_path / "runs" / "base"
    shutil.copytree(run_dir, target)
    return target


@pytest.fixture
def no_loading(monkeypatch) -> None:
    """Fail the test if data or a model would be loaded."""
    import vlmbench.modeling.resolve as resolve
    from vlmbench.tasks.base import TaskAdapter

    def explode(*args, **kwargs):
        raise AssertionError("loaded data or a model before refusing")

    monkeypatch.setattr(resolve, "load_model", explode)
    monkeypatch.setattr(TaskAdapter, "load", explode)


def _resume(run_dir: Path, *extra: str) -> int:
    return main([*BASE, "--output-dir", str(run_dir.parent), "--run-name", run_dir.name, "--resume", *extra])


def _error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("vlmbench run: error:")]
    assert len(lines) == 1, err
    return lines[0]


def _unchanged(run_dir: Path, original: Path) -> None:
    for name in ("run.json", str(LOG), "samples/pope.jsonl", "results.json"):
        assert (run_dir / name).read_bytes() == (original / name).read_bytes(), name


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--answer-mode", "generate"], ['answer mode of pope differs (was "choices", now "generate")']),
        (["--dtype", "bfloat16"], ['--dtype differs (was unset, now "bfloat16")']),
        (["--limit", "4"], ["--limit differs (was 8, now 4)"]),
        (["--model", "blip2-style"], ['model differs (was "llava-1.5-style", now "blip2-style")']),
        (["--seed", "3", "--batch-size", "2", "--synthetic-n", "5"],
         ["--seed differs (was 0, now 3)", '--batch-size differs (was 4, now 2)', "--synthetic-n differs (was 4, now 5)"]),
    ],
)
def test_resume_with_changed_settings_is_refused_before_loading(
    copy_of_base, base_run, no_loading, capsys, extra, expected
) -> None:
    args = list(BASE)
    for flag, value in zip(extra[::2], extra[1::2], strict=True):  # replace the flag if BASE has it
        if flag in args:
            del args[args.index(flag) : args.index(flag) + 2]
        args += [flag, value]
    code = main([*args, "--output-dir", str(copy_of_base.parent), "--run-name", "base", "--resume"])
    line = _error_line(capsys.readouterr().err)
    assert code == 2
    for part in expected:
        assert part in line
    assert "start a fresh run under another --run-name" in line
    _unchanged(copy_of_base, base_run[0])


def test_all_differences_are_listed_in_one_message(copy_of_base, no_loading, capsys) -> None:
    assert _resume(copy_of_base, "--answer-mode", "generate", "--dtype", "float16", "--attn-implementation", "eager") == 2
    line = _error_line(capsys.readouterr().err)
    assert "answer mode of pope differs" in line and "--dtype differs" in line and "--attn-implementation differs" in line


def test_a_run_json_without_settings_is_refused(copy_of_base, no_loading, capsys) -> None:
    manifest = json.loads((copy_of_base / "run.json").read_text())
    del manifest["settings"]  # as an older vlmbench wrote it
    (copy_of_base / "run.json").write_text(json.dumps(manifest))
    assert _resume(copy_of_base) == 2
    assert "does not record 'settings'" in _error_line(capsys.readouterr().err)


def _interrupt(run_dir: Path, keep: int) -> list[dict]:
    """Make `run_dir` look killed after `keep` logged samples; returns the full log it had."""
    records = [json.loads(line) for line in (run_dir / LOG).read_text().splitlines()]
    (run_dir / LOG).write_text("".join(json.dumps(r) + "\n" for r in records[:keep]))
    (run_dir / "results.json").unlink()
    manifest = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**manifest, "status": "running"}))
    return records


def test_resume_with_the_same_settings_continues_under_the_lock(copy_of_base, monkeypatch) -> None:
    original = _interrupt(copy_of_base, keep=3)
    import vlmbench.runner.run as run_module

    holders: list[dict | None] = []
    real = run_module.run_batches

    def watched(*args, **kwargs):
        holders.append(read_holder(copy_of_base))
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "run_batches", watched)
    assert _resume(copy_of_base) == 0
    assert holders and holders[0] is not None and holders[0]["pid"] == os.getpid()  # locked while writing
    assert not (copy_of_base / HOLDER_FILE).exists()  # released at the end
    logged = [json.loads(line) for line in (copy_of_base / LOG).read_text().splitlines()]
    assert [r["question_id"] for r in logged] == [r["question_id"] for r in original]
    assert [r["prediction"] for r in logged] == [r["prediction"] for r in original]
    assert json.loads((copy_of_base / "results.json").read_text())["tasks"]["pope"]["n"] == 8


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda r: r.pop("question_id"), "'question_id' must be a non-empty string, got nothing"),
        (lambda r: r.update(prediction=42), "'prediction' must be a string, got int 42"),
        (lambda r: r.update(prediction=None), "'prediction' must be a string, got nothing"),
        (lambda r: r.update(choice_logprobs={"Yes": "high", "No": -1.0}), "'choice_logprobs' must map"),
        (lambda r: r.update(visual_tokens="many"), "'visual_tokens' must be a non-negative integer"),
    ],
)
def test_resume_over_a_foreign_log_line_exits_2_naming_it(copy_of_base, no_loading, capsys, edit, expected) -> None:
    records = _interrupt(copy_of_base, keep=8)
    edit(records[2])
    (copy_of_base / LOG).write_text("".join(json.dumps(r) + "\n" for r in records))
    assert _resume(copy_of_base) == 2
    line = _error_line(capsys.readouterr().err)
    assert f"{copy_of_base / LOG} line 3" in line and expected in line and "delete that line" in line


HOLD = textwrap.dedent(
    """
    import os, signal, sys, time
    from vlmbench.runner.lock import RunLock
    lock = RunLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    if sys.argv[2] == "die":
        os.kill(os.getpid(), signal.SIGKILL)  # dies holding it: no release, the holder record stays
    time.sleep(120)
    """
)


def _holder(run_dir: Path, mode: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir), mode], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_process_cannot_write_a_locked_run(copy_of_base, no_loading, capsys) -> None:
    _interrupt(copy_of_base, keep=3)
    holder = _holder(copy_of_base, "hold")
    try:
        assert _resume(copy_of_base) == 2
        line = _error_line(capsys.readouterr().err)
        assert f"is being written by process {holder.pid} on host" in line and "wait for that run to finish" in line
        assert len((copy_of_base / LOG).read_text().splitlines()) == 3  # nothing appended
    finally:
        holder.kill()
        holder.wait()


def test_a_bare_resume_does_not_pick_up_a_run_in_progress(copy_of_base, no_loading, capsys) -> None:
    _interrupt(copy_of_base, keep=3)
    holder = _holder(copy_of_base, "hold")
    try:
        assert main([*BASE, "--output-dir", str(copy_of_base.parent), "--resume"]) == 2
        assert f"process {holder.pid}" in _error_line(capsys.readouterr().err)
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_of_a_dead_process_is_cleared_with_a_message(copy_of_base, caplog) -> None:
    _interrupt(copy_of_base, keep=3)
    holder = _holder(copy_of_base, "die")
    assert holder.wait() == -signal.SIGKILL
    assert read_holder(copy_of_base)["pid"] == holder.pid  # left behind
    with caplog.at_level(logging.WARNING, logger="vlmbench.runner.lock"):
        assert _resume(copy_of_base) == 0
    assert f"cleared a stale lock left by process {holder.pid}" in caplog.text
    assert not (copy_of_base / HOLDER_FILE).exists()


def test_run_lock_is_exclusive_and_released(tmp_path) -> None:
    from vlmbench.errors import UserError

    with RunLock(tmp_path):
        assert read_holder(tmp_path)["pid"] == os.getpid()
        with pytest.raises(UserError, match="is being written by process"):
            RunLock(tmp_path).acquire()
    assert read_holder(tmp_path) is None
    with RunLock(tmp_path) as again:
        assert again.held


def test_a_resumed_auto_batch_run_reuses_the_probed_size(base_run, tmp_path, monkeypatch) -> None:
    """`--batch-size auto` on CUDA probes per task; a resume must not re-probe into another size."""
    import vlmbench.runner.engine as engine
    import vlmbench.runner.run as run_module

    monkeypatch.setenv("VLMBENCH_CACHE", str(base_run[1]))
    monkeypatch.setattr(run_module, "_batch_size", lambda value, ctx: None)  # as `auto` is on CUDA
    probed: list[int] = []

    def probe(model, samples, settings, **kwargs):  # kwargs: the run's prefix sharing (engine.probe_batch_size)
        probed.append(3 if not probed else 5)  # memory has changed by the time of the resume
        return probed[-1]

    monkeypatch.setattr(engine, "probe_batch_size", probe)
    args = [*BASE[:-3], "--batch-size", "auto", "--no-report", "--output-dir", str(tmp_path), "--run-name", "auto"]
    assert main(args) == 0
    run_dir = tmp_path / "auto"
    assert json.loads((run_dir / "run.json").read_text())["auto_batch_size"] == {"pope": 3}
    _interrupt(run_dir, keep=3)
    assert main([*args, "--resume"]) == 0
    assert probed == [3]
    assert json.loads((run_dir / "run.json").read_text())["auto_batch_size"] == {"pope": 3}


@pytest.mark.parametrize("text", ['["not", "an", "object"]', '{"settings": 5, "task_fingerprints": [1]}', "\xff\xfe"])
def test_a_tampered_run_json_exits_2(copy_of_base, no_loading, capsys, text) -> None:
    (copy_of_base / "run.json").write_bytes(text.encode("latin-1"))
    assert _resume(copy_of_base) == 2
    line = _error_line(capsys.readouterr().err)
    assert "run.json is corrupt" in line or "settings differs (was 5" in line
    assert main([*BASE, "--output-dir", str(copy_of_base.parent), "--resume"]) == 2  # a bare resume reads it too
    _error_line(capsys.readouterr().err)
