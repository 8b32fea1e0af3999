"""Token ids + visual tokens → the LLM's inputs: the one place that builds them.

Evaluation (`VLM.build_inputs` / forward / generate / score_choices) and training (conversation
losses, DPO log-probs) both come through `build_sequences`, so what a model is trained on and what it
is evaluated on are laid out the same way:

- inline models (LLaVA, InternVL, Qwen2-VL style) get each image's visual tokens in place of its
  `<image>` placeholder, in order; the labels there are -100;
- cross-attention models (Flamingo style) keep every placeholder as an ordinary token and attend to
  the concatenation of the sample's images through `visual_context`;
- rows are left-padded (generation appends on the right), positions count real tokens only.

A sample's visual input is one tensor (one image) or a sequence of tensors, one per placeholder.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vlmbench.modeling.tokenizer import IMAGE_TOKEN

IGNORE_INDEX = -100

# One sample's visual tokens: (M, D) for one image, or one (M_k, D) tensor per placeholder.
SampleVisual = torch.Tensor | Sequence[torch.Tensor]


def images_of(visual: SampleVisual) -> list[torch.Tensor]:
    """A sample's visual input as one (M_k, D) tensor per image."""
    if isinstance(visual, torch.Tensor):
        return [visual]
    return list(visual)


def placeholder_positions(ids: Sequence[int], image_token_id: int) -> list[int]:
    return [i for i, t in enumerate(ids) if t == image_token_id]


def check_image_count(index: int, found: int, given: int) -> None:
    """Prompt `index` holds `found` placeholders; `given` images came with it: they must agree."""
    if found != given:
        raise ValueError(
            f"prompt {index} holds {found} {IMAGE_TOKEN} placeholder(s) but {given} image(s) were given for it"
        )


def splice(
    text: torch.Tensor, labels: torch.Tensor, positions: Sequence[int], images: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace the placeholder at each of `positions` with the matching image's tokens.

    text (L, D), labels (L,), images[k] (M_k, D) → ((L - n + ΣM_k, D), (L - n + ΣM_k,))."""
    pieces: list[torch.Tensor] = []
    label_pieces: list[torch.Tensor] = []
    start = 0
    for cut, vis in zip(positions, images, strict=True):
        vis = vis.to(text.dtype)
        pieces += [text[start:cut], vis]
        label_pieces += [labels[start:cut], labels.new_full((vis.shape[0],), IGNORE_INDEX)]
        start = cut + 1
    pieces.append(text[start:])
    label_pieces.append(labels[start:])
    return torch.cat(pieces), torch.cat(label_pieces)


def left_pad(rows: Sequence[torch.Tensor], label_rows: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Stack (L_i, D) rows into a left-padded batch.

    → inputs_embeds (B, L, D), attention_mask (B, L), position_ids (B, L), labels (B, L)."""
    length = max(row.shape[0] for row in rows)
    batch, dim = len(rows), rows[0].shape[1]
    device = rows[0].device
    embeds = rows[0].new_zeros(batch, length, dim)
    mask = torch.zeros(batch, length, dtype=torch.long, device=device)
    labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long, device=device)
    for i, (row, lab) in enumerate(zip(rows, label_rows, strict=True)):
        embeds[i, length - row.shape[0] :] = row
        mask[i, length - row.shape[0] :] = 1
        labels[i, length - row.shape[0] :] = lab
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": position_ids, "labels": labels}


def build_sequences(
    embed: nn.Module,
    ids: Sequence[Sequence[int]],
    labels: Sequence[Sequence[int]],
    visual: Sequence[SampleVisual],
    image_token_id: int,
    inline: bool,
) -> dict[str, torch.Tensor]:
    """Left-padded `inputs_embeds`, `attention_mask`, `position_ids` and `labels` for token rows.

    ids[i], labels[i]: row i's token ids and aligned labels (-100 where no loss); visual[i]: its
    images, one per `<image>` placeholder in order (a count mismatch is a ValueError naming i).
    `inline` splices the visual tokens in; otherwise the placeholders stay tokens (cross-attention)."""
    device = embed.weight.device
    rows: list[torch.Tensor] = []
    label_rows: list[torch.Tensor] = []
    for index, (row_ids, row_labels) in enumerate(zip(ids, labels, strict=True)):
        images = images_of(visual[index])
        positions = placeholder_positions(row_ids, image_token_id)
        check_image_count(index, len(positions), len(images))
        text = embed(torch.tensor(list(row_ids), device=device))  # (L, D)
        lab = torch.tensor(list(row_labels), device=device)  # (L,)
        if inline:
            text, lab = splice(text, lab, positions, images)
        rows.append(text)
        label_rows.append(lab)
    return left_pad(rows, label_rows)


def visual_context(visual: Sequence[SampleVisual]) -> tuple[torch.Tensor, torch.Tensor]:
    """What cross-attention layers attend to: each sample's images concatenated, right-padded.

    → visual (B, M, D), padding mask (B, M) True where padding."""
    per_sample = []
    for index, v in enumerate(visual):
        images = images_of(v)
        if not images:
            # an all-padding key set makes attention NaN: text-only samples have no context to attend to
            raise ValueError(f"prompt {index}: cross-attention models need at least one image per sample")
        per_sample.append(torch.cat(images))
    length = max(v.shape[0] for v in per_sample)
    first = per_sample[0]
    padded = first.new_zeros(len(per_sample), length, first.shape[1])
    pad_mask = torch.ones(len(per_sample), length, dtype=torch.bool, device=first.device)
    for i, v in enumerate(per_sample):
        padded[i, : v.shape[0]] = v
        pad_mask[i, : v.shape[0]] = False
    return padded, pad_mask


__all__ = [
    "IGNORE_INDEX",
    "SampleVisual",
    "build_sequences",
    "check_image_count",
    "images_of",
    "left_pad",
    "placeholder_positions",
    "splice",
    "visual_context",
]
