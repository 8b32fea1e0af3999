"""Issue 13, items 3 and 4: `vlmbench check` judges the samples, not what results.json claims, and the
leaderboard never republishes HTML from a run directory.

A run directory is untrusted input. The gate recomputes every metric from the samples of both runs;
where results.json records a different number (an edited or damaged run) it refuses (exit 2) and
names both numbers, instead of passing a candidate whose samples regress.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fixtures_runs import RunSpec, write_run
from PIL import Image

from vlmbench.cli import main

POPE = ("pope",)


def _check(capsys: pytest.CaptureFixture[str], base: Path, cand: Path, *extra: str) -> tuple[int, str, str]:
    code = main(["check", "--baseline", str(base), "--candidate", str(cand), "--resamples", "300", *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def _edit_results(run: Path, task: str, edit: Any) -> None:
    path = run / "results.json"
    results = json.loads(path.read_text(encoding="utf-8"))
    edit(results["tasks"][task])
    path.write_text(json.dumps(results), encoding="utf-8")


def _rewrite_samples(
    run: Path, task: str, change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
) -> None:
    path = run / "samples" / f"{task}.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    path.write_text("".join(json.dumps(row) + "\n" for row in change(rows)), encoding="utf-8")


def _one_line_error(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def _refusal(capsys: pytest.CaptureFixture[str], runs: dict[str, Path]) -> str:
    """The one-line error of `check` refusing (exit 2) to compare ``runs["base"]`` with ``runs["drop"]``."""
    code, _, err = _check(capsys, runs["base"], runs["drop"])
    assert code == 2
    return _one_line_error(err)


@pytest.fixture(scope="module")
def pope_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gate-runs")
    return {
        "base": write_run(root, RunSpec("base", tasks=POPE)),
        "drop": write_run(root, RunSpec("drop", tasks=POPE, quality={"pope": 0.5})),
    }


@pytest.fixture()
def copies(pope_runs: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    """Fresh copies a test may edit."""
    return {name: Path(shutil.copytree(path, tmp_path / name)) for name, path in pope_runs.items()}


def _headline(run: Path) -> float:
    return float(
        json.loads((run / "results.json").read_text())["tasks"]["pope"]["metrics"]["f1_mean_of_splits"]
    )


def _set_headline(value: float) -> Callable[[dict[str, Any]], None]:
    return lambda task: task["metrics"].update(f1_mean_of_splits=value)


@pytest.mark.parametrize(
    ("role", "edit", "expected"),
    [
        # the case: the candidate's results.json claims 0.99 while its samples regress
        ("candidate", _set_headline(0.99), ("f1_mean_of_splits 0.9900 in results.json", "from the samples")),
        # a baseline lowered in results.json would hide the candidate's regression behind a tiny delta
        ("baseline", _set_headline(0.5), ("f1_mean_of_splits 0.5000 in results.json",)),
        (
            "candidate",
            lambda task: task["metrics"]["random"].update(accuracy=1.0),
            ("random.accuracy 1.0000",),
        ),
    ],
)
def test_an_edited_results_json_is_refused_naming_both_numbers(
    copies: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    role: str,
    edit: Callable[[dict[str, Any]], None],
    expected: tuple[str, ...],
) -> None:
    run = copies["base" if role == "baseline" else "drop"]
    true_value = _headline(run)
    _edit_results(run, "pope", edit)
    line = _refusal(capsys, copies)
    assert f"the {role}'s {run / 'results.json'}" in line and all(text in line for text in expected)
    if "f1_mean_of_splits" in expected[0]:
        assert f"{true_value:.4f} from the samples" in line


def test_a_sample_count_other_than_results_n_is_refused(
    copies: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Both runs' samples cut to the same 300 rows: ids still match, but results.json describes 400."""
    for run in copies.values():
        _rewrite_samples(run, "pope", lambda rows: rows[:300])
    line = _refusal(capsys, copies)
    assert "400" in line and "300" in line


def test_the_table_shows_the_samples_numbers_and_the_ci_holds_the_delta(
    pope_runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _check(capsys, pope_runs["base"], pope_runs["drop"])
    assert code == 1
    row = next(line for line in out.splitlines() if line.startswith("pope") and "f1_mean_of_splits" in line)
    base, cand, delta, low, high = (float(x) for x in re.findall(r"[-+]?\d+\.\d+", row)[:5])
    assert delta == pytest.approx(cand - base, abs=2e-4)
    assert low <= delta <= high


def test_compare_task_takes_its_values_from_the_samples(pope_runs: dict[str, Path]) -> None:
    """`compare_task` itself: a tampered metrics object does not reach baseline/candidate/delta."""
    from vlmbench.report.metricspec import headline_of
    from vlmbench.report.paired import compare_task
    from vlmbench.report.runs import load_run

    base, drop = load_run(pope_runs["base"]), load_run(pope_runs["drop"])
    tampered = json.loads(json.dumps(drop.tasks["pope"]))
    tampered["metrics"]["f1_mean_of_splits"] = 0.99
    comparison = compare_task(
        "pope", base.tasks["pope"], tampered, base.samples("pope"), drop.samples("pope"),
        headline_of("pope", base.tasks["pope"]), n_resamples=50,
    )  # fmt: skip
    row = comparison.headline_delta
    assert row is not None and row.recomputed
    assert row.candidate == pytest.approx(_headline(pope_runs["drop"]))
    assert row.recorded == (pytest.approx(_headline(pope_runs["base"])), 0.99)
    assert row.delta == pytest.approx(row.candidate - row.baseline)


def _foreign_task(run: Path, keep_score: bool) -> None:
    """Turn the run's POPE task into ``their_task``, scored by a scorer this install does not have."""
    (run / "samples" / "pope.jsonl").rename(run / "samples" / "their_task.jsonl")
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    results["tasks"] = {"their_task": results["tasks"]["pope"]}
    (run / "results.json").write_text(json.dumps(results), encoding="utf-8")
    _edit_results(
        run,
        "their_task",
        lambda t: t.update(
            scorer="their_scorer.py:TheirScorer",
            metrics={"mistakes": 0.1},
            ci95={},
            headline={"metric": "mistakes", "higher_is_better": False},
            directions={"mistakes": False},
        ),
    )
    _rewrite_samples(
        run,
        "their_task",
        lambda rows: [{k: v for k, v in r.items() if keep_score or k != "score"} for r in rows],
    )


@pytest.mark.parametrize(
    ("keep_score", "expected"),
    [
        (False, "cannot be recomputed"),  # no per-sample field for the headline and no `score`
        (True, "mistakes 0.1000 in results.json"),  # read as the mean of `score`, which is not 0.1
    ],
)
def test_a_foreign_headline_the_samples_cannot_confirm_is_refused(
    copies: dict[str, Path], capsys: pytest.CaptureFixture[str], keep_score: bool, expected: str
) -> None:
    """Runs scored by someone's scorer that is not importable here: the gate cannot judge them."""
    for run in copies.values():
        _foreign_task(run, keep_score)
    line = _refusal(capsys, copies)
    assert expected in line and "their_scorer.py:TheirScorer is not available here" in line


def test_malformed_rows_are_left_out_as_the_runner_leaves_them_out(
    copies: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The runner writes a sample row for a malformed data row but scores without it (counted in n)."""
    for run in copies.values():
        bad = {"question_id": "pope-bad", "prediction": "", "references": ["maybe"], "category": "random",
               "score": 0.0, "correct": None, "error": "malformed row: row 400 (question_id pope-bad): bad answer"}  # fmt: skip
        _rewrite_samples(run, "pope", lambda rows, bad=bad: [*rows, bad])
        _edit_results(run, "pope", lambda t: t.update(n=401, errors=1))
    code, out, err = _check(capsys, copies["base"], copies["base"])
    assert code == 0, err
    code, _, err = _check(capsys, copies["base"], copies["drop"])
    assert code == 1, err


def test_a_real_run_agrees_with_its_own_samples(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No false alarm on what the runner writes (POPE in choices mode with AUC, several scorers)."""
    monkeypatch.setenv("VLMBENCH_CACHE", str(tmp_path / "cache"))
    code = main(["run", "--model", "llava-1.5-style", "--tasks", "pope,ocr,docvqa,chair,textvqa,pair_compare",
                 "--synthetic-n", "4", "--batch-size", "4", "--no-report", "--output-dir", str(tmp_path / "runs"),
                 "--run-name", "real"])  # fmt: skip
    assert code == 0
    capsys.readouterr()
    run = tmp_path / "runs" / "real"
    code, out, err = _check(capsys, run, run)
    assert code == 0, err
    assert "OK: no headline metric dropped significantly" in out


# --- item 4: the leaderboard never republishes HTML it did not make -------------------------------

_HOSTILE = "<script>window.__pwned=1</script>"


def test_leaderboard_ignores_a_hostile_run_directory(tmp_path: Path) -> None:
    """Every page of the site is rendered by vlmbench; nothing a run ships as HTML reaches it."""
    run = write_run(tmp_path / "results", RunSpec("hostile", tasks=("pope", "docvqa")))
    (run / "report.html").write_text(f"<!doctype html><title>theirs</title>{_HOSTILE}", encoding="utf-8")
    (run / "thumbnails" / "evil.html").write_text(_HOSTILE, encoding="utf-8")
    (run / "thumbnails" / "evil.png").write_text(_HOSTILE, encoding="utf-8")  # an "image" that is HTML
    outside = tmp_path / "outside.png"  # an image outside the run: not for the site to publish
    Image.new("RGB", (8, 8), (1, 2, 3)).save(outside, format="PNG")
    (run / "thumbnails" / "link.png").symlink_to(outside)
    thumbs = ["report.html", "thumbnails/evil.html", "thumbnails/evil.png", "thumbnails/link.png", "../../outside.png",
              str(outside)]  # fmt: skip

    def hostile(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for row, thumb in zip(rows, thumbs, strict=False):
            row.update(thumbnail=thumb, prediction=_HOSTILE)
        return rows

    _rewrite_samples(run, "pope", hostile)
    site = tmp_path / "site"
    assert main(["leaderboard", str(tmp_path / "results"), "--out", str(site)]) == 0
    files = sorted(p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file() or p.is_symlink())
    allowed = re.compile(
        r"(index\.html|data\.json|app\.js|style\.css|(models|reports)/[a-z0-9-]+\.html|thumbs/[0-9a-f]{16}\.png)"
    )
    assert all(allowed.fullmatch(name) for name in files), files
    assert not any((site / name).is_symlink() for name in files)
    for name in files:
        data = (site / name).read_bytes()
        assert _HOSTILE.encode() not in data, name  # shown as escaped text at most, never as markup
        assert b"theirs" not in data, name
    report = next((site / "reports").glob("*.html")).read_text(encoding="utf-8")
    assert "&lt;script&gt;window.__pwned=1" in report or "\\u003cscript\\u003ewindow.__pwned=1" in report
    published = {p.read_bytes() for p in (site / "thumbs").iterdir()}
    assert published and all(data.startswith(b"\x89PNG\r\n\x1a\n") for data in published)
    assert outside.read_bytes() not in published


def test_recomputed_values_are_finite_numbers(pope_runs: dict[str, Path]) -> None:
    from vlmbench.report.metricspec import headline_of
    from vlmbench.report.paired import compare_task
    from vlmbench.report.runs import load_run

    base = load_run(pope_runs["base"])
    comparison = compare_task(
        "pope", base.tasks["pope"], base.tasks["pope"], base.samples("pope"), base.samples("pope"),
        headline_of("pope", base.tasks["pope"]), n_resamples=20,
    )  # fmt: skip
    for row in comparison.metrics:
        if row.recomputed:
            assert np.isfinite(row.baseline) and row.delta == 0.0
