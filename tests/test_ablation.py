"""`vlmbench ablate`: sabotaged checkpoint copies (zeroed vision tower, permuted projector output)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vlmbench.cli import main
from vlmbench.modeling.ablation import derangement
from vlmbench.modeling.presets import demo_checkpoint

PRESET = "internvl-style"


@pytest.fixture(scope="module")
def source() -> Path:
    path = demo_checkpoint(PRESET)
    assert path is not None
    return Path(path)


def test_zero_vision_zeroes_the_tower_only(source: Path, tmp_path: Path, capsys) -> None:
    assert main(["ablate", PRESET, "--zero-vision", "--out", str(tmp_path / "blind")]) == 0
    before, after = load_file(str(source / "model.safetensors")), load_file(str(tmp_path / "blind" / "model.safetensors"))
    assert set(before) == set(after)
    for name, tensor in after.items():
        if name.startswith("vision."):
            assert not tensor.any(), name
        else:
            assert torch.equal(tensor, before[name]), name
    config = json.loads((tmp_path / "blind" / "config.json").read_text())
    assert config["name"].endswith("-zero-vision")
    assert json.loads((tmp_path / "blind" / "ablation.json").read_text())["ablation"] == "zero-vision"


def test_permute_projector_moves_every_output_feature(source: Path, tmp_path: Path, capsys) -> None:
    assert main(["ablate", str(source), "--permute-projector", "--seed", "3", "--out", str(tmp_path / "perm")]) == 0
    record = json.loads((tmp_path / "perm" / "ablation.json").read_text())
    layer = record["layer"]
    before, after = load_file(str(source / "model.safetensors")), load_file(str(tmp_path / "perm" / "model.safetensors"))
    perm = derangement(before[f"{layer}.weight"].shape[0], 3)
    assert torch.equal(after[f"{layer}.weight"], before[f"{layer}.weight"][perm])
    assert torch.equal(after[f"{layer}.bias"], before[f"{layer}.bias"][perm])
    assert all(torch.equal(after[k], before[k]) for k in before if not k.startswith(layer + "."))
    from vlmbench.modeling.vlm import VLM

    VLM.load(tmp_path / "perm")  # shapes hold: it loads strictly


def test_derangement_has_no_fixed_point() -> None:
    for n in (2, 3, 17, 128):
        for seed in range(5):
            perm = derangement(n, seed)
            assert sorted(perm.tolist()) == list(range(n)) and not (perm == torch.arange(n)).any()


def test_bad_input_exits_2(source: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert main(["ablate", PRESET, "--zero-vision", "--out", str(tmp_path / "full")]) == 2
    assert "not an empty directory" in capsys.readouterr().err
    assert main(["ablate", "no-such-model", "--zero-vision", "--out", str(tmp_path / "o")]) == 2
    assert "neither a checkpoint directory nor a preset" in capsys.readouterr().err
    assert main(["ablate", str(tmp_path), "--zero-vision", "--out", str(tmp_path / "o")]) == 2
    assert "not a vlmbench checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # exactly one of the two sabotages
        main(["ablate", PRESET, "--out", str(tmp_path / "o")])
