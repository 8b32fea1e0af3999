"""The assembled VLM for every preset: shapes, save/load, KV cache, choice scoring, overfitting."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import make_image
from vlmbench.cli import main
from vlmbench.modeling.config import VLMConfig
from vlmbench.modeling.presets import build_random, load_preset, preset_names
from vlmbench.modeling.vlm import VLM

PRESETS = preset_names()


def test_all_documented_presets_exist() -> None:
    assert set(PRESETS) >= {
        "llava-1.5-style", "llava-next-style", "internvl-style", "qwen2vl-style",
        "blip2-style", "flamingo-style", "honeybee-style",
    }


@pytest.fixture(scope="module")
def models() -> dict[str, VLM]:
    return {name: build_random(load_preset(name), seed=0).eval() for name in PRESETS}


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("size", [(64, 64), (200, 90), (70, 150)])
def test_visual_tokens_match_plan(models: dict[str, VLM], name: str, size: tuple[int, int]) -> None:
    model = models[name]
    prepared = model.prepare_image(make_image(*size))
    visual = model.encode([prepared])[0]
    assert visual.shape == (model.visual_tokens_for(prepared.plan), model.llm.config.hidden_size)


@pytest.mark.parametrize("name", PRESETS)
def test_save_load_gives_identical_logits(models: dict[str, VLM], name: str, tmp_path) -> None:
    model = models[name]
    images = [model.prepare_image(make_image(96, 64, seed=1))]
    prompts = [model.format_prompt("Is there a dog in the image?")]
    with torch.no_grad():
        before = model(images, prompts).logits
    model.save(tmp_path / name)
    loaded = VLM.load(tmp_path / name)
    with torch.no_grad():
        after = loaded(images, prompts).logits
    torch.testing.assert_close(before, after, rtol=0, atol=0)
    assert loaded.config.to_dict() == model.config.to_dict()


@pytest.mark.parametrize("name", ["llava-1.5-style", "internvl-style", "qwen2vl-style", "flamingo-style"])
def test_kv_cache_generation_equals_full_recompute(models: dict[str, VLM], name: str) -> None:
    model = models[name]
    images = [model.prepare_image(make_image(80, 64, seed=s)) for s in range(3)]
    prompts = [model.format_prompt(q) for q in ("What is the total?", "Is there a cat?", "Describe.")]
    with_cache = model.generate(images, prompts, max_new_tokens=8, use_cache=True)
    without = model.generate(images, prompts, max_new_tokens=8, use_cache=False)
    assert with_cache == without


def test_batched_generation_equals_one_by_one(models: dict[str, VLM]) -> None:
    model = models["internvl-style"]  # different tile counts → different lengths → left padding
    sizes = [(64, 64), (190, 64), (64, 130)]
    images = [model.prepare_image(make_image(w, h, seed=i)) for i, (w, h) in enumerate(sizes)]
    prompts = [model.format_prompt(q) for q in ("A?", "What is written here?", "Is there a dog?")]
    batched = model.generate(images, prompts, max_new_tokens=6)
    single = [model.generate([img], [p], max_new_tokens=6)[0] for img, p in zip(images, prompts, strict=True)]
    assert batched == single


def test_score_choices_single_and_multi_token(models: dict[str, VLM]) -> None:
    model = models["llava-1.5-style"]
    images = [model.prepare_image(make_image(64, 64, seed=s)) for s in range(2)]
    prompts = [model.format_prompt("Is there a dog?")] * 2
    single = model.score_choices(images, prompts, ["Yes", "No"])
    assert single.shape == (2, 2) and torch.all(single <= 0)
    # the multi-token path must agree with the single-token path on single-token choices
    multi = model.score_choices(images, prompts, ["Yes", "No", "Yes maybe"])
    torch.testing.assert_close(multi[:, :2], single, rtol=1e-4, atol=1e-4)


def test_sampling_is_seeded(models: dict[str, VLM]) -> None:
    model = models["llava-1.5-style"]
    images = [model.prepare_image(make_image(64, 64))]
    prompts = [model.format_prompt("Describe.")]
    a = model.generate(images, prompts, max_new_tokens=6, do_sample=True, temperature=1.5, seed=3)
    b = model.generate(images, prompts, max_new_tokens=6, do_sample=True, temperature=1.5, seed=3)
    assert a == b


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_overfits_a_handful_of_samples(name: str) -> None:
    torch.manual_seed(0)
    model = build_random(load_preset(name), seed=0).train()
    images = [model.prepare_image(make_image(64 + 16 * i, 64, seed=i)) for i in range(4)]
    prompts = [model.format_prompt(q) for q in ("Is there a dog?", "What color?", "How many?", "Read it.")]
    targets = ["Yes", "red", "3", "TOTAL 42"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        optimizer.zero_grad()
        loss = model(images, prompts, targets).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    parts = {"vision": model.vision, "projector": model.projector, "llm": model.llm}
    if len(model.cross_attention):
        parts["cross_attention"] = model.cross_attention
    for part, module in parts.items():
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads), f"{name}: {part} has parameters without gradient"
        assert sum(float(g.abs().sum()) for g in grads) > 0, f"{name}: {part} gets zero gradient"


def test_flamingo_gates_start_closed() -> None:
    model = build_random(load_preset("flamingo-style"), seed=0)
    assert len(model.cross_attention) == 2
    assert all(float(block.attn_gate.detach()) == 0 and float(block.mlp_gate.detach()) == 0 for block in model.cross_attention)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"projector": {"kind": "pixel_shuffle_mlp", "factor": 2}, "resolution": {"name": "fixed", "size": 56}}, "not divisible"),
        ({"resolution": {"name": "native", "patch_size": 8}}, "2D RoPE"),
        ({"projector": {"kind": "warp_drive"}}, "valid options"),
        ({"vision": {"kind": "vit", "patch_size": 8, "image_size": 60}}, "multiple"),
    ],
)
def test_impossible_combinations_are_rejected(change: dict, message: str) -> None:
    from vlmbench.errors import UserError

    base = load_preset("llava-1.5-style").to_dict()
    for key, value in change.items():
        base[key] = {**base[key], **value}
    with pytest.raises(UserError, match=message):
        VLMConfig.from_dict(base)


def test_cli_unknown_preset_exits_2(capsys) -> None:
    assert main(["inspect", "--model", "gpt-17", "--image-size", "64x64"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'gpt-17'" in err and "internvl-style" in err and "Traceback" not in err


def test_cli_inspect_contract(capsys) -> None:
    import json

    assert main(["inspect", "--model", "llava-next-style", "--image-size", "200x90"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["strategy"]["name"] == "anyres" and "pinpoints" in out["strategy"] and "tile_size" in out["strategy"]
    assert out["grid"] is not None and out["tiles"] == out["grid"][0] * out["grid"][1] + 1
    assert out["visual_tokens"] == out["tiles"] * 64
    assert out["params"]["total"] == sum(v for k, v in out["params"].items() if k != "total")
    assert main(["inspect", "--model", "llava-1.5-style", "--image-size", "0x10"]) == 2
