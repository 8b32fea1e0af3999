"""vlmbench checkpoints ↔ transformers layouts: llava-1.5-style ↔ LlavaForConditionalGeneration (exact),
internvl-style ↔ InternVL projector + LLM (the parts that match)."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers import make_image
from vlmbench.cli import main
from vlmbench.errors import UserError


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(preset: str, seed: int = 3):
    """A random preset with LLM/projector weights large enough for image-dependent greedy answers."""
    from vlmbench.modeling.presets import build_random, load_preset

    model = build_random(load_preset(preset), seed=seed).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim >= 2 and not name.startswith("vision."):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.15)
    return model


@pytest.fixture(scope="module")
def llava_model():
    return _model("llava-1.5-style")


def test_llava_export_gives_the_same_logits(llava_model) -> None:
    from vlmbench.modeling.hf_export import build_llava

    hf_model, processor = build_llava(llava_model)
    for image in (make_image(80, 50, seed=1), make_image(40, 90, seed=2), make_image(64, 64, seed=3)):
        prepared = llava_model.prepare_image(image)
        prompt = llava_model.format_prompt("Is there a dog in the image?")
        inputs = processor(images=[image], text=[prompt], return_tensors="pt")
        # the exported processor letterboxes like vlmbench's fixed strategy
        torch.testing.assert_close(inputs["pixel_values"], prepared.pixels, atol=1e-5, rtol=0)
        # and renders the same prompt through its chat template
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Is there a dog in the image?"}]}]
        assert processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == prompt
        with torch.no_grad():
            ours = llava_model([prepared], [prompt]).logits
            theirs = hf_model(input_ids=inputs["input_ids"], pixel_values=prepared.pixels).logits
        assert theirs.shape == ours.shape
        torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-4)


def test_llava_export_import_round_trip(llava_model, tmp_path) -> None:
    from vlmbench.modeling.hf_export import export_llava, import_llava

    out = export_llava(llava_model, tmp_path / "llava-hf")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llava" and config["vision_feature_layer"] == -2
    assert config["vision_feature_select_strategy"] == "default"
    back = import_llava(out)
    assert back.config.vision.feature_layer == -2 and back.config.resolution.letterbox
    image = make_image(70, 45, seed=4)
    prepared = llava_model.prepare_image(image)
    prompt = llava_model.format_prompt("What is written in the image?")
    with torch.no_grad():
        torch.testing.assert_close(back([prepared], [prompt]).logits, llava_model([prepared], [prompt]).logits, atol=1e-4, rtol=1e-4)
    assert back.generate([prepared], [prompt], max_new_tokens=8) == llava_model.generate([prepared], [prompt], max_new_tokens=8)


def test_export_cli_then_hf_run_equals_vlmbench_run(llava_model, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("VLMBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ckpt = llava_model.save(tmp_path / "ckpt")
    out = tmp_path / "exported"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "llava", "--out", str(out)]) == 0
    assert f"hf:{out}" in capsys.readouterr().out
    common = ["--tasks", "docvqa,pope", "--limit", "6", "--synthetic-n", "6", "--output-dir", str(tmp_path / "runs"), "--no-report"]
    assert main(["run", "--model", str(ckpt), "--run-name", "ours", *common]) == 0
    assert main(["run", "--model", f"hf:{out}", "--run-name", "hf", *common]) == 0
    for task in ("docvqa", "pope"):
        rows = {}
        for name in ("ours", "hf"):
            lines = (tmp_path / "runs" / name / "samples" / f"{task}.jsonl").read_text().splitlines()
            rows[name] = [(r["question_id"], r["prediction"], r["visual_tokens"]) for r in map(json.loads, lines)]
        assert rows["ours"] == rows["hf"]
    docvqa = [json.loads(line)["prediction"] for line in (tmp_path / "runs" / "hf" / "samples" / "docvqa.jsonl").read_text().splitlines()]
    assert any(docvqa)  # non-trivial answers were compared


def test_export_refuses_designs_without_a_counterpart(tmp_path, capsys) -> None:
    from vlmbench.modeling.hf_export import export_model
    from vlmbench.modeling.presets import build_random, load_preset

    with pytest.raises(UserError, match="cannot be exported as LLaVA"):
        export_model(build_random(load_preset("qwen2vl-style")), tmp_path / "q", "llava")
    ckpt = build_random(load_preset("internvl-style")).save(tmp_path / "ivl")
    assert main(["export", "--checkpoint", str(ckpt), "--format", "internvl", "--out", str(tmp_path / "o")]) == 2
    assert "InternViT" in capsys.readouterr().err


def test_internvl_projector_and_llm_map_exactly() -> None:
    """InternVL's pixel shuffle + multi_modal_projector and its LLM equal ours under `internvl_key_map`."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLVisionConfig

    from vlmbench.modeling.hf_export import internvl_key_map

    model = _model("internvl-style")
    v = model.config.vision
    vision = InternVLVisionConfig(hidden_size=v.hidden_size, intermediate_size=v.intermediate_size, num_hidden_layers=1,
                                  num_attention_heads=v.num_heads, image_size=v.image_size, patch_size=v.patch_size)
    config = InternVLConfig(vision_config=vision, text_config=model.llm.config.to_dict(), downsample_ratio=0.5,
                            image_token_id=model.image_token_id, vision_feature_layer=-1)
    hf = InternVLForConditionalGeneration(config).eval()
    ours = model.state_dict()
    table = internvl_key_map([k[len("llm.") :] for k in ours if k.startswith("llm.")])
    assert set(table) == {k for k in ours if k.startswith(("projector.", "llm."))}
    missing, _ = hf.load_state_dict({theirs: ours[key] for key, theirs in table.items()}, strict=False)
    assert all(k.startswith("model.vision_tower.") for k in missing)

    side = v.image_size // v.patch_size
    feats = torch.randn(3, side * side, v.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        mine = model.projector(feats, (side, side))
        shuffled = hf.model.pixel_shuffle(feats.reshape(3, side, side, -1), scale_factor=0.5)
        theirs = hf.model.multi_modal_projector(shuffled.reshape(3, -1, shuffled.shape[-1]))
        torch.testing.assert_close(theirs, mine, atol=1e-5, rtol=1e-5)
        embeds = torch.randn(2, 7, model.llm.config.hidden_size, generator=torch.Generator().manual_seed(1))
        hidden = hf.model.language_model(inputs_embeds=embeds).last_hidden_state
        torch.testing.assert_close(hf.lm_head(hidden), model.llm(inputs_embeds=embeds).logits, atol=1e-4, rtol=1e-4)
