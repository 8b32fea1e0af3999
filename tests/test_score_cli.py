"""`vlmbench score`: output contract and every bad-input case (exit 2, file and line in the message)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlmbench.cli import main
from vlmbench.metrics.pope import pope_metrics


def _write(path: Path, rows: list) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def _score(tmp_path: Path, task: str, preds: list, refs: list, *extra: str) -> int:
    p = _write(tmp_path / "p.jsonl", preds)
    r = _write(tmp_path / "r.jsonl", refs)
    return main(["score", "--task", task, "--predictions", str(p), "--references", str(r), *extra])


POPE_REFS = [
    {"question_id": 1, "answer": "yes", "category": "random"},
    {"question_id": 2, "answer": "no", "category": "random"},
    {"question_id": 3, "answer": "yes", "category": "popular"},
]
POPE_PREDS = [
    {"question_id": 3, "prediction": ""},  # empty: scored as unknown, not an error
    {"question_id": 1, "prediction": "Yes."},
    {"question_id": 2, "prediction": "No, there is not."},
]


def test_score_pope_prints_contract_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _score(tmp_path, "pope", POPE_PREDS, POPE_REFS, "--seed", "1") == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"task", "n", "metrics", "ci95"}
    assert out["task"] == "pope" and out["n"] == 3
    rows = [
        {**ref, "prediction": p["prediction"]}
        for ref in POPE_REFS
        for p in POPE_PREDS
        if p["question_id"] == ref["question_id"]
    ]
    assert out["metrics"] == pope_metrics(rows)
    assert out["metrics"]["popular"]["unknown"] == 1.0
    assert out["metrics"]["random"]["f1"] == 1.0
    assert isinstance(out["ci95"]["all"]["f1"], list) and len(out["ci95"]["f1_mean_of_splits"]) == 2


def test_score_flat_task_ids_match_as_strings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refs = [{"question_id": "a", "answers": ["abcd", "zz"]}, {"question_id": 7, "answer": "xyz"}]
    preds = [{"question_id": "7", "prediction": "xyz"}, {"question_id": "a", "prediction": "abxx"}]
    assert _score(tmp_path, "docvqa", preds, refs) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["metrics"] == {"anls": 0.75} and set(out["ci95"]) == {"anls"}


def test_score_chair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refs = [{"question_id": 1, "gt_objects": ["person", "dog"]}, {"question_id": 2, "gt_objects": []}]
    preds = [
        {"question_id": 1, "prediction": "A man with two dogs and a cat."},
        {"question_id": 2, "prediction": ""},
    ]
    assert _score(tmp_path, "chair", preds, refs) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["metrics"] == pytest.approx({"chair_i": 1 / 3, "chair_s": 0.5, "recall": 1.0})


def test_score_seed_changes_only_ci(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refs = [{"question_id": i, "answer": "abcdefghij"} for i in range(100)]
    preds = [{"question_id": i, "prediction": "abcdefghij"[: i % 11]} for i in range(100)]
    outs = []
    for seed in ("0", "0", "5"):
        assert _score(tmp_path, "ocr", preds, refs, "--seed", seed) == 0
        outs.append(json.loads(capsys.readouterr().out))
    assert outs[0] == outs[1]
    assert outs[0]["metrics"] == outs[2]["metrics"] and outs[0]["ci95"] != outs[2]["ci95"]


GOOD_REF = {"question_id": 1, "answer": "x"}
GOOD_PRED = {"question_id": 1, "prediction": "x"}


@pytest.mark.parametrize(
    ("task", "preds", "refs", "message"),
    [
        ("docvqa", [GOOD_PRED, "{not json"], [GOOD_REF], "p.jsonl line 2: not valid JSON"),
        ("docvqa", [GOOD_PRED], [GOOD_REF, "[1, 2]"], "r.jsonl line 2: expected a JSON object"),
        ("docvqa", [{"prediction": "x"}], [GOOD_REF], "p.jsonl line 1: missing field 'question_id'"),
        ("docvqa", [{"question_id": 1}], [GOOD_REF], "p.jsonl line 1: missing field 'prediction'"),
        ("docvqa", [{"question_id": 1, "prediction": None}], [GOOD_REF], "'prediction' must be a string"),
        ("docvqa", [GOOD_PRED], [{"question_id": 1}], "r.jsonl line 1: missing field 'answer'"),
        ("docvqa", [GOOD_PRED], [{"question_id": 1, "answers": []}], "'answers' must be a non-empty list"),
        ("docvqa", [GOOD_PRED], [{"question_id": [1], "answer": "x"}], "'question_id' must be a string"),
        (
            "docvqa",
            [GOOD_PRED, GOOD_PRED],
            [GOOD_REF],
            "p.jsonl line 2: duplicate question_id 1 (first on line 1)",
        ),
        ("docvqa", [GOOD_PRED], [GOOD_REF, {"question_id": "1", "answer": "y"}], "r.jsonl line 2: duplicate"),
        (
            "docvqa",
            [GOOD_PRED, {"question_id": 8, "prediction": "x"}, {"question_id": 9, "prediction": "x"}],
            [GOOD_REF],
            "2 prediction(s) have a question_id that is not in",
        ),
        (
            "docvqa",
            [GOOD_PRED],
            [GOOD_REF] + [{"question_id": i, "answer": "x"} for i in range(2, 10)],
            "8 of 9 reference(s) have no prediction",
        ),
        ("docvqa", [GOOD_PRED], [], "no reference rows"),
        ("mmmu", [GOOD_PRED], [GOOD_REF], "unknown task 'mmmu'"),
        (
            "pope",
            [GOOD_PRED],
            [{"question_id": 1, "answer": "yes", "category": "hard"}],
            "unknown POPE split 'hard'",
        ),
        (
            "pope",
            [GOOD_PRED],
            [{"question_id": 1, "answer": "yes"}],
            "r.jsonl line 1: missing field 'category'",
        ),
        ("pope", [GOOD_PRED], [{"question_id": 1, "answer": "maybe", "category": "random"}], "'yes' or 'no'"),
        ("chair", [GOOD_PRED], [{"question_id": 1}], "missing field 'gt_objects'"),
        ("chair", [GOOD_PRED], [{"question_id": 1, "gt_objects": ["dogs"]}], "did you mean 'dog'"),
    ],
)
def test_score_bad_input_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], task: str, preds: list, refs: list, message: str
) -> None:
    assert _score(tmp_path, task, preds, refs) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err
    assert "Traceback" not in captured.err


def test_score_missing_prediction_lists_examples(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refs = [{"question_id": f"q{i}", "answer": "x"} for i in range(12)]
    assert _score(tmp_path, "ocr", [{"question_id": "q0", "prediction": "x"}], refs) == 2
    err = capsys.readouterr().err
    assert "11 of 12" in err and "'q1' (line 2)" in err and "and 6 more" in err


def test_score_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = _write(tmp_path / "r.jsonl", [GOOD_REF])
    code = main(
        ["score", "--task", "ocr", "--predictions", str(tmp_path / "nope.jsonl"), "--references", str(r)]
    )
    assert code == 2 and "nope.jsonl: file not found" in capsys.readouterr().err


def test_pope_choice_logprobs_give_auc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refs = [{"question_id": i, "answer": "yes" if i % 2 else "no", "category": "random"} for i in range(6)]
    preds = [
        {"question_id": i, "prediction": "Yes", "choice_logprobs": {"Yes": -0.1 * (i % 2) - 1.0, "No": -1.2}}
        for i in range(6)
    ]
    args = ["score", "--task", "pope", "--references", str(_write(tmp_path / "r.jsonl", refs))]
    assert main([*args, "--predictions", str(_write(tmp_path / "p.jsonl", preds))]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["metrics"]["all"]["auc"] == 0.0  # yes rows have the lower margin here: fully inverted
    assert out["metrics"]["random"]["auc"] == 0.0 and len(out["ci95"]["all"]["auc"]) == 2
    plain = [{"question_id": p["question_id"], "prediction": p["prediction"]} for p in preds]
    assert main([*args, "--predictions", str(_write(tmp_path / "q.jsonl", plain))]) == 0
    assert "auc" not in json.loads(capsys.readouterr().out)["metrics"]["all"]
    bad = [{**p, "choice_logprobs": {"Yes": "high"}} for p in preds]
    assert main([*args, "--predictions", str(_write(tmp_path / "b.jsonl", bad))]) == 2
    assert "'choice_logprobs' must map each choice to a number" in capsys.readouterr().err
