"""Released-HF-VLM adapter (`hf:<dir>`): tiny random LLaVA, LLaVA-NeXT, Qwen2-VL, InternVL and BLIP-2
models are built here (offline tokenizer, PIL image processors, safetensors), run end to end through
`vlmbench run`, and compared with plain transformers `generate`. Also: lmms-eval interop."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.helpers import make_image
from vlmbench.cli import main

FAMILIES = ("llava", "llava_next", "qwen2_vl", "internvl", "blip2")
CORPUS = [
    "Is there a dog in the image? Is there a car in the image? What is the title of the document? "
    "invoice total date store name number",
    *([" Yes No yes no Yes. No.", "Yes", "No"] * 20),
]
QWEN_TOKENS = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
INTERNVL_NAMED = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}
LLAVA_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}USER: {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %} "
    "{% else %}ASSISTANT: {{ m['content'][0]['text'] }}</s>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
INTERNVL_TEMPLATE = QWEN_TEMPLATE.replace("<|vision_start|><|image_pad|><|vision_end|>", "<IMG_CONTEXT>\n")


# ---- tiny model builders ---------------------------------------------------------------------
def _tokenizer(extra_tokens: list[str] | None = None, named: dict[str, str] | None = None, template: str | None = None):
    from transformers import PreTrainedTokenizerFast

    from vlmbench.modeling.tokenizer import train_tokenizer

    base = train_tokenizer(CORPUS, vocab_size=360)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=base.backend_tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        unk_token="<unk>", extra_special_tokens=named or {}, padding_side="left",
    )
    if extra_tokens:
        tok.add_special_tokens({"additional_special_tokens": extra_tokens}, replace_extra_special_tokens=False)
    tok.chat_template = template
    return tok


def _text_kwargs(tok) -> dict:
    return {
        "vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_key_value_heads": 1, "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
    }


def _clip():
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                            image_size=32, patch_size=8, projection_dim=32)


def build_tiny_hf(family: str, out: Path, seed: int = 0) -> Path:
    """A random tiny transformers VLM of `family` saved with safetensors + its processor files."""
    import transformers as T

    from vlmbench.modeling.hf import optional_subprocessors

    torch.manual_seed(seed)
    if family in ("llava", "llava_next"):
        tok = _tokenizer(template=LLAVA_TEMPLATE)
        common = {"patch_size": 8, "vision_feature_select_strategy": "default", "num_additional_image_tokens": 1,
                  "chat_template": LLAVA_TEMPLATE}
        sizes = {"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}}
        head = {"vision_config": _clip(), "text_config": T.LlamaConfig(**_text_kwargs(tok)),
                "vision_feature_layer": -2, "vision_feature_select_strategy": "default"}
        if family == "llava":
            image_processor = T.LlavaImageProcessorPil(**sizes)
            processor = T.LlavaProcessor(image_processor=image_processor, tokenizer=tok, **common)
            config = T.LlavaConfig(image_token_id=tok.convert_tokens_to_ids("<image>"), **head)
            model = T.LlavaForConditionalGeneration(config)
        else:
            pins = [[32, 64], [64, 32], [64, 64]]
            image_processor = T.LlavaNextImageProcessorPil(image_grid_pinpoints=pins, **sizes)
            processor = T.LlavaNextProcessor(image_processor=image_processor, tokenizer=tok, **common)
            config = T.LlavaNextConfig(image_token_index=tok.convert_tokens_to_ids("<image>"), image_grid_pinpoints=pins, **head)
            model = T.LlavaNextForConditionalGeneration(config)
    elif family == "qwen2_vl":
        tok = _tokenizer(extra_tokens=QWEN_TOKENS, template=QWEN_TEMPLATE)
        image_processor = T.Qwen2VLImageProcessorPil(size={"shortest_edge": 16 * 16, "longest_edge": 64 * 64},
                                                     patch_size=8, merge_size=2, temporal_patch_size=2)
        processor = optional_subprocessors(T.Qwen2VLProcessor)(image_processor=image_processor, tokenizer=tok,
                                                               video_processor=None, chat_template=QWEN_TEMPLATE)
        ids = tok.convert_tokens_to_ids
        text = {**_text_kwargs(tok), "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}}
        vision = {"depth": 2, "embed_dim": 32, "hidden_size": 32, "num_heads": 2, "patch_size": 8,
                  "spatial_merge_size": 2, "temporal_patch_size": 2, "mlp_ratio": 2}
        config = T.Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=ids("<|image_pad|>"),
                                 video_token_id=ids("<|video_pad|>"), vision_start_token_id=ids("<|vision_start|>"),
                                 vision_end_token_id=ids("<|vision_end|>"))
        model = T.Qwen2VLForConditionalGeneration(config)
    elif family == "internvl":
        tok = _tokenizer(extra_tokens=QWEN_TOKENS[:2], named=INTERNVL_NAMED, template=INTERNVL_TEMPLATE)
        image_processor = T.GotOcr2ImageProcessorPil(size={"height": 32, "width": 32}, crop_to_patches=True,
                                                     min_patches=1, max_patches=4)
        processor = optional_subprocessors(T.InternVLProcessor)(image_processor=image_processor, tokenizer=tok,
                                                                video_processor=None, image_seq_length=4,
                                                                chat_template=INTERNVL_TEMPLATE)
        vision = T.InternVLVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                        image_size=32, patch_size=8)
        config = T.InternVLConfig(vision_config=vision, text_config=T.Qwen2Config(**_text_kwargs(tok)),
                                  image_token_id=tok.context_image_token_id, image_seq_length=4, downsample_ratio=0.5,
                                  vision_feature_layer=-1)
        model = T.InternVLForConditionalGeneration(config)
    elif family == "blip2":
        tok = _tokenizer()
        image_processor = T.BlipImageProcessorPil(size={"height": 32, "width": 32})
        processor = T.Blip2Processor(image_processor=image_processor, tokenizer=tok, num_query_tokens=4)
        vision = T.Blip2VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                     image_size=32, patch_size=8)
        qformer = T.Blip2QFormerConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                       vocab_size=len(tok), encoder_hidden_size=32)
        config = T.Blip2Config(vision_config=vision, qformer_config=qformer, text_config=T.LlamaConfig(**_text_kwargs(tok)),
                               num_query_tokens=4, image_token_index=tok.convert_tokens_to_ids("<image>"))
        model = T.Blip2ForConditionalGeneration(config)
    else:  # pragma: no cover - test misuse
        raise ValueError(family)
    with torch.no_grad():  # larger weights than the 0.02 default, so answers depend on the image
        for param in model.parameters():
            if param.ndim >= 2:
                param.normal_(0.0, 0.15)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(out, safe_serialization=True)
    if family in ("qwen2_vl", "internvl"):
        # transformers cannot save a processor whose video processor is absent (no torchvision here):
        # write the parts the way released repos hold them.
        tok.save_pretrained(out)
        image_processor.save_pretrained(out)
        extra = {"image_seq_length": 4} if family == "internvl" else {}
        (out / "processor_config.json").write_text(json.dumps({"processor_class": type(processor).__name__, **extra}))
        (out / "chat_template.jinja").write_text(processor.chat_template)
    else:
        processor.save_pretrained(out)
    return out


# ---- fixtures --------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny matmuls on a shared 2-core box: extra intra-op threads only spin."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf_models")
    return {family: build_tiny_hf(family, root / family) for family in FAMILIES}


@pytest.fixture(scope="module")
def loaded(tiny_dirs) -> dict[str, object]:
    from vlmbench.modeling.hf import load_hf_model

    return {family: load_hf_model(str(path)).model for family, path in tiny_dirs.items()}


def _images() -> list:
    return [make_image(40 + 20 * i, 50 + 7 * i, seed=i) for i in range(3)]


QUESTIONS = ["Is there a dog?", "What is the title of the document in the image?", "Is there a car?"]


def _reference(model, images, prompts: list[str], max_new_tokens: int, stop: tuple[str, ...] = ()) -> list[str]:
    """Plain transformers: processor(images, prompts) → model.generate (greedy), new tokens decoded."""
    from vlmbench.modeling.hf import _truncate

    processor = model.processor
    processor.tokenizer.padding_side = "left"
    inputs = processor(images=images, text=prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    texts = processor.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return [_truncate(t, stop) for t in texts]


# ---- tests -----------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_run_end_to_end_matches_plain_transformers(family, tiny_dirs, loaded, tmp_path, monkeypatch, capsys) -> None:
    from vlmbench.tasks.registry import load_task

    monkeypatch.setenv("VLMBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["run", "--model", f"hf:{tiny_dirs[family]}", "--tasks", "pope,docvqa", "--limit", "6", "--synthetic-n", "6",
            "--output-dir", str(tmp_path / "runs"), "--run-name", "r", "--batch-size", "4", "--no-report"]
    assert main(args) == 0, capsys.readouterr().err[-2000:]
    run_dir = tmp_path / "runs" / "r"
    results = json.loads((run_dir / "results.json").read_text())
    model = results["model"]
    assert {"name", "preset", "vision_encoder", "projector", "resolution", "llm", "params", "visual_tokens_per_image"} <= set(model)
    assert model["preset"] is None and model["params"]["total"] == sum(
        v for k, v in model["params"].items() if k != "total"
    )
    strategy_keys = {
        "llava": {"size"}, "blip2": {"size"}, "llava_next": {"tile_size", "pinpoints"},
        "internvl": {"tile_size", "min_tiles", "max_tiles", "thumbnail"},
        "qwen2_vl": {"patch_size", "merge_size", "min_pixels", "max_pixels"},
    }[family]
    assert strategy_keys <= set(model["resolution"])
    for task in ("pope", "docvqa"):
        assert results["tasks"][task]["n"] == 6 and results["tasks"][task]["errors"] == 0
    pope = [json.loads(line) for line in (run_dir / "samples" / "pope.jsonl").read_text().splitlines()]
    assert {r["prediction"] for r in pope} <= {"Yes", "No"}
    assert all(r["visual_tokens"] > 0 and r["tiles"] >= 1 for r in pope)
    rows = {json.loads(line)["question_id"]: json.loads(line) for line in (run_dir / "samples" / "docvqa.jsonl").read_text().splitlines()}

    hf = loaded[family]
    samples, _ = load_task("docvqa").load(None, limit=6, synthetic_n=6)
    images = [s.load_image() for s in samples]
    prompts = [hf.format_prompt(s.prompt) for s in samples]
    ours = [rows[s.question_id]["prediction"] for s in samples]
    assert ours == _reference(hf, images, prompts, 32, ("\n",))  # batched
    assert ours == [_reference(hf, [i], [p], 32, ("\n",))[0] for i, p in zip(images, prompts, strict=True)]
    assert [rows[s.question_id]["visual_tokens"] for s in samples] == [
        hf.encode([hf.prepare_image(i)])[0].shape[0] for i in images
    ]


@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_batches_and_input_ids_equal_the_processor(family, loaded) -> None:
    hf = loaded[family]
    images = _images()
    prompts = [hf.format_prompt(q) for q in QUESTIONS]
    visual = hf.encode([hf.prepare_image(i) for i in images])
    batch = hf._batch(prompts, visual)
    hf.processor.tokenizer.padding_side = "left"
    ref = hf.processor(images=images, text=prompts, padding=True, return_tensors="pt")
    assert torch.equal(batch.input_ids.cpu(), ref["input_ids"]) and torch.equal(batch.attention_mask.cpu(), ref["attention_mask"])
    batched = hf.generate(None, prompts, max_new_tokens=6, visual=visual)
    assert batched == _reference(hf, images, prompts, 6)
    assert batched == [hf.generate(None, [p], max_new_tokens=6, visual=[v])[0] for p, v in zip(prompts, visual, strict=True)]
    assert len(set(batched)) > 1  # the tiny models do look at the image / question


@pytest.mark.parametrize("family", FAMILIES)
def test_choices_agree_with_generation(family, loaded) -> None:
    """Make the first generated token a choice token (output rows ±v, large), then the scored choice is it."""
    hf = loaded[family]
    images = _images()
    prompts = [hf.format_prompt(q) for q in QUESTIONS]
    visual = hf.encode([hf.prepare_image(i) for i in images])
    choices = ["Yes", "No"]
    ids = [hf.choice_token_ids(prompts[0], c) for c in choices]
    assert all(len(t) == 1 for t in ids), ids  # the test tokenizer has whole-word tokens for both variants
    head = hf.model.get_output_embeddings().weight
    saved = head.detach().clone()
    try:
        with torch.no_grad():
            direction = torch.randn(head.shape[1], generator=torch.Generator().manual_seed(1)) * 40
            head[ids[0][0]] = direction  # one of ±direction always wins: which one depends on the input
            head[ids[1][0]] = -direction
        generated = hf.generate(None, prompts, max_new_tokens=1, visual=visual)
        scores = hf.score_choices(None, prompts, choices, visual=visual)
        multi = hf._score_sequences(prompts, visual, [[t for t in ids] for _ in prompts])
    finally:
        with torch.no_grad():
            head.copy_(saved)
    assert set(generated) <= set(choices)
    assert [choices[int(i)] for i in scores.argmax(-1)] == generated
    torch.testing.assert_close(multi, scores, atol=1e-4, rtol=1e-4)  # the B×C-rows path gives the same numbers


def test_choice_variant_follows_the_prompt(loaded) -> None:
    llava, qwen = loaded["llava"], loaded["qwen2_vl"]
    tok = llava.tokenizer
    assert llava.format_prompt("q").endswith("ASSISTANT:")
    assert llava.choice_token_ids(llava.format_prompt("q"), "Yes") == tok(" Yes", add_special_tokens=False)["input_ids"]
    assert qwen.format_prompt("q").endswith("\n")
    assert qwen.choice_token_ids(qwen.format_prompt("q"), "Yes") == qwen.tokenizer("Yes", add_special_tokens=False)["input_ids"]


def test_missing_model_exits_2_with_where_it_looked(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VLMBENCH_CACHE", str(tmp_path / "cache"))
    base = ["run", "--tasks", "pope", "--limit", "1", "--output-dir", str(tmp_path / "runs")]
    missing = tmp_path / "nowhere"
    assert main([*base, "--model", f"hf:{missing}"]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "Traceback" not in err
    assert main([*base, "--model", "hf:no-such-org/no-such-vlm"]) == 2
    err = capsys.readouterr().err
    assert "HF cache" in err and "huggingface-cli download no-such-org/no-such-vlm" in err
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps({"model_type": "llava"}))
    (pickled / "pytorch_model.bin").write_bytes(b"")
    assert main([*base, "--model", f"hf:{pickled}"]) == 2
    assert "safetensors" in capsys.readouterr().err


def test_attention_implementation_choice(loaded, tiny_dirs) -> None:
    from vlmbench.modeling.hf import default_attn_implementation, load_hf_model

    assert default_attn_implementation("cpu") == "sdpa"
    assert loaded["llava"].summary("x")["attn_implementation"] == "sdpa"
    eager = load_hf_model(str(tiny_dirs["llava"]), attn_implementation="eager").model
    assert eager.config._attn_implementation == "eager"


# ---- lmms-eval interop -----------------------------------------------------------------------
def test_lmms_plugin_answers_lmms_eval_requests(loaded) -> None:
    from vlmbench.interop.lmms import VlmbenchLMM
    from vlmbench.modeling.loaded import LoadedModel

    hf = loaded["llava"]
    plugin = VlmbenchLMM(loaded=LoadedModel(hf, "hf:tiny", None, None, True), batch_size=2)
    images = _images()
    plugin.task_dict = {"pope": {"test": [{"image": im} for im in images]}}
    to_visual = lambda doc: [doc["image"]]  # noqa: E731
    gen = [SimpleNamespace(args=(f"<image>\n{q}", {"max_new_tokens": 6, "until": ["\n"]}, to_visual, i, "pope", "test"))
           for i, q in enumerate(QUESTIONS)]
    answers = plugin.generate_until(gen)
    prompts = [hf.format_prompt(q) for q in QUESTIONS]
    assert answers == _reference(hf, images, prompts, 6, ("\n",))
    ll = [SimpleNamespace(args=(QUESTIONS[0], "Yes", to_visual, 0, "pope", "test"))]
    (logprob, greedy), = plugin.loglikelihood(ll)
    expected = float(hf.score_choices(None, [prompts[0]], ["Yes"], visual=hf.encode([hf.prepare_image(images[0])]))[0, 0])
    assert logprob == pytest.approx(expected) and isinstance(greedy, bool)


def test_lmms_eval_results_layout(tmp_path, capsys, monkeypatch) -> None:
    from vlmbench.interop.lmms import write_lmms_eval_results

    monkeypatch.setenv("VLMBENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "lmms"
    args = ["run", "--model", "llava-1.5-style", "--tasks", "pope,docvqa", "--limit", "4", "--synthetic-n", "4",
            "--output-dir", str(tmp_path / "runs"), "--run-name", "r", "--no-report", "--lmms-eval-output", str(out)]
    assert main(args) == 0, capsys.readouterr().err[-2000:]
    (model_dir,) = out.iterdir()
    (results_file,) = model_dir.glob("*_results.json")
    doc = json.loads(results_file.read_text())
    assert {"results", "configs", "versions", "n-shot", "config", "higher_is_better", "n-samples"} <= set(doc)
    assert set(doc["results"]) >= {"pope", "docvqa_val"}
    pope = doc["results"]["pope"]
    assert {"pope_accuracy,none", "pope_f1_score,none", "pope_accuracy_stderr,none"} <= set(pope)
    assert "anls,none" in doc["results"]["docvqa_val"]
    assert doc["n-shot"]["pope"] == 0 and doc["n-samples"]["docvqa_val"] == {"original": 4, "effective": 4}
    assert doc["configs"]["pope"]["output_type"] == "loglikelihood"
    assert doc["configs"]["docvqa_val"]["generation_kwargs"]["until"] == ["\n"]
    assert doc["config"]["model"] == "vlmbench" and "llava-1.5-style" in doc["config"]["model_args"]
    stamp = results_file.name.removesuffix("_results.json")
    rows = [json.loads(line) for line in (model_dir / f"{stamp}_samples_docvqa_val.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {"doc_id", "target", "filtered_resps", "input", "doc_hash", "anls"} <= set(rows[0])
    pope_rows = [json.loads(line) for line in (model_dir / f"{stamp}_samples_pope.jsonl").read_text().splitlines()]
    assert set(pope_rows[0]["pope_accuracy"]) == {"question_id", "score", "prediction", "ground_truth"}
    single = write_lmms_eval_results(tmp_path / "runs" / "r", tmp_path / "flat" / "x_results.json")
    assert single.is_file() and (single.parent / "x_samples_pope.jsonl").is_file()


@pytest.mark.parametrize("family", ["llava", "llava_next", "qwen2_vl", "internvl"])
def test_pixel_fallback_path_gives_the_same_answers(family, loaded) -> None:
    """Models without `mm_encoder_outputs` get their pixel inputs at generation time: same answers."""
    from vlmbench.modeling.hf import HFVLM

    cached = loaded[family]
    fallback = HFVLM(cached.model, cached.processor)
    fallback.path = "pixels"
    images = _images()
    prompts = [cached.format_prompt(q) for q in QUESTIONS]
    visual = fallback.encode([fallback.prepare_image(i) for i in images])
    assert all(v.features is None and v.shape[0] > 0 for v in visual)
    expected = cached.generate(None, prompts, max_new_tokens=6, visual=cached.encode([cached.prepare_image(i) for i in images]))
    assert fallback.generate(None, prompts, max_new_tokens=6, visual=visual) == expected


# ---- the declared interface, inspect, several images per prompt ------------------------------
def test_both_model_kinds_implement_the_eval_model_protocol(loaded) -> None:
    from vlmbench.modeling.interface import EvalModel, protocol_mismatches
    from vlmbench.modeling.resolve import load_model

    own = load_model("llava-1.5-style").model
    for model in (own, *loaded.values()):
        assert isinstance(model, EvalModel), type(model)
        assert protocol_mismatches(model) == [], type(model)

    class OneImageOnly:  # the pre-interface prompt signature: caught by the signature check
        device = torch.device("cpu")

        def format_prompt(self, question):  # noqa: ANN001, ANN202
            return question

    mismatches = protocol_mismatches(OneImageOnly())
    assert "format_prompt: no parameter 'n_images'" in mismatches and "generate: missing" in mismatches
    assert not isinstance(OneImageOnly(), EvalModel)


@pytest.mark.parametrize("family", FAMILIES)
def test_inspect_describes_hf_models(family, tiny_dirs, loaded, capsys) -> None:
    width, height = 100, 45
    assert main(["inspect", "--model", f"hf:{tiny_dirs[family]}", "--image-size", f"{width}x{height}"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"model", "image_size", "strategy", "resized", "grid", "tiles", "visual_tokens", "params"}
    hf = loaded[family]
    prepared = hf.prepare_image(make_image(width, height))
    assert out["image_size"] == [width, height] and out["strategy"] == hf.resolution_summary()
    assert out["tiles"] == len(prepared.plan.tile_sizes)
    assert out["visual_tokens"] == hf.encode([prepared])[0].shape[0]
    assert out["params"] == hf.parameter_counts()
    expected = {  # what the tiny processors do to a 100x45 image (tile side 32; Qwen2-VL: 8 px patches)
        "llava": ([32, 32], None), "blip2": ([32, 32], None),
        "llava_next": ([64, 32], [2, 1]),  # pinpoint 64x32 (W x H): two tiles + the base view
        "internvl": ([64, 32], [2, 1]),
        "qwen2_vl": ([80, 32], None),  # max_pixels 64*64: scaled down to whole 2x2 merges of 8 px patches
    }[family]
    assert (out["resized"], out["grid"]) == expected
    if family == "qwen2_vl":
        assert out["visual_tokens"] == (80 // 16) * (32 // 16)  # one token per merged 16x16 block
    if out["grid"]:
        assert out["tiles"] == out["grid"][0] * out["grid"][1] + 1  # + base view / thumbnail


def test_inspect_exits_2_for_a_family_it_cannot_describe(tiny_dirs, capsys, monkeypatch) -> None:
    from vlmbench.modeling import hf
    from vlmbench.modeling.hf_families import Generic

    monkeypatch.setattr(hf, "family_for", lambda model_type: Generic())
    assert main(["inspect", "--model", f"hf:{tiny_dirs['llava']}", "--image-size", "64x64"]) == 2
    err = capsys.readouterr().err.strip()  # transformers' weight-loading progress bar, then the reason
    assert "cannot describe the resolution strategy" in err.splitlines()[-1] and "Traceback" not in err


TWO_IMAGE_QUESTIONS = [
    "First image: <image>\nSecond image: <image>\nIs there a dog in both images?",
    "Which image shows a car, the first or the second?",  # no markers: the images go first
]


@pytest.mark.parametrize("family", ["llava", "llava_next", "qwen2_vl", "internvl"])
def test_two_image_prompts_equal_plain_transformers(family, loaded) -> None:
    hf = loaded[family]
    pairs = [[make_image(40, 50, seed=1), make_image(70, 36, seed=2)], [make_image(64, 64, seed=3), make_image(33, 90, seed=4)]]
    prompts = [hf.format_prompt(q, n_images=2) for q in TWO_IMAGE_QUESTIONS]
    visual = [hf.encode([hf.prepare_image(i) for i in pair]) for pair in pairs]
    flat = [image for pair in pairs for image in pair]
    ours = hf.generate(None, prompts, max_new_tokens=6, visual=visual)
    assert ours == _reference(hf, flat, prompts, 6)
    prepared = [[hf.prepare_image(i) for i in pair] for pair in pairs]
    assert hf.generate(prepared, prompts, max_new_tokens=6) == ours  # the model encodes them itself
    # the order of the images matters: swapping them is a different input
    swapped = [hf.format_prompt(q, n_images=2) for q in TWO_IMAGE_QUESTIONS]
    assert _reference(hf, [pairs[0][1], pairs[0][0]], swapped[:1], 6) == hf.generate(None, swapped[:1], max_new_tokens=6, visual=[visual[0][::-1]])
    scores = hf.score_choices(None, prompts, ["first", "second"], visual=visual)
    assert scores.shape == (2, 2) and torch.isfinite(scores).all()
    with pytest.raises(ValueError, match="marker"):
        hf.format_prompt("<image> only one marker", n_images=2)


def test_blip2_takes_one_image_only(loaded) -> None:
    blip = loaded["blip2"]
    with pytest.raises(ValueError, match="one image only"):
        blip.format_prompt("Is there a dog?", n_images=2)
    visual = blip.encode([blip.prepare_image(make_image(40, 40, seed=s)) for s in (1, 2)])
    with pytest.raises(ValueError, match="one image only"):
        blip.generate(None, [blip.format_prompt("Is there a dog?")], max_new_tokens=2, visual=[visual])


def test_lmms_plugin_passes_every_image_of_a_request(loaded) -> None:
    from vlmbench.interop.lmms import VlmbenchLMM
    from vlmbench.modeling.loaded import LoadedModel

    hf = loaded["llava"]
    plugin = VlmbenchLMM(loaded=LoadedModel(hf, "hf:tiny", None, None, True), batch_size=2)
    pairs = [[make_image(40, 50, seed=1), make_image(60, 30, seed=2)], [make_image(30, 30, seed=3), make_image(50, 50, seed=4)]]
    plugin.task_dict = {"blink": {"test": [{"images": pair} for pair in pairs]}}
    context = "First: <image> Second: <image> Is there a dog in both images?"
    gen = [SimpleNamespace(args=(context, {"max_new_tokens": 6}, lambda doc: doc["images"], i, "blink", "test")) for i in range(2)]
    prompt = hf.format_prompt(context, n_images=2)
    assert plugin.generate_until(gen) == _reference(hf, [image for pair in pairs for image in pair], [prompt, prompt], 6)
