"""Stopping a stage on a plateau of its held-out probe, keeping the probed weights, and the attribute /
grounding training generators."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from vlmbench.cli import main
from vlmbench.errors import UserError
from vlmbench.training.data import load_dataset, prepare_data
from vlmbench.training.plateau import PlateauWatch, logged_probes
from vlmbench.training.recipe import DataSpec, _stage_fingerprint_fields, parse_recipe

SUFFIX = "\nAnswer the question using a single word or phrase."
MODEL = {
    "preset": "llava-1.5-style",
    "overrides": {
        "vision": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64},
        "llm": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1, "intermediate_size": 64},
    },
}


def _recipe(tmp_path: Path, **stage: object) -> dict:
    return {
        "name": "plateau",
        "model": MODEL,
        "seed": 0,
        "output_dir": str(tmp_path / "out"),
        "work_dir": str(tmp_path / "work"),
        "data_dir": str(tmp_path / "data"),
        "save_dtype": "float32",
        "tokenizer": {"vocab_size": 320, "corpus": ["existence"]},
        "data": {"existence": {"generator": "existence", "n": 6, "seed": 1005, "capitalize_yes_no": True,
                               "answer_suffix": SUFFIX}},  # fmt: skip
        "stages": [{"name": "see", "kind": "sft", "train": ["projector", "llm"], "branches": True,
                    "data": ["existence"], "steps": 6, "batch_size": 2, "lr": 1e-3, **stage}],  # fmt: skip
    }


def test_watch_stops_after_patience_probes_without_a_gain() -> None:
    watch = PlateauWatch(patience=2, min_delta=0.01)
    decisions = [watch.update(a) for a in (0.50, 0.60, 0.605, 0.62, 0.625, 0.61)]
    # 0.605 and 0.625 are below best + 0.01; 0.62 beats 0.60 + 0.01 and resets the count
    assert decisions == [False, False, False, False, False, True]
    assert watch.best == 0.62
    assert PlateauWatch(2, 0.01).replay([0.50, 0.60, 0.605, 0.62, 0.625, 0.61]) is True


def test_plateau_needs_a_probe_and_stays_out_of_old_fingerprints(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="set probe_every too"):
        parse_recipe(_recipe(tmp_path, plateau_patience=2), source="test")
    with pytest.raises(UserError, match="plateau_patience must be >= 1"):
        parse_recipe(_recipe(tmp_path, probe_every=1, plateau_patience=0), source="test")
    plain = parse_recipe(_recipe(tmp_path, probe_every=2), source="test").stages[0]
    assert not {"plateau_patience", "plateau_min_delta", "keep_probed", "probe_every"} & set(
        _stage_fingerprint_fields(plain)
    )
    stopping = parse_recipe(_recipe(tmp_path, probe_every=2, plateau_patience=1), source="test").stages[0]
    assert _stage_fingerprint_fields(stopping)["plateau_patience"] == 1  # it changes what is trained


def test_stage_stops_on_its_plateau_and_keeps_each_probed_checkpoint(tmp_path: Path) -> None:
    import yaml

    # min_delta 1.0 cannot be met: the first probe sets the best, the second ends the stage at step 2
    raw = _recipe(tmp_path, probe_every=1, probe_images=4, plateau_patience=1, plateau_min_delta=1.0,
                  keep_probed=True)  # fmt: skip
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    torch.set_num_threads(1)
    assert main(["train", "--recipe", str(path)]) == 0
    stage_dir = next((tmp_path / "work" / "stages").iterdir())
    done = json.loads((stage_dir / "done.json").read_text())
    assert done["steps"] == 2 and done["stopped_on_plateau"] is True
    assert sorted(p.name for p in (stage_dir / "probed").iterdir()) == ["step-1.safetensors", "step-2.safetensors"]
    assert len(logged_probes(stage_dir / "train_log.jsonl")) == 2
    assert (tmp_path / "out" / "model.safetensors").exists()


@pytest.mark.parametrize("generator", ["attributes", "grounding"])
def test_attribute_and_grounding_sets_are_balanced_and_shaped_like_their_tasks(tmp_path: Path, generator: str) -> None:
    spec = DataSpec(generator, n=12, seed=1006, capitalize_yes_no=True,
                    answer_suffix=SUFFIX if generator == "attributes" else "")  # fmt: skip
    conversations = load_dataset(spec, prepare_data({generator: spec}, tmp_path)[generator])
    assert conversations
    turns = [t for c in conversations for t in c.turns]
    if generator == "attributes":
        answers = [a for _, a in turns]
        assert answers.count("Yes") == answers.count("No") > 0
        assert all(q.endswith(SUFFIX) for q, _ in turns)
        assert any("left of" in q for q, _ in turns) and any("exactly" in q for q, _ in turns)
    else:
        from vlmbench.metrics.grounding import parse_box

        for question, answer in turns:
            assert re.search(r"Give the bounding box of the \w+ [\w ]+ as \[x1, y1, x2, y2\] in pixels\.", question)
            x1, y1, x2, y2 = (int(v) for v in re.findall(r"\d+", answer))
            assert 0 <= x1 < x2 <= 128 and 0 <= y1 < y2 <= 128
            parsed = parse_box(answer, 128, 128)
            assert parsed is not None and parsed[0] == (x1, y1, x2, y2)
