"""Prefix KV sharing in the transformers adapter (`HFVLM` + modeling/hf_prefix.py): for every family
(LLaVA, LLaVA-NeXT, Qwen2-VL, Qwen2.5-VL, InternVL, BLIP-2), answering from one prefill of the image
prefix equals the unshared `generate` / `score_choices` on the whole prompts — batched, with several
questions per image, suffixes of different lengths and prefixes of different lengths (images of
different sizes) — and the held states are left as they were."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import make_image
from tests.test_hf import FAMILIES, build_tiny_hf

QUESTIONS = [
    "Is there a dog?",
    "What is the title of the document in the image?",
    "Yes or no?",
    "Is there a car in the image? Is there a dog in the image?",
]
CHOICES = {
    "single": ["Yes", "No"],  # one token each after every tiny template
    "multi": ["Yes.", "invoice total date", "no"],  # different token counts
}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


ALL = (*FAMILIES, "qwen2_5_vl")


def build_tiny_qwen2_5_vl(out: Path) -> Path:
    """A random tiny Qwen2.5-VL (windowed-attention ViT, same M-RoPE as Qwen2-VL), saved like test_hf's models."""
    import json

    import transformers as T

    from tests.test_hf import QWEN_TEMPLATE, QWEN_TOKENS, _text_kwargs, _tokenizer
    from vlmbench.modeling.hf import optional_subprocessors

    torch.manual_seed(0)
    tok = _tokenizer(extra_tokens=QWEN_TOKENS, template=QWEN_TEMPLATE)
    image_processor = T.Qwen2VLImageProcessorPil(
        size={"shortest_edge": 16 * 16, "longest_edge": 64 * 64},
        patch_size=8,
        merge_size=2,
        temporal_patch_size=2,
    )
    processor = optional_subprocessors(T.Qwen2_5_VLProcessor)(
        image_processor=image_processor, tokenizer=tok, video_processor=None, chat_template=QWEN_TEMPLATE
    )
    ids = tok.convert_tokens_to_ids
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
    vision = {"depth": 2, "hidden_size": 32, "out_hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
              "patch_size": 8, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 32,
              "fullatt_block_indexes": [1]}  # fmt: skip
    config = T.Qwen2_5_VLConfig(
        text_config={**_text_kwargs(tok), "rope_parameters": rope}, vision_config=vision,
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
    )  # fmt: skip
    model = T.Qwen2_5_VLForConditionalGeneration(config)
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim >= 2:
                param.normal_(0.0, 0.15)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    image_processor.save_pretrained(out)
    (out / "processor_config.json").write_text(json.dumps({"processor_class": type(processor).__name__}))
    (out / "chat_template.jinja").write_text(processor.chat_template)
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, object]:
    from vlmbench.modeling.hf import load_hf_model

    root = tmp_path_factory.mktemp("prefix_models")
    dirs = {family: build_tiny_hf(family, root / family) for family in FAMILIES}
    dirs["qwen2_5_vl"] = build_tiny_qwen2_5_vl(root / "qwen2_5_vl")
    return {family: load_hf_model(str(path)).model for family, path in dirs.items()}


def _case(hf, images: int = 2):
    """Questions × images (rows interleaved, so one batch mixes images), their splits and the visual objects."""
    visual = hf.encode(
        [hf.prepare_image(make_image(36 + 23 * i, 40 + 31 * i, seed=i)) for i in range(images)]
    )
    prompts = [hf.format_prompt(q) for q in QUESTIONS for _ in visual]
    rows = [v for _ in QUESTIONS for v in visual]
    splits = [hf.split_prompt(p) for p in prompts]
    assert all(s is not None for s in splits), hf.prefix_decline_reason()
    prefixes = [s[0] for s in splits[: len(visual)]]
    states = hf.prefill(prefixes, visual)
    per_row = [states[i % len(visual)] for i in range(len(prompts))]
    return prompts, rows, splits, states, per_row


def _snapshot(states) -> list[torch.Tensor]:
    return [t.clone() for s in states for kv in s.layers for t in kv] + [s.positions.clone() for s in states]


def _unchanged(states, before: list[torch.Tensor]) -> bool:
    after = [t for s in states for kv in s.layers for t in kv] + [s.positions for s in states]
    return len(after) == len(before) and all(torch.equal(a, b) for a, b in zip(after, before, strict=True))


@pytest.mark.parametrize("family", ALL)
def test_split_prompt_is_a_token_prefix(family, models) -> None:
    hf = models[family]
    for question in QUESTIONS:
        prompt = hf.format_prompt(question)
        prefix, suffix = hf.split_prompt(prompt)
        assert prefix + suffix == prompt and suffix and question in suffix
        assert (hf.image_token not in suffix) if hf.image_token else True
        head, full = hf._text_ids(prefix), hf._text_ids(prompt)
        assert full[: len(head)] == head and len(full) > len(head)
    prefixes = {hf.split_prompt(hf.format_prompt(q))[0] for q in QUESTIONS}
    assert len(prefixes) == 1  # one prefix per image, whatever the question


@pytest.mark.parametrize("family", ALL)
def test_generate_from_equals_generate(family, models) -> None:
    hf = models[family]
    prompts, rows, splits, states, per_row = _case(hf)
    before = _snapshot(states)
    expected = hf.generate(None, prompts, max_new_tokens=6, visual=rows)
    shared = hf.generate_from(per_row, [s[1] for s in splits], max_new_tokens=6)
    assert shared == expected
    assert len(set(expected)) > 2  # the answers depend on the image and the question
    # one row at a time too, and again from the same states
    assert [
        hf.generate_from([st], [s[1]], max_new_tokens=6)[0] for st, s in zip(per_row, splits, strict=True)
    ] == expected
    sampling = {"max_new_tokens": 6, "do_sample": True, "temperature": 1.0, "top_p": 0.9, "seed": 3}
    sampled = hf.generate(None, prompts, visual=rows, **sampling)
    assert hf.generate_from(per_row, [s[1] for s in splits], **sampling) == sampled  # same seed, same draws
    assert _unchanged(states, before)
    assert all(s.tokens == len(s.ids) >= s.visual_tokens > 0 and s.nbytes > 0 for s in states)
    if family not in (
        "llava",
        "blip2",
    ):  # images of different sizes: prefixes of different lengths in one batch
        assert len({s.tokens for s in states}) == len(states)


@pytest.mark.parametrize("family", ALL)
@pytest.mark.parametrize("kind", sorted(CHOICES))
def test_score_choices_from_equals_score_choices(family, kind, models) -> None:
    hf = models[family]
    prompts, rows, splits, states, per_row = _case(hf)
    choices = CHOICES[kind]
    lengths = {len(hf.choice_token_ids(p, c)) for p in prompts for c in choices}
    assert (lengths == {1}) == (kind == "single"), lengths
    before = _snapshot(states)
    expected = hf.score_choices(None, prompts, choices, visual=rows)
    shared = hf.score_choices_from(per_row, [s[1] for s in splits], choices)
    assert shared.shape == (len(prompts), len(choices))
    torch.testing.assert_close(shared, expected, atol=2e-4, rtol=2e-4)
    assert _unchanged(states, before)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_two_image_prompts_share_up_to_the_last_image(family, models) -> None:
    hf = models[family]
    pair = hf.encode(
        [hf.prepare_image(make_image(40, 50, seed=1)), hf.prepare_image(make_image(70, 36, seed=2))]
    )
    questions = ["First: <image>\nSecond: <image>\nIs there a dog in both?", "Which shows a car?"]
    prompts = [hf.format_prompt(q, n_images=2) for q in questions]
    splits = [hf.split_prompt(p) for p in prompts]
    states = hf.prefill([s[0] for s in splits], [pair, pair])
    expected = hf.generate(None, prompts, max_new_tokens=6, visual=[pair, pair])
    assert hf.generate_from(states, [s[1] for s in splits], max_new_tokens=6) == expected


def test_qwen2_vl_suffix_positions_continue_m_rope(models) -> None:
    """After an image, M-RoPE text positions jump past the image grid: not the token count."""
    from vlmbench.modeling.hf_prefix import extend

    hf = models["qwen2_vl"]
    _, _, splits, states, _ = _case(hf, images=1)
    (state,) = states
    assert state.positions.shape[0] == 4  # the text row and M-RoPE's (temporal, row, column)
    assert int(state.positions[1:].max()) + 1 < state.tokens
    ext = extend(hf, [state], [splits[0][1]])
    suffix = ext.positions[:, 0, -ext.new :]
    start = int(state.positions[1:].max()) + 1
    assert suffix[1:].tolist() == [list(range(start, start + ext.new))] * 3
    assert suffix[0].tolist() == list(range(state.tokens, state.tokens + ext.new))


def test_visual_token_compression(models) -> None:
    """Projector-side operators share the (compressed) prefix; FastV, which prunes in the LLM per question, does not."""
    from vlmbench.modeling.compression.spec import parse_spec

    hf = models["qwen2_vl"]
    try:
        hf.set_visual_tokens(parse_spec("random:0.5"), seed=0)
        prompts, rows, splits, states, per_row = _case(hf)
        assert any(v.kept is not None for v in rows)
        expected = hf.generate(None, prompts, max_new_tokens=6, visual=rows)
        assert hf.generate_from(per_row, [s[1] for s in splits], max_new_tokens=6) == expected
        hf.set_visual_tokens(parse_spec("prune-attn:0.5@1"), seed=0)
        assert hf.split_prompt(prompts[0]) is None
        assert "FastV" in hf.prefix_decline_reason()
    finally:
        hf.set_visual_tokens(parse_spec(""), seed=0)
    assert hf.split_prompt(prompts[0]) is not None


def test_templates_without_a_shared_prefix_fall_back(models) -> None:
    from vlmbench.modeling.hf import HFVLM
    from vlmbench.modeling.hf_families import Generic

    base = models["llava"]
    question_first = (
        "{% for m in messages %}USER: {% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
        "{% endfor %}{% for c in m['content'] %}{% if c['type'] == 'image' %}\n<image>{% endif %}{% endfor %}"
        "{% endfor %} ASSISTANT:"
    )
    processor = type(base.processor)(
        image_processor=base.processor.image_processor, tokenizer=base.tokenizer, chat_template=question_first
    )
    flipped = HFVLM(base.model, processor)
    assert flipped.format_prompt("q").startswith("USER: q")
    assert flipped.split_prompt(flipped.format_prompt("q")) is None
    assert "question before the image" in flipped.prefix_decline_reason()
    assert base.split_prompt("no image placeholder here") is None
    assert base.split_prompt(base.format_prompt("q") + "<image>") is None  # the suffix would be empty

    other = HFVLM(base.model, base.processor)
    other.family_info = Generic()  # a model type whose shared path is not verified
    assert other.split_prompt(base.format_prompt("q")) is None
    assert "not verified" in other.prefix_decline_reason()


def test_state_must_match_the_prompt(models) -> None:
    hf = models["llava"]
    from dataclasses import replace

    _, _, splits, states, _ = _case(hf, images=1)
    (state,) = states

    wrong = replace(state, ids=(*state.ids[:-1], state.ids[-1] + 1))
    with pytest.raises(RuntimeError, match="does not match"):
        hf.generate_from([wrong], [splits[0][1]], max_new_tokens=2)


def test_protocol_and_counts(models) -> None:
    from vlmbench.modeling.interface import PrefixSharing, protocol_mismatches

    for hf in models.values():
        assert isinstance(hf, PrefixSharing) and protocol_mismatches(hf, PrefixSharing) == []
    hf = models["llava"]
    assert hf.count_tokens(["Is there a dog?", ""]) == [
        len(hf.tokenizer("Is there a dog?", add_special_tokens=False)["input_ids"]),
        0,
    ]


@pytest.mark.parametrize(("family", "mode"), [("qwen2_vl", "generate"), ("llava_next", "choices")])
def test_runner_shares_prefixes_with_the_same_predictions(
    family, mode, models, tmp_path, monkeypatch, capsys
) -> None:
    """`vlmbench run` on a transformers model: prefix sharing on and off give the same predictions."""
    import json

    from vlmbench.cli import main

    monkeypatch.setenv("VLMBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model_dir = Path(models[family].model.name_or_path)
    predictions, records = {}, {}
    for sharing in ("on", "off"):
        args = ["run", "--model", f"hf:{model_dir}", "--tasks", "pope", "--synthetic-n", "2", "--batch-size", "4",
                "--answer-mode", mode, "--prefix-sharing", sharing, "--output-dir", str(tmp_path / "runs"),
                "--run-name", sharing, "--no-report"]  # fmt: skip
        assert main(args) == 0, capsys.readouterr().err[-2000:]
        run_dir = tmp_path / "runs" / sharing
        rows = [json.loads(line) for line in (run_dir / "samples" / "pope.jsonl").read_text().splitlines()]
        predictions[sharing] = {r["question_id"]: r["prediction"] for r in rows}
        records[sharing] = json.loads((run_dir / "results.json").read_text())["tasks"]["pope"][
            "prefix_sharing"
        ]
    assert len(predictions["on"]) == 36 and predictions["on"] == predictions["off"]
    assert records["on"]["path"] == "shared" and records["on"]["questions_shared"] == 36
    assert records["on"]["prefix_prefills"] == 2  # one per image
