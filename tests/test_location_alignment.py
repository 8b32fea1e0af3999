"""Token layout (which visual tokens know where they look) and the location-alignment term."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from vlmbench.errors import UserError
from vlmbench.modeling.location_tokens import add_location_tokens
from vlmbench.modeling.presets import build_random, load_preset
from vlmbench.modeling.token_layout import token_layout
from vlmbench.modeling.tokenizer import load_tokenizer
from vlmbench.training.location_alignment import location_head
from vlmbench.training.recipe import parse_recipe

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "recipes" / "tiny-test.yaml"
SHIPPED_TOKENIZER = REPO / "models" / "checkpoints" / "internvl-style" / "tokenizer"


def _area_partition(regions: torch.Tensor) -> None:
    """The regions tile the unit square: total area 1, and every region inside it."""
    widths, heights = regions[:, 1] - regions[:, 0], regions[:, 3] - regions[:, 2]
    assert (widths > 0).all() and (heights > 0).all()
    assert regions.min() >= 0 and regions.max() <= 1
    assert float((widths * heights).sum()) == pytest.approx(1.0)


def test_internvl_layout_is_the_thumbnail_and_matches_its_encoding() -> None:
    model = build_random(load_preset("internvl-style")).eval()
    image = Image.new("RGB", (128, 128), (200, 30, 30))
    prepared = model.prepare_image(image)
    plan = prepared.plan
    assert plan.grid == (2, 2) and plan.thumbnail_index == 4
    layout = token_layout(model, plan)
    assert layout is not None
    assert layout.indices.tolist() == list(range(64, 80))  # 4 tiles x 16 tokens, then the thumbnail's 16
    _area_partition(layout.regions)
    assert layout.regions[1].tolist() == [0.25, 0.5, 0.0, 0.25]  # raster order: second token of the top row
    with torch.no_grad():
        tokens = model.encode([prepared])[0]
        thumb = prepared.pixels[plan.thumbnail_index : plan.thumbnail_index + 1]
        grid = model.vision.grid(thumb.shape[2], thumb.shape[3])
        alone = model.projector(model.vision(thumb), grid)[0]
    assert torch.allclose(tokens[layout.indices], alone, atol=1e-6)


def test_layouts_of_other_designs() -> None:
    native = build_random(load_preset("qwen2vl-style"))
    plan = native.resolution.plan(128, 96)
    layout = token_layout(native, plan)
    assert layout is not None and len(layout.indices) == native.visual_tokens_for(plan)  # one whole view
    _area_partition(layout.regions)
    # a Q-Former has no token grid; LLaVA-1.5's letterboxed view pads non-square images
    assert token_layout(build_random(load_preset("blip2-style")), plan) is None
    llava = build_random(load_preset("llava-1.5-style"))
    assert token_layout(llava, llava.resolution.plan(128, 96)) is None


def _located_model():
    tokenizer = load_tokenizer(SHIPPED_TOKENIZER)
    add_location_tokens(tokenizer, 32)
    model = build_random(load_preset("internvl-style"), tokenizer=tokenizer)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, tokenizer


def _fit_head(carry_position: bool, steps: int = 300) -> tuple[float, float]:
    """KL of the head at the start and after `steps` Adam steps on the head alone, for visual tokens
    that either encode their region's centre (a fixed map of sinusoidal features) or are fresh noise."""
    torch.manual_seed(0)
    model, tokenizer = _located_model()
    head = location_head(model, tokenizer, 32)
    prepared = model.prepare_image(Image.new("RGB", (128, 128)))
    layout = token_layout(model, prepared.plan)
    dim = model.llm.config.hidden_size
    code = torch.randn(8, dim)
    centres = torch.stack([(layout.regions[:, 0] + layout.regions[:, 1]) / 2,
                           (layout.regions[:, 2] + layout.regions[:, 3]) / 2], 1)  # fmt: skip
    features = torch.cat([torch.sin(centres * 3.1), torch.cos(centres * 3.1),
                          torch.sin(centres * 6.2), torch.cos(centres * 6.2)], 1)  # fmt: skip
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-3)
    values = []
    for _ in range(steps + 1):
        tokens = torch.randn(80, dim)
        if carry_position:
            tokens[layout.indices] = features @ code
        loss = head(model, [prepared, prepared], [tokens, tokens])  # a second branch of the same image is skipped
        values.append(float(loss.detach()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return values[0], sum(values[-10:]) / 10


def test_location_alignment_learns_position_and_not_noise() -> None:
    start, end = _fit_head(carry_position=True)
    noise_start, noise_end = _fit_head(carry_position=False)
    assert end < 0.3 * start
    assert noise_end > 0.6 * noise_start  # nothing to read: the term cannot fall (a control)


def test_head_skips_images_without_layout() -> None:
    model, tokenizer = _located_model()
    head = location_head(model, tokenizer, 32)
    assert head(model, [object()], [torch.randn(80, model.llm.config.hidden_size)]) is None


def _raw(levels: int | None, location_alignment: float = 1.0, kind: str = "sft") -> dict:
    raw = yaml.safe_load(TINY.read_text())
    raw["tokenizer"] = str(SHIPPED_TOKENIZER)
    grounding = {"generator": "grounding", "n": 4, "seed": 1010}
    if levels is not None:
        grounding["location_levels"] = levels
    raw["data"] = {"grounding": grounding}
    raw["stages"] = [{"name": "boxes", "kind": kind, "train": ["vision", "projector", "llm"], "data": ["grounding"],
                      "steps": 2, "batch_size": 2, "lr": 1.0e-3, "branches": True, "word_alignment": 1.0,
                      "location_alignment": location_alignment}]  # fmt: skip
    return raw


def test_recipe_checks_location_alignment() -> None:
    parse_recipe(_raw(16), source="la")
    with pytest.raises(UserError, match="no data set has location_levels"):
        parse_recipe(_raw(None), source="la")
    with pytest.raises(UserError, match="location_alignment must be >= 0"):
        parse_recipe(_raw(16, -1.0), source="la")


def test_a_stage_trains_with_location_alignment(tmp_path: Path) -> None:
    from vlmbench.cli import main

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(_raw(16)))
    torch.set_num_threads(1)
    code = main(["train", "--recipe", str(recipe), "--out", str(tmp_path / "out"), "--work-dir",
                 str(tmp_path / "work"), "--data-dir", str(tmp_path / "data")])  # fmt: skip
    assert code == 0
    logged = [json.loads(line) for line in next((tmp_path / "work").glob("stages/*/train_log.jsonl")).read_text().splitlines()]
    assert all(row["location_alignment"] > 0 for row in logged)
    tokenizer = load_tokenizer(tmp_path / "out" / "tokenizer")
    assert "<loc0064>" in tokenizer.get_vocab()  # the checkpoint's tokenizer holds its location tokens
