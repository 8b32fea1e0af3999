"""End to end: the regression gate fails (exit 1) for a shipped checkpoint whose vision tower is zeroed
and for one whose projector output is permuted, against the shipped checkpoint as the baseline.

This depends on the shipped checkpoint of `PRESET` actually using the image (its `see` stage: POPE accuracy
0.87 against 0.50 for the copies); a checkpoint that answers POPE at chance gives the gate nothing to lose."""

from __future__ import annotations

from pathlib import Path

import pytest

from vlmbench.cli import main
from vlmbench.modeling.ablation import permute_projector, zero_vision
from vlmbench.modeling.presets import demo_checkpoint

PRESET = "internvl-style"
LIMIT = 240


def _run(model: str, out: Path, name: str) -> Path:
    code = main(["run", "--model", model, "--tasks", "pope", "--limit", str(LIMIT), "--controls", "blank",
                 "--no-report", "--output-dir", str(out), "--run-name", name])  # fmt: skip
    assert code == 0
    return out / name


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("blind-gate")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VLMBENCH_CACHE", str(root / "cache"))
        return _run(PRESET, root / "runs", "shipped"), root


@pytest.mark.slow
@pytest.mark.parametrize("sabotage", [zero_vision, permute_projector], ids=["zero-vision", "permute-projector"])
def test_the_gate_fails_a_sabotaged_copy(baseline, sabotage, monkeypatch, capsys) -> None:
    shipped, root = baseline
    source = demo_checkpoint(PRESET)
    assert source is not None, f"{PRESET} ships no demo checkpoint"
    copy = sabotage(source, root / f"ckpt-{sabotage.__name__}")
    monkeypatch.setenv("VLMBENCH_CACHE", str(root / "cache"))
    candidate = _run(str(copy), root / "runs", sabotage.__name__)
    capsys.readouterr()
    code = main(["check", "--baseline", str(shipped), "--candidate", str(candidate)])
    out = capsys.readouterr()
    assert code == 1, out.out[-2000:] + out.err[-1000:]
    # not only through the blank control's F1 gain: the sabotaged copy answers fewer questions right
    # (McNemar on accuracy) and loses its accuracy gain over the blank image
    assert "all.accuracy" in out.err and "mcnemar" in out.err, out.err[-1500:]
    assert "visual gain (blank) of all.accuracy" in out.err, out.err[-1500:]
