"""A metric family from outside the package: a toy Scorer file next to a toy task YAML drives
`score`, `run`, `report`, `check` and `leaderboard` with no change to vlmbench."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from vlmbench.cli import main

TOY_SCORER = '''
from types import MappingProxyType

from vlmbench.metrics.scorer import MeanScorer


class ToyScorer(MeanScorer):
    """hit: the answer word occurs in the prediction; miss = 1 - hit (lower is better)."""

    name = "toy"
    directions = MappingProxyType({"hit": True, "miss": False})
    default_metric = "hit"
    binary = frozenset({"hit", "miss"})
    conventions = "Toy: hit when the answer occurs in the prediction (case-insensitive)."

    def per_question(self, prediction, answers):
        hit = float(any(a.lower() in prediction.lower() for a in answers))
        return {"hit": hit, "miss": 1.0 - hit}
'''

TOY_YAML = """
name: toy
description: A toy task whose scorer lives next to this file.
adapter: generic
hf_dataset: null
split: test
columns:
  question_id: question_id
  question: question
  answer: answer
  image: image
prompt_template: "{question}"
max_new_tokens: 3
stop: ["\\n"]
answer_mode: generate
scorer: "toy_scorer.py:ToyScorer"
primary_metric: miss
synthetic_n: 1
synthetic_seed: 0
"""

N = 12


def _answer(i: int) -> str:
    return f"zqx{i}vw"  # nothing a tiny model would say


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tasks/ (toy.yaml + toy_scorer.py + a bad YAML) and data/ (a 12-row parquet release)."""
    import datasets
    from helpers import make_image

    root = tmp_path_factory.mktemp("toy")
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / "toy_scorer.py").write_text(TOY_SCORER)
    (tasks / "toy.yaml").write_text(TOY_YAML)
    (tasks / "badtoy.yaml").write_text(
        TOY_YAML.replace("name: toy", "name: badtoy").replace("toy_scorer.py:ToyScorer", "missing.py:Nope")
    )
    (tasks / "wrongmetric.yaml").write_text(
        TOY_YAML.replace("name: toy", "name: wrongmetric").replace(
            "primary_metric: miss", "primary_metric: cer"
        )
    )
    rows = []
    for i in range(N):
        buffer = __import__("io").BytesIO()
        make_image(32, 32, seed=i).save(buffer, format="PNG")
        rows.append(
            {
                "question_id": f"q{i}",
                "question": "Which word?",
                "answer": _answer(i),
                "image": buffer.getvalue(),
            }
        )
    table = {key: [row[key] for row in rows] for key in rows[0]}
    table["image"] = [{"bytes": b, "path": None} for b in table["image"]]
    (root / "data" / "data").mkdir(parents=True)
    dataset = datasets.Dataset.from_dict(table).cast_column("image", datasets.Image())
    dataset.to_parquet(str(root / "data" / "data" / "test-00000-of-00001.parquet"))
    return root


@pytest.fixture()
def tasks_dir(toy: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VLMBENCH_TASKS_DIR", str(toy / "tasks"))
    monkeypatch.setenv("VLMBENCH_CACHE", str(toy / "cache"))
    return toy / "tasks"


@pytest.fixture(scope="module")
def runs(toy: Path) -> dict[str, Path]:
    """One real CPU run of a tiny preset on the toy task, and a perfect copy of it."""
    patch = pytest.MonkeyPatch()
    patch.setenv("VLMBENCH_TASKS_DIR", str(toy / "tasks"))
    patch.setenv("VLMBENCH_CACHE", str(toy / "cache"))
    try:
        code = main(
            ["run", "--model", "llava-1.5-style", "--tasks", "toy", "--data-dir", str(toy / "data"),
             "--output-dir", str(toy / "runs"), "--run-name", "model", "--batch-size", "6", "--device", "cpu",
             "--no-report"]
        )  # fmt: skip
    finally:
        patch.undo()
    assert code == 0
    model = toy / "runs" / "model"
    perfect = toy / "runs" / "perfect"
    shutil.copytree(model, perfect)
    results = json.loads((perfect / "results.json").read_text())
    results["run_name"] = "perfect"
    results["tasks"]["toy"]["metrics"] = {"hit": 1.0, "miss": 0.0}
    (perfect / "results.json").write_text(json.dumps(results))
    lines = []
    for line in (perfect / "samples" / "toy.jsonl").read_text().splitlines():
        row = json.loads(line)
        row.update(prediction=row["references"][0], hit=1.0, miss=0.0, score=1.0, correct=True)
        lines.append(json.dumps(row))
    (perfect / "samples" / "toy.jsonl").write_text("\n".join(lines) + "\n")
    return {"model": model, "perfect": perfect}


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_score_uses_the_toy_scorer(
    tasks_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refs = _jsonl(tmp_path / "r.jsonl", [{"question_id": i, "answer": _answer(i)} for i in range(4)])
    preds = _jsonl(
        tmp_path / "p.jsonl",
        [{"question_id": i, "prediction": _answer(i) if i < 3 else "no"} for i in range(4)],
    )
    assert main(["score", "--task", "toy", "--predictions", str(preds), "--references", str(refs)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["task"] == "toy" and out["n"] == 4
    assert out["metrics"] == {"hit": 0.75, "miss": 0.25}
    assert set(out["ci95"]) == {"hit", "miss"}


def test_score_validates_references_through_the_scorer(
    tasks_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refs = _jsonl(tmp_path / "r.jsonl", [{"question_id": 1, "answers": []}])
    preds = _jsonl(tmp_path / "p.jsonl", [{"question_id": 1, "prediction": "x"}])
    assert main(["score", "--task", "toy", "--predictions", str(preds), "--references", str(refs)]) == 2
    assert "r.jsonl line 1: 'answers' must be a non-empty list" in capsys.readouterr().err


def test_a_missing_scorer_file_is_a_one_line_error_naming_the_yaml(
    tasks_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refs = _jsonl(tmp_path / "r.jsonl", [{"question_id": 1, "answer": "a"}])
    preds = _jsonl(tmp_path / "p.jsonl", [{"question_id": 1, "prediction": "a"}])
    assert main(["score", "--task", "badtoy", "--predictions", str(preds), "--references", str(refs)]) == 2
    err = capsys.readouterr().err.strip()
    assert "badtoy.yaml: field 'scorer'" in err and "missing.py" in err and "file.py:Class" in err
    assert len(err.splitlines()) == 1


def test_a_primary_metric_outside_the_family_fails_before_inference(
    tasks_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["run", "--model", "llava-1.5-style", "--tasks", "wrongmetric", "--output-dir", str(tmp_path)]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "wrongmetric.yaml: field 'primary_metric'" in err and "'cer' is not a metric" in err


def test_run_records_the_scorer_and_its_lower_is_better_headline(runs: dict[str, Path]) -> None:
    task = json.loads((runs["model"] / "results.json").read_text())["tasks"]["toy"]
    assert task["scorer"] == "toy_scorer.py:ToyScorer"
    assert task["headline"] == {"metric": "miss", "higher_is_better": False}
    assert task["directions"] == {"hit": True, "miss": False}
    assert task["conventions"].startswith("Toy: hit")
    assert set(task["metrics"]) == {"hit", "miss"} and task["n"] == N
    rows = [json.loads(line) for line in (runs["model"] / "samples" / "toy.jsonl").read_text().splitlines()]
    assert len(rows) == N
    assert all(
        r["score"] == r["hit"] and r["correct"] is (r["hit"] == 1.0) for r in rows
    )  # the scorer's outcome


@pytest.mark.parametrize("scorer_available", [True, False])
def test_check_reads_the_direction_from_the_scorer_or_the_results(
    runs: dict[str, Path],
    toy: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    scorer_available: bool,
) -> None:
    if scorer_available:
        monkeypatch.setenv("VLMBENCH_TASKS_DIR", str(toy / "tasks"))
    else:  # someone else's run: the toy scorer cannot be imported here
        monkeypatch.setenv("VLMBENCH_TASKS_DIR", str(toy / "nowhere"))
    model_hits = json.loads((runs["model"] / "results.json").read_text())["tasks"]["toy"]["metrics"]["hit"]
    assert model_hits < 0.5  # the tiny model does not say the made-up words
    code = main(
        ["check", "--baseline", str(runs["perfect"]), "--candidate", str(runs["model"]), "--resamples", "200"]
    )
    out = capsys.readouterr()
    assert code == 1, out.out
    assert "toy miss 0.0000 ->" in out.err and "mcnemar" in out.err
    assert (
        main(
            [
                "check",
                "--baseline",
                str(runs["model"]),
                "--candidate",
                str(runs["perfect"]),
                "--resamples",
                "200",
            ]
        )
        == 0
    )
    assert "headline ↓" in capsys.readouterr().out


def test_report_and_leaderboard_render_the_toy_task(
    runs: dict[str, Path], tasks_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.html"
    assert main(["report", str(runs["model"]), str(runs["perfect"]), "--out", str(out)]) == 0
    html = out.read_text()
    assert "toy" in html and "miss" in html
    site = tmp_path / "site"
    assert main(["leaderboard", str(runs["model"].parent), "--out", str(site)]) == 0
    data = json.loads((site / "data.json").read_text())
    assert "toy" in json.dumps(data) and "miss" in json.dumps(data)


def test_module_paths_and_their_errors() -> None:
    from vlmbench.errors import UserError
    from vlmbench.metrics.pope import PopeScorer
    from vlmbench.metrics.registry import BUILTIN_SCORERS, resolve_scorer

    assert resolve_scorer("pope") is BUILTIN_SCORERS["pope"]
    assert isinstance(resolve_scorer("vlmbench.metrics.pope:PopeScorer"), PopeScorer)
    for spec, problem in [
        ("popee", "unknown scorer 'popee'"),
        ("os.path:join", "is not a vlmbench.metrics.Scorer subclass"),
        ("no_such_module_here:X", "cannot import module 'no_such_module_here'"),
        ("vlmbench.metrics.scorer:MeanScorer", "cannot instantiate MeanScorer"),
    ]:
        with pytest.raises(UserError) as info:
            resolve_scorer(spec, source="tasks/t.yaml")
        message = str(info.value)
        assert (
            message.startswith("tasks/t.yaml: field 'scorer': ")
            and problem in message
            and "\n" not in message
        )
