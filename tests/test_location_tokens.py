"""Location tokens (PaliGemma's <locNNNN> boxes): the codec, the grounding parser, the training data
option, the tokenizer and the embedding rows a grown vocabulary starts from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_model

from vlmbench.data.synth.scenes import generate_grounding_questions
from vlmbench.errors import UserError
from vlmbench.metrics.grounding import GroundingScorer, parse_box
from vlmbench.modeling.location_tokens import (
    add_location_tokens,
    box_to_location_text,
    initial_location_embeddings,
    location_bins,
    location_token,
)
from vlmbench.modeling.tokenizer import load_tokenizer
from vlmbench.training.recipe import (
    DataSpec,
    _data_fingerprint_fields,
    _stage_fingerprint_fields,
    load_recipe,
    parse_recipe,
)

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "recipes" / "tiny-test.yaml"
SHIPPED_TOKENIZER = REPO / "models" / "checkpoints" / "internvl-style" / "tokenizer"


def test_paligemma_boxes_parse_as_hand_computed() -> None:
    # y1 = 256/1024*100, x1 = 512/1024*200, y2 = 768/1024*100, x2 = 1000/1024*200
    box, convention = parse_box("<loc0256><loc0512><loc0768><loc1000> cup", 200, 100)
    assert convention == "paligemma1024"
    assert box == pytest.approx((100.0, 25.0, 195.3125, 75.0))
    # Qwen's tokens still come first; three location tokens are not a box
    assert (
        parse_box("<|box_start|>(0,0),(500,500)<|box_end|> <loc0001><loc0002><loc0003><loc0004>", 100, 100)[1]
        == "qwen1000"
    )
    assert parse_box("<loc0256><loc0512><loc0768>", 200, 100) is None
    assert parse_box("<loc0256><loc0512><loc0768><loc1000>", None, None) is None  # needs the image size
    scored = GroundingScorer("grounding").score(
        [
            {
                "question_id": "a",
                "prediction": "<loc0256><loc0512><loc0768><loc1000>",
                "bbox": [100, 25, 95.3125, 50],
                "image_size": [200, 100],
            },
            {
                "question_id": "b",
                "prediction": "<loc0000><loc0000><loc0512><loc0512>",
                "bbox": [0, 0, 200, 100],
                "image_size": [200, 100],
            },
        ],  # fmt: skip
        n_resamples=50,
    )
    assert scored["metrics"]["acc_iou50"] == pytest.approx(0.5)
    assert scored["metrics"]["miou"] == pytest.approx((1.0 + 0.25) / 2)
    assert [s["box_convention"] for s in scored["per_sample"]] == ["paligemma1024", "paligemma1024"]


@pytest.mark.parametrize(("levels", "width", "height"), [(128, 128, 128), (64, 200, 100), (1024, 640, 480)])
def test_boxes_round_trip_through_location_tokens(levels: int, width: int, height: int) -> None:
    rng = np.random.default_rng(levels)
    for _ in range(50):
        x, y = rng.integers(0, width - 10), rng.integers(0, height - 10)
        w, h = rng.integers(4, width - x), rng.integers(4, height - y)
        text = box_to_location_text((x, y, w, h), width, height, levels)
        assert len(text) == 4 * len("<loc0000>")
        parsed, _ = parse_box(text, width, height)
        truth = (x, y, x + w, y + h)
        # within half a level of each side, or on the last level when the box reaches the border
        tolerance = [width / levels, height / levels, width / levels, height / levels]
        for got, want, tol in zip(parsed, truth, tolerance, strict=True):
            assert abs(got - want) <= tol / 2 + 1e-9 or abs(got - (want - tol)) <= tol / 2 + 1e-9
    # one level per pixel: exact
    assert parse_box(box_to_location_text((5, 7, 20, 30), 128, 128, 128), 128, 128)[0] == (5, 7, 25, 37)


def test_levels_must_divide_the_grid() -> None:
    with pytest.raises(ValueError, match="divide 1024"):
        location_bins(100)
    assert location_bins(4) == [0, 256, 512, 768]
    with pytest.raises(ValueError):
        location_token(1024)


def _tiny_raw() -> dict:
    raw = yaml.safe_load(TINY.read_text())
    raw["tokenizer"] = str(SHIPPED_TOKENIZER)
    raw["data"] = {"grounding": {"generator": "grounding", "n": 4, "seed": 1010, "location_levels": 64}}
    raw["stages"] = [{"name": "boxes", "kind": "sft", "train": ["llm"], "data": ["grounding"], "steps": 2,
                      "batch_size": 2, "lr": 1.0e-3}]  # fmt: skip
    return raw


def test_recipe_checks_location_levels() -> None:
    raw = _tiny_raw()
    parse_recipe(raw, source="loc")
    raw["data"]["grounding"]["location_levels"] = 100
    with pytest.raises(UserError, match=r"data\.grounding\.location_levels.*divide 1024"):
        parse_recipe(raw, source="loc")
    raw["data"]["grounding"]["location_levels"] = 64
    raw["data"]["existence"] = {"generator": "existence", "n": 4, "seed": 1005, "location_levels": 64}
    with pytest.raises(UserError, match="only applies to the grounding generator"):
        parse_recipe(raw, source="loc")


def test_unset_levels_keep_cache_keys_and_fingerprints() -> None:
    plain = DataSpec(generator="grounding", n=2000, seed=1007)
    assert plain.cache_key() == "grounding-s1007-n2000"
    assert (
        DataSpec(generator="grounding", n=2000, seed=1007, location_levels=128)
        .cache_key()
        .endswith("-loc128")
    )
    # unset, the new fields stay out of what a fingerprint hashes, so every finished stage stays reusable
    recipe = load_recipe(REPO / "recipes" / "internvl-style.yaml")
    for spec in recipe.data.values():
        assert "location_levels" not in _data_fingerprint_fields(spec)
    for stage in recipe.stages:
        assert "location_alignment" not in _stage_fingerprint_fields(stage)
    assert "location_levels" in _data_fingerprint_fields(
        DataSpec(generator="grounding", n=2000, seed=1007, location_levels=128)
    )


def test_grounding_generator_writes_the_same_boxes_as_tokens(tmp_path: Path) -> None:
    pixels = generate_grounding_questions(tmp_path / "px", seed=1010, n=6)
    tokens = generate_grounding_questions(tmp_path / "loc", seed=1010, n=6, location_levels=128)
    a, b = json.loads(pixels.read_text()), json.loads(tokens.read_text())
    assert len(a) == len(b) > 0
    for ra, rb in zip(a, b, strict=True):
        assert (tmp_path / "px" / ra["image"]).read_bytes() == (tmp_path / "loc" / rb["image"]).read_bytes()
        for ta, tb in zip(ra["conversations"], rb["conversations"], strict=True):
            if ta["from"] == "human":
                assert ta["value"] == tb["value"]
            else:  # one level per pixel on the 128-px scenes: the very same box
                assert tb["value"].startswith("<loc")
                assert parse_box(tb["value"], 128, 128)[0] == parse_box(ta["value"], 128, 128)[0]


def test_tokenizer_gains_location_tokens_once_and_decoding_keeps_them() -> None:
    tokenizer = load_tokenizer(SHIPPED_TOKENIZER)
    before = len(tokenizer)
    ids = add_location_tokens(tokenizer, 128)
    assert len(tokenizer) == before + 128 and ids == list(range(before, before + 128))
    assert add_location_tokens(tokenizer, 128) == ids and len(tokenizer) == before + 128
    assert add_location_tokens(tokenizer, 64) == ids[::2]  # a coarser grid is a subset
    text = "<loc0008><loc0016><loc0024><loc1016>"
    encoded = tokenizer(text, add_special_tokens=False).input_ids
    assert encoded == [ids[1], ids[2], ids[3], ids[127]]
    assert tokenizer.decode(encoded, skip_special_tokens=True) == text
    # ordinary text tokenizes as before
    assert (
        tokenizer("[12, 40, 56, 90]", add_special_tokens=False).input_ids
        == load_tokenizer(SHIPPED_TOKENIZER)("[12, 40, 56, 90]", add_special_tokens=False).input_ids
    )


def test_initial_embeddings_are_ordered() -> None:
    existing = torch.randn(500, 64) * 0.02 + 0.01
    rows = initial_location_embeddings(existing, 128)
    centred = torch.nn.functional.normalize(rows - existing.mean(0), dim=1)
    near = (centred[:-1] * centred[1:]).sum(1).mean()
    far = (centred[:-64] * centred[64:]).sum(1).mean()
    assert near > 0.8 and far < near - 0.5
    spread = (existing - existing.mean(0)).norm(dim=1).median()
    assert torch.allclose((rows - existing.mean(0)).norm(dim=1), spread.expand(128), rtol=1e-4)


def test_init_weights_grow_the_vocabulary(tmp_path: Path) -> None:
    from vlmbench.training.model_io import build_model, build_tokenizer

    raw = _tiny_raw()
    plain = dict(raw, data={"grounding": {"generator": "grounding", "n": 4, "seed": 1010}})
    base_tokenizer = load_tokenizer(SHIPPED_TOKENIZER)
    base = build_model(parse_recipe(plain, source="plain"), base_tokenizer)
    weights = tmp_path / "model.safetensors"
    save_model(base, str(weights))
    saved = load_file(str(weights))

    raw["init"] = {"weights": str(weights), "components": ["vision", "projector", "llm"]}
    recipe = parse_recipe(raw, source="grown")
    tokenizer = build_tokenizer(recipe, {}, tmp_path, _single_process())
    model = build_model(recipe, tokenizer)
    embed = model.llm.get_input_embeddings().weight
    old = len(base_tokenizer)
    assert embed.shape[0] == old + 64
    assert torch.equal(embed[:old], base.llm.get_input_embeddings().weight)
    ids = tokenizer.convert_tokens_to_ids([location_token(b) for b in location_bins(64)])
    assert torch.allclose(embed[ids], initial_location_embeddings(embed[:old].detach(), 64))
    for key, value in model.state_dict().items():
        if key in saved and "embed_tokens" not in key and "lm_head" not in key:
            assert torch.equal(value, saved[key]), key
    assert torch.equal(model.llm.get_output_embeddings().weight, embed)  # still tied

    raw["init"]["components"] = ["vision"]  # the LLM not loaded: every location row starts ordered too
    fresh = build_model(parse_recipe(raw, source="grown"), tokenizer).llm.get_input_embeddings().weight
    assert torch.allclose(fresh[ids], initial_location_embeddings(fresh[:old].detach(), 64))


def _single_process():
    from vlmbench.distributed import DistContext

    return DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
