"""`vlmbench check` judges POPE by accuracy (McNemar) besides its F1 headline, and the visual gain
when both runs have controls. The runs are constructed sample by sample and scored by the real scorer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vlmbench.cli import main
from vlmbench.metrics.registry import BUILTIN_SCORERS
from vlmbench.report.paired import visual_gain

N_PER_SPLIT = 200
SPLITS = ("random", "popular", "adversarial")


def _truth() -> list[str]:
    return ["yes" if i % 2 == 0 else "no" for i in range(N_PER_SPLIT * len(SPLITS))]


def _answers(yes_right: float, no_right: float, seed: int = 0) -> list[str]:
    """Answers right on the first ``yes_right`` share of the yes-questions (in a fixed order) and the
    first ``no_right`` share of the no-questions, so that a worse run errs where a better one does."""
    truth = _truth()
    order = np.random.default_rng(seed).permutation(len(truth))
    answers = list(truth)
    for label, share in (("yes", yes_right), ("no", no_right)):
        ids = [i for i in order if truth[i] == label]
        for i in ids[int(round(share * len(ids))):]:
            answers[i] = "no" if label == "yes" else "yes"
    return answers


def _scored(answers: list[str]) -> tuple[dict, list[dict]]:
    truth = _truth()
    rows = [
        {"question_id": f"q{i}", "prediction": a.capitalize(), "answer": g, "category": SPLITS[i % 3]}
        for i, (a, g) in enumerate(zip(answers, truth, strict=True))
    ]
    scorer = BUILTIN_SCORERS["pope"]
    scored = scorer.score(rows, seed=0, n_resamples=200)
    samples = []
    for row, fields in zip(rows, scored["per_sample"], strict=True):
        score, correct = scorer.outcome(fields)
        samples.append({
            "question_id": row["question_id"], "image_key": f"img{int(row['question_id'][1:]) // 6}",
            "prompt": "Is there a dog?", "prediction": row["prediction"], "references": [row["answer"]],
            "category": row["category"], "parsed": fields["parsed"], "correct": correct, "score": score, "error": None,
        })  # fmt: skip
    return scored, samples


def _write(root: Path, name: str, real: list[str], controls: dict[str, list[str]] | None = None) -> Path:
    run = root / name
    (run / "samples").mkdir(parents=True)
    scored, rows = _scored(real)
    task = {
        "metrics": scored["metrics"], "ci95": scored["ci95"], "n": len(rows), "errors": 0, "scorer": "pope",
        "headline": {"metric": "f1_mean_of_splits", "higher_is_better": True},
        "data": {"source": "synthetic:x", "fingerprint": "fp", "synthetic": True},
    }  # fmt: skip
    for control, answers in (controls or {}).items():
        c_scored, c_rows = _scored(answers)
        entry = {"metrics": c_scored["metrics"], "ci95": c_scored["ci95"], "n": len(c_rows), "errors": 0}
        entry.update(visual_gain("pope", task, {**entry, "scorer": "pope"}, rows, c_rows, n_resamples=200))
        task.setdefault("controls", {})[control] = entry
        (run / "samples" / f"pope@{control}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in c_rows))
    (run / "samples" / "pope.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "results.json").write_text(json.dumps({"run_name": name, "model": {"name": name}, "tasks": {"pope": task}}))
    return run


def _check(capsys, base: Path, cand: Path) -> tuple[int, str]:
    code = main(["check", "--baseline", str(base), "--candidate", str(cand), "--resamples", "300"])
    out = capsys.readouterr()
    return code, out.out + out.err


# A cautious baseline (says yes to 60% of the present objects, 5% of the absent ones) and a candidate
# that says yes far more often: its F1 goes up while its accuracy falls from 0.775 to 0.65.
CAUTIOUS = _answers(0.6, 0.95)
YES_SAYER = _answers(1.0, 0.3)
CHANCE = _answers(0.5, 0.5, seed=1)


def test_accuracy_drop_with_a_level_headline_fails_by_mcnemar(tmp_path, capsys) -> None:
    base, cand = _write(tmp_path, "base", CAUTIOUS), _write(tmp_path, "cand", YES_SAYER)
    metrics = [json.loads((r / "results.json").read_text())["tasks"]["pope"]["metrics"] for r in (base, cand)]
    assert metrics[1]["f1_mean_of_splits"] > metrics[0]["f1_mean_of_splits"]  # the headline does not drop
    assert metrics[1]["all"]["accuracy"] < metrics[0]["all"]["accuracy"] - 0.1
    code, out = _check(capsys, base, cand)
    assert code == 1, out
    assert "pope all.accuracy" in out and "mcnemar" in out.splitlines()[-1]
    assert _check(capsys, cand, base)[0] == 0  # the other way round it is an improvement


def test_identical_runs_with_controls_pass(tmp_path, capsys) -> None:
    base = _write(tmp_path, "base", CAUTIOUS, {"blank": CHANCE})
    same = _write(tmp_path, "same", CAUTIOUS, {"blank": CHANCE})
    code, out = _check(capsys, base, same)
    assert code == 0, out
    assert "gain[blank] f1_mean_of_splits" in out and "also judged: pooled accuracy and visual gains" in out


def test_a_drop_of_the_visual_gain_fails(tmp_path, capsys) -> None:
    base = _write(tmp_path, "base", CAUTIOUS, {"blank": CHANCE})
    blind = _write(tmp_path, "blind", CAUTIOUS, {"blank": CAUTIOUS})  # same answers, with or without the image
    code, out = _check(capsys, base, blind)
    assert code == 1, out
    assert "visual gain (blank) of" in out.splitlines()[-1]
    gains = json.loads((base / "results.json").read_text())["tasks"]["pope"]["controls"]["blank"]
    assert gains["visual_gain"]["all"]["accuracy"] == pytest.approx(0.775 - 0.5, abs=1e-9)


def test_controls_in_one_run_only_are_not_judged(tmp_path, capsys) -> None:
    base = _write(tmp_path, "base", CAUTIOUS, {"blank": CHANCE})
    plain = _write(tmp_path, "plain", CAUTIOUS)
    code, out = _check(capsys, base, plain)
    assert code == 0 and "gain[" not in out


@pytest.mark.parametrize("damage", ["missing", "other_ids"])
def test_inconsistent_control_samples_are_refused(tmp_path, capsys, damage: str) -> None:
    base = _write(tmp_path, "base", CAUTIOUS, {"blank": CHANCE})
    cand = _write(tmp_path, "cand", CAUTIOUS, {"blank": CHANCE})
    path = cand / "samples" / "pope@blank.jsonl"
    if damage == "missing":
        path.unlink()
    else:
        path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))
    code, out = _check(capsys, base, cand)
    assert code == 2
    assert "pope@blank.jsonl" in out
