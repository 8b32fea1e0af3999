"""`vlmbench check`: exit 0 for no/noise-level change, 1 for a significant drop, 2 for incomparable runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures_runs import RunSpec, write_run

from vlmbench.cli import main

POPE = ("pope",)


def _check(capsys: pytest.CaptureFixture[str], base: Path, cand: Path, *extra: str) -> tuple[int, str, str]:
    code = main(["check", "--baseline", str(base), "--candidate", str(cand), "--resamples", "500", *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("check-runs")
    specs = {
        "base": RunSpec("base"),
        "same": RunSpec("same"),
        "drop": RunSpec("drop", quality={"pope": 0.5}),
        "flip1": RunSpec("flip1", flips={"pope": 1}),
        "flip2": RunSpec("flip2", flips={"pope": 2}),
        "fingerprint": RunSpec("fingerprint", fingerprint_suffix="-other"),
        "fewer": RunSpec("fewer", tasks=("pope", "docvqa", "chair")),
        "more_chair_halluc": RunSpec("more_chair_halluc", quality={"chair": 0.2}),
        "less_chair_halluc": RunSpec("less_chair_halluc", quality={"chair": 1.0}),
        "short": RunSpec("short", n={"pope": 390}),
        "pope_only": RunSpec("pope_only", tasks=POPE),
        "pope_only_drop": RunSpec("pope_only_drop", tasks=POPE, quality={"pope": 0.5}),
    }
    return {name: write_run(root, spec) for name, spec in specs.items()}


def test_identical_runs_pass(runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _check(capsys, runs["base"], runs["same"])
    assert code == 0
    assert "OK: no headline metric dropped significantly" in out
    for metric in (
        "f1_mean_of_splits",
        "random.f1",
        "all.yes_ratio",
        "anls",
        "chair_i",
        "exact_match",
        "cer",
    ):
        assert metric in out  # every metric is listed
    assert "95% CI of delta" in out and "mcnemar" in out and "bootstrap" in out


def test_real_drop_fails(runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _check(capsys, runs["pope_only"], runs["pope_only_drop"])
    assert code == 1
    assert "REGRESSION" in out
    assert "significant regression" in err and "pope f1_mean_of_splits" in err


@pytest.mark.parametrize("name", ["flip1", "flip2"])
def test_noise_level_drop_passes(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str], name: str
) -> None:
    code, out, _ = _check(capsys, runs["base"], runs[name])
    assert code == 0, out


def test_results_json_paths_accepted(runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = _check(capsys, runs["base"] / "results.json", runs["drop"] / "results.json")
    assert code == 1


def test_max_drop_tolerates_a_smaller_drop(runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = _check(capsys, runs["pope_only"], runs["pope_only_drop"], "--max-drop", "0.5")
    assert code == 0
    code, _, _ = _check(capsys, runs["pope_only"], runs["pope_only_drop"], "--max-drop", "0.1")
    assert code == 1


def test_lower_is_better_respected(runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _check(capsys, runs["base"], runs["more_chair_halluc"])
    assert code == 1 and "chair chair_i" in err
    code, _, _ = _check(capsys, runs["base"], runs["less_chair_halluc"])
    assert code == 0  # CHAIR_i going down is an improvement


def test_improvement_passes(runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = _check(capsys, runs["pope_only_drop"], runs["pope_only"])
    assert code == 0


def test_different_fingerprint_is_bad_input(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _check(capsys, runs["base"], runs["fingerprint"])
    assert code == 2
    assert "fingerprints differ" in err and "Traceback" not in err


def test_different_tasks_is_bad_input(runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _check(capsys, runs["base"], runs["fewer"])
    assert code == 2
    assert "only in the baseline: ocr" in err


def test_different_question_ids_is_bad_input(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _check(capsys, runs["base"], runs["short"])
    assert code == 2
    assert "question ids differ" in err and "10 only in the baseline" in err


def test_missing_samples_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = write_run(tmp_path, RunSpec("a", tasks=POPE))
    cand = write_run(tmp_path, RunSpec("b", tasks=POPE))
    (cand / "samples" / "pope.jsonl").unlink()
    code, _, err = _check(capsys, base, cand)
    assert code == 2 and "samples/pope.jsonl" in err


def test_missing_and_malformed_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _check(capsys, tmp_path / "nope", tmp_path / "nope")
    assert code == 2 and "nope" in err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "results.json").write_text("{not json")
    code, _, err = _check(capsys, bad, bad)
    assert code == 2 and "not valid JSON" in err
    (bad / "results.json").write_text(json.dumps({"run_name": "x"}))
    code, _, err = _check(capsys, bad, bad)
    assert code == 2 and "'tasks'" in err


def test_bad_alpha(runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _check(capsys, runs["base"], runs["same"], "--alpha", "1.5")
    assert code == 2 and "--alpha" in err


def test_chair_recall_uses_the_references_the_runner_logs() -> None:
    """The runner's CHAIR sample rows keep the ground-truth objects in `references` (no `gt_objects`)."""
    import numpy as np

    from vlmbench.report.paired import sample_stats

    rows = [
        {"mentioned": ["cup", "dog"], "hallucinated": ["dog"], "references": ["cup", "chair"]},
        {"mentioned": ["cat"], "hallucinated": [], "references": ["cat"]},
    ]
    stats = sample_stats("chair", rows, ["chair_i", "chair_s", "recall"], "chair_i")
    assert stats is not None
    values = stats.compute(np.arange(2)[None, :])
    assert values["recall"][0] == pytest.approx(2 / 3)
    assert values["chair_i"][0] == pytest.approx(1 / 3)


def test_headline_direction_comes_from_the_scorer() -> None:
    """A run recorded before the fix ranks ocr by cer with higher_is_better true: the scorer corrects it."""
    from vlmbench.report.metricspec import Headline, direction, headline_of

    old = {
        "metrics": {"exact_match": 0.5, "cer": 0.2},
        "headline": {"metric": "cer", "higher_is_better": True},
    }
    assert headline_of("ocr", old) == Headline("cer", False)
    assert headline_of("ocr", {"metrics": {"exact_match": 0.5}}) == Headline("exact_match", True)
    # another person's scorer, not importable here: what results.json records, and no crash
    foreign = {
        "scorer": "their_scorer.py:TheirScorer",
        "metrics": {"mistakes": 0.1, "hits": 0.9},
        "headline": {"metric": "mistakes", "higher_is_better": False},
        "directions": {"mistakes": False, "hits": True},
    }
    assert headline_of("their_task", foreign) == Headline("mistakes", False)
    assert direction("hits", None, foreign["directions"]) is True
    assert direction("all.yes_ratio") is None and direction("cer") is False  # the built-in scorers' table


def test_lower_is_better_primary_metric_gates_in_its_own_direction(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ranking ocr by cer: a candidate with a higher cer regresses, one with a lower cer does not."""
    base = write_run(tmp_path, RunSpec("ocr_base", tasks=("ocr",)))
    worse = write_run(tmp_path, RunSpec("ocr_worse", tasks=("ocr",), quality={"ocr": 0.2}))
    for run in (base, worse):
        results = json.loads((run / "results.json").read_text())
        results["tasks"]["ocr"]["headline"] = {
            "metric": "cer",
            "higher_is_better": True,
        }  # as recorded before
        (run / "results.json").write_text(json.dumps(results))
    code, out, err = _check(capsys, base, worse)
    assert code == 1 and "ocr cer" in err and "headline ↓" not in out
    code, out, _ = _check(capsys, worse, base)
    assert code == 0 and "headline ↓" in out


def test_pope_auc_is_recomputed_from_the_logged_log_probs() -> None:
    import numpy as np

    from vlmbench.metrics import score_task
    from vlmbench.report.paired import sample_stats

    rng = np.random.default_rng(3)
    rows = []
    for i in range(60):
        answer = "yes" if i % 2 else "no"
        margin = float(rng.normal(1.0 if answer == "yes" else -1.0))
        rows.append(
            {"question_id": str(i), "answer": answer, "category": ("random", "popular", "adversarial")[i % 3],
             "prediction": "Yes" if margin > 0 else "No", "choice_logprobs": {"Yes": margin - 1.0, "No": -1.0}}
        )  # fmt: skip
    scored = score_task("pope", rows, n_resamples=50)
    logged = [{**row, **fields} for row, fields in zip(rows, scored["per_sample"], strict=True)]
    values = sample_stats("pope", logged, [], "f1_mean_of_splits").compute(np.arange(60)[None, :])
    for group in ("random", "popular", "adversarial", "all"):
        assert values[f"{group}.auc"][0] == pytest.approx(scored["metrics"][group]["auc"])
    no_lp = [{k: v for k, v in row.items() if k != "choice_logprobs"} for row in logged]
    assert "all.auc" not in sample_stats("pope", no_lp, [], "f1_mean_of_splits").compute(
        np.arange(60)[None, :]
    )


def test_lmms_export_takes_directions_from_the_scorers(runs: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    from vlmbench.interop.lmms import write_lmms_eval_results

    run = tmp_path / "run"
    shutil.copytree(runs["base"], run)
    results = json.loads((run / "results.json").read_text())
    results["config"]["tasks"] = {}  # the runner records a mapping here; the fixture a list
    (run / "results.json").write_text(json.dumps(results))
    doc = json.loads(write_lmms_eval_results(run, tmp_path / "out.json").read_text())
    better = doc["higher_is_better"]
    assert better["pope"]["pope_f1_score"] is True
    assert better["pope"]["pope_yes_ratio"] is True  # neutral: written as lmms-eval's own POPE task does
    assert better["ocr"]["cer"] is False and better["ocr"]["exact_match"] is True
    assert better["chair"]["chair_i"] is False
