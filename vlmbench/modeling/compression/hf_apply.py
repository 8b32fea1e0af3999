"""How the transformers adapter (`HFVLM`, modeling/hf.py) takes a compression spec.

The adapter caches each image's projected features (M, D) and the placeholder ids the processor
expanded the image to; a token operator compresses the features and shortens the run of image
tokens in the placeholder to match, so the model's own forward scatters M' features into M' image
positions. What each family takes (anything else is refused with the reason):

- every family with cached features: `tome:R`, `random:R`, `downsample:F`;
- `pool:K`: LLaVA only, whose features are one square patch grid (LLaVA-NeXT packs an unpadded grid
  with newline tokens, InternVL tiles are 2×2 after pixel shuffle, BLIP-2 has queries);
- `max-tiles:N`: InternVL (the image processor's `max_patches`); `max-pixels:P`: Qwen2-VL (`longest_edge`);
- Qwen2-VL (M-RoPE): `tome:R` and `random:R`; the kept tokens keep their positions on the full
  image grid (`prune_mrope_batch`), so `pool:K` is refused;
- `prune-attn:R@L` (FastV, `fastv_rows`) for the families whose forward takes cached features (not
  BLIP-2); the CLS-ranked `prune-attn:R` is implemented for the own presets only."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from vlmbench.errors import UserError
from vlmbench.modeling.compression import tokens as ops
from vlmbench.modeling.compression.attention import last_token_attention
from vlmbench.modeling.compression.spec import TOKEN_OPS, CompressionSpec, kept_count

_POOLABLE = ("llava",)
_MROPE = ("qwen2_vl",)


@dataclass(frozen=True)
class HFCompression:
    spec: CompressionSpec
    seed: int

    def count(self, n: int) -> int:
        """Visual tokens `compress` leaves of `n` (a square grid for pool)."""
        side = math.isqrt(n)
        grid = (side, side) if side * side == n else (1, n)  # pool is refused where n is no square grid
        return ops.count_after([grid], self.spec.token_ops)

    def compress(
        self, features: torch.Tensor, placeholder: list[int], image_token_id: int, mrope: bool
    ) -> tuple[torch.Tensor, list[int], list[int] | None]:
        """One image's features after the token operators, its placeholder, and (M-RoPE models) the kept
        tokens' original indices. Without M-RoPE the placeholder is shortened to as many image tokens;
        with it, it stays whole so that `prune_mrope_batch` can take positions from the full grid."""
        if not self.spec.token_ops:
            return features, placeholder, None
        n = features.shape[0]
        side = math.isqrt(n)
        current = ops.TokenSet.of(features, ((side, side),) if side * side == n else None)
        current = ops.apply_operators(current, self.spec.token_ops, self.seed)
        if mrope:
            assert current.origin is not None  # pool is refused for M-RoPE models
            return current.tokens, placeholder, [int(i) for i in current.origin.tolist()]
        return current.tokens, shorten_placeholder(placeholder, image_token_id, current.tokens.shape[0]), None


def configure(model: Any, spec: CompressionSpec, seed: int = 0) -> HFCompression | None:
    """Check that the adapter `model` can take `spec`; apply its budgets to the image processor."""
    if not spec:
        return None
    family = model.family_info.name or model.model_type
    for op in (op for op in spec.operators if op.name in TOKEN_OPS):
        if model.path == "pixels":
            raise UserError(
                f"--visual-tokens {op.text}: this {family} model's forward takes no cached image features, so its "
                "visual tokens cannot be compressed; only downsample:F applies"
            )
        if op.name == "prune-attn" and op.layer is None:
            raise UserError(
                f"--visual-tokens {op.text}: CLS-ranked pruning is implemented for vlmbench's own presets only, not for "
                "transformers models; give an LLM layer (prune-attn:R@L, FastV) or use tome:R / random:R"
            )
        if op.in_llm and (model.path != "mm" or _language_layers(model.model) is None):
            raise UserError(
                f"--visual-tokens {op.text}: FastV needs a transformers model whose forward takes cached image features "
                f"and whose language model has `layers`; this {family} model has not; use tome:R or random:R"
            )
        if op.in_llm and (op.layer or 0) > len(_language_layers(model.model) or ()):
            raise UserError(
                f"--visual-tokens {op.text}: the language model has {len(_language_layers(model.model) or ())} layers; "
                "give L from 1 to that"
            )
        if op.name == "pool" and family in _MROPE:
            raise UserError(
                f"--visual-tokens {op.text}: a pooled token of a transformers {family} model has no M-RoPE position of "
                "its own grid; use tome:R or random:R (kept tokens keep their positions)"
            )
        if op.name == "pool" and family not in _POOLABLE:
            raise UserError(
                f"--visual-tokens {op.text}: the features of transformers {family} models are not one 2-D grid "
                "(pool is implemented for llava); use tome:R or random:R"
            )
    image_processor = model.processor.image_processor
    for op in spec.image_ops:
        if op.name == "max-tiles":
            if family != "internvl":
                raise UserError(f"--visual-tokens {op.text}: max-tiles is implemented for transformers internvl models, not {family}")
            image_processor.max_patches = int(op.value)
            image_processor.min_patches = min(int(getattr(image_processor, "min_patches", 1)), int(op.value))
        elif op.name == "max-pixels":
            if family != "qwen2_vl":
                raise UserError(f"--visual-tokens {op.text}: max-pixels applies to native-resolution (qwen2_vl) models, not {family}")
            _set_max_pixels(image_processor, int(op.value))
    model._tokens_by_size.clear()
    return HFCompression(spec, seed)


def fastv_rows(model: Any, prompts: list[str], rows: list[list[Any]]) -> list[list[Any]]:
    """FastV for the adapter: each image keeps the fraction R of its tokens that the last prompt token
    attends to most at language-model layer L (a probe of L layers on the full prompt, eager attention).

    Returns new visual objects (the cached ones are left alone) holding the kept features and their
    indices in the placeholder (`kept`), so `prune_batch` drops the others and keeps the positions."""
    from dataclasses import replace

    op = model.compression.spec.llm_op
    batch = model._batch(prompts, rows)
    flat = [v for row in rows for v in row]
    inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, **batch.extra, **model._image_kwargs(flat)}
    attention = last_token_attention(model.model, _language_layers(model.model), op.layer or 1, **inputs)
    out = []
    for r, row in enumerate(rows):
        columns = (batch.input_ids[r] == model.image_token_id).nonzero().squeeze(-1)
        start, pruned = 0, []
        for visual in row:
            n = visual.num_tokens
            scores = attention[r, columns[start : start + n]].cpu()
            top = ops.top_indices(scores, kept_count(n, op.value))
            base = visual.kept if visual.kept is not None else list(range(n))
            pruned.append(replace(visual, features=visual.features[top.to(visual.features.device)], num_tokens=len(top),
                                  kept=[base[i] for i in top.tolist()]))
            start += n
        out.append(pruned)
    return out


def _language_layers(model: Any) -> Any:
    """The decoder layers of a transformers VLM's language model (None when it has no `layers`)."""
    inner = getattr(model, "model", model)
    language = getattr(inner, "language_model", None)
    return getattr(language, "layers", None)


def prune_batch(model: Any, batch: Any, rows: list[list[Any]]) -> None:
    """Drop the image tokens an operator did not keep from a laid-out batch; the rest keep their positions.

    `batch` holds each image's placeholder (Qwen2-VL: the full one); positions come from the full
    layout — transformers' `get_rope_index` for M-RoPE, whose (temporal, row, column) positions lie
    on the full image grid, else the 1-D count of real tokens; the image tokens not in a visual
    object's `kept` are removed, the rows are left-padded again and the positions go to the model as
    `position_ids` (generation continues from the last one + 1)."""
    types = batch.extra.get("mm_token_type_ids")
    if model._mrope:
        grids = torch.cat([v.prepared.inputs["image_grid_thw"] for row in rows for v in row]).to(batch.input_ids.device)
        positions, _ = getattr(model.model, "model", model.model).get_rope_index(
            batch.input_ids, mm_token_type_ids=types, image_grid_thw=grids, attention_mask=batch.attention_mask
        )
    else:
        positions = (batch.attention_mask.long().cumsum(-1) - 1).clamp(min=0)[None]
    keep = batch.attention_mask.bool().clone()
    for r, row in enumerate(rows):
        columns = (batch.input_ids[r] == model.image_token_id).nonzero().squeeze(-1)
        start = 0
        for visual in row:
            n = sum(1 for t in visual.prepared.placeholder_ids if t == model.image_token_id)
            if visual.kept is not None:
                drop = torch.ones(n, dtype=torch.bool)
                drop[visual.kept] = False
                keep[r, columns[start : start + n][drop.to(columns.device)]] = False
            start += n
    width = int(keep.sum(-1).max())
    batch_size = keep.shape[0]
    input_ids = batch.input_ids.new_full((batch_size, width), model._pad_id)
    mask = batch.attention_mask.new_zeros((batch_size, width))
    new_types = types.new_zeros((batch_size, width)) if types is not None else None
    new_positions = positions.new_zeros((positions.shape[0], batch_size, width))
    for r in range(batch_size):
        cols = keep[r].nonzero().squeeze(-1)
        lo = width - cols.shape[0]
        input_ids[r, lo:] = batch.input_ids[r, cols]
        mask[r, lo:] = 1
        if new_types is not None and types is not None:
            new_types[r, lo:] = types[r, cols]
        new_positions[:, r, lo:] = positions[:, r, cols]
    batch.input_ids, batch.attention_mask = input_ids, mask
    if new_types is not None:
        batch.extra["mm_token_type_ids"] = new_types
    batch.extra["position_ids"] = new_positions if model._mrope else new_positions[0]


def shorten_placeholder(placeholder: list[int], image_token_id: int, count: int) -> list[int]:
    """`placeholder` with its image tokens (one contiguous run) replaced by `count` of them."""
    positions = [i for i, t in enumerate(placeholder) if t == image_token_id]
    if not positions:
        return placeholder
    first, last = positions[0], positions[-1]
    if last - first + 1 != len(positions):
        raise ValueError("the image placeholder's image tokens are not contiguous; cannot compress them")
    return placeholder[:first] + [image_token_id] * count + placeholder[last + 1 :]


def _set_max_pixels(image_processor: Any, pixels: int) -> None:
    """Qwen2-VL's pixel budget is `size.longest_edge` (`shortest_edge` the floor, lowered to it when above)."""
    from dataclasses import replace

    from vlmbench.modeling.hf_families import as_dict

    size = image_processor.size
    floor = min(int(as_dict(size).get("shortest_edge") or pixels), pixels)
    if isinstance(size, dict):
        image_processor.size = {**size, "longest_edge": pixels, "shortest_edge": floor}
    else:
        image_processor.size = replace(size, longest_edge=pixels, shortest_edge=floor)


__all__ = ["HFCompression", "configure", "fastv_rows", "prune_batch", "shorten_placeholder"]
