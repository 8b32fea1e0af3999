"""`--visual-tokens` on transformers models (tiny random LLaVA, LLaVA-NeXT, Qwen2-VL, InternVL built
from configs as in test_hf.py): token counts, identity at ratio 1, refusals with their reason."""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers import make_image
from tests.test_hf import _one_thread, build_tiny_hf  # noqa: F401 - the autouse fixture applies here too
from vlmbench.errors import UserError
from vlmbench.modeling.compression.spec import parse_spec

FAMILIES = ("llava", "llava_next", "qwen2_vl", "internvl")


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_compression")
    return {family: build_tiny_hf(family, root / family) for family in FAMILIES}


def _load(path, spec: str | None = None):
    from vlmbench.modeling.hf import load_hf_model

    model = load_hf_model(str(path)).model
    if spec is not None:
        model.set_visual_tokens(parse_spec(spec), seed=0)
    return model


def _answer(model, image):
    visual = model.encode([model.prepare_image(image)])
    prompts = [model.format_prompt("Is there a dog?")]
    text = model.generate(None, prompts, max_new_tokens=4, visual=visual)
    scores = model.score_choices(None, prompts, ["Yes", "No"], visual=visual)
    return visual[0], text, scores


@pytest.mark.parametrize("family", ["llava", "llava_next", "internvl", "qwen2_vl"])
@pytest.mark.parametrize("spec", ["tome:0.5", "random:0.25", "pool:2"])
def test_token_counts_reach_the_llm(dirs, family: str, spec: str) -> None:
    image = make_image(70, 50)
    base, _, _ = _answer(_load(dirs[family]), image)
    if spec == "pool:2" and family != "llava":
        with pytest.raises(UserError, match="not one 2-D grid|M-RoPE"):
            _load(dirs[family], spec)
        return
    model = _load(dirs[family], spec)
    visual, _, _ = _answer(model, image)
    n = base.shape[0]
    expected = math.ceil(math.isqrt(n) / 2) ** 2 if spec == "pool:2" else max(1, math.floor(n * float(spec.split(":")[1]) + 0.5))
    assert visual.shape[0] == expected == model.visual_tokens_reference(70, 50)
    if family != "qwen2_vl":  # M-RoPE models keep the whole placeholder until the batch is laid out
        assert sum(1 for t in visual.prepared.placeholder_ids if t == model.image_token_id) == expected
    assert model.last_call is not None and model.last_call.llm_visual_tokens == (expected,)
    assert model.last_call.prefill_s > 0


@pytest.mark.parametrize("family", ["llava", "llava_next", "internvl", "qwen2_vl"])
def test_ratio_one_gives_identical_predictions(dirs, family: str) -> None:
    image = make_image(64, 48, seed=5)
    _, text, scores = _answer(_load(dirs[family]), image)
    for spec in ("tome:1", "random:1", "prune-attn:1@2") + (("pool:1",) if family == "llava" else ()):
        _, text_c, scores_c = _answer(_load(dirs[family], spec), image)
        assert text_c == text and torch.equal(scores_c, scores), spec


def test_budgets_and_downsample_change_the_processor_input(dirs) -> None:
    image = make_image(120, 90)
    full = _answer(_load(dirs["qwen2_vl"]), image)[0].shape[0]
    capped = _load(dirs["qwen2_vl"], "max-pixels:1024")
    assert _answer(capped, image)[0].shape[0] < full
    small = _load(dirs["qwen2_vl"], "downsample:0.5")
    assert small.prepare_image(image).plan.resized == _load(dirs["qwen2_vl"]).prepare_image(image.resize((60, 45))).plan.resized
    tiles = _load(dirs["internvl"], "max-tiles:1")
    assert len(tiles.prepare_image(image).plan.tile_sizes) == 1


@pytest.mark.parametrize(
    "family, spec, reason",
    [
        ("qwen2_vl", "pool:2", "M-RoPE"),
        ("llava", "prune-attn:0.5", "own presets only"),
        ("llava", "prune-attn:0.5@9", "layers"),
        ("llava", "max-pixels:1024", "native-resolution"),
        ("llava_next", "max-tiles:2", "internvl"),
    ],
)
def test_what_a_transformers_model_cannot_take_is_refused(dirs, family: str, spec: str, reason: str) -> None:
    with pytest.raises(UserError, match=reason):
        _load(dirs[family], spec)


def test_qwen2_vl_kept_tokens_keep_their_m_rope_positions(dirs) -> None:
    images = [make_image(120, 90), make_image(60, 80, seed=3)]
    full = _load(dirs["qwen2_vl"])
    pruned = _load(dirs["qwen2_vl"], "random:0.5")
    prompts = [full.format_prompt("what?"), full.format_prompt("is it a longer question?")]
    whole = full._batch(prompts, full.encode([full.prepare_image(i) for i in images]))
    grids = torch.cat([full.prepare_image(i).inputs["image_grid_thw"] for i in images])
    reference, _ = full.model.model.get_rope_index(
        whole.input_ids, mm_token_type_ids=whole.extra["mm_token_type_ids"], image_grid_thw=grids, attention_mask=whole.attention_mask
    )
    visual = pruned.encode([pruned.prepare_image(i) for i in images])
    batch = pruned._batch(prompts, visual)
    for row, v in enumerate(visual):
        image_cols = (whole.input_ids[row] == full.image_token_id).nonzero().squeeze(-1)
        kept_cols = (batch.input_ids[row] == full.image_token_id).nonzero().squeeze(-1)
        assert len(kept_cols) == len(v.kept) == 6
        assert torch.equal(batch.extra["position_ids"][:, row, kept_cols], reference[:, row, image_cols[v.kept]])
        # the text after the image keeps its positions too
        assert torch.equal(batch.extra["position_ids"][:, row, -3:], reference[:, row, -3:])
    assert pruned.generate(None, prompts, max_new_tokens=3, visual=visual)  # generation runs on the pruned layout


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_fastv_keeps_the_top_r_of_a_known_map_at_their_positions(dirs, family: str, monkeypatch) -> None:
    import vlmbench.modeling.compression.hf_apply as hf_apply

    images = [make_image(120, 90), make_image(60, 80, seed=3)]
    model = _load(dirs[family], "prune-attn:0.5@2")
    visual = model.encode([model.prepare_image(i) for i in images])
    prompts = [model.format_prompt("what?"), model.format_prompt("is it a longer question?")]
    whole = model._batch(prompts, visual)
    n = visual[0].num_tokens
    wanted = [sorted(torch.randperm(n, generator=torch.Generator().manual_seed(r))[: n // 2].tolist()) for r in range(2)]
    known = torch.zeros(whole.input_ids.shape)
    for r in range(2):
        columns = (whole.input_ids[r] == model.image_token_id).nonzero().squeeze(-1)
        known[r, columns[wanted[r]]] = 1.0
    seen = {}

    def fake(llm, layers, layer, **inputs):
        seen["layer"] = layer
        return known

    monkeypatch.setattr(hf_apply, "last_token_attention", fake)
    rows = model._llm_rows(prompts, [[v] for v in visual])
    assert seen["layer"] == 2 and [row[0].kept for row in rows] == wanted
    for r in range(2):
        assert torch.equal(rows[r][0].features, visual[r].features[wanted[r]])
    pruned = model._batch(prompts, rows)
    positions = pruned.extra["position_ids"]
    if family == "llava":
        reference = (whole.attention_mask.cumsum(-1) - 1).clamp(min=0)
        for r in range(2):
            full_cols = (whole.input_ids[r] == model.image_token_id).nonzero().squeeze(-1)[wanted[r]]
            kept_cols = (pruned.input_ids[r] == model.image_token_id).nonzero().squeeze(-1)
            assert torch.equal(positions[r, kept_cols], reference[r, full_cols])
    assert model.generate(None, prompts, max_new_tokens=3, visual=visual)
    assert model.last_call is not None and model.last_call.llm_visual_tokens == (n // 2, n // 2)


def test_fastv_probe_reads_the_language_models_layer(dirs) -> None:
    from vlmbench.modeling.compression.attention import last_token_attention
    from vlmbench.modeling.compression.hf_apply import _language_layers

    model = _load(dirs["llava"])
    visual = model.encode([model.prepare_image(make_image(64, 48))])
    batch = model._batch([model.format_prompt("what?")], visual)
    inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, **model._image_kwargs(visual)}
    got = last_token_attention(model.model, _language_layers(model.model), 2, **inputs)
    import copy

    eager = copy.deepcopy(model.model)
    eager.set_attn_implementation("eager")
    reference = eager(**inputs, output_attentions=True, use_cache=False).attentions[1][:, :, -1, :].mean(1)
    assert torch.allclose(got, reference, atol=1e-5)
