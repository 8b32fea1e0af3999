"""Inference-time mitigation (`--mitigation self-consistency:K[@T]` / `recheck`): parsing, seeds and the
vote, the recheck's removal and CHAIR before/after, refusals before inference, and the results.json
block through `run_evaluation` (batch-size independence, resume)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import make_image

from vlmbench.errors import UserError
from vlmbench.metrics.chair import ChairScorer
from vlmbench.metrics.pope import PopeScorer
from vlmbench.mitigation.passes import MitigatedAnswerer
from vlmbench.mitigation.recheck import question_for, remove_objects
from vlmbench.mitigation.spec import MitigationSpec, check_tasks, parse_mitigation
from vlmbench.mitigation.vote import answer_key, draw_seed, majority, sample_choices
from vlmbench.runner.engine import AnswerSettings, FeatureCache
from vlmbench.runner.options import RunOptions
from vlmbench.runner.run import run_evaluation
from vlmbench.tasks.base import Sample
from vlmbench.tasks.registry import load_task

GENERATE = AnswerSettings("generate", (), 8, ("\n",))


# ---- spec ------------------------------------------------------------------------------------
def test_parse_mitigation_forms_and_refusals() -> None:
    assert (
        parse_mitigation(None) is None and parse_mitigation("none") is None and parse_mitigation(" ") is None
    )
    assert parse_mitigation("self-consistency") == MitigationSpec("self-consistency", 5, 0.7, 1.0)
    assert parse_mitigation("Self-Consistency:9@1.0").text == "self-consistency:9@1"
    assert parse_mitigation("recheck").text == "recheck"
    for bad, message in (("self-consistency:1", "outside 2..64"), ("self-consistency:x", "integer"),
                         ("self-consistency:5@0", r"\(0, 2\]"), ("self-consistency:5@hot", r"\(0, 2\]"),
                         ("vote", "unknown")):  # fmt: skip
        with pytest.raises(UserError, match=message):
            parse_mitigation(bad)


def test_a_mitigation_a_task_cannot_take_is_refused() -> None:
    pope, chair, grounding, amber = (load_task(t) for t in ("pope", "chair", "grounding", "amber"))
    with pytest.raises(UserError, match="task pope has no captions to recheck"):
        check_tasks(parse_mitigation("recheck"), {"pope": pope})
    with pytest.raises(UserError, match="task chair cannot take a majority vote"):
        check_tasks(parse_mitigation("self-consistency:3"), {"chair": chair})
    with pytest.raises(UserError, match="boxes are continuous"):
        check_tasks(parse_mitigation("self-consistency:3"), {"grounding": grounding})
    check_tasks(parse_mitigation("recheck"), {"chair": chair, "amber": amber})  # both parts: its captions
    check_tasks(parse_mitigation("self-consistency"), {"pope": pope, "amber": amber})


def test_refusal_comes_before_any_inference(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VLMBENCH_CACHE", str(tmp_path / "cache"))
    opts = RunOptions(
        model="internvl-style", tasks=["pope"], output_dir=str(tmp_path / "runs"), mitigation="recheck"
    )
    with pytest.raises(UserError, match="recheck"):
        run_evaluation(opts)
    assert not (tmp_path / "cache").exists()
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# ---- self-consistency --------------------------------------------------------------------------
def test_draw_seeds_depend_on_seed_question_and_draw_only() -> None:
    seeds = {draw_seed(s, q, d) for s in (0, 1) for q in ("1", "2") for d in range(3)}
    assert len(seeds) == 12 and all(0 <= s < 2**32 for s in seeds)
    assert draw_seed(7, "q", 2) == draw_seed(7, "q", 2)


def test_majority_vote_under_the_task_normalisation() -> None:
    key = answer_key(PopeScorer())
    vote = majority(["No, there is not.", "Yes.", "no", "", "Yes"], key)
    assert vote.key == "no" and vote.prediction == "No, there is not." and vote.votes == {"no": 2, "yes": 2}
    assert vote.tie  # 2-2: the first drawn key wins without a plain answer among them...
    assert (
        majority(["No, there is not.", "Yes.", "no", "Yes"], key, plain="Yes, there is").prediction == "Yes."
    )
    assert (
        majority(["yes", "Yes", "no"], key, plain="no").key == "yes"
    )  # ...the plain answer only breaks ties
    assert (
        majority(["", "..."], key).prediction == "" and majority(["", "..."], key).key is None
    )  # all abstain
    vqa = answer_key(load_task("vqav2").scorer)
    assert majority(["Two", "2", "three"], vqa).key == "2"


def test_sampling_from_the_choice_distribution() -> None:
    # p(Yes) = 0.8 at T=1: uniforms below 0.8 pick Yes; a lower temperature sharpens towards the argmax
    lp = [torch.log(torch.tensor(0.8)).item(), torch.log(torch.tensor(0.2)).item()]
    assert sample_choices(lp, 1.0, [0.0, 0.79, 0.81, 0.999]) == [0, 0, 1, 1]
    assert sample_choices(lp, 0.25, [0.99]) == [0]
    assert sample_choices([float("-inf"), -1.0], 1.0, [0.0]) == [1]


class _SeededStub:
    """Answers 'Yes' or 'No' from its seed alone, so a vote depends only on the seeds it was given."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def prepare_image(self, image):
        return SimpleNamespace(plan=SimpleNamespace(tile_sizes=[image.size]))

    def encode(self, images):
        return [torch.zeros(3, 2) for _ in images]

    def format_prompt(self, question: str, n_images: int = 1) -> str:
        return question

    def generate(self, images, prompts, max_new_tokens=32, stop=(), do_sample=False, temperature=1.0, top_p=1.0,
                 seed=None, use_cache=True, visual=None):  # fmt: skip
        assert do_sample and len(prompts) == 1 and temperature == 0.7
        self.seen.append(seed)
        return ["Yes" if torch.rand(1, generator=torch.Generator().manual_seed(seed)).item() < 0.5 else "No"]


def _png() -> bytes:
    buffer = io.BytesIO()
    make_image(16, 16).save(buffer, format="PNG")
    return buffer.getvalue()


def _sample(qid: str, prompt: str = "Is there a cat?", **meta) -> Sample:
    return Sample(qid, "img", "", prompt, [], dict(meta), image_bytes=_png())


def test_generated_draws_use_one_seed_per_question_and_draw() -> None:
    spec = parse_mitigation("self-consistency:5")
    plain = {q: {"question_id": q, "prediction": "Yes", "error": None} for q in ("a", "b")}
    model = _SeededStub()
    answerer = MitigatedAnswerer(spec, 3, PopeScorer(), plain)
    first = [answerer.answer(model, _sample(q), GENERATE, FeatureCache(4)) for q in ("a", "b")]
    assert model.seen == [draw_seed(3, q, d) for q in ("a", "b") for d in range(5)]
    again = [
        answerer.answer(_SeededStub(), _sample(q), GENERATE, FeatureCache(0))
        for q in ("b", "a")
    ]
    assert again[::-1] == first  # order and cache make no difference
    for record in first:
        assert record["plain_prediction"] == "Yes" and len(record["draws"]) == 5
        assert record["prediction"] == majority(record["draws"], answer_key(PopeScorer()), "Yes").prediction


def test_choices_mode_draws_from_the_plain_choice_distribution() -> None:
    from vlmbench.mitigation.vote import uniform

    choices = AnswerSettings("choices", ("Yes", "No"), 8, ())
    logprobs = {"Yes": -0.5108, "No": -0.9163}  # p(Yes) = 0.6 at T = 1
    plain = {"q": {"question_id": "q", "prediction": "Yes", "error": None, "choice_logprobs": logprobs}}
    answerer = MitigatedAnswerer(parse_mitigation("self-consistency:7@1"), 11, PopeScorer(), plain)
    record = answerer.answer(object(), _sample("q"), choices, FeatureCache(0))  # no model call
    expected = ["Yes" if uniform(draw_seed(11, "q", d)) < 0.6 else "No" for d in range(7)]
    assert record["draws"] == expected and record["prediction"] == majority(expected, str, "Yes").prediction
    plain["q"]["choice_logprobs"] = None
    assert (
        "no choice log-probabilities"
        in answerer.answer(object(), _sample("q"), choices, FeatureCache(0))["error"]
    )


def test_rows_a_mitigation_does_not_apply_to_keep_the_plain_answer() -> None:
    plain = {"c": {"question_id": "c", "prediction": "A cat.", "error": None},
             "f": {"question_id": "f", "prediction": "", "error": "SampleError: unreadable"}}  # fmt: skip
    answerer = MitigatedAnswerer(parse_mitigation("self-consistency:3"), 0, load_task("amber").scorer, plain)
    kept = answerer.answer(
        object(), _sample("c", amber_type="generative"), GENERATE, FeatureCache(0)
    )
    assert kept["prediction"] == "A cat." and kept["mitigated"] is False and kept["error"] is None
    failed = answerer.answer(object(), _sample("f"), GENERATE, FeatureCache(0))
    assert failed["error"].startswith("the plain pass failed: SampleError")  # stays paired with the plain row


# ---- recheck -----------------------------------------------------------------------------------
class _YesNoStub(_SeededStub):
    """Confirms exactly the objects it is told are there."""

    def __init__(self, present: set[str]) -> None:
        super().__init__()
        self.present = present
        self.asked: list[str] = []

    def score_choices(self, images, prompts, choices, visual=None):
        assert choices == ["Yes", "No"] and len(visual) == len(prompts)
        rows = []
        for prompt in prompts:
            name = re.match(r"(?:Is there an? |Are there )(.+) in the image\?", prompt).group(1)
            self.asked.append(name)
            rows.append([0.0, -2.0] if name in self.present else [-2.0, 0.0])
        return torch.tensor(rows)


def test_recheck_removes_the_objects_the_model_does_not_confirm() -> None:
    caption = "A cat and a dog on a sofa."
    plain = {"1": {"question_id": "1", "prediction": caption, "error": None}}
    model = _YesNoStub({"cat", "couch"})
    answerer = MitigatedAnswerer(parse_mitigation("recheck"), 0, ChairScorer(), plain)
    record = answerer.answer(
        model, _sample("1", "Describe this image in one sentence."), GENERATE, FeatureCache(4)
    )
    assert model.asked == ["cat", "dog", "couch"]  # one question per category, in mention order
    assert record["prediction"] == "A cat on a sofa." and record["removed"] == ["and a dog"]
    assert [(c["object"], c["confirmed"]) for c in record["recheck"]] == [
        ("cat", True),
        ("dog", False),
        ("couch", True),
    ]
    assert record["plain_prediction"] == caption and record["removal"] == "phrase"


@pytest.mark.parametrize(
    ("caption", "drop", "expected"),
    [
        ("A cat, a dog and a bird.", {"dog"}, "A cat and a bird."),
        ("A cat, a dog and a bird.", {"cat"}, "A dog and a bird."),
        ("A small wooden table with two red cups.", {"cup"}, "A small wooden table."),
        ("A group of people standing near a bus.", {"person"}, "Standing near a bus."),
        ("A hot dog next to a dog.", {"dog"}, "A hot dog."),  # the hot dog is another category: kept
        ("A cat on a bed.", {"tv"}, "A cat on a bed."),
        (
            "A scene with a green bottle, a red cup and a dog.",
            {"bottle"},
            "A scene with a red cup and a dog.",
        ),
        ("A picture of a blue bottle.", {"bottle"}, "A picture."),
        ("A cat and a dog on a sofa.", {"couch"}, "A cat and a dog."),
    ],
)
def test_removal_rule(caption: str, drop: set[str], expected: str) -> None:
    assert remove_objects(caption, drop).caption == expected


def test_questions_read_naturally() -> None:
    assert question_for("apple") == "Is there an apple in the image?"
    assert question_for("dining table") == "Is there a dining table in the image?"
    assert question_for("scissors") == "Are there scissors in the image?"


def test_chair_before_and_after_recheck_on_a_crafted_case() -> None:
    rows = [
        {"question_id": "1", "prediction": "A cat and a dog on a sofa.", "gt_objects": ["cat", "couch"]},
        {
            "question_id": "2",
            "prediction": "A man riding a horse next to a car.",
            "gt_objects": ["person", "horse"],
        },
    ]
    denied = {"1": {"dog"}, "2": {"car"}}
    after = [
        {**r, "prediction": remove_objects(r["prediction"], denied[r["question_id"]]).caption} for r in rows
    ]
    before_m, after_m = ChairScorer().score(rows)["metrics"], ChairScorer().score(after)["metrics"]
    assert before_m == pytest.approx({"chair_i": 2 / 6, "chair_s": 1.0, "recall": 1.0})
    assert after_m == pytest.approx({"chair_i": 0.0, "chair_s": 0.0, "recall": 1.0})
    assert after[1]["prediction"] == "A man riding a horse."


# ---- end to end --------------------------------------------------------------------------------
def _run(tmp_path: Path, name: str, **overrides) -> Path:
    opts = {"model": "internvl-style", "tasks": ["pope"], "synthetic_n": 1, "limit": 8, "answer_mode": "generate",
            "output_dir": str(tmp_path / "runs"), "run_name": name, "mitigation": "self-consistency:3@1.5", **overrides}  # fmt: skip
    return run_evaluation(RunOptions(**opts))


def _rows(run_dir: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "samples" / f"{name}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def sc_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mitigation")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLMBENCH_CACHE", str(root / "cache"))
        _run(root, "b4", batch_size="4")
    return root


def test_results_block_and_logged_passes(sc_run: Path) -> None:
    run_dir = sc_run / "runs" / "b4"
    task = json.loads((run_dir / "results.json").read_text())["tasks"]["pope"]
    block = task["mitigation"]
    assert block["spec"] == "self-consistency:3@1.5" and block["settings"]["answer_mode"] == "generate"
    assert block["n"] == block["n_paired"] == 8
    for metric in ("accuracy", "f1"):
        plain, mitigated, delta = (
            block["plain"]["all"][metric],
            block["metrics"]["all"][metric],
            block["difference"]["all"][metric],
        )
        assert plain == pytest.approx(task["metrics"]["all"][metric]) and delta == pytest.approx(
            mitigated - plain
        )
        low, high = block["difference_ci95"]["all"][metric]
        assert low <= delta <= high
    assert (
        block["difference_test"]["all"]["accuracy"] == "mcnemar"
        and "accuracy" in block["difference_p"]["all"]
    )
    plain_rows = {r["question_id"]: r for r in _rows(run_dir, "pope")}
    mitigated_rows = _rows(run_dir, "pope@mitigation")
    assert sorted(r["question_id"] for r in mitigated_rows) == sorted(plain_rows)
    from vlmbench.metrics.pope import parse_yes_no

    flips = sum(parse_yes_no(r["prediction"]) != parse_yes_no(r["plain_prediction"]) for r in mitigated_rows)
    assert block["changed"] == flips
    for row in mitigated_rows:
        assert (
            row["plain_prediction"] == plain_rows[row["question_id"]]["prediction"] and len(row["draws"]) == 3
        )
    assert sorted(p.name for p in (run_dir / "logs").iterdir()) == [
        "pope.rank0.jsonl",
        "pope@mitigation.rank0.jsonl",
    ]


def test_batch_size_does_not_change_the_draws(sc_run: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("VLMBENCH_CACHE", str(sc_run / "cache"))
    one = _run(sc_run, "b1", batch_size="1")
    assert "mitigated, diff [95% CI]" in capsys.readouterr().out  # the terminal table's column
    key = lambda r: (r["question_id"], r["draws"], r["prediction"])  # noqa: E731
    assert any(len(set(r["draws"])) > 1 for r in _rows(one, "pope@mitigation"))  # the draws do vary
    assert sorted(map(key, _rows(one, "pope@mitigation"))) == sorted(
        map(key, _rows(sc_run / "runs" / "b4", "pope@mitigation"))
    )


def test_resume_refuses_another_mitigation_and_completes_exactly(sc_run: Path, monkeypatch) -> None:
    monkeypatch.setenv("VLMBENCH_CACHE", str(sc_run / "cache"))
    run_dir = _run(sc_run, "resumed", batch_size="4")
    with pytest.raises(UserError, match="--mitigation differs"):
        _run(sc_run, "resumed", batch_size="4", resume=True, mitigation="self-consistency:5")
    with pytest.raises(UserError, match="--mitigation differs"):
        _run(sc_run, "resumed", batch_size="4", resume=True, mitigation="none")
    log = run_dir / "logs" / "pope@mitigation.rank0.jsonl"
    log.write_text("".join(log.read_text().splitlines(keepends=True)[:4]))  # one batch of 4 lost
    _run(sc_run, "resumed", batch_size="4", resume=True)
    key = lambda r: (r["question_id"], r["draws"], r["prediction"])  # noqa: E731
    assert sorted(map(key, _rows(run_dir, "pope@mitigation"))) == sorted(
        map(key, _rows(sc_run / "runs" / "b4", "pope@mitigation"))
    )


def test_recheck_run_reports_chair_before_and_after(sc_run: Path, monkeypatch) -> None:
    monkeypatch.setenv("VLMBENCH_CACHE", str(sc_run / "cache"))
    run_dir = _run(
        sc_run, "recheck", tasks=["chair"], synthetic_n=4, limit=4, answer_mode=None, mitigation="recheck"
    )
    task = json.loads((run_dir / "results.json").read_text())["tasks"]["chair"]
    block = task["mitigation"]
    after = ChairScorer().score([{"question_id": r["question_id"], "prediction": r["prediction"], "gt_objects": r["references"]}
                                 for r in _rows(run_dir, "chair@mitigation")])["metrics"]  # fmt: skip
    assert block["metrics"] == pytest.approx(after) and block["plain"] == pytest.approx(task["metrics"])
    assert block["objects_checked"] == sum(len(set(r["mentioned"])) for r in _rows(run_dir, "chair"))
    for row in _rows(run_dir, "chair@mitigation"):
        denied = [c["object"] for c in row["recheck"] if not c["confirmed"]]
        assert row["prediction"] == remove_objects(row["plain_prediction"], denied).caption


def test_report_shows_the_mitigation(sc_run: Path) -> None:
    from vlmbench.commands.run import write_report

    page = write_report(sc_run / "runs" / "b4").read_text()
    assert 'id="mitigation"' in page and "self-consistency:3@1.5" in page and "(McNemar)" in page


@pytest.mark.slow
def test_two_gloo_processes_give_the_same_draws(sc_run: Path, tmp_path: Path) -> None:
    args = ["run", "--model", "internvl-style", "--tasks", "pope", "--synthetic-n", "1", "--limit", "8",
            "--answer-mode", "generate", "--batch-size", "4", "--mitigation", "self-consistency:3@1.5", "--no-report",
            "--output-dir", str(tmp_path), "--run-name", "two"]  # fmt: skip
    env = {
        **os.environ,
        "VLMBENCH_CACHE": str(sc_run / "cache"),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29547",
         "-m", "vlmbench", *args],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "two" / "logs").iterdir()) == [
        "pope.rank0.jsonl", "pope.rank1.jsonl", "pope@mitigation.rank0.jsonl", "pope@mitigation.rank1.jsonl",
    ]  # fmt: skip
    key = lambda r: (r["question_id"], r["draws"], r["prediction"])  # noqa: E731
    assert sorted(map(key, _rows(tmp_path / "two", "pope@mitigation"))) == sorted(
        map(key, _rows(sc_run / "runs" / "b4", "pope@mitigation"))
    )
    one = json.loads((sc_run / "runs" / "b4" / "results.json").read_text())["tasks"]["pope"]["mitigation"]
    two = json.loads((tmp_path / "two" / "results.json").read_text())["tasks"]["pope"]["mitigation"]
    assert {k: v for k, v in one.items() if k != "throughput"} == {
        k: v for k, v in two.items() if k != "throughput"
    }
