"""vlmbench checkpoints ↔ transformers layouts, through explicit weight-key tables.

LLaVA (`LlavaForConditionalGeneration`) — exact, both ways, for `llava-1.5-style` designs (CLIP-style
ViT + 2-layer GELU MLP + Llama/Qwen2 LM + fixed resolution):

    vision.<ViT key>            ↔ model.vision_tower.<CLIP key>        (table: `vision.hf_vision_key_map`)
    projector.mlp.0 / .mlp.2    ↔ model.multi_modal_projector.linear_1 / .linear_2
    llm.model.<key>             ↔ model.language_model.<key>
    llm.lm_head.weight          ↔ lm_head.weight

What makes the logits identical (same pixels, same prompt):
- `vision_feature_layer` = our `feature_layer` (both index [embeddings, layer_1 … layer_L]) and
  `vision_feature_select_strategy="default"` (drop CLS), i.e. LLaVA-1.5's -2 / default.
- Our ViT never builds the blocks after the selected layer; CLIP needs `num_hidden_layers` of them, so
  they are exported as exact identity blocks (LayerNorms 1/0, every other weight 0: both residual
  branches add 0). CLIP's `post_layernorm` (pooled CLS only, unused by LLaVA) is exported as 1/0.
- LLaVA writes one `<image>` token per visual token; the exported `LlavaProcessor` expands our single
  placeholder (`num_additional_image_tokens=1`, strategy default), so the LLM sees the same sequence.
- Preprocessing: `LlavaImageProcessorPil` with `do_pad` (our letterbox: square canvas in the mean
  colour, then bicubic resize) or an exact S×S resize (stretch); pixels agree to float rounding.

InternVL (`InternVLForConditionalGeneration`) — partial: the pixel-shuffle projector (LayerNorm + MLP
= InternVL's `multi_modal_projector`, same channel order) and the LLM map exactly
(`internvl_key_map`), but InternViT is not our CLIP-style ViT (no LayerNorm after the patch
embedding, layer-scale on both residual branches, its own attention layout), and transformers'
`InternVLConfig` always rebuilds an InternViT for `vision_config`, so a full export is refused.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlmbench.errors import UserError
from vlmbench.modeling.config import LLMConfig, ProjectorConfig, ResolutionConfig, VisionConfig, VLMConfig
from vlmbench.modeling.tokenizer import IMAGE_TOKEN
from vlmbench.modeling.vision import hf_vision_key_map, resolve_feature_layer

log = logging.getLogger(__name__)

FORMATS = ("llava",)

# Our chat template, extended to the content lists processors pass (`{"type": "image"}` items), so the
# exported processor renders exactly the prompt `vlmbench.modeling.tokenizer.format_prompt` builds.
EXPORT_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}<|user|>{% else %}<|assistant|>{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] != 'user' %}{{ eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

_PROJECTOR_MLP = {"mlp.0": "linear_1", "mlp.2": "linear_2"}


# ---- key tables ------------------------------------------------------------------------------
def llava_key_map(config: VLMConfig, llm_keys: list[str], vision_prefix: str = "model.vision_tower.") -> dict[str, str]:
    """Our state-dict key → LlavaForConditionalGeneration's (in-memory names) for every weight we have."""
    table: dict[str, str] = {}
    vision_table, _ = hf_vision_key_map(config.vision)
    for theirs, ours in vision_table.items():
        table[f"vision.{ours}"] = f"{vision_prefix}{theirs}"
    for ours, theirs in _PROJECTOR_MLP.items():
        for param in ("weight", "bias"):
            table[f"projector.{ours}.{param}"] = f"model.multi_modal_projector.{theirs}.{param}"
    table.update(_llm_key_map(llm_keys))
    return table


def internvl_key_map(llm_keys: list[str]) -> dict[str, str]:
    """Our key → InternVLForConditionalGeneration's for the parts that match: projector and LLM."""
    table = {f"projector.norm.{p}": f"model.multi_modal_projector.layer_norm.{p}" for p in ("weight", "bias")}
    for ours, theirs in _PROJECTOR_MLP.items():
        for param in ("weight", "bias"):
            table[f"projector.{ours}.{param}"] = f"model.multi_modal_projector.{theirs}.{param}"
    table.update(_llm_key_map(llm_keys))
    return table


def _llm_key_map(llm_keys: list[str]) -> dict[str, str]:
    """`llm.model.X` → `model.language_model.X`, `llm.lm_head.weight` → `lm_head.weight`."""
    table = {}
    for key in llm_keys:
        if key.startswith("model."):
            table[f"llm.{key}"] = "model.language_model." + key[len("model.") :]
        elif key.startswith("lm_head."):
            table[f"llm.{key}"] = key
        else:
            raise UserError(f"LLM weight {key} has no counterpart in the transformers VLM layout")
    return table


# ---- export ----------------------------------------------------------------------------------
def _check_llava_compatible(config: VLMConfig) -> None:
    v, p, r = config.vision, config.projector, config.resolution
    problems = []
    if v.kind != "vit" or v.style != "clip" or not v.use_cls:
        problems.append(f"vision must be a CLIP-style ViT with CLS (got kind={v.kind}, style={v.style}, use_cls={v.use_cls})")
    if p.kind != "mlp":
        problems.append(f"projector must be 'mlp' (LLaVA's linear_1/GELU/linear_2), got '{p.kind}'")
    if r.name != "fixed":
        problems.append(f"resolution must be 'fixed' (LLaVA-1.5), got '{r.name}'")
    if config.cross_attention_every:
        problems.append("gated cross-attention layers have no LLaVA counterpart")
    if config.llm.arch not in ("llama", "qwen2"):
        problems.append(f"llm.arch '{config.llm.arch}' is not llama/qwen2")
    if problems:
        raise UserError(
            f"model '{config.name}' cannot be exported as LLaVA: " + "; ".join(problems)
            + ". Designs that export: llava-1.5-style (see docs/hf-models.md)"
        )


def build_llava(model: Any) -> tuple[nn.Module, Any]:
    """An in-memory (LlavaForConditionalGeneration, LlavaProcessor) with our weights and tokenizer."""
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    config: VLMConfig = model.config
    _check_llava_compatible(config)
    v = config.vision
    image_token_id = model.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    text_config = copy.deepcopy(model.llm.config)
    tied = bool(getattr(text_config, "tie_word_embeddings", False))
    vision_config = CLIPVisionConfig(
        hidden_size=v.hidden_size,
        intermediate_size=v.intermediate_size,
        num_hidden_layers=v.num_layers,
        num_attention_heads=v.num_heads,
        image_size=v.image_size,
        patch_size=v.patch_size,
        hidden_act=v.hidden_act,
        layer_norm_eps=v.layer_norm_eps,
        projection_dim=v.hidden_size,
    )
    grid = config.resolution.size // v.patch_size
    llava_config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=image_token_id,
        vision_feature_layer=v.feature_layer,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        multimodal_projector_bias=True,
        image_seq_length=grid * grid,
        tie_word_embeddings=tied,
    )
    hf_model = LlavaForConditionalGeneration(llava_config)
    theirs_keys = set(hf_model.state_dict())
    prefix = "model.vision_tower.vision_model." if any(k.startswith("model.vision_tower.vision_model.") for k in theirs_keys) else "model.vision_tower."
    ours = {k: t.detach().clone() for k, t in model.state_dict().items()}
    table = llava_key_map(config, [k[len("llm.") :] for k in ours if k.startswith("llm.")], prefix)
    state = {theirs: ours[key] for key, theirs in table.items()}
    state.update(_identity_vision_tail(v, prefix, reference=ours["vision.pos_embed"]))
    missing = sorted(theirs_keys - set(state))
    unexpected = sorted(set(state) - theirs_keys)
    if missing or unexpected or set(ours) - set(table):
        raise UserError(
            f"LLaVA export key mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"unmapped {sorted(set(ours) - set(table))[:5]}"
        )
    hf_model.load_state_dict(state, strict=True)
    hf_model.eval()
    return hf_model, _llava_processor(model, image_token_id)


def _identity_vision_tail(v: VisionConfig, prefix: str, reference: torch.Tensor) -> dict[str, torch.Tensor]:
    """CLIP blocks after the selected layer as exact identities, plus a neutral post_layernorm."""
    d, inner = v.hidden_size, v.intermediate_size
    like = {"dtype": reference.dtype, "device": reference.device}
    out: dict[str, torch.Tensor] = {
        f"{prefix}post_layernorm.weight": torch.ones(d, **like),
        f"{prefix}post_layernorm.bias": torch.zeros(d, **like),
    }
    shapes = {
        "self_attn.q_proj": (d, d),
        "self_attn.k_proj": (d, d),
        "self_attn.v_proj": (d, d),
        "self_attn.out_proj": (d, d),
        "mlp.fc1": (inner, d),
        "mlp.fc2": (d, inner),
    }
    for i in range(resolve_feature_layer(v.feature_layer, v.num_layers), v.num_layers):
        base = f"{prefix}encoder.layers.{i}."
        for norm in ("layer_norm1", "layer_norm2"):
            out[f"{base}{norm}.weight"] = torch.ones(d, **like)
            out[f"{base}{norm}.bias"] = torch.zeros(d, **like)
        for name, shape in shapes.items():
            out[f"{base}{name}.weight"] = torch.zeros(shape, **like)
            out[f"{base}{name}.bias"] = torch.zeros(shape[0], **like)
    return out


def _llava_processor(model: Any, image_token_id: int) -> Any:
    from transformers import LlavaImageProcessorPil, LlavaProcessor

    config: VLMConfig = model.config
    v, r = config.vision, config.resolution
    normalise = {"image_mean": list(v.image_mean), "image_std": list(v.image_std)}
    if r.letterbox:
        image_processor = LlavaImageProcessorPil(
            size={"shortest_edge": r.size}, crop_size={"height": r.size, "width": r.size}, do_pad=True,
            do_center_crop=True, **normalise,
        )
    else:
        image_processor = LlavaImageProcessorPil(
            size={"height": r.size, "width": r.size}, do_center_crop=False, do_pad=False, **normalise,
        )
    tokenizer = copy.deepcopy(model.tokenizer)
    tokenizer.chat_template = EXPORT_CHAT_TEMPLATE
    tokenizer.padding_side = "left"
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=v.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token=IMAGE_TOKEN,
        chat_template=EXPORT_CHAT_TEMPLATE,
    )


def export_llava(model: Any, out_dir: str | Path) -> Path:
    """Write a vlmbench VLM (or checkpoint directory) as a transformers LLaVA model directory
    (config.json, model.safetensors, processor + tokenizer files); load it with `hf:<out_dir>`."""
    from vlmbench.modeling.vlm import VLM

    if isinstance(model, (str, Path)):
        model = VLM.load(model)
    hf_model, processor = build_llava(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf_model.generation_config.pad_token_id = model.tokenizer.pad_token_id
    hf_model.generation_config.eos_token_id = model.tokenizer.eos_token_id
    hf_model.generation_config.bos_token_id = model.tokenizer.bos_token_id
    hf_model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return out


def export_model(model: Any, out_dir: str | Path, fmt: str = "llava") -> Path:
    """Export in a named transformers layout (`FORMATS`); InternVL is refused with the reason."""
    if fmt == "llava":
        return export_llava(model, out_dir)
    if fmt == "internvl":
        raise UserError(
            "--format internvl: only the projector and LLM of internvl-style map onto transformers' InternVL; "
            "InternViT differs from vlmbench's CLIP-style ViT (no pre-LayerNorm, layer-scale) and InternVLConfig "
            "cannot hold another vision tower, so a faithful export is impossible (see docs/hf-models.md)"
        )
    raise UserError(f"--format {fmt} is unknown; valid formats: {', '.join(FORMATS)}")


# ---- import ----------------------------------------------------------------------------------
def import_llava(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> Any:
    """A transformers LLaVA directory (CLIP tower, default strategy) as a vlmbench `VLM`."""
    from transformers import AutoModelForCausalLM, LlavaForConditionalGeneration

    from vlmbench.modeling.hf import load_processor
    from vlmbench.modeling.tokenizer import load_tokenizer
    from vlmbench.modeling.vlm import VLM

    root = Path(path)
    if not (root / "config.json").is_file():
        raise UserError(f"{root} is not a transformers model directory (no config.json)")
    hf_model = LlavaForConditionalGeneration.from_pretrained(str(root), local_files_only=True, use_safetensors=True)
    hc = hf_model.config
    vc, tc = hc.vision_config, hc.text_config
    if vc.model_type != "clip_vision_model" or hc.vision_feature_select_strategy != "default":
        raise UserError(
            f"{root}: only LLaVA models with a CLIP vision tower and vision_feature_select_strategy 'default' "
            f"import (got {vc.model_type}, {hc.vision_feature_select_strategy})"
        )
    if not isinstance(hc.vision_feature_layer, int) or hc.projector_hidden_act != "gelu" or not hc.multimodal_projector_bias:
        raise UserError(f"{root}: LLaVA projector/feature-layer settings have no vlmbench counterpart")
    if tc.model_type not in ("llama", "qwen2"):
        raise UserError(f"{root}: language model '{tc.model_type}' is not llama/qwen2")
    processor = load_processor(root)
    ip = processor.image_processor
    crop = getattr(ip, "crop_size", None) or getattr(ip, "size", None)
    size = int(crop["height"] if isinstance(crop, dict) else crop.height)
    vision = VisionConfig(
        kind="vit", style="clip", image_size=_int(vc.image_size), patch_size=_int(vc.patch_size),
        hidden_size=vc.hidden_size, num_layers=vc.num_hidden_layers, num_heads=vc.num_attention_heads,
        intermediate_size=vc.intermediate_size, use_cls=True, feature_layer=hc.vision_feature_layer,
        hidden_act=vc.hidden_act, layer_norm_eps=vc.layer_norm_eps,
        image_mean=tuple(float(x) for x in ip.image_mean), image_std=tuple(float(x) for x in ip.image_std),
    )
    llm_cfg = LLMConfig(
        arch=tc.model_type, hidden_size=tc.hidden_size, num_layers=tc.num_hidden_layers,
        num_heads=tc.num_attention_heads, num_kv_heads=tc.num_key_value_heads or tc.num_attention_heads,
        intermediate_size=tc.intermediate_size, max_position_embeddings=tc.max_position_embeddings,
        rope_theta=float((getattr(tc, "rope_parameters", None) or {}).get("rope_theta", 10000.0)),
        vocab_size=tc.vocab_size,
    )
    config = VLMConfig(
        name=root.name, vision=vision, projector=ProjectorConfig(kind="mlp"),
        resolution=ResolutionConfig(name="fixed", size=size, letterbox=bool(getattr(ip, "do_pad", False))),
        llm=llm_cfg, description=f"imported from transformers LLaVA at {root}",
    )
    config.validate(str(root))
    tokenizer = load_tokenizer(root)
    llm = AutoModelForCausalLM.from_config(copy.deepcopy(tc))
    model = VLM(config, tokenizer, llm=llm, load_pretrained=False)
    theirs = hf_model.state_dict()
    prefix = "model.vision_tower.vision_model." if any(k.startswith("model.vision_tower.vision_model.") for k in theirs) else "model.vision_tower."
    ours_keys = list(model.state_dict())
    table = llava_key_map(config, [k[len("llm.") :] for k in ours_keys if k.startswith("llm.")], prefix)
    missing = [k for k in ours_keys if k not in table or table[k] not in theirs]
    if missing:
        raise UserError(f"{root}: weights missing for {missing[:5]}")
    model.load_state_dict({k: theirs[table[k]] for k in ours_keys}, strict=True)
    model.to(device=device, dtype=dtype)
    return model.eval()


def _int(value: Any) -> int:
    return int(value[0] if isinstance(value, (list, tuple)) else value)


__all__ = [
    "EXPORT_CHAT_TEMPLATE",
    "FORMATS",
    "build_llava",
    "export_llava",
    "export_model",
    "import_llava",
    "internvl_key_map",
    "llava_key_map",
]
