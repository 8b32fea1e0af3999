"""The `yes_share` option of the preference-pair generator (issue #11): the default output stays the one
the shipped base checkpoints were trained on, byte for byte; the option sets the yes/no balance of the
existence pairs; bad values fail at recipe parsing, in one line naming the field."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from vlmbench.data.synth.scenes import generate_preference_pairs
from vlmbench.errors import UserError
from vlmbench.training.data import prepare_data
from vlmbench.training.recipe import DataSpec, load_recipe, parse_recipe

REPO = Path(__file__).resolve().parents[1]

# sha256 of preferences.json written by the generator BEFORE `yes_share` existed (seed 1004, the base
# recipes' preference seed; n=1000 is the very set the shipped bases' DPO stage read), so any change to
# the default draws shows here.
_BEFORE_SHA256 = {
    60: "b5462dca5c8ba8bf4de086eb7da85bfe48c981a4aeba07a3373652336a93f0ca",
    1000: "f21ce3e80321e9a314aee46ee5bf3b998f6eea5e997b6c89f4f2c678491006d6",
}


def _yes_share(path: Path) -> tuple[float, int]:
    """Share of existence pairs (chosen "yes" or "no") that prefer "yes", and how many there are."""
    chosen = [r["chosen"] for r in json.loads(path.read_text()) if r["chosen"] in ("yes", "no")]
    return chosen.count("yes") / len(chosen), len(chosen)


@pytest.mark.parametrize("n", sorted(_BEFORE_SHA256))
def test_default_output_is_byte_identical_to_before(tmp_path: Path, n: int) -> None:
    path = generate_preference_pairs(tmp_path / "default", seed=1004, n=n)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == _BEFORE_SHA256[n]


def test_explicit_none_is_the_default(tmp_path: Path) -> None:
    path = generate_preference_pairs(tmp_path / "default", seed=1004, n=60)
    explicit = generate_preference_pairs(tmp_path / "none", seed=1004, n=60, yes_share=None)
    assert explicit.read_bytes() == path.read_bytes()


def test_yes_share_sets_the_balance(tmp_path: Path) -> None:
    default, _ = _yes_share(generate_preference_pairs(tmp_path / "d", seed=1004, n=200))
    balanced, count = _yes_share(generate_preference_pairs(tmp_path / "b", seed=1004, n=200, yes_share=0.5))
    assert count > 60
    assert abs(default - 1 / 3) < 0.1  # today's pairs prefer "no" two to one
    assert abs(balanced - 0.5) < 0.1
    all_yes, _ = _yes_share(generate_preference_pairs(tmp_path / "y", seed=1004, n=60, yes_share=1.0))
    assert all_yes == 1.0
    # 0: every pair with an absent category to ask about prefers "no" (a scene without one stays "yes")
    all_no, _ = _yes_share(generate_preference_pairs(tmp_path / "n", seed=1004, n=60, yes_share=0.0))
    assert all_no < 0.1


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_generator_rejects_a_share_outside_0_1(tmp_path: Path, bad: float) -> None:
    with pytest.raises(UserError, match=r"yes_share must lie in \[0, 1\]"):
        generate_preference_pairs(tmp_path, seed=1004, n=4, yes_share=bad)
    assert not (tmp_path / "preferences.json").exists()


def _recipe(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "x",
        "seed": 0,
        "model": "llava-1.5-style",
        "data": {"prefs": spec},
        "stages": [
            {
                "name": "d",
                "kind": "dpo",
                "train": ["llm"],
                "data": ["prefs"],
                "steps": 1,
                "batch_size": 1,
                "lr": 1e-4,
            }
        ],
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (1.5, r"data\.prefs\.yes_share must lie in \[0, 1\]"),
        (-1, r"data\.prefs\.yes_share must lie in \[0, 1\]"),
        ("half", r"data\.prefs\.yes_share must be a number"),
        (True, r"data\.prefs\.yes_share must be a number"),
    ],
)
def test_recipe_validates_yes_share(value: Any, message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_recipe(_recipe({"generator": "preferences", "n": 4, "seed": 1004, "yes_share": value}))


def test_yes_share_only_for_preferences() -> None:
    recipe = _recipe({"generator": "captions", "n": 4, "seed": 1001, "yes_share": 0.5})
    recipe["stages"][0].update(kind="align", train=["projector"])
    with pytest.raises(UserError, match=r"yes_share only applies to the preferences generator"):
        parse_recipe(recipe)


def test_cache_key_and_fingerprint_unchanged_without_it() -> None:
    assert DataSpec("preferences", n=1000, seed=1004).cache_key() == "preferences-s1004-n1000"
    assert (
        DataSpec("preferences", n=1000, seed=1004, yes_share=0.5).cache_key()
        == "preferences-s1004-n1000-yes0.5"
    )
    base = load_recipe(REPO / "recipes/base/internvl-style.yaml")
    shipped = json.loads((REPO / "models/stage-bases/internvl-style/train_summary.json").read_text())
    assert base.fingerprint() == shipped["fingerprint"]  # the shipped base stays reusable
    plain = parse_recipe(_recipe({"generator": "preferences", "n": 4, "seed": 1004}))
    balanced = parse_recipe(_recipe({"generator": "preferences", "n": 4, "seed": 1004, "yes_share": 0.5}))
    assert plain.fingerprint() != balanced.fingerprint()


def test_prepare_data_passes_the_option(tmp_path: Path) -> None:
    spec = DataSpec("preferences", n=30, seed=1004, yes_share=1.0)
    directory = prepare_data({"prefs": spec}, tmp_path)["prefs"]
    assert directory.name == "preferences-s1004-n30-yes1"
    assert _yes_share(directory / "preferences.json")[0] == 1.0


def test_experiment_recipes_differ_only_in_the_balance() -> None:
    folder = REPO / "recipes" / "experiments"
    unbalanced = load_recipe(folder / "dpo-internvl-unbalanced.yaml")
    balanced = load_recipe(folder / "dpo-internvl-balanced.yaml")
    assert unbalanced.data["preferences"].yes_share is None
    assert balanced.data["preferences"].yes_share == 0.5
    assert balanced.data["preferences"] == dataclasses.replace(unbalanced.data["preferences"], yes_share=0.5)
    assert balanced.stages == unbalanced.stages and balanced.seed == unbalanced.seed
    assert balanced.init == unbalanced.init and balanced.tokenizer == unbalanced.tokenizer
