"""`vlmbench run` / `vlmbench report` arguments: bad values are refused with exit 2 and one line, before
any data is generated or any model is loaded; `--max-errors` decides the exit code of a run whose
samples failed.

Most tests make data loading and model loading fail loudly (`_no_expensive_work`), so a check that
comes too late shows up as an AssertionError instead of a passing exit code.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlmbench.cli import main

BASELINE = Path(__file__).resolve().parents[1] / "ci" / "baseline"
BASE = ["run", "--model", "llava-1.5-style", "--tasks", "pope", "--synthetic-n", "4", "--no-report"]


@pytest.fixture
def _no_expensive_work(monkeypatch, tmp_path) -> None:
    """Data loading and model loading raise: the argument checks must come first."""
    from vlmbench.modeling import resolve
    from vlmbench.tasks.base import TaskAdapter

    def no_data(*_a, **_k):
        raise AssertionError("data was loaded before the arguments were validated")

    def no_model(*_a, **_k):
        raise AssertionError("the model was loaded before the arguments were validated")

    monkeypatch.setattr(TaskAdapter, "load", no_data)
    monkeypatch.setattr(resolve, "load_model", no_model)
    monkeypatch.setenv("VLMBENCH_CACHE", str(tmp_path / "cache"))


def _refused(capsys, argv: list[str], *needles: str) -> str:
    """Run `argv`; assert exit 2 with one stderr line containing every needle; return that line."""
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# ---- item 1: the run name stays one folder inside --output-dir -------------------------------
@pytest.mark.usefixtures("_no_expensive_work")
@pytest.mark.parametrize("name", ["../../x", "..", ".", "a/b", "a\\b", "", "x\x00y", "/ABS"])
@pytest.mark.parametrize("resume", [False, True])
def test_run_name_cannot_leave_the_output_dir(capsys, tmp_path, name, resume) -> None:
    name = str(tmp_path / "abs") if name == "/ABS" else name
    out = tmp_path / "work" / "runs"
    argv = [*BASE, "--output-dir", str(out), "--run-name", name] + (["--resume"] if resume else [])
    _refused(capsys, argv, "--run-name")
    assert not (tmp_path / "x").exists() and not (tmp_path / "abs").exists()
    assert not out.exists() or not any(out.iterdir())


# ---- item 5: a task folder missing under --data-dir ------------------------------------------
@pytest.mark.usefixtures("_no_expensive_work")
def test_missing_task_folder_under_data_dir_is_refused(capsys, tmp_path) -> None:
    data = tmp_path / "data"
    (data / "pope").mkdir(parents=True)
    (data / "DocVQA").mkdir()
    line = _refused(
        capsys,
        [*BASE[:3], "--tasks", "pope,docvqa", "--data-dir", str(data), "--output-dir", str(tmp_path / "runs")],
        "docvqa", str(data),
    )
    assert "DocVQA" in line  # the near miss is named, so the misspelling is obvious


@pytest.mark.usefixtures("_no_expensive_work")
def test_data_dir_that_is_a_file_is_refused(capsys, tmp_path) -> None:
    data = tmp_path / "data.txt"
    data.write_text("not a directory")
    _refused(capsys, [*BASE, "--data-dir", str(data), "--output-dir", str(tmp_path / "runs")], "--data-dir")


# ---- items 6, 7, 8: numbers out of range, refused before any work ----------------------------
@pytest.mark.usefixtures("_no_expensive_work")
@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--seed", "-1"),
        ("--seed", str(2**32)),
        ("--seed", str(2**64 + 1)),
        ("--dist-timeout", "-1"),
        ("--dist-timeout", "0"),
        ("--dist-timeout", "nan"),
        ("--dist-timeout", "inf"),
        ("--batch-size", "0"),
        ("--batch-size", "-3"),
        ("--batch-size", "many"),
        ("--limit", "0"),
        ("--synthetic-n", "0"),
        ("--dtype", "float8"),
        ("--tasks", ",,"),
        ("--tasks", "pope,pope"),
        ("--max-errors", "-1"),
        ("--max-errors", "abc"),
        ("--max-errors", "150%"),
        ("--max-errors", "nan%"),
    ],
)
def test_bad_run_arguments_exit_2_before_any_work(capsys, tmp_path, flag, value) -> None:
    out = tmp_path / "runs"
    argv = [*BASE, "--output-dir", str(out)]
    argv = [a if a != "pope" or flag != "--tasks" else value for a in argv]
    if flag != "--tasks":
        argv += [f"{flag}={value}"]
    _refused(capsys, argv, flag)
    assert not out.exists() or not any(out.iterdir())  # no run directory left marked "running"


@pytest.mark.usefixtures("_no_expensive_work")
@pytest.mark.parametrize("seed", ["0", str(2**32 - 1)])
def test_seed_range_ends_are_accepted(capsys, tmp_path, seed) -> None:
    """The range is 0 .. 2**32-1: both ends pass validation and reach data loading."""
    with pytest.raises(AssertionError, match="data was loaded"):
        main([*BASE, "--output-dir", str(tmp_path / "runs"), f"--seed={seed}"])


@pytest.mark.usefixtures("_no_expensive_work")
@pytest.mark.parametrize(
    "extra",
    [["--model", "no-such-model"], ["--checkpoint", "/nonexistent/ckpt"], ["--model", "hf:/nonexistent/model"]],
)
def test_unknown_model_is_refused_before_data_is_generated(capsys, tmp_path, extra) -> None:
    argv = [*BASE, "--output-dir", str(tmp_path / "runs"), *extra]
    _refused(capsys, argv, extra[1])
    assert not (tmp_path / "cache").exists()


@pytest.mark.usefixtures("_no_expensive_work")
def test_output_dir_that_is_a_file_is_refused(capsys, tmp_path) -> None:
    out = tmp_path / "runs"
    out.write_text("a file")
    _refused(capsys, [*BASE, "--output-dir", str(out)], "--output-dir")
    _refused(capsys, [*BASE, "--output-dir", str(out / "below")], "--output-dir")


# ---- `vlmbench report` -------------------------------------------------------------------------
def _a_run(tmp_path: Path) -> Path:
    from tests.fixtures_runs import RunSpec, write_run

    return write_run(tmp_path / "runs", RunSpec(name="a", tasks=("pope",), n={"pope": 40}))


def test_report_out_an_existing_directory_is_refused(capsys, tmp_path) -> None:
    run = _a_run(tmp_path)
    out = tmp_path / "site"
    out.mkdir()
    _refused(capsys, ["report", str(run), "--out", str(out)], "--out", str(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "site"]  # no site.tmp left behind
    assert not any(out.iterdir())


def test_report_out_below_a_file_is_refused(capsys, tmp_path) -> None:
    run = _a_run(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _refused(capsys, ["report", str(run), "--out", str(blocker / "report.html")], "--out")


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_report_seed_out_of_range_is_refused(capsys, tmp_path, seed) -> None:
    run = _a_run(tmp_path)
    _refused(capsys, ["report", str(run), "--out", str(tmp_path / "r.html"), f"--seed={seed}"], "--seed")
    assert not (tmp_path / "r.html").exists()


def test_report_still_renders(tmp_path, capsys) -> None:
    run = _a_run(tmp_path)
    assert main(["report", str(run), "--out", str(tmp_path / "out" / "r.html")]) == 0
    assert (tmp_path / "out" / "r.html").stat().st_size > 0


# ---- --max-errors: what a run with failed samples exits with -----------------------------------
@pytest.fixture(scope="module")
def failing_run(tmp_path_factory) -> tuple[Path, Path]:
    """(output dir, cache) where samples with an even question index fail to load their image."""
    root = tmp_path_factory.mktemp("maxerr")
    return root / "runs", root / "cache"


def _run_with_failures(monkeypatch, failing_run, name: str, *extra: str) -> tuple[int, dict]:
    from vlmbench.tasks.base import SampleError, SampleImage

    out, cache = failing_run
    monkeypatch.setenv("VLMBENCH_CACHE", str(cache))
    real = SampleImage.load

    def flaky(self, question_id: str):
        if question_id.endswith(("0", "2", "4", "6", "8")):
            raise SampleError(f"cannot read image for question_id {question_id}: test")
        return real(self, question_id)

    monkeypatch.setattr(SampleImage, "load", flaky)
    code = main([*BASE, "--limit", "6", "--batch-size", "3", "--no-feature-cache", "--output-dir", str(out), "--run-name", name, *extra])
    results = json.loads((out / name / "results.json").read_text())
    return code, results["tasks"]["pope"]


def test_failed_samples_exit_0_by_default(monkeypatch, failing_run, capsys) -> None:
    code, task = _run_with_failures(monkeypatch, failing_run, "default")
    assert task["errors"] > 0 and code == 0


@pytest.mark.parametrize(("budget", "expected"), [("0", 1), ("1", 1), ("100", 0), ("0%", 1), ("100%", 0)])
def test_max_errors_sets_the_exit_code(monkeypatch, failing_run, capsys, budget, expected) -> None:
    name = "b" + budget.replace("%", "pct")
    code, task = _run_with_failures(monkeypatch, failing_run, name, "--max-errors", budget)
    assert 1 < task["errors"] < task["n"] == 6
    assert code == expected
    err = capsys.readouterr().err
    if expected == 1:  # one line naming the task, its error count and the budget; results are kept
        line = err.strip().splitlines()[-1]
        assert "pope" in line and f"{task['errors']} of 6" in line and "--max-errors" in line, line


def test_render_report_leaves_no_tmp_file_when_the_write_fails(tmp_path) -> None:
    """The library call (used by `run` and the leaderboard too) cleans up after a failed write."""
    from vlmbench.report.html import render_report

    run = _a_run(tmp_path)
    out = tmp_path / "taken"
    out.mkdir()
    with pytest.raises(OSError):
        render_report([run], out)
    assert not (tmp_path / "taken.tmp").exists()


@pytest.mark.usefixtures("_no_expensive_work")
def test_lmms_eval_output_below_a_file_is_refused_before_the_run(capsys, tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for target in (blocker / "x_results.json", blocker / "dir"):
        _refused(capsys, [*BASE, "--output-dir", str(tmp_path / "runs"), "--lmms-eval-output", str(target)],
                 "--lmms-eval-output")


@pytest.mark.usefixtures("_no_expensive_work")
def test_checkpoint_with_an_hf_model_is_refused(capsys, tmp_path) -> None:
    model = tmp_path / "hfmodel"
    model.mkdir()
    _refused(capsys, [*BASE, "--output-dir", str(tmp_path / "runs"), "--model", f"hf:{model}",
                      "--checkpoint", str(tmp_path)], "--checkpoint")


@pytest.mark.parametrize("command", ["score", "effects", "check"])
def test_other_commands_refuse_a_negative_seed(capsys, tmp_path, command) -> None:
    """The seed range is the same everywhere; before this `score` blamed the references file."""
    preds, refs = tmp_path / "p.jsonl", tmp_path / "r.jsonl"
    preds.write_text('{"question_id": "1", "prediction": "yes"}\n')
    refs.write_text('{"question_id": "1", "answer": "yes", "category": "random"}\n')
    argv = {
        "score": ["score", "--task", "pope", "--predictions", str(preds), "--references", str(refs)],
        "effects": ["effects", "--run", f"a={tmp_path / 'missing'}"],
        "check": ["check", "--baseline", str(BASELINE), "--candidate", str(BASELINE)],
    }[command]
    _refused(capsys, [*argv, "--seed=-1"], "--seed")
