"""Prefix KV sharing for the transformers adapter (`HFVLM`): one prefill of an image prefix, many questions.

`HFVLM` implements `vlmbench.modeling.interface.PrefixSharing` by delegating here. A prompt from
`format_prompt` splits after its last image placeholder (plus the special tokens that directly follow
it, e.g. Qwen2-VL's `<|vision_end|>`); BLIP-2's query tokens always stand first, so its prefix is the
query tokens and the BOS token. `prefill` runs the model once over a batch of prefixes and keeps each
row's KV cache (padding stripped) as an `HFPrefixState`; the `*_from` calls lay a batch out as

    [pad][prefix_i KV (cached)][pad][suffix_i tokens]      attention mask 0 on both pads

and run only the suffix columns (then decode, for `generate_from`) on a fresh `DynamicCache` whose
tensors are allocated per call (copies of the states'), so a state is never written to.

Equality with the unshared path rests on giving every real token the position the unshared path gives
it: positions are computed by the same code on the unshared layout of `prefix + suffix` (transformers'
`get_rope_index` for Qwen2-VL's M-RoPE, the pruned layout of `--visual-tokens` for it, else the count
of real tokens) and carried over column by column, and generation continues from the last position + 1
as transformers' `generate` does. As a self-check, the prefix's ids and positions recomputed from the
whole prompt must equal the state's, or the call raises.

Not shared (`split_prompt` → None, `unavailable_reason` says why): model types whose positions this
module has not been checked against, `--visual-tokens` with FastV (`prune-attn:R@L` prunes inside the
LLM, per question), language models whose cache layers are not plain full-attention `DynamicLayer`s
(sliding-window, hybrid), chat templates that put the question before the image, and prompts whose
prefix does not tokenize to a prefix of the prompt's tokens.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from vlmbench.modeling.compression.stats import CallStats, FirstForward, clock

if TYPE_CHECKING:
    from vlmbench.modeling.hf import HFVLM, HFVisual

SHARED_FAMILIES = ("llava", "llava_next", "qwen2_vl", "internvl", "blip2")
"""Families whose shared path is tested equal to the unshared one (tests/test_prefix_sharing_hf.py)."""

_PROBE = "vlmbench prefix probe"


@dataclass(frozen=True)
class HFPrefixState:
    """One prefilled prefix: its text, LLM input ids, positions and per-layer KV (batch of one).

    `rows` are the prefix's visual objects without their features (their shape metadata is what the
    positions of the whole prompt are computed from)."""

    prefix: str
    ids: tuple[int, ...]
    positions: torch.Tensor  # (R, P): R = 1 (1-D positions), 3 or 4 (M-RoPE)
    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]  # (1, heads, P, head_dim) keys, values
    rows: tuple[Any, ...]
    visual_tokens: int

    @property
    def tokens(self) -> int:
        """Prefix tokens prefilled (what the runner counts as shared prefill work)."""
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        """Bytes held: the KV tensors and the positions."""
        return sum(k.nbytes + v.nbytes for k, v in self.layers) + self.positions.nbytes


@dataclass
class _Extension:
    """A batch of states extended by their suffixes, laid out as in the module docstring."""

    ids: torch.Tensor  # (B, W) prefix ids, then suffix ids
    mask: torch.Tensor  # (B, W)
    positions: torch.Tensor  # (R, B, W)
    cache: Any  # DynamicCache holding the prefix columns (W - new)
    new: int  # suffix columns (the last ones)

    def model_positions(self, columns: slice | None = None) -> torch.Tensor:
        pos = self.positions if columns is None else self.positions[..., columns]
        return pos[0] if pos.shape[0] == 1 else pos


# ---- when the prefix is shared -------------------------------------------------------------------
def static_reason(model: HFVLM) -> str | None:
    """Why this model can never share a prefix (None: it can); independent of the prompt."""
    family = model.family_info.name
    if family not in SHARED_FAMILIES:
        return f"prefix sharing is not verified for transformers model type {model.model_type!r}"
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    text_config = model.config.get_text_config(decoder=True)
    layers = getattr(DynamicCache(config=text_config), "layers", [])
    if not layers or any(type(layer) is not DynamicLayer for layer in layers):
        kinds = sorted({type(layer).__name__ for layer in layers}) or ["unknown"]
        return f"the language model's cache layers are not all full attention ({', '.join(kinds)})"
    if not _splices(model):
        probe = model.format_prompt(_PROBE)
        image_at = probe.rfind(model.image_token) if model.image_token else -1
        if image_at < 0:
            return "the prompt holds no image placeholder to split after"
        if probe.find(_PROBE) < image_at:
            return "the chat template puts the question before the image"
    return None


def _splices(model: HFVLM) -> bool:
    """BLIP-2-style: the image's query tokens stand in front of every prompt, not at a placeholder."""
    return bool(model.family_info.splices_embeddings)


def unavailable_reason(model: HFVLM) -> str | None:
    """Why `split_prompt` returns None for every prompt of this model now (None: it may split)."""
    if model.compression is not None and model.compression.spec.llm_op is not None:
        return (
            f"--visual-tokens {model.compression.spec.llm_op.text}: FastV prunes visual tokens inside the LLM "
            "for each question, so the image prefix differs per question"
        )
    return model.prefix_static_reason


def split_prompt(model: HFVLM, prompt: str) -> tuple[str, str] | None:
    """(prefix, suffix): the prefix ends after the last image placeholder and the special tokens right
    after it; None where sharing is unavailable, the suffix is empty, or the split is no token boundary."""
    if unavailable_reason(model) is not None:
        return None
    if _splices(model):
        cut = 0  # BLIP-2: the query tokens (and BOS) lead every prompt
    else:
        token = model.image_token or ""
        at = prompt.rfind(token) if token else -1
        if at < 0:
            return None
        cut = at + len(token)
        specials = sorted(
            (t for t in model.tokenizer.all_special_tokens if t and t != token), key=len, reverse=True
        )
        extended = True
        while extended:
            extended = False
            for special in specials:
                if prompt.startswith(special, cut):
                    cut += len(special)
                    extended = True
                    break
    prefix, suffix = prompt[:cut], prompt[cut:]
    if not suffix:
        return None
    head, full = model._text_ids(prefix), model._text_ids(prompt)
    if len(full) <= len(head) or full[: len(head)] != head:
        return None
    return prefix, suffix


# ---- positions as the unshared path computes them -------------------------------------------------
def unshared_positions(model: HFVLM, batch: Any, rows: Sequence[Sequence[HFVisual]]) -> torch.Tensor:
    """(R, B, L) positions of a laid-out batch, as the unshared `generate` gives them to the model.

    The pruned layouts of `--visual-tokens` bring their own (`prune_batch`); M-RoPE models get
    transformers' text positions stacked on `get_rope_index`'s three rows (what Qwen2-VL's
    `_prepare_position_ids_for_generation` builds); the others the count of real tokens before each."""
    given = batch.extra.get("position_ids")
    if given is not None:
        return given if given.ndim == 3 else given[None]
    mask = batch.attention_mask
    text = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    if not model._mrope:
        return text[None]
    grids = torch.cat([v.prepared.inputs["image_grid_thw"] for row in rows for v in row]).to(mask.device)
    base = getattr(model.model, "model", model.model)
    vision, _ = base.get_rope_index(
        batch.input_ids,
        mm_token_type_ids=batch.extra["mm_token_type_ids"],
        image_grid_thw=grids,
        attention_mask=mask,
    )
    return torch.cat([text[None], vision.to(text.dtype)])


# ---- prefill ---------------------------------------------------------------------------------------
def _cache_name(module: Any) -> str:
    """The cache argument's name (`cache` from transformers 5.x on, `past_key_values` before)."""
    params = inspect.signature(module.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _accepts(module: Any, name: str) -> bool:
    return name in inspect.signature(module.forward).parameters


def _llm(model: HFVLM) -> Any:
    """The module whose forward / generate takes token ids: the VLM, or BLIP-2's language model."""
    return model.model.language_model if _splices(model) else model.model


@torch.no_grad()
def prefill(model: HFVLM, prefixes: list[str], visual: Sequence[Any]) -> list[HFPrefixState]:
    """One left-padded forward over the prefixes; each row's KV (padding dropped) becomes a state."""
    from transformers import DynamicCache

    from vlmbench.modeling.hf import _flat, _row_tokens

    start = clock(model.device)
    rows = model._visual_rows(None, visual)
    batch = model._batch(prefixes, rows)
    positions = unshared_positions(model, batch, rows)
    target = _llm(model)
    cache = DynamicCache(config=model.config.get_text_config(decoder=True))
    kwargs: dict[str, Any] = {
        "attention_mask": batch.attention_mask,
        _cache_name(target): cache,
        "use_cache": True,
    }
    if _accepts(target, "position_ids"):
        kwargs["position_ids"] = positions[0] if positions.shape[0] == 1 else positions
    if _accepts(target, "logits_to_keep"):
        kwargs["logits_to_keep"] = 1
    if _splices(model):
        out = target(inputs_embeds=model._embeds(batch, _flat(rows)), **kwargs)
    else:
        extra = {k: v for k, v in batch.extra.items() if k != "position_ids"}
        out = target(input_ids=batch.input_ids, **extra, **model._image_kwargs(_flat(rows)), **kwargs)
    del out  # the logits are not needed: `cache` now holds the prefixes' keys and values
    tensors = [(layer.keys, layer.values) for layer in cache.layers]
    states = []
    for r, (prefix, row) in enumerate(zip(prefixes, rows, strict=True)):
        cols = batch.attention_mask[r].nonzero().squeeze(-1)
        states.append(
            HFPrefixState(
                prefix=prefix,
                ids=tuple(int(t) for t in batch.input_ids[r, cols].tolist()),
                positions=positions[:, r, cols].clone(),
                layers=tuple(
                    (k[r : r + 1, :, cols].contiguous(), v[r : r + 1, :, cols].contiguous())
                    for k, v in tensors
                ),
                rows=tuple(replace(v, features=None) for v in row),
                visual_tokens=sum(v.num_tokens for v in row),
            )
        )
    model.last_call = CallStats(_row_tokens(rows), clock(model.device) - start)
    return states


# ---- extending states by suffixes ------------------------------------------------------------------
def extend(
    model: HFVLM, states: Sequence[HFPrefixState], suffixes: list[str], tails: list[list[int]] | None = None
) -> _Extension:
    """The batch of `states[i]` + `suffixes[i]` (+ `tails[i]` ids), with a fresh cache of the prefixes."""
    if len(states) != len(suffixes) or not states:
        raise ValueError(f"{len(states)} prefix states for {len(suffixes)} suffixes")
    prompts = [s.prefix + suffix for s, suffix in zip(states, suffixes, strict=True)]
    rows = [list(s.rows) for s in states]
    batch = model._batch(prompts, rows, tails)
    positions = unshared_positions(model, batch, rows)
    news, news_pos = [], []
    for r, state in enumerate(states):
        cols = batch.attention_mask[r].nonzero().squeeze(-1)
        ids, pos = batch.input_ids[r, cols], positions[:, r, cols]
        head = state.tokens
        if tuple(ids[:head].tolist()) != state.ids or not torch.equal(
            pos[:, :head].cpu(), state.positions.cpu()
        ):
            raise RuntimeError(
                f"prefix state does not match the prompt {prompts[r][:80]!r}: the prefix is not a token prefix of it"
            )
        if ids.shape[0] == head:
            raise RuntimeError(f"empty suffix for the prompt {prompts[r][:80]!r}")
        news.append(ids[head:])
        news_pos.append(pos[:, head:])
    longest = max(s.tokens for s in states)
    new = max(n.shape[0] for n in news)
    width, size = longest + new, len(states)
    device = model.device
    ids = torch.full((size, width), model._pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((size, width), dtype=torch.long, device=device)
    pos = torch.zeros((positions.shape[0], size, width), dtype=positions.dtype, device=device)
    for r, state in enumerate(states):
        lo, n = longest - state.tokens, news[r].shape[0]
        ids[r, lo:longest] = torch.tensor(state.ids, dtype=torch.long, device=device)
        ids[r, width - n :] = news[r]
        mask[r, lo:longest] = 1
        mask[r, width - n :] = 1
        pos[:, r, lo:longest] = state.positions.to(device)
        pos[:, r, width - n :] = news_pos[r]
    return _Extension(ids, mask, pos, _prefix_cache(model, states, longest, device), new)


def _prefix_cache(model: HFVLM, states: Sequence[HFPrefixState], longest: int, device: torch.device) -> Any:
    """A `DynamicCache` holding row r's prefix KV, left-padded with zeros to `longest` columns.

    The padded tensors are allocated here and handed to the cache's layers as they are (the cache
    grows by concatenation, so it never writes into a state's tensors); where the installed
    transformers' layers cannot be filled that way, `DynamicCache(ddp_cache_data=...)` copies them."""
    from transformers import DynamicCache

    layers = []
    for index in range(len(states[0].layers)):
        first_k, first_v = states[0].layers[index]
        keys = first_k.new_zeros((len(states), first_k.shape[1], longest, first_k.shape[3]), device=device)
        values = first_v.new_zeros((len(states), first_v.shape[1], longest, first_v.shape[3]), device=device)
        for r, state in enumerate(states):
            k, v = state.layers[index]
            keys[r, :, longest - state.tokens :] = k[0]
            values[r, :, longest - state.tokens :] = v[0]
        layers.append((keys, values))
    cache = DynamicCache(config=model.config.get_text_config(decoder=True))
    slots = getattr(cache, "layers", [])
    if len(slots) != len(layers) or not all(hasattr(slot, "lazy_initialization") for slot in slots):
        return DynamicCache(ddp_cache_data=layers)
    for slot, (keys, values) in zip(slots, layers, strict=True):
        slot.lazy_initialization(keys, values)
        slot.keys, slot.values = keys, values
    return cache


def _forward_suffix(model: HFVLM, ext: _Extension, keep: int) -> torch.Tensor:
    """Logits of the last `keep` columns after running the suffix columns on the prefix cache."""
    target = _llm(model)
    kwargs: dict[str, Any] = {"attention_mask": ext.mask, _cache_name(target): ext.cache, "use_cache": True}
    if _accepts(target, "position_ids"):
        kwargs["position_ids"] = ext.model_positions(slice(-ext.new, None))
    if _accepts(target, "logits_to_keep"):
        kwargs["logits_to_keep"] = keep
    logits = target(input_ids=ext.ids[:, -ext.new :], **kwargs).logits
    return logits[:, -keep:]


@torch.no_grad()
def score_choices_from(
    model: HFVLM, states: Sequence[HFPrefixState], suffixes: list[str], choices: list[str]
) -> torch.Tensor:
    """`score_choices` of `prefix_i + suffixes[i]`: single-token choices from the next-token logits of
    one suffix pass, multi-token ones summed over one pass of B×C suffix+choice rows."""
    start = clock(model.device)
    prompts = [s.prefix + suffix for s, suffix in zip(states, suffixes, strict=True)]
    ids = [model.choice_ids(p, choices) for p in prompts]
    if all(len(t) == 1 for row in ids for t in row):
        ext = extend(model, states, suffixes)
        logprobs = F.log_softmax(_forward_suffix(model, ext, 1)[:, -1].float(), dim=-1)
        index = torch.tensor([[t[0] for t in row] for row in ids], device=logprobs.device)
        scores = logprobs.gather(1, index)
    else:
        n = len(choices)
        tails = [t for row in ids for t in row]
        ext = extend(
            model, [s for s in states for _ in range(n)], [x for x in suffixes for _ in range(n)], tails
        )
        keep = max(len(t) for t in tails) + 1
        logprobs = F.log_softmax(_forward_suffix(model, ext, keep).float(), dim=-1)
        totals = []
        for r, tail in enumerate(tails):
            target = torch.tensor(tail, device=logprobs.device)
            picked = logprobs[r, keep - len(tail) - 1 : keep - 1].gather(-1, target.unsqueeze(-1))
            totals.append(picked.sum())
        scores = torch.stack(totals).view(len(states), n)
    model.last_call = CallStats(tuple(s.visual_tokens for s in states), clock(model.device) - start)
    return scores.cpu()


@torch.no_grad()
def generate_from(
    model: HFVLM,
    states: Sequence[HFPrefixState],
    suffixes: list[str],
    gen: dict[str, Any],
    stop: tuple[str, ...],
    seed: int | None,
) -> list[str]:
    """`generate` of `prefix_i + suffixes[i]`, transformers' `generate` continuing from the prefix cache."""
    from vlmbench.modeling.hf import _truncate

    start = clock(model.device)
    ext = extend(model, states, suffixes)
    target = _llm(model)
    kwargs: dict[str, Any] = {"attention_mask": ext.mask, _cache_name(target): ext.cache}
    if _accepts(target, "position_ids"):
        kwargs["position_ids"] = ext.model_positions()
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), FirstForward(target, model.device) as timer:
        torch.manual_seed(0 if seed is None else seed)
        out = target.generate(input_ids=ext.ids, **kwargs, **gen)
    model.last_call = CallStats(
        tuple(s.visual_tokens for s in states), (timer.seconds or 0.0) + (timer.start - start)
    )
    sequences = out.sequences if hasattr(out, "sequences") else out
    texts = model.tokenizer.batch_decode(sequences[:, ext.ids.shape[1] :], skip_special_tokens=True)
    return [_truncate(text, stop) for text in texts]


__all__ = [
    "SHARED_FAMILIES",
    "HFPrefixState",
    "extend",
    "generate_from",
    "prefill",
    "score_choices_from",
    "split_prompt",
    "static_reason",
    "unavailable_reason",
    "unshared_positions",
]
