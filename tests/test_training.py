"""Staged training: recipes, data formatting, losses, LoRA, checkpoints, and tiny end-to-end runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from vlmbench.cli import main
from vlmbench.errors import UserError
from vlmbench.training.checkpoint import optimizer_state_from_flat, optimizer_state_to_flat
from vlmbench.training.data import (
    MixtureSampler,
    conversation_pairs,
    conversation_segments,
    normalise_turn,
    tokenize_segments,
)
from vlmbench.training.lora import LoRALinear, apply_lora, merge_lora
from vlmbench.training.losses import clip_loss, dpo_loss, siglip_loss
from vlmbench.training.recipe import DataSpec, load_recipe, parse_recipe

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "recipes" / "tiny-test.yaml"
SUFFIX = "\nAnswer the question using a single word or phrase."


# ---- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("train-data")


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Path]:
    """tiny-test.yaml run once, uninterrupted, through the CLI."""
    root = tmp_path_factory.mktemp("tiny-full")
    out, work = root / "out", root / "work"
    torch.set_num_threads(1)
    code = main(
        [
            "train",
            "--recipe",
            str(TINY),
            "--out",
            str(out),
            "--work-dir",
            str(work),
            "--data-dir",
            str(data_dir),
        ]
    )
    assert code == 0
    return {"out": out, "work": work}


def _stage_weights(work: Path) -> list[tuple[str, dict[str, torch.Tensor]]]:
    stages = sorted((work / "stages").iterdir())
    return [(d.name, load_file(str(d / "model.safetensors"))) for d in stages]


@pytest.fixture(scope="module")
def tokenizer():
    from vlmbench.modeling.tokenizer import train_tokenizer

    return train_tokenizer(["Is there a cat in the image? Yes No red"], vocab_size=400)


# ---- recipes ---------------------------------------------------------------------------------


def test_all_recipes_parse() -> None:
    for path in sorted((REPO / "recipes").rglob("*.yaml")):
        recipe = load_recipe(path)
        assert recipe.stages, path
        assert all(spec.seed >= 1000 for spec in recipe.data.values()), path


def test_recipe_rejects_eval_seed_and_bad_fields() -> None:
    base = {
        "name": "x",
        "seed": 0,
        "model": "llava-1.5-style",
        "data": {"caps": {"generator": "captions", "n": 4, "seed": 0}},
        "stages": [
            {
                "name": "a",
                "kind": "align",
                "train": ["projector"],
                "data": ["caps"],
                "steps": 1,
                "batch_size": 1,
                "lr": 1e-3,
            }
        ],
    }
    with pytest.raises(UserError, match="seed of an evaluation set"):
        parse_recipe(base)
    good = {**base, "data": {"caps": {"generator": "captions", "n": 4, "seed": 1001}}}
    parse_recipe(good)
    with pytest.raises(UserError, match="kind 'bogus'"):
        parse_recipe({**good, "stages": [{**good["stages"][0], "kind": "bogus"}]})
    with pytest.raises(UserError, match="loss must be"):
        parse_recipe(
            {**good, "stages": [{**good["stages"][0], "kind": "vision_contrastive", "batch_size": 4}]}
        )
    with pytest.raises(UserError, match="cross_attention"):
        parse_recipe({**good, "stages": [{**good["stages"][0], "train": ["cross_attention"]}]})


def test_cli_bad_recipe_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nseed: 0\nmodel: no-such-preset\nstages: []\n")
    assert main(["train", "--recipe", str(bad)]) == 2
    assert "error" in capsys.readouterr().err


# ---- data formatting -------------------------------------------------------------------------


def test_conversation_segments_match_eval_prompt_and_mask_assistant_only(tokenizer) -> None:
    from vlmbench.modeling.tokenizer import format_prompt

    turns = [("<image>\nIs there a cat in the image?" + SUFFIX, "Yes"), ("What color is the cat?", "red")]
    segments = conversation_segments(tokenizer, turns)
    assert [is_target for _, is_target in segments] == [False, True, False, True]
    assert segments[0][0] == format_prompt(tokenizer, "Is there a cat in the image?" + SUFFIX)
    ids, labels = tokenize_segments(tokenizer, segments)
    targets = [t for t in labels if t != -100]
    expected = (
        tokenizer("Yes", add_special_tokens=False)["input_ids"]
        + [tokenizer.eos_token_id]
        + tokenizer("red", add_special_tokens=False)["input_ids"]
        + [tokenizer.eos_token_id]
    )
    assert targets == expected
    assert len(ids) == len(labels)
    pairs = conversation_pairs(tokenizer, turns)
    assert pairs[0] == (segments[0][0], "Yes")
    assert pairs[1][0].endswith(segments[2][0]) and pairs[1][1] == "red"


def test_normalise_turn_follows_eval_conventions() -> None:
    spec = DataSpec(
        "instructions", 1, 1001, answer_suffix=SUFFIX, capitalize_yes_no=True, caption_prompts=("Describe.",)
    )
    assert normalise_turn("<image>\nIs there a cup in the image?", "yes", spec, 0) == (
        "<image>\nIs there a cup in the image?" + SUFFIX,
        "Yes",
    )
    assert normalise_turn("<image>\nWrite a caption.", "A picture of a red cup and two dogs.", spec, 0) == (
        "<image>\nDescribe.",
        "A picture of a red cup and two dogs.",
    )


def test_mixture_sampler_is_a_pure_function_of_step() -> None:
    sets = {"a": list(range(10)), "b": list(range(100, 110))}
    one = MixtureSampler(sets, {"a": 1.0, "b": 3.0}, seed=5, stage_index=1)
    two = MixtureSampler(sets, {"a": 1.0, "b": 3.0}, seed=5, stage_index=1)
    assert one.batch(7, 16) == two.batch(7, 16)
    assert one.batch(7, 16) != one.batch(8, 16)
    distinct = MixtureSampler(sets, {"a": 1.0}, seed=0, stage_index=0, distinct_key=lambda x: x)
    assert len(set(distinct.batch(0, 10))) == 10


# ---- losses ----------------------------------------------------------------------------------


def _fit(loss_fn, steps: int = 60) -> tuple[float, float]:
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(16, 12, generator=gen)
    texts = images @ torch.randn(12, 12, generator=gen) + 0.1 * torch.randn(16, 12, generator=gen)
    img_head, txt_head = torch.nn.Linear(12, 8), torch.nn.Linear(12, 8)
    scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))
    bias = torch.nn.Parameter(torch.tensor(-10.0))
    opt = torch.optim.Adam([*img_head.parameters(), *txt_head.parameters(), scale, bias], lr=0.05)
    losses = []
    for _ in range(steps):
        loss = loss_fn(img_head(images), txt_head(texts), scale, bias)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses[0], losses[-1]


def test_clip_loss_falls_on_toy_data() -> None:
    first, last = _fit(lambda i, t, s, b: clip_loss(i, t, s))
    assert last < 0.3 * first


def test_siglip_loss_falls_on_toy_data() -> None:
    first, last = _fit(siglip_loss)
    assert last < 0.3 * first


def test_siglip_and_clip_match_hand_computation() -> None:
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    scale = torch.tensor(0.0)  # exp(0) = 1
    clip = clip_loss(img, img, scale)
    expected = -math.log(math.e / (math.e + 1))
    assert clip.item() == pytest.approx(expected, rel=1e-5)
    sig = siglip_loss(img, img, scale, torch.tensor(0.0))
    per_pair = -math.log(1 / (1 + math.exp(-1))) * 2 + -math.log(1 / (1 + math.exp(0))) * 2
    assert sig.item() == pytest.approx(per_pair / 2, rel=1e-5)


def test_dpo_loss_falls_and_prefers_chosen() -> None:
    torch.manual_seed(0)
    logits = torch.nn.Parameter(torch.zeros(8, 2))  # toy policy: log-probs of (chosen, rejected) per pair
    reference = torch.log_softmax(torch.zeros(8, 2), -1)
    opt = torch.optim.SGD([logits], lr=1.0)
    first = last = acc = None
    for _ in range(50):
        logp = torch.log_softmax(logits, -1)
        loss, acc = dpo_loss(logp[:, 0], logp[:, 1], reference[:, 0], reference[:, 1], beta=0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = float(loss.detach()) if first is None else first
        last = float(loss.detach())
    assert first == pytest.approx(math.log(2), rel=1e-5)
    assert last < 0.5 * first and float(acc) == 1.0


# ---- LoRA and checkpoints --------------------------------------------------------------------


def test_lora_starts_as_noop_and_merges_exactly() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential()
    model.add_module("q_proj", torch.nn.Linear(6, 6))
    model.add_module("other", torch.nn.Linear(6, 6))
    x = torch.randn(3, 6)
    before = model(x)
    assert apply_lora(model, rank=2, alpha=4.0) == 1
    assert isinstance(model.q_proj, LoRALinear)
    assert torch.equal(model(x), before)
    with torch.no_grad():
        model.q_proj.lora_b.normal_()
    adapted = model(x)
    merge_lora(model)
    assert isinstance(model.q_proj, torch.nn.Linear)
    assert torch.allclose(model(x), adapted, atol=1e-5)


def test_optimizer_state_roundtrip() -> None:
    layer = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(layer.parameters(), lr=1e-2, betas=(0.9, 0.98))
    layer(torch.randn(2, 4)).sum().backward()
    opt.step()
    tensors, index = optimizer_state_to_flat(opt)
    json.dumps(index)  # the non-tensor part is plain JSON
    fresh = torch.optim.AdamW(torch.nn.Linear(4, 3).parameters(), lr=1.0)
    fresh.load_state_dict(optimizer_state_from_flat(tensors, index))
    original, restored = opt.state_dict(), fresh.state_dict()
    assert restored["param_groups"] == original["param_groups"]
    for pid, entries in original["state"].items():
        for name, value in entries.items():
            assert torch.equal(restored["state"][pid][name], value)


def test_save_bfloat16_loads_as_float32(tmp_path: Path) -> None:
    from vlmbench.modeling.presets import build_random, load_preset
    from vlmbench.modeling.vlm import VLM

    model = build_random(load_preset("llava-1.5-style"))
    model.save(tmp_path / "bf16", dtype=torch.bfloat16)
    loaded = VLM.load(tmp_path / "bf16")
    assert next(loaded.parameters()).dtype == torch.float32
    stored = load_file(str(tmp_path / "bf16" / "model.safetensors"))
    assert {t.dtype for t in stored.values() if t.is_floating_point()} == {torch.bfloat16}
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.allclose(a, b, rtol=1e-2, atol=1e-2), name



@pytest.mark.parametrize("preset", ["llava-1.5-style", "flamingo-style"])
def test_training_and_evaluation_build_the_same_inputs(preset: str) -> None:
    """A tokenised conversation (two images here) gives the training loss exactly the logits that
    evaluation's forward gives for the same prompt and answer: one input builder for both."""
    from tests.helpers import make_image
    from vlmbench.modeling.presets import build_random, load_preset
    from vlmbench.training.objectives import conversation_logits

    model = build_random(load_preset(preset), seed=0).eval()
    tok = model.tokenizer
    images = [[model.prepare_image(make_image(64, 64, seed=s)) for s in range(2)]]
    prompt = model.format_prompt("Same scene?", n_images=2)
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    answer = [*tok("Yes", add_special_tokens=False)["input_ids"], tok.eos_token_id]
    with torch.no_grad():
        logits, labels = conversation_logits(model, images, [(ids + answer, [-100] * len(ids) + answer)])
        expected = model(images, [prompt], ["Yes"])
    assert torch.equal(logits, expected.logits)
    assert int((labels != -100).sum()) == len(answer)
    with pytest.raises(ValueError, match="prompt 0 holds 2"):
        conversation_logits(model, [images[0][0]], [(ids + answer, [-100] * len(ids) + answer)])


# ---- end to end ------------------------------------------------------------------------------


def test_tiny_recipe_end_to_end(full_run: dict[str, Path]) -> None:
    from vlmbench.modeling.vlm import VLM

    out = full_run["out"]
    for name in ("config.json", "model.safetensors", "llm", "tokenizer", "train_summary.json", "recipe.yaml"):
        assert (out / name).exists(), name
    summary = json.loads((out / "train_summary.json").read_text())
    assert [s["kind"] for s in summary["stages"]] == [
        "lm_pretrain",
        "vision_contrastive",
        "vision_contrastive",
        "vision_tagging",
        "align",
        "sft",
        "sft",
        "dpo",
    ]
    for stage in sorted((full_run["work"] / "stages").iterdir()):
        rows = [json.loads(line) for line in (stage / "train_log.jsonl").read_text().splitlines()]
        assert rows and {"step", "loss", "lr", "tokens_per_s"} <= set(rows[-1])
        if stage.name.endswith("-see"):  # the held-out probe is logged at every step it runs
            assert all(0 <= row["probe_accuracy"] <= 1 and "probe_auc" in row for row in rows)
            assert "probe_accuracy" in json.loads((stage / "done.json").read_text())
    model = VLM.load(out)
    from PIL import Image

    image = model.prepare_image(Image.new("RGB", (96, 64), (200, 40, 40)))
    scores = model.score_choices(
        [image], [model.format_prompt("Is there a cup in the image?" + SUFFIX)], ["Yes", "No"]
    )
    assert scores.shape == (1, 2) and torch.isfinite(scores).all()


def test_each_stage_changes_exactly_its_trainable_components(full_run: dict[str, Path]) -> None:
    from vlmbench.modeling.tokenizer import load_tokenizer
    from vlmbench.training.model_io import build_model

    recipe = load_recipe(TINY)
    initial = build_model(recipe, load_tokenizer(full_run["work"] / "tokenizer")).state_dict()
    previous = {k: v.clone() for k, v in initial.items()}
    stages = _stage_weights(full_run["work"])
    assert len(stages) == len(recipe.stages)
    for (name, weights), stage in zip(stages, recipe.stages, strict=True):
        for key, before in previous.items():
            if key not in weights:  # a tied duplicate stored under its other name
                continue
            component = key.split(".")[0]
            after = weights[key]
            trained = component in stage.train
            if stage.lora_rank and component == "llm":
                # LoRA adapts the projection matrices (merged at the end); their biases stay frozen
                trained = any(key.endswith(f".{p}.weight") for p in ("q_proj", "k_proj", "v_proj", "o_proj"))
            if trained:
                assert not torch.equal(before, after), f"{name}: {key} should have changed"
            else:
                assert torch.equal(before, after), f"{name}: frozen {key} changed"
        previous = {k: weights.get(k, v) for k, v in previous.items()}


def test_killed_stage_resumes_to_identical_weights(
    full_run: dict[str, Path], data_dir: Path, tmp_path: Path
) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    args = [
        "train",
        "--recipe",
        str(TINY),
        "--out",
        str(out),
        "--work-dir",
        str(work),
        "--data-dir",
        str(data_dir),
    ]
    # stages: lm 2, clip 2, siglip 2, tags 2, align 2, sft 3 (checkpoint every 2) → step 12 is sft step 2
    assert main([*args, "--stop-after", "12"]) == 1
    sft = work / "stages" / "05-sft"
    assert (sft / "latest.json").exists() and not (sft / "done.json").exists()
    assert main([*args, "--resume"]) == 0
    resumed = load_file(str(out / "model.safetensors"))
    reference = load_file(str(full_run["out"] / "model.safetensors"))
    assert resumed.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(resumed[key], value), key


def test_resume_reuses_unchanged_stages_after_a_recipe_edit(
    full_run: dict[str, Path], data_dir: Path, tmp_path: Path
) -> None:
    import shutil

    import yaml

    work = tmp_path / "work"
    shutil.copytree(full_run["work"], work)
    data = yaml.safe_load(TINY.read_text())
    data["stages"][-1]["steps"] = 3  # edit the last (dpo) stage only
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump(data))
    before = {d.name: (d / "done.json").read_text() for d in sorted((work / "stages").iterdir())}
    out = tmp_path / "out"
    assert (
        main(
            [
                "train",
                "--recipe",
                str(edited),
                "--out",
                str(out),
                "--work-dir",
                str(work),
                "--data-dir",
                str(data_dir),
                "--resume",
            ]
        )
        == 0
    )
    after = {d.name: (d / "done.json").read_text() for d in sorted((work / "stages").iterdir())}
    assert all(after[name] == before[name] for name in list(before)[:-1])  # reused, not retrained
    assert json.loads(after["07-dpo"])["steps"] == 3


def test_patch_labels_mark_the_patches_a_box_covers() -> None:
    from vlmbench.training.region_tags import patch_labels

    # a 10x6 box at (12, 3) on a 32x32 view of 8-px patches: columns 1-2, row 0 (row 1 has 1 px: < 20%)
    labels = patch_labels([(2, (12.0, 3.0, 10.0, 6.0))], (0, 0, 32, 32), (1.0, 1.0), (4, 4), 8, 3)
    grid = labels.view(4, 4, 3)
    assert grid[..., 2].nonzero().tolist() == [[0, 1], [0, 2]]
    assert grid[..., :2].sum() == 0
    # the same box seen through a crop at (8, 0) scaled x2: it now spans x 8..28, y 6..18
    crop = patch_labels([(0, (12.0, 3.0, 10.0, 6.0))], (8, 0, 24, 16), (2.0, 2.0), (4, 4), 8, 1)
    assert crop.view(4, 4)[:3, 1:4].sum() > 0 and crop.view(4, 4)[:, 0].sum() == 0
    # a tiny (3x3 px) object still lights the patch it sits in
    tiny = patch_labels([(0, (9.0, 9.0, 3.0, 3.0))], (0, 0, 32, 32), (1.0, 1.0), (4, 4), 8, 1)
    assert tiny.view(4, 4).nonzero().tolist() == [[1, 1]]


def test_tagging_loss_falls_and_separates_categories(tmp_path: Path) -> None:
    """A tiny ViT learns which of two glyph colours a patch shows (the vision_tagging objective)."""
    from vlmbench.modeling.config import VisionConfig
    from vlmbench.modeling.resolution import to_pixel_tensor
    from vlmbench.modeling.vision import build_vision_encoder
    from vlmbench.training.region_tags import RegionTagHead, patch_labels

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cfg = VisionConfig(image_size=32, patch_size=8, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    vit = build_vision_encoder(cfg)
    head = RegionTagHead(vit.out_dim, 2)
    opt = torch.optim.AdamW([*vit.parameters(), *head.parameters()], lr=3e-3)

    def sample() -> tuple[torch.Tensor, torch.Tensor]:
        views, labels = [], []
        for _ in range(8):
            image = Image.new("RGB", (32, 32), (230, 230, 230))
            draw = ImageDraw.Draw(image)
            label = int(rng.integers(2))
            x, y = (int(v) for v in rng.integers(0, 24, size=2))
            draw.rectangle((x, y, x + 7, y + 7), fill=((200, 30, 30), (30, 30, 200))[label])
            views.append(image)
            labels.append(patch_labels([(label, (x, y, 8.0, 8.0))], (0, 0, 32, 32), (1.0, 1.0), (4, 4), 8, 2))
        return to_pixel_tensor(views, vit.config.image_mean, vit.config.image_std), torch.stack(labels)

    losses = []
    for _ in range(80):
        pixels, target = sample()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(vit(pixels)), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    pixels, target = sample()
    with torch.no_grad():
        predicted = head(vit(pixels)) > 0
    assert (predicted == target.bool()).float().mean() > 0.9


def test_init_loads_the_named_components_from_saved_weights(full_run: dict[str, Path], tmp_path: Path) -> None:
    from vlmbench.modeling.tokenizer import load_tokenizer
    from vlmbench.training.model_io import build_model

    weights = full_run["out"] / "model.safetensors"
    raw = yaml.safe_load(TINY.read_text())
    raw["init"] = {"weights": str(weights), "components": ["vision", "llm"]}
    recipe = parse_recipe(raw, source="init-test")
    tokenizer = load_tokenizer(full_run["out"] / "tokenizer")
    model = build_model(recipe, tokenizer)
    saved = load_file(str(weights))
    fresh = build_model(load_recipe(TINY), tokenizer).state_dict()
    for key, value in model.state_dict().items():
        if key.split(".")[0] in ("vision", "llm") and key in saved:
            assert torch.equal(value, saved[key]), key
        elif key.startswith("projector."):
            assert torch.equal(value, fresh[key]), key  # not loaded: the seeded initialisation
    assert recipe.fingerprint() != load_recipe(TINY).fingerprint()

    raw["init"]["weights"] = str(tmp_path / "absent.safetensors")
    with pytest.raises(UserError, match="does not exist"):
        build_model(parse_recipe(raw, source="init-test"), tokenizer)
    raw["init"] = {"weights": str(weights), "components": ["vision"]}
    raw["model"]["overrides"]["vision"]["hidden_size"] = 48
    with pytest.raises(UserError, match="same configuration"):
        build_model(parse_recipe(raw, source="init-test"), tokenizer)
