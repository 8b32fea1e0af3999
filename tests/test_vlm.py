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


# ---- several images per prompt ---------------------------------------------------------------


def test_format_prompt_places_or_keeps_image_markers(models: dict[str, VLM]) -> None:
    from vlmbench.modeling.tokenizer import IMAGE_TOKEN, format_prompt

    model = models["llava-1.5-style"]
    assert model.format_prompt("Same?") == format_prompt(model.tokenizer, "Same?")  # one image: as always
    two = model.format_prompt("Same?", n_images=2)
    assert two.count(IMAGE_TOKEN) == 2 and two.index(IMAGE_TOKEN) < two.index("Same?")
    interleaved = model.format_prompt(f"Left {IMAGE_TOKEN} right {IMAGE_TOKEN}: same?", n_images=2)
    assert interleaved.count(IMAGE_TOKEN) == 2 and f"Left {IMAGE_TOKEN} right {IMAGE_TOKEN}" in interleaved
    # one marker already in the question stays the only one
    assert model.format_prompt(f"Look: {IMAGE_TOKEN} dog?").count(IMAGE_TOKEN) == 1


def test_one_image_layout_is_the_single_placeholder_splice(models: dict[str, VLM]) -> None:
    """The one-image layout spelled out (splice at the placeholder, left padding, positions counting
    real tokens, loss on target + EOS only), and a one-element image list giving the very same."""
    model = models["internvl-style"]
    tok = model.tokenizer
    prepared = [model.prepare_image(make_image(w, 64, seed=w)) for w in (64, 190)]
    prompts = [model.format_prompt("Is there a dog?"), model.format_prompt("What is written here?")]
    targets = ["Yes", "TOTAL 42"]
    visual = model.encode(prepared)
    inputs = model.build_inputs(prompts, visual, targets)
    embed = model.llm.get_input_embeddings()
    rows, label_rows = [], []
    for prompt, vis, target in zip(prompts, visual, targets, strict=True):
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        answer = [*tok(target, add_special_tokens=False)["input_ids"], tok.eos_token_id]
        cut = ids.index(model.image_token_id)
        rows.append(torch.cat([embed(torch.tensor(ids[:cut])), vis, embed(torch.tensor(ids[cut + 1 :] + answer))]))
        label_rows.append([-100] * (len(ids) - 1 + vis.shape[0]) + answer)
    length = max(row.shape[0] for row in rows)
    for i, (row, labels) in enumerate(zip(rows, label_rows, strict=True)):
        pad = length - row.shape[0]
        assert torch.equal(inputs["inputs_embeds"][i, pad:], row)
        assert torch.equal(inputs["inputs_embeds"][i, :pad], torch.zeros(pad, row.shape[1]))
        assert inputs["attention_mask"][i].tolist() == [0] * pad + [1] * row.shape[0]
        assert inputs["position_ids"][i].tolist() == [0] * pad + list(range(row.shape[0]))
        assert inputs["labels"][i].tolist() == [-100] * pad + labels
    as_lists = model.build_inputs(prompts, [[v] for v in visual], targets)
    assert all(torch.equal(inputs[k], as_lists[k]) for k in inputs)
    assert model.generate([[p] for p in prepared], prompts, max_new_tokens=5) == model.generate(prepared, prompts, max_new_tokens=5)
    assert torch.equal(
        model.score_choices([[p] for p in prepared], prompts, ["Yes", "No maybe"]),
        model.score_choices(prepared, prompts, ["Yes", "No maybe"]),
    )


def _open_gates(model: VLM) -> VLM:
    """Cross-attention gates start closed (the text ignores the images); open them to test the images' effect."""
    with torch.no_grad():
        for block in model.cross_attention:
            block.attn_gate.fill_(1.0)
            block.mlp_gate.fill_(1.0)
    return model


@pytest.mark.parametrize("name", PRESETS)
def test_two_images_per_prompt(models: dict[str, VLM], name: str) -> None:
    """Each image fills its own placeholder in order (inline), or joins the sample's cross-attention
    context; a batch mixing two-image and one-image prompts equals them one by one."""
    from vlmbench.modeling.tokenizer import IMAGE_TOKEN

    model = models[name] if name != "flamingo-style" else _open_gates(build_random(load_preset(name), seed=0).eval())
    sizes = [(64, 64), (150, 80), (70, 120), (150, 80)]
    a, b, c, d = (model.prepare_image(make_image(w, h, seed=s)) for s, (w, h) in enumerate(sizes))
    question = f"First {IMAGE_TOKEN}, then {IMAGE_TOKEN}: the same?"
    two = model.format_prompt(question, n_images=2)
    one = model.format_prompt("Is there a dog?")
    va, vb = model.encode([a, b])
    inputs = model.build_inputs([two], [[va, vb]])
    ids = model.tokenizer(two, add_special_tokens=False)["input_ids"]
    embeds = inputs["inputs_embeds"][0]
    if model.config.cross_attention_every:
        assert embeds.shape[0] == len(ids)  # placeholders stay tokens
    else:
        first, second = (i for i, t in enumerate(ids) if t == model.image_token_id)
        assert embeds.shape[0] == len(ids) - 2 + va.shape[0] + vb.shape[0]
        assert torch.equal(embeds[first : first + va.shape[0]], va)
        start = second - 1 + va.shape[0]
        assert torch.equal(embeds[start : start + vb.shape[0]], vb)
    with torch.no_grad():
        ab = model([[a, b]], [two]).logits
        ba = model([[b, a]], [two]).logits
        ad = model([[a, d]], [two]).logits  # d: the size of b, other pixels
    assert not torch.allclose(ab, ad)  # the second image is seen
    if model.config.cross_attention_every:
        torch.testing.assert_close(ab, ba)  # attention over the concatenation: a set, order-free
    else:
        assert not torch.allclose(ab, ba)
    samples, prompts = [[a, b], c], [two, one]
    batched = model.generate(samples, prompts, max_new_tokens=4)
    assert batched == [model.generate([s], [p], max_new_tokens=4)[0] for s, p in zip(samples, prompts, strict=True)]
    assert batched == model.generate(None, prompts, max_new_tokens=4, visual=model.encode_samples(samples))
    scores = model.score_choices(samples, prompts, ["Yes", "No", "Yes maybe"])
    alone = model.score_choices([[a, b]], [two], ["Yes", "No", "Yes maybe"])
    torch.testing.assert_close(scores[:1], alone, rtol=1e-4, atol=1e-4)


def test_placeholder_and_image_counts_must_match(models: dict[str, VLM]) -> None:
    model = models["llava-1.5-style"]
    a, b = (model.prepare_image(make_image(64, 64, seed=s)) for s in range(2))
    prompts = [model.format_prompt("Is there a dog?"), model.format_prompt("Same?", n_images=2)]
    with pytest.raises(ValueError, match=r"prompt 1 holds 2 <image> placeholder\(s\) but 1 image\(s\)"):
        model.generate([a, b], prompts, max_new_tokens=2)
    with pytest.raises(ValueError, match=r"prompt 0 holds 1 <image> placeholder\(s\) but 2 image\(s\)"):
        model.score_choices([[a, b]], prompts[:1], ["Yes", "No"])
