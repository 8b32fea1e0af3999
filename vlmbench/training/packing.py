"""Branch packing: an image's questions in one sequence, each seeing only the image.

With `branches: true` every question of a conversation is its own row (the image encoded once), but
the LLM still runs the visual tokens once per row. `pack_branches: true` lays the branches of one
image out as one sequence instead, the training twin of evaluation's shared prefill
(`vlmbench.modeling.prefix`):

    packed row   [ prefix (P)  | branch 0 (S_0) | branch 1 (S_1) | ... | pad ]
    positions      0 .. P-1      P .. P+S_0-1     P .. P+S_1-1           0
    attends to     the prefix,   the prefix and   the prefix and         (itself and
                   causally      itself, causally itself, causally        earlier pads)

The prefix is the rows' common start, through the last `<image>` placeholder (`<s><|user|><image>`,
the visual tokens spliced in); each branch is the rest of its row (question, `<|assistant|>`,
answer, EOS). A branch attends to the prefix and causally to itself, never to another branch, and
its positions restart after the prefix, so every one of its tokens sees exactly the keys and
positions of its unpacked row: its logits, and the loss on its answer tokens (the labels of the
unpacked row, nothing else), equal the unpacked row's up to float rounding. The layout is derived
from the model's own input builder (`VLM.inputs_from_ids`): each branch's row is built unpacked,
the prefix taken from the first and the suffix of every row laid after it, with the row's position
ids.

Why this is exact for every own-VLM preset: the LLM (Llama / Qwen2) takes 1D RoPE positions for all
of them (Qwen2-VL style included: the own model has no M-RoPE), and a custom 4D mask reaches eager
and SDPA attention as it is (`transformers.masking_utils` returns a 4D mask unchanged). Cross-
attention models (Flamingo style) keep the placeholder as a prefix token; their gated cross-
attention layers attend from each text position to the image alone (no text-to-text attention), so
a packed row feeds them the same image for the same result. Attention kernels that cannot take a
dense mask (flash-attention) and sliding-window layers are refused at stage start (`check_packable`).

The next-token loss reads position t's logits against token t+1's label. Across a branch boundary
that pair is (last token of branch k-1 → first token of branch k), or (last prefix token → first
token of branch 0): the first token of a branch is question text, never labelled (checked), so the
plain shifted loss over a packed row is the sum of the branches' own losses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from vlmbench.errors import UserError
from vlmbench.modeling.inputs import IGNORE_INDEX, SampleVisual, images_of, placeholder_positions
from vlmbench.modeling.tokenizer import IMAGE_TOKEN

PREFIX_SEGMENT = -1  # `PackedBatch.segments` of the shared prefix
PAD_SEGMENT = -2  # ... and of the padding after a packed row
PACK_CHUNK = 4  # packed sequences per LLM forward (sorted by length)
MASKED_ATTENTION = ("eager", "sdpa")  # attention implementations that take a dense 4D mask

Row = tuple[list[int], list[int]]  # token ids and aligned labels, as `Batch.rows` holds them


@dataclass
class PackedBatch:
    """The LLM inputs of packed sequences, one per group of branch rows (see the module docstring)."""

    inputs_embeds: torch.Tensor  # (B, L, D), right-padded with zeros
    attention_mask: torch.Tensor  # (B, 1, L, L): bool (sdpa) or additive 0 / dtype-min (eager)
    position_ids: torch.Tensor  # (B, L): restarting after the prefix for every branch; 0 on padding
    labels: torch.Tensor  # (B, L): the unpacked rows' labels (answer tokens), IGNORE_INDEX elsewhere
    segments: torch.Tensor  # (B, L): PREFIX_SEGMENT, the branch index k within its group, or PAD_SEGMENT
    groups: list[list[int]]  # per packed row, the batch rows of its branches in order
    visual: list[SampleVisual]  # per packed row, its image(s) (what cross-attention layers attend to)

    def llm_kwargs(self) -> dict[str, torch.Tensor]:
        return {
            "inputs_embeds": self.inputs_embeds,
            "attention_mask": self.attention_mask,
            "position_ids": self.position_ids,
        }


def branch_groups(count: int, max_branches: int, start: int = 0) -> list[list[int]]:
    """Rows start .. start+count-1 (one conversation's branches) in consecutive groups of at most
    `max_branches`, as few groups as that allows and of near-equal size (less padding than 16 + 1)."""
    if count <= 0:
        return []
    parts = -(-count // max_branches)
    size, extra = divmod(count, parts)
    groups, first = [], start
    for part in range(parts):
        width = size + (1 if part < extra else 0)
        groups.append(list(range(first, first + width)))
        first += width
    return groups


def prefix_length(ids: Sequence[int], image_token_id: int) -> int:
    """Token ids through the last `<image>` placeholder (the shared prefix); 0 when there is none."""
    positions = placeholder_positions(ids, image_token_id)
    return positions[-1] + 1 if positions else 0


def packed_text_length(rows: Sequence[Row], group: Sequence[int], image_token_id: int) -> int:
    """Text token ids of the packed sequence of `group`: the prefix once, then every suffix."""
    cut = prefix_length(rows[group[0]][0], image_token_id)
    return cut + sum(len(rows[i][0]) - cut for i in group)


def check_packable(model: nn.Module) -> None:
    """UserError, at stage start, when the model's LLM cannot take the packed layout exactly."""
    config = model.llm.config
    implementation = getattr(config, "_attn_implementation", None)
    if implementation not in MASKED_ATTENTION:
        raise UserError(
            f"pack_branches needs an LLM attention that takes a dense 4D mask ({', '.join(MASKED_ATTENTION)}); "
            f"this model's LLM uses {implementation!r}: use `branches: true` without pack_branches"
        )
    layer_types = getattr(config, "layer_types", None) or ()
    if any(kind != "full_attention" for kind in layer_types):
        raise UserError(
            f"pack_branches cannot pack for an LLM with {sorted(set(layer_types))} layers (only full "
            "attention keeps the block-diagonal mask exact): use `branches: true` without pack_branches"
        )


def pack_branches(
    model: nn.Module, rows: Sequence[Row], visual: Sequence[SampleVisual], groups: Sequence[Sequence[int]]
) -> PackedBatch:
    """One packed sequence per group of branch rows (rows of one image: the same ids through the
    last `<image>` and the same visual tokens), right-padded into one batch."""
    if not groups or any(not group for group in groups):
        raise ValueError("branch packing needs at least one group and no empty group")
    packed = [_pack_group(model, rows, visual, group) for group in groups]
    length = max(embeds.shape[0] for embeds, *_ in packed)
    first = packed[0][0]
    batch, dim = len(packed), first.shape[1]
    device = first.device
    embeds = first.new_zeros(batch, length, dim)
    positions = torch.zeros(batch, length, dtype=torch.long, device=device)
    labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long, device=device)
    segments = torch.full((batch, length), PAD_SEGMENT, dtype=torch.long, device=device)
    for b, (row_embeds, row_positions, row_labels, row_segments) in enumerate(packed):
        n = row_embeds.shape[0]
        embeds[b, :n] = row_embeds
        positions[b, :n] = row_positions
        labels[b, :n] = row_labels
        segments[b, :n] = row_segments
    mask = attention_mask_for(model.llm, branch_attention(segments), embeds.dtype)
    return PackedBatch(
        embeds, mask, positions, labels, segments, [list(g) for g in groups], [visual[g[0]] for g in groups]
    )


def branch_attention(segments: torch.Tensor) -> torch.Tensor:
    """(B, L) segment ids → (B, L, L) bool, True where query q may attend to key k: causal, and the
    key in the prefix or in the query's own segment (a branch never sees another one)."""
    length = segments.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=segments.device).tril()
    query, key = segments.unsqueeze(-1), segments.unsqueeze(-2)
    return causal & ((key == PREFIX_SEGMENT) | (key == query))


def attention_mask_for(llm: nn.Module, allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The (B, 1, L, L) mask the LLM's attention takes as it is: SDPA a boolean one (True: attend),
    eager an additive one (0, or the dtype's minimum, which softmax turns into an exact 0)."""
    implementation = getattr(llm.config, "_attn_implementation", None)
    if implementation == "eager":
        additive = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
        return additive.masked_fill(~allowed, torch.finfo(dtype).min).unsqueeze(1)
    if implementation == "sdpa":
        return allowed.unsqueeze(1)
    raise UserError(
        f"pack_branches cannot build a mask for {implementation!r} attention; use `branches: true` without packing"
    )


def packed_logits(model: nn.Module, packed: PackedBatch) -> torch.Tensor:
    """LLM logits (B, L, V) of packed sequences."""
    with model.cross_attending(packed.visual):
        return model.llm(**packed.llm_kwargs(), use_cache=False).logits


def packed_chunks(
    rows: Sequence[Row], groups: Sequence[Sequence[int]], image_token_id: int, size: int = PACK_CHUNK
) -> list[list[list[int]]]:
    """Groups in chunks of `size` of similar packed length (less padding in each LLM forward)."""
    order = sorted(range(len(groups)), key=lambda g: (packed_text_length(rows, groups[g], image_token_id), g))
    return [[list(groups[g]) for g in order[s : s + size]] for s in range(0, len(order), size)]


# ---- one group -------------------------------------------------------------------------------


def _pack_group(
    model: nn.Module, rows: Sequence[Row], visual: Sequence[SampleVisual], group: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(embeds (L, D), positions (L,), labels (L,), segments (L,)) of one packed sequence."""
    head = group[0]
    head_ids = list(rows[head][0])
    cut = prefix_length(head_ids, model.image_token_id)
    if cut == 0:
        raise UserError(
            f"branch packing: row {head} holds no {IMAGE_TOKEN} to share; use `branches: true` without pack_branches"
        )
    embeds: list[torch.Tensor] = []
    positions: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    segments: list[torch.Tensor] = []
    prefix = 0
    for k, index in enumerate(group):
        ids, row_labels = list(rows[index][0]), list(rows[index][1])
        _check_branch(
            ids, row_labels, head_ids, cut, visual[index], visual[head], index, model.image_token_id
        )
        # the unpacked row, as evaluation and the unpacked branch loss build it (a batch of one: no padding)
        built = model.inputs_from_ids([ids], [row_labels], [visual[index]])
        suffix = len(ids) - cut  # text after the last image: the same tokens in the spliced row
        total = built["inputs_embeds"].shape[1]
        if k == 0:
            prefix = total - suffix
            embeds.append(built["inputs_embeds"][0, :prefix])
            positions.append(built["position_ids"][0, :prefix])
            labels.append(built["labels"][0, :prefix])
            segments.append(torch.full((prefix,), PREFIX_SEGMENT, dtype=torch.long, device=embeds[0].device))
        elif total - suffix != prefix:
            raise ValueError(f"branch row {index}: a prefix of {total - suffix} positions, not {prefix}")
        # a copy: the rest of the unpacked row (its prefix) is not kept alive
        embeds.append(built["inputs_embeds"][0, prefix:].clone())
        positions.append(built["position_ids"][0, prefix:])
        labels.append(built["labels"][0, prefix:])
        segments.append(torch.full((suffix,), k, dtype=torch.long, device=embeds[0].device))
    return torch.cat(embeds), torch.cat(positions), torch.cat(labels), torch.cat(segments)


def _check_branch(
    ids: list[int],
    labels: list[int],
    head_ids: list[int],
    cut: int,
    visual: SampleVisual,
    head_visual: SampleVisual,
    index: int,
    image_token_id: int,
) -> None:
    """A row packs with its group's first row when both share the prefix (ids and images), the
    prefix carries no label, and the branch has a first, unlabelled token (see the module docstring)."""
    if (
        prefix_length(ids, image_token_id) != cut
        or ids[:cut] != head_ids[:cut]
        or not _same_visual(visual, head_visual)
    ):
        raise UserError(
            f"branch packing: row {index} does not share its group's prefix (the text through the last "
            f"{IMAGE_TOKEN} and the image); use `branches: true` without pack_branches"
        )
    if len(ids) <= cut:
        raise ValueError(f"branch row {index} ends at its image: nothing to pack after the prefix")
    if any(label != IGNORE_INDEX for label in labels[: cut + 1]):
        raise ValueError(
            f"branch row {index} labels a token of its prefix or the first token after the image; "
            "packing needs the question between the image and the answer"
        )


def _same_visual(a: SampleVisual, b: SampleVisual) -> bool:
    """The same images: the same objects (encode_rows shares them), or equal tensors."""
    if a is b:
        return True
    left, right = images_of(a), images_of(b)
    return len(left) == len(right) and all(
        x is y or (x.shape == y.shape and bool(torch.equal(x, y))) for x, y in zip(left, right, strict=True)
    )


__all__ = [
    "MASKED_ATTENTION",
    "PACK_CHUNK",
    "PAD_SEGMENT",
    "PREFIX_SEGMENT",
    "PackedBatch",
    "attention_mask_for",
    "branch_attention",
    "branch_groups",
    "check_packable",
    "pack_branches",
    "packed_chunks",
    "packed_logits",
    "packed_text_length",
    "prefix_length",
]
