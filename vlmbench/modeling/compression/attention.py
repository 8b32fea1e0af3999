"""The attention maps attention pruning ranks visual tokens by.

- `capture_cls_attention`: PruMerge-style — how much the vision encoder's CLS token attends to each
  patch in the encoder's last computed layer (the one whose output the projector reads), averaged
  over heads. It is read during the ordinary encoder pass (a pre-hook recomputes only the CLS query
  row), so it costs one (1 × N) attention row per tile.
- `last_token_attention`: FastV (Chen et al. 2024) — how much the last prompt token attends to each
  position in LLM decoder layer L (1 = the first), averaged over heads. The LLM runs its first L
  layers on the full sequence with transformers' eager attention (the only kernel that returns the
  weights) and is stopped right after layer L's attention, so the probe costs L layers of the full
  prompt on top of the pruned prefill."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


class _Stop(Exception):
    """Raised by the probe hook once layer L's attention is read: the rest of the LLM is not run."""


@contextmanager
def capture_cls_attention(vit: nn.Module) -> Iterator[list[torch.Tensor]]:
    """While active, every `vit` forward appends a (B, N) tensor: CLS → patch attention (CLS column dropped)."""
    captured: list[torch.Tensor] = []
    attn = vit.blocks[-1].attn

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        x = args[0] if args else kwargs["x"]  # (B, 1 + N, D), already normed
        b, n, _ = x.shape
        h, dh = module.num_heads, module.head_dim
        q = module.q_proj(x[:, :1]).view(b, 1, h, dh).transpose(1, 2)  # (B, H, 1, Dh)
        k = module.k_proj(x).view(b, n, h, dh).transpose(1, 2)  # (B, H, 1+N, Dh)
        weights = torch.softmax((q @ k.transpose(-1, -2)).float() / math.sqrt(dh), dim=-1)  # (B, H, 1, 1+N)
        captured.append(weights.mean(1)[:, 0, 1:])

    handle = attn.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield captured
    finally:
        handle.remove()


def last_token_attention(llm: nn.Module, layers: nn.ModuleList, layer: int, **inputs: Any) -> torch.Tensor:
    """(B, L) attention of each row's last position at decoder layer `layer` (1-based), head-averaged.

    `inputs` go to `llm`'s forward (inputs_embeds / input_ids, attention_mask, position ids …)."""
    captured: dict[str, torch.Tensor] = {}

    def hook(module: nn.Module, args: tuple, output: Any) -> None:
        weights = output[1] if isinstance(output, tuple) else None
        if weights is None:
            raise RuntimeError("the LLM's eager attention returned no weights; prune-attn@L cannot rank tokens")
        captured["weights"] = weights[:, :, -1, :].float().mean(1)
        raise _Stop

    handle = layers[layer - 1].self_attn.register_forward_hook(hook)
    try:
        with eager_attention(llm):
            llm(**inputs, use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()
    if "weights" not in captured:
        raise RuntimeError(f"LLM layer {layer} was not reached; prune-attn@L could not read its attention")
    return captured["weights"]


@contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """transformers' eager attention kernel inside the block (it alone returns attention weights)."""
    previous = getattr(model.config, "_attn_implementation", None)
    switch = previous not in (None, "eager")
    if switch:
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            model.set_attn_implementation(previous)


__all__ = ["capture_cls_attention", "eager_attention", "last_token_attention"]
