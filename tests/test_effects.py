"""`vlmbench effects`: literature effects measured on small synthetic run directories.

Each run directory holds a trimmed results.json and samples/<task>.jsonl rows shaped like the
runner's (POPE: category/parsed/references; DocVQA: anls/score/font_px; CHAIR: references holding the
ground-truth objects plus mentioned/hallucinated), built so that an effect clearly appears or not.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vlmbench.cli import main
from vlmbench.errors import UserError
from vlmbench.metrics.pope import pope_metrics
from vlmbench.report.effects import (
    EffectRow,
    little_loss_verdict,
    parse_run_specs,
    pope_split_difference,
    run_effects,
)

Rows = list[dict[str, Any]]
RESAMPLES = 300


# --- builders ---------------------------------------------------------------------------------


def _pope_rows(
    right: Callable[[int, str], bool], splits: tuple[str, ...] = ("random", "adversarial")
) -> Rows:
    """40 questions per split, truth alternating yes/no; ``right(i, split)`` says whether it is answered right."""
    rows: Rows = []
    for split in splits:
        for i in range(40):
            truth = "yes" if i % 2 == 0 else "no"
            answer = truth if right(i, split) else ("no" if truth == "yes" else "yes")
            rows.append(
                {
                    "question_id": f"{split}-{i}",
                    "category": split,
                    "prediction": answer.capitalize(),
                    "parsed": answer,
                    "references": [truth],
                    "correct": answer == truth,
                    "score": float(answer == truth),
                    "error": None,
                }
            )
    return rows


def _doc_rows(score: Callable[[int, int], float], font: bool = True) -> Rows:
    """40 questions: even ones in a small font (10 px), odd ones large (20 px)."""
    rows: Rows = []
    for i in range(40):
        font_px = 10 if i % 2 == 0 else 20
        value = score(i, font_px)
        row: dict[str, Any] = {"question_id": str(i), "anls": value, "score": value, "references": ["X"]}
        if font:
            row["font_px"] = font_px
        rows.append(row)
    return rows


def _chair_rows(mentioned: list[str], n: int = 30) -> Rows:
    gt = ["dog", "cat"]
    return [
        {
            "question_id": str(i),
            "references": gt,
            "mentioned": mentioned,
            "hallucinated": [m for m in mentioned if m not in gt],
            "score": float(all(m in gt for m in mentioned)),
        }
        for i in range(n)
    ]


def _write_run(root: Path, name: str, tasks: dict[str, Rows]) -> Path:
    run_dir = root / name
    (run_dir / "samples").mkdir(parents=True)
    results = {
        "vlmbench_version": "0.1.0",
        "run_name": name,
        "model": {"name": name, "preset": name},
        "tasks": {
            task: {"metrics": {}, "n": len(rows), "errors": 0, "data": {"synthetic": True}}
            for task, rows in tasks.items()
        },
    }
    (run_dir / "results.json").write_text(json.dumps(results), encoding="utf-8")
    for task, rows in tasks.items():
        lines = "".join(json.dumps(row) + "\n" for row in rows)
        (run_dir / "samples" / f"{task}.jsonl").write_text(lines, encoding="utf-8")
    return run_dir


def _all_right(i: int, split: str) -> bool:
    return True


def _mostly_right(i: int, split: str) -> bool:
    return i % 10 != 0


def _adversarial_fails(i: int, split: str) -> bool:
    return split == "random" or i % 2 == 0  # adversarial: every "no" question answered "yes"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("effects-runs")
    good_doc = _doc_rows(lambda i, f: 0.9 if i % 4 else 0.7)
    specs: dict[str, dict[str, Rows]] = {
        "llava-1.5-style": {
            "pope": _pope_rows(_adversarial_fails),
            "docvqa": _doc_rows(lambda i, f: 0.1 if f <= 12 else 0.9),
        },
        "llava-next-style": {
            "pope": _pope_rows(_mostly_right),
            "docvqa": _doc_rows(lambda i, f: 0.9 if i % 4 else 0.7),
        },
        "qwen2vl-style": {
            "pope": _pope_rows(_all_right),
            "docvqa": _doc_rows(lambda i, f: 0.1 if f <= 12 else 0.9),  # no better on small fonts
        },
        "blip2-style": {
            "pope": _pope_rows(lambda i, s: _adversarial_fails(i, s) and i % 3 != 0),
            "docvqa": _doc_rows(lambda i, f: 0.0 if i % 3 else 0.5),
        },
        "ablation-llava-pixel-shuffle": {
            "pope": _pope_rows(lambda i, s: _adversarial_fails(i, s) and not (s == "random" and i == 5)),
            "docvqa": _doc_rows(lambda i, f: 0.1 if f <= 12 else (0.8 if i == 3 else 0.9)),
        },
        "internvl-style": {"chair": _chair_rows(["dog", "cat"]), "docvqa": good_doc},
        "ablation-no-dpo": {"chair": _chair_rows(["dog", "cat", "car"])},
        # For the negative cases:
        "dpo-collapse": {"chair": _chair_rows(["dog"])},
        "pixel-shuffle-lossy": {
            "pope": _pope_rows(lambda i, s: i % 2 == 0),  # says yes to everything
            "docvqa": _doc_rows(lambda i, f: 0.0),
        },
        "other-ids": {"pope": _pope_rows(_all_right, splits=("random", "popular"))},
        "no-docvqa": {"pope": _pope_rows(_all_right)},
        "no-font": {"docvqa": _doc_rows(lambda i, f: 0.1 if f <= 12 else 0.9, font=False)},
        "no-font-high": {"docvqa": _doc_rows(lambda i, f: 0.9, font=False)},
    }
    return {name: _write_run(root, name, tasks) for name, tasks in specs.items()}


def _specs(runs: dict[str, Path], names: tuple[str, ...]) -> list[str]:
    """``--run`` values for runs whose directory key is their preset name."""
    return [f"{name}={runs[name]}" for name in names]


def _by(rows: list[EffectRow], effect: int, runs_label: str, metric_start: str = "") -> EffectRow:
    hits = [
        r for r in rows if r.effect == effect and r.runs == runs_label and r.metric.startswith(metric_start)
    ]
    assert len(hits) == 1, (effect, runs_label, metric_start, rows)
    return hits[0]


def _brackets(row: EffectRow) -> None:
    assert row.estimate is not None
    low, high = row.estimate.ci
    assert low <= row.estimate.delta <= high
    assert row.estimate.delta == pytest.approx(row.estimate.b - row.estimate.a)


# --- effects ----------------------------------------------------------------------------------

FULL: tuple[str, ...] = (
    "llava-1.5-style",
    "llava-next-style",
    "qwen2vl-style",
    "blip2-style",
    "ablation-llava-pixel-shuffle",
    "internvl-style",
    "ablation-no-dpo",
)


@pytest.fixture(scope="module")
def full(runs: dict[str, Path]) -> tuple[list[EffectRow], str]:
    return run_effects(_specs(runs, FULL), seed=0, n_resamples=RESAMPLES)


def test_adversarial_pope_appears_and_not(full: tuple[list[EffectRow], str]) -> None:
    rows, _ = full
    appears = _by(rows, 1, "llava-1.5-style: adversarial vs random")
    assert appears.verdict == "appears"
    _brackets(appears)
    assert appears.estimate is not None and appears.estimate.ci[1] < 0
    flat = _by(rows, 1, "llava-next-style: adversarial vs random")
    assert flat.verdict == "not significant"
    _brackets(flat)


def test_split_f1_matches_pope_metrics() -> None:
    rows = _pope_rows(_adversarial_fails)
    estimate = pope_split_difference(rows, "test", seed=0, n_resamples=50)
    official = pope_metrics([{**r, "answer": r["references"][0]} for r in rows])
    assert estimate is not None
    assert estimate.a == pytest.approx(official["random"]["f1"])
    assert estimate.b == pytest.approx(official["adversarial"]["f1"])
    assert pope_split_difference(_pope_rows(_all_right, ("random",)), "t", seed=0, n_resamples=10) is None


def test_high_resolution_small_fonts(full: tuple[list[EffectRow], str]) -> None:
    rows, _ = full
    better = _by(rows, 2, "llava-next-style vs llava-1.5-style")
    assert better.verdict == "appears"
    assert better.metric == "ANLS, font_px ≤ 12 (n=20)"
    _brackets(better)
    same = _by(rows, 2, "qwen2vl-style vs llava-1.5-style")
    assert same.verdict == "not significant"
    assert same.estimate is not None and same.estimate.delta == 0.0
    internvl = _by(rows, 2, "internvl-style vs llava-1.5-style")
    assert internvl.verdict == "appears"
    missing = _by(rows, 2, "ablation-llava-dynamic-tiles vs llava-1.5-style")
    assert missing.estimate is None
    assert missing.verdict == "not measured (needs runs: ablation-llava-dynamic-tiles)"


def test_high_resolution_without_font_px_uses_all_rows(runs: dict[str, Path]) -> None:
    rows, _ = run_effects(
        [f"llava-1.5-style={runs['no-font']}", f"llava-next-style={runs['no-font-high']}"],
        n_resamples=RESAMPLES,
    )
    row = _by(rows, 2, "llava-next-style vs llava-1.5-style")
    assert row.metric.startswith("ANLS, all rows: no font_px")
    assert "n=40" in row.metric
    assert row.estimate is not None and row.estimate.delta == pytest.approx(0.4)


def test_qformer_loses_detail(full: tuple[list[EffectRow], str]) -> None:
    rows, _ = full
    for metric in ("POPE", "DocVQA"):
        row = _by(rows, 3, "blip2-style vs llava-1.5-style", metric)
        assert row.verdict == "appears", row
        _brackets(row)
        assert row.estimate is not None and row.estimate.b < row.estimate.a


def test_pixel_shuffle_loses_little(full: tuple[list[EffectRow], str], runs: dict[str, Path]) -> None:
    rows, _ = full
    for metric in ("POPE", "DocVQA"):
        row = _by(rows, 4, "ablation-llava-pixel-shuffle vs llava-1.5-style", metric)
        assert row.verdict == "appears (loses little)", row
        _brackets(row)
    lossy, _ = run_effects(
        [
            f"llava-1.5-style={runs['llava-1.5-style']}",
            f"ablation-llava-pixel-shuffle={runs['pixel-shuffle-lossy']}",
        ],
        n_resamples=RESAMPLES,
    )
    for metric in ("POPE", "DocVQA"):
        row = _by(lossy, 4, "ablation-llava-pixel-shuffle vs llava-1.5-style", metric)
        assert row.verdict == "loses a lot", row
        _brackets(row)


def test_little_loss_verdict_rules() -> None:
    assert little_loss_verdict((-0.04, 0.01), 0.05) == "appears (loses little)"
    assert little_loss_verdict((-0.2, 0.1), 0.05).startswith("appears (loses little; CI wider")
    assert little_loss_verdict((-0.3, -0.06), 0.05) == "loses a lot"
    assert little_loss_verdict((0.02, 0.09), 0.05) == "reversed (gains)"
    assert little_loss_verdict((-0.09, -0.02), 0.05).startswith("inconclusive")


def test_dpo_lowers_chair(full: tuple[list[EffectRow], str], runs: dict[str, Path]) -> None:
    rows, _ = full
    chair_i = _by(rows, 5, "internvl-style vs ablation-no-dpo", "CHAIR_i")
    assert chair_i.verdict == "appears"
    assert chair_i.estimate is not None
    assert chair_i.estimate.a == pytest.approx(1 / 3) and chair_i.estimate.b == 0.0
    _brackets(chair_i)
    recall = _by(rows, 5, "internvl-style vs ablation-no-dpo", "CHAIR recall")
    assert recall.estimate is not None and recall.estimate.delta == 0.0  # ground truth from references
    assert recall.verdict.startswith("recall kept")
    collapsed, _ = run_effects(
        [f"internvl-style={runs['dpo-collapse']}", f"ablation-no-dpo={runs['ablation-no-dpo']}"],
        n_resamples=RESAMPLES,
    )
    row = _by(collapsed, 5, "internvl-style vs ablation-no-dpo", "CHAIR_i")
    assert row.verdict.startswith("CHAIR_i lower but recall collapses")
    recall = _by(collapsed, 5, "internvl-style vs ablation-no-dpo", "CHAIR recall")
    assert recall.estimate is not None and recall.estimate.delta == pytest.approx(-0.5)


def test_deterministic(runs: dict[str, Path], full: tuple[list[EffectRow], str]) -> None:
    _, again = run_effects(_specs(runs, FULL), seed=0, n_resamples=RESAMPLES)
    assert again == full[1]
    _, other = run_effects(_specs(runs, FULL), seed=1, n_resamples=RESAMPLES)
    assert "seed 1" in other


def test_missing_runs_not_measured(runs: dict[str, Path]) -> None:
    rows, table = run_effects([f"llava-1.5-style={runs['llava-1.5-style']}"], n_resamples=RESAMPLES)
    assert [r.effect for r in rows if r.estimate is not None] == [1]
    assert "not measured (needs runs: blip2-style)" in table
    assert "not measured (needs runs: internvl-style, ablation-no-dpo)" in table
    assert {r.effect for r in rows} == {1, 2, 3, 4, 5}


def test_mismatched_ids_raise(runs: dict[str, Path]) -> None:
    with pytest.raises(UserError, match=r"llava-1\.5-style and blip2-style have different question ids"):
        run_effects(
            [f"llava-1.5-style={runs['llava-1.5-style']}", f"blip2-style={runs['other-ids']}"],
            n_resamples=RESAMPLES,
        )


def test_missing_task_raises(runs: dict[str, Path]) -> None:
    with pytest.raises(UserError, match=r"run blip2-style .* has no task 'docvqa'"):
        run_effects(
            [f"llava-1.5-style={runs['llava-1.5-style']}", f"blip2-style={runs['no-docvqa']}"],
            n_resamples=RESAMPLES,
        )


def test_run_specs_are_checked(tmp_path: Path) -> None:
    assert parse_run_specs(["a=b=c"]) == {"a": Path("b=c")}
    for bad in (["no-equals"], ["=dir"], ["name="], ["x=a", "x=b"]):
        with pytest.raises(UserError):
            parse_run_specs(bad)
    with pytest.raises(UserError, match="run llava-1.5-style: .*no such file"):
        run_effects([f"llava-1.5-style={tmp_path / 'absent'}"])


def test_odd_names_do_not_break_the_table(runs: dict[str, Path]) -> None:
    rows, table = run_effects([f"we|rd\tname={runs['llava-1.5-style']}"], n_resamples=RESAMPLES)
    lines = [line for line in table.splitlines() if line.startswith("|")]
    assert len(lines) == 2 + len(rows)
    assert "we\\|rd name: adversarial vs random" in table
    cells = {line.count(" | ") for line in lines if not line.startswith("|---")}
    assert cells == {6}  # 7 columns on every line


# --- CLI --------------------------------------------------------------------------------------


def test_cli_writes_markdown(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out" / "effects.md"
    args = ["effects", "--resamples", str(RESAMPLES), "--out", str(out)]
    for spec in _specs(runs, FULL):
        args += ["--run", spec]
    assert main(args) == 0
    printed = capsys.readouterr().out
    text = out.read_text(encoding="utf-8")
    assert text == printed
    assert "| effect | runs (B vs A) | metric | A | B | B − A [95% CI] | verdict |" in text
    assert "| 5. DPO lowers CHAIR_i, keeps recall | internvl-style vs ablation-no-dpo |" in text


def test_cli_bad_run_dir_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["effects", "--run", f"llava-1.5-style={tmp_path / 'nope'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vlmbench effects: error: run llava-1.5-style:")
    assert len(err.strip().splitlines()) == 1
    assert main(["effects", "--run", "no-equals-sign"]) == 2


def test_equal_splits_give_zero_difference() -> None:
    estimate = pope_split_difference(_pope_rows(_mostly_right), "t", seed=3, n_resamples=100)
    assert estimate is not None and np.isclose(estimate.delta, 0.0)
    assert estimate.ci[0] < 0.0 < estimate.ci[1]


# --- studies ----------------------------------------------------------------------------------

CUSTOM_STUDY = """
title: Custom study
effects:
  - title: Next-style reads small fonts better
    kind: pairs
    baseline: old
    candidates: [new]
    metrics:
      - task: docvqa
        statistic: anls
        label: ANLS
        rows: {field: font_px, at_most: 12}
        show_n: true
        verdict: {rule: little_loss, margin: 0.5}
"""


def test_default_study_names_the_compared_presets() -> None:
    from vlmbench.report.effects_study import load_study

    study = load_study()
    assert [e.heading for e in study.effects][0] == "1. Adversarial POPE below random"
    assert len(study.effects) == 5
    assert set(study.known_runs) == {
        "llava-1.5-style", "llava-next-style", "internvl-style", "qwen2vl-style", "blip2-style",
        "honeybee-style", "flamingo-style", "ablation-llava-pixel-shuffle", "ablation-llava-dynamic-tiles",
        "ablation-no-dpo",
    }


def test_cli_runs_another_study(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = tmp_path / "study.yaml"
    study.write_text(CUSTOM_STUDY, encoding="utf-8")
    args = ["effects", "--resamples", "50", "--study", str(study),
            "--run", f"old={runs['llava-1.5-style']}", "--run", f"new={runs['llava-next-style']}",
            "--run", f"extra={runs['qwen2vl-style']}"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("## Custom study\n")
    assert "pairs are matched by question_id.\n" in captured.out  # no within-run effect to mention
    assert "| 1. Next-style reads small fonts better | new vs old | ANLS, font_px ≤ 12 (n=20) |" in captured.out
    assert "'extra' is not one of the compared presets; it enters no effect" in captured.err
    assert "'old'" not in captured.err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.replace("kind: pairs", "kind: sideways"), r"effect 1: field 'kind': expected one of"),
        (lambda s: s.replace("rule: little_loss, margin: 0.5", "rule: little_loss"),
         r"effect 1, metric 1, verdict: missing field\(s\) margin"),
        (lambda s: s.replace("margin: 0.5", "margin: -1"), r"field 'margin': expected a positive number"),
        (lambda s: s.replace("statistic: anls", "statistic: accuracy"),
         r"metric 1: field 'statistic': 'accuracy' on task 'docvqa' cannot be measured"),
        (lambda s: s.replace("show_n: true", "show_n: 3"), r"field 'show_n': expected true or false"),
        (lambda s: s.replace("candidates: [new]", "candidates: []"), r"field 'candidates': expected a non-empty"),
        (lambda s: s.replace("baseline: old", "baseline: old\n    splits: {field: x, a: y, b: z}"),
         r"effect 1: unknown field\(s\) splits"),
        (lambda s: s.replace("rule: little_loss, margin: 0.5",
                             "rule: sign, expected: lower, guard: {statistic: recall, at_most: -0.1}"),
         r"guard statistic 'recall' is not a metric of this effect"),
        (lambda s: s + "  - just a string\n", r"effect 2: expected a mapping, got str"),
        (lambda s: "title: [unclosed", r"not valid YAML"),
    ],
)
def test_bad_study_is_one_clear_error(tmp_path: Path, change: Callable[[str], str], message: str) -> None:
    from vlmbench.report.effects_study import load_study

    path = tmp_path / "study.yaml"
    path.write_text(change(CUSTOM_STUDY), encoding="utf-8")
    with pytest.raises(UserError, match=message) as info:
        load_study(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_cli_missing_study_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["effects", "--study", str(tmp_path / "none.yaml"), "--run", f"a={tmp_path}"]) == 2
    assert "none.yaml: no such file" in capsys.readouterr().err
