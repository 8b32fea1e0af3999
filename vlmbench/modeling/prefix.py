"""Prefix KV sharing for vlmbench's own `VLM`: one prefill of the image prefix, many question suffixes.

A prompt `<s><|user|><image>\\nQuestion<|assistant|>` splits after its last `<image>` placeholder.
`prefill_states` runs the LLM over the prefix (visual tokens spliced in, or — Flamingo style — the
placeholder kept as a token with the cross-attention layers attending to the images) and keeps each
prefix's key/value tensors, one (H_kv, P, d) pair per layer, as a `PrefixState`. `SuffixBatch` then
lays a batch of suffixes out against those states:

    cache   [pad .. pad | prefix_i (P_i) ][ pad .. pad | suffix_i (S_i) ]     mask 0 on every pad
    ids               positions 0..P_i-1            positions P_i..P_i+S_i-1

so each real token sees exactly the keys and positions it sees in the unshared, left-padded
sequence; the answers equal the unshared path's up to float rounding. The held tensors are only
read: the batch's cache is a fresh `DynamicCache` built from copies.

Prefixes of different lengths (dynamic tiles, native resolution) are prefilled in groups of equal
length, so no padding enters a prefix; in a suffix batch shorter prefixes are left-padded (masked).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from vlmbench.modeling.inputs import SampleVisual, images_of
from vlmbench.modeling.tokenizer import IMAGE_TOKEN

if TYPE_CHECKING:
    from vlmbench.modeling.vlm import VLM


@dataclass(frozen=True, eq=False)
class PrefixState:
    """One prefix's KV cache (batch of one, no padding) and what its questions need besides."""

    keys: tuple[torch.Tensor, ...]  # per layer (H_kv, P, d)
    values: tuple[torch.Tensor, ...]  # per layer (H_kv, P, d)
    visual: SampleVisual | None  # the images, for cross-attention models (None for inline ones)
    llm_visual_tokens: int  # visual tokens in the LLM's input (inline) or attended to (cross-attention)

    @property
    def tokens(self) -> int:
        """Prefix positions prefilled (text tokens plus spliced visual tokens)."""
        return int(self.keys[0].shape[1])

    @property
    def nbytes(self) -> int:
        """Bytes this state holds (the cross-attention images too: they live as long as the state)."""
        held = sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))
        if self.visual is not None:
            held += sum(v.numel() * v.element_size() for v in images_of(self.visual))
        return held


def decline_reason(model: VLM) -> str | None:
    """Why `model`'s current settings keep every prompt on the unshared path (None: they do not)."""
    compression = model.compression
    if compression is not None and compression.spec.llm_op is not None:
        return f"--visual-tokens {compression.spec.llm_op.text} prunes inside the LLM, after the prefix"
    return None


def plain_dynamic_cache(llm: torch.nn.Module) -> bool:
    """True when the LLM's cache is one full-attention `DynamicLayer` per layer: keys/values that
    can be copied and concatenated along the sequence axis without further bookkeeping."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    layers = DynamicCache(config=llm.config).layers
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def split_at_last_image(tokenizer: Any, prompt: str) -> tuple[str, str] | None:
    """(prefix through the last `<image>`, the rest), or None where that is no clean token boundary:
    no image, nothing after it, or a tokenization of prefix and suffix apart that differs from the
    prompt's own (so the shared path always sees the unshared path's tokens)."""
    cut = prompt.rfind(IMAGE_TOKEN)
    if cut < 0:
        return None
    prefix, suffix = prompt[: cut + len(IMAGE_TOKEN)], prompt[cut + len(IMAGE_TOKEN) :]
    whole, head, tail = (
        tokenizer(t, add_special_tokens=False)["input_ids"] for t in (prompt, prefix, suffix)
    )
    if not tail or head + tail != whole:
        return None
    return prefix, suffix


def logits_kwargs(llm: torch.nn.Module, keep: int) -> dict[str, int]:
    """`logits_to_keep=keep` where the LLM's forward takes it (the LM head then runs on `keep` positions)."""
    return {"logits_to_keep": keep} if "logits_to_keep" in inspect.signature(llm.forward).parameters else {}


@torch.no_grad()
def prefill_states(
    model: VLM, prefixes: list[str], visual: Sequence[SampleVisual], cache_arg: str
) -> list[PrefixState]:
    """One `PrefixState` per prefix; prefixes of equal length share one LLM call."""
    inputs = [model.build_inputs([p], [v]) for p, v in zip(prefixes, visual, strict=True)]
    groups: dict[int, list[int]] = {}
    for index, row in enumerate(inputs):
        groups.setdefault(int(row["inputs_embeds"].shape[1]), []).append(index)
    cross = bool(model.config.cross_attention_every)
    states: list[PrefixState | None] = [None] * len(prefixes)
    for members in groups.values():
        batch = {
            k: torch.cat([inputs[i][k] for i in members])
            for k in ("inputs_embeds", "attention_mask", "position_ids")
        }
        group_visual = [visual[i] for i in members]
        with model.cross_attending(group_visual):
            out = model.llm(**batch, use_cache=True, **logits_kwargs(model.llm, 1))
        cache = getattr(out, cache_arg)
        for row, index in enumerate(members):
            counted = sum(v.shape[0] for v in images_of(visual[index]))
            states[index] = PrefixState(
                keys=tuple(layer.keys[row].clone() for layer in cache.layers),
                values=tuple(layer.values[row].clone() for layer in cache.layers),
                visual=visual[index] if cross else None,
                llm_visual_tokens=int(counted),
            )
    return [s for s in states if s is not None]


@dataclass
class SuffixBatch:
    """The LLM inputs of suffix rows continuing from their prefix states (see the module docstring)."""

    cache: Any  # a fresh DynamicCache: every row's prefix, left-padded to the longest
    inputs_embeds: torch.Tensor  # (B, S, D) suffix embeddings, left-padded
    attention_mask: torch.Tensor  # (B, P + S): 0 on the padding before each prefix and each suffix
    position_ids: torch.Tensor  # (B, S): P_i, P_i + 1, ... on real suffix tokens
    visual: list[SampleVisual] | None  # per row, for cross-attention models

    @classmethod
    def build(cls, model: VLM, states: Sequence[PrefixState], rows: Sequence[Sequence[int]]) -> SuffixBatch:
        """`rows[i]`: the token ids following `states[i]`'s prefix (none may be empty)."""
        from transformers import DynamicCache

        if len(states) != len(rows) or not rows:
            raise ValueError(f"{len(states)} prefix states for {len(rows)} suffix rows")
        if any(len(r) == 0 for r in rows):
            raise ValueError(
                "an empty suffix: the first answer token needs at least one suffix token to read from"
            )
        device = model.device
        distinct: dict[int, int] = {}
        for state in states:
            distinct.setdefault(id(state), len(distinct))
        unique = list({id(s): s for s in states}.values())
        pick = torch.tensor([distinct[id(s)] for s in states], device=device)
        prefix_len = max(s.tokens for s in unique)
        layers = []
        for layer in range(len(unique[0].keys)):
            keys = _left_padded([s.keys[layer] for s in unique], prefix_len).index_select(0, pick)
            values = _left_padded([s.values[layer] for s in unique], prefix_len).index_select(0, pick)
            layers.append((keys, values))
        cache = DynamicCache(ddp_cache_data=layers)

        batch, suffix_len = len(rows), max(len(r) for r in rows)
        embed = model.llm.get_input_embeddings()
        embeds = embed.weight.new_zeros(batch, suffix_len, embed.weight.shape[1])
        mask = torch.zeros(batch, prefix_len + suffix_len, dtype=torch.long, device=device)
        positions = torch.zeros(batch, suffix_len, dtype=torch.long, device=device)
        for i, (state, ids) in enumerate(zip(states, rows, strict=True)):
            n = len(ids)
            embeds[i, suffix_len - n :] = embed(torch.tensor(list(ids), device=device))
            mask[i, prefix_len - state.tokens : prefix_len] = 1
            mask[i, prefix_len + suffix_len - n :] = 1
            positions[i] = state.tokens  # padding positions: masked out, any value will do
            positions[i, suffix_len - n :] = state.tokens + torch.arange(n, device=device)
        visual = [s.visual for s in states] if model.config.cross_attention_every else None
        return cls(cache, embeds, mask, positions, visual)

    def llm_kwargs(self, cache_arg: str) -> dict[str, Any]:
        return {
            "inputs_embeds": self.inputs_embeds,
            "attention_mask": self.attention_mask,
            "position_ids": self.position_ids,
            cache_arg: self.cache,
        }


def _left_padded(tensors: Sequence[torch.Tensor], length: int) -> torch.Tensor:
    """(H, P_i, d) tensors → (N, H, length, d), each right-aligned, zeros before it (a new tensor)."""
    first = tensors[0]
    out = first.new_zeros(len(tensors), first.shape[0], length, first.shape[2])
    for i, t in enumerate(tensors):
        out[i, :, length - t.shape[1] :] = t
    return out


def choice_logprobs(logits: torch.Tensor, targets: Sequence[Sequence[int]]) -> torch.Tensor:
    """Summed log-probability of each row's `targets` (its last len(targets[r]) input tokens).

    logits (R, K, V): the last K positions of each row, K > every target length."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    keep = logits.shape[1]
    out = []
    for r, ids in enumerate(targets):
        n = len(ids)
        rows = logprobs[r, keep - n - 1 : keep - 1]  # position t predicts token t + 1
        out.append(rows.gather(-1, torch.tensor(list(ids), device=logits.device).unsqueeze(-1)).sum())
    return torch.stack(out)


__all__ = [
    "PrefixState",
    "SuffixBatch",
    "choice_logprobs",
    "decline_reason",
    "logits_kwargs",
    "plain_dynamic_cache",
    "prefill_states",
    "split_at_last_image",
]
