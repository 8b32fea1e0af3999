"""What each stage kind optimises: `StageObjective.forward(batch)` → (loss, stats), plus the
auxiliary heads the vision stages train and discard, and the conversation log-likelihoods that
`align` / `sft` / `dpo` need.

Conversations reach the LLM through the same input builder as evaluation (`VLM.inputs_from_ids`,
i.e. `vlmbench.modeling.inputs`): visual tokens spliced in at each `<image>` placeholder, or fed to
the cross-attention layers (Flamingo style); left padding, positions and labels alike. With
`pack_branches` the branch rows of one image are laid out as one packed sequence derived from those
same inputs (`vlmbench.training.packing`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlmbench.modeling.inputs import IGNORE_INDEX, images_of
from vlmbench.training.collate import Batch
from vlmbench.training.losses import clip_loss, dpo_loss, sequence_logprobs, siglip_loss
from vlmbench.training.packing import check_packable, pack_branches, packed_chunks, packed_logits
from vlmbench.training.recipe import StageConfig

BRANCH_CHUNK = 16  # branch rows per LLM forward (sorted by length)


class ContrastiveHeads(nn.Module):
    """Projection heads (and optionally a small text encoder) for image–text contrastive training."""

    def __init__(self, model: nn.Module, stage: StageConfig, vocab_size: int) -> None:
        super().__init__()
        d_vis = model.vision.out_dim
        dim = stage.embed_dim
        self.text_encoder_kind = stage.text_encoder
        self.image_proj = nn.Sequential(nn.LayerNorm(d_vis), nn.Linear(d_vis, dim))
        if stage.text_encoder == "small":
            width = 64
            self.text_embed = nn.Embedding(vocab_size, width)
            self.text_pos = nn.Parameter(torch.randn(stage.max_text_tokens, width) * 0.02)
            self.text_layer = nn.TransformerEncoderLayer(width, 4, 4 * width, dropout=0.0, batch_first=True)
            d_text = width
        else:
            d_text = model.llm.config.hidden_size
        self.text_proj = nn.Sequential(nn.LayerNorm(d_text), nn.Linear(d_text, dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.logit_bias = nn.Parameter(torch.tensor(-10.0))  # SigLIP only

    def encode_text(self, model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # ids, mask (B, L) → (B, E)
        if self.text_encoder_kind == "small":
            x = self.text_embed(ids) + self.text_pos[: ids.shape[1]]
            x = self.text_layer(x, src_key_padding_mask=~mask.bool())
        else:
            x = model.llm.get_input_embeddings()(ids)
        m = mask.unsqueeze(-1).to(x.dtype)
        pooled = (x * m).sum(1) / m.sum(1).clamp(min=1)
        return self.text_proj(pooled)


class StageObjective(nn.Module):
    """The model (plus a stage's auxiliary heads) with the stage's loss as `forward(batch)`.
    It is the unit that DDP wraps and that checkpoints save."""

    def __init__(
        self, stage: StageConfig, model: nn.Module, heads: nn.Module | None = None, locator: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.stage = stage
        self.model = model
        self.heads = heads
        self.locator = locator  # LocationAlignmentHead when the stage has location_alignment
        if stage.pack_branches:
            check_packable(model)  # a UserError now, not at the first step

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        kind = self.stage.kind
        if kind == "lm_pretrain":
            return self._lm(batch), {}
        if kind == "vision_contrastive":
            return self._contrastive(batch)
        if kind == "vision_tagging":
            return self._tagging(batch)
        if kind == "dpo":
            logprobs = conversation_logprobs(self.model, batch.images + batch.images, batch.rows)
            half = len(batch.images)
            if batch.reference is None:
                raise ValueError("dpo batches need the reference model's log-probs")
            ref = batch.reference.to(logprobs.device)
            loss, accuracy = dpo_loss(
                logprobs[:half], logprobs[half:], ref[:half], ref[half:], self.stage.beta
            )
            stats = {"reward_accuracy": accuracy.detach()}
            if self.stage.nll_weight:
                # RPO (Pang et al. 2024): DPO plus the chosen answers' per-token NLL, which keeps the
                # policy from lowering the likelihood of both answers until its generations degenerate
                tokens = torch.tensor(
                    [sum(1 for t in labels[1:] if t != IGNORE_INDEX) for _, labels in batch.rows[:half]],
                    dtype=logprobs.dtype,
                    device=logprobs.device,
                ).clamp(min=1)
                nll = -(logprobs[:half] / tokens).mean()
                loss = loss + self.stage.nll_weight * nll
                stats["chosen_nll"] = nll.detach()
            return loss, stats
        if self.stage.branches:
            loss, visual = self._branch_loss(batch)
        else:
            logits, labels, visual = conversation_forward(self.model, batch.images, batch.rows)
            loss = lm_loss(logits, labels)
        stats: dict[str, torch.Tensor] = {}
        if self.stage.word_alignment:
            assert isinstance(self.heads, WordAlignmentHead) and batch.presence is not None
            aligned = self.heads(self.model, batch.images, visual, batch.presence)
            if aligned is not None:  # None: no annotated image in this batch (e.g. documents only)
                loss = loss + self.stage.word_alignment * aligned
                stats["word_alignment"] = aligned.detach()
        if self.stage.location_alignment:
            assert self.locator is not None
            located = self.locator(self.model, batch.images, visual)
            if located is not None:  # None: no image with a whole-image view in this batch
                loss = loss + self.stage.location_alignment * located
                stats["location_alignment"] = located.detach()
        return loss, stats

    def _branch_loss(self, batch: Batch) -> tuple[torch.Tensor, list[Any]]:
        """The answer loss of branch rows (mean over every target token of the batch), the LLM run on
        chunks of rows of similar length: branches of a scene (~100 tokens) and of a document page
        (~250) padded together would waste most of the forward pass on padding."""
        visual = encode_rows(self.model, batch.images)
        if self.stage.pack_branches:
            return self._packed_branch_loss(batch, visual), visual
        lengths = [len(ids) + sum(t.shape[0] for t in images_of(v)) for (ids, _), v in zip(batch.rows, visual, strict=True)]
        order = sorted(range(len(batch.rows)), key=lambda i: (lengths[i], i))
        sums, count = [], 0
        for start in range(0, len(order), BRANCH_CHUNK):
            chunk = order[start : start + BRANCH_CHUNK]
            logits, labels, _ = conversation_forward(
                self.model, [batch.images[i] for i in chunk], [batch.rows[i] for i in chunk], [visual[i] for i in chunk]
            )
            summed, tokens = lm_loss_sum(logits, labels)
            sums.append(summed)
            count += tokens
        return torch.stack(sums).sum() / max(count, 1), visual

    def _packed_branch_loss(self, batch: Batch, visual: list[Any]) -> torch.Tensor:
        """The same loss with each image's branches packed into one sequence (`training.packing`):
        the visual tokens run through the LLM once per packed sequence instead of once per row."""
        if batch.packs is None:
            raise ValueError("pack_branches: the batch has no packs (collate it with the packing stage)")
        sums, count = [], 0
        for chunk in packed_chunks(batch.rows, batch.packs, self.model.image_token_id):
            packed = pack_branches(self.model, batch.rows, visual, chunk)
            summed, tokens = lm_loss_sum(packed_logits(self.model, packed), packed.labels)
            sums.append(summed)
            count += tokens
        return torch.stack(sums).sum() / max(count, 1)

    def _lm(self, batch: Batch) -> torch.Tensor:
        llm = self.model.llm
        device = llm.get_input_embeddings().weight.device
        length = max(len(ids) for ids, _ in batch.rows)
        pad = self.model.tokenizer.pad_token_id
        ids = torch.full((len(batch.rows), length), pad, dtype=torch.long, device=device)
        labels = torch.full_like(ids, IGNORE_INDEX)
        mask = torch.zeros_like(ids)
        for i, (row, lab) in enumerate(batch.rows):
            ids[i, : len(row)] = torch.tensor(row, device=device)
            labels[i, : len(lab)] = torch.tensor(lab, device=device)
            mask[i, : len(row)] = 1
        logits = llm(input_ids=ids, attention_mask=mask, use_cache=False).logits
        return lm_loss(logits, labels)

    def _contrastive(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        assert self.heads is not None
        pooled = pooled_image_features(self.model, batch.images)  # (B, D_vis)
        image_emb = self.heads.image_proj(pooled)
        device = image_emb.device
        length = max(len(ids) for ids, _ in batch.rows)
        ids = torch.zeros((len(batch.rows), length), dtype=torch.long, device=device)
        mask = torch.zeros_like(ids)
        for i, (row, _) in enumerate(batch.rows):
            ids[i, : len(row)] = torch.tensor(row, device=device)
            mask[i, : len(row)] = 1
        text_emb = self.heads.encode_text(self.model, ids, mask)
        if self.stage.loss == "siglip":
            loss = siglip_loss(image_emb, text_emb, self.heads.logit_scale, self.heads.logit_bias)
        else:
            loss = clip_loss(image_emb, text_emb, self.heads.logit_scale)
        with torch.no_grad():
            sims = F.normalize(image_emb.float(), dim=-1) @ F.normalize(text_emb.float(), dim=-1).T
            accuracy = (sims.argmax(-1) == torch.arange(sims.shape[0], device=device)).float().mean()
        return loss, {"retrieval_accuracy": accuracy}

    def _tagging(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        assert self.heads is not None and batch.patch_labels is not None
        device = next(self.model.vision.parameters()).device
        if self.model.config.vision.kind == "native_vit":
            # one image per call: packing them would attend over a dense (ΣN)² block-diagonal mask on CPU
            feats = [self.model.vision([image.pixels[0].to(device)])[0] for image in batch.images]
        else:
            feats = list(self.model.vision(torch.cat([image.pixels for image in batch.images]).to(device)))
        logits = self.heads(torch.cat(feats)).float()
        target = torch.cat(batch.patch_labels).to(device)
        # positives are rare (most patches are background): weight them up so the head cannot win by
        # predicting "nothing" everywhere
        pos_weight = torch.full((target.shape[1],), self.stage.pos_weight, device=device)
        loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight)
        with torch.no_grad():
            hits = (logits > 0) == target.bool()
            recall = (hits & target.bool()).sum() / target.sum().clamp(min=1)
        return loss, {"patch_accuracy": hits.float().mean(), "patch_recall": recall}


class WordAlignmentHead(nn.Module):
    """Scores every category against an image's visual tokens through the LLM's own input embedding
    of its name (mean over the name's tokens): logit = scale * max over tokens of <v, e> / sqrt(D) +
    bias, trained with BCE against the categories present. The only parameters are the scale and
    bias (discarded after the stage); the gradient moves the visual tokens (and the name embeddings)
    so that a token showing a category points along that category's word: the offline stand-in for
    the text alignment a CLIP tower brings."""

    def __init__(self, category_tokens: Sequence[Sequence[int]]) -> None:
        super().__init__()
        self.category_tokens = [list(t) for t in category_tokens]
        self.scale = nn.Parameter(torch.tensor(1.0))
        self.bias = nn.Parameter(torch.tensor(-2.0))

    def forward(
        self, model: nn.Module, images: Sequence[Any], visual: Sequence[Any], presence: Sequence[Any]
    ) -> torch.Tensor | None:
        embed = model.llm.get_input_embeddings().weight
        names = torch.stack([embed[torch.tensor(t, device=embed.device)].mean(0) for t in self.category_tokens])
        seen: set[int] = set()
        scores, targets = [], []
        for image, tokens, target in zip(images, visual, presence, strict=True):
            if target is None or id(image) in seen:  # unannotated, or a branch of an image already scored
                continue
            seen.add(id(image))
            tokens = torch.cat(list(tokens)) if not isinstance(tokens, torch.Tensor) else tokens
            sims = tokens.float() @ names.float().T / math.sqrt(names.shape[1])  # (M, C)
            scores.append(sims.max(0).values)
            targets.append(target.to(sims.device))
        if not scores:
            return None
        logits = torch.stack(scores) * self.scale + self.bias
        return F.binary_cross_entropy_with_logits(logits, torch.stack(targets))


def lm_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over positions with a label, and their number."""
    targets = labels[:, 1:].reshape(-1)
    summed = F.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), targets, ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return summed, int((targets != IGNORE_INDEX).sum())


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over positions with a label (labels aligned with inputs)."""
    return F.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX
    )


def pooled_image_features(model: nn.Module, images: list[Any]) -> torch.Tensor:
    """Mean of the ViT's patch features over all tiles of each image: (B, D_vis)."""
    device = next(model.vision.parameters()).device
    if model.config.vision.kind == "native_vit":
        flat = [t.to(device) for image in images for t in image.pixels]
        feats = model.vision(flat)
        counts = [len(image.pixels) for image in images]
        out, start = [], 0
        for count in counts:
            out.append(torch.cat(feats[start : start + count]).mean(0))
            start += count
        return torch.stack(out)
    tiles = torch.cat([image.pixels for image in images]).to(device)
    feats = model.vision(tiles).mean(1)  # (T, D)
    out, start = [], 0
    for image in images:
        count = image.pixels.shape[0]
        out.append(feats[start : start + count].mean(0))
        start += count
    return torch.stack(out)


def encode_rows(model: nn.Module, images: Sequence[Any]) -> list[Any]:
    """Visual tokens per row; rows that hold the same image object (the branches of one
    conversation, DPO's chosen and rejected rows) share one encoding."""
    unique: dict[int, Any] = {}
    for sample in images:
        unique.setdefault(id(sample), sample)
    samples = list(unique.values())
    if model.config.vision.kind == "native_vit":
        # one sample at a time: packing them would attend over a dense (ΣN)² block-diagonal mask on CPU
        encoded = [model.encode_samples([sample])[0] for sample in samples]
    else:
        encoded = model.encode_samples(samples)
    by_id = dict(zip(unique, encoded, strict=True))
    return [by_id[id(sample)] for sample in images]


def conversation_forward(
    model: nn.Module,
    images: Sequence[Any],
    rows: Sequence[tuple[list[int], list[int]]],
    visual: Sequence[Any] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, list[Any]]:
    """LLM logits (B, L, V), aligned labels (B, L) and each row's visual tokens for tokenised
    conversations.

    images[i] holds row i's images (a PreparedImage, or a list of them, one per `<image>` of the
    row, in order); the layout is `VLM.inputs_from_ids`'s, exactly what evaluation builds. `visual`:
    the rows' visual tokens when already encoded."""
    visual = encode_rows(model, images) if visual is None else list(visual)
    inputs = model.inputs_from_ids([ids for ids, _ in rows], [labels for _, labels in rows], visual)
    labels = inputs.pop("labels")
    with model.cross_attending(visual):
        logits = model.llm(**inputs, use_cache=False).logits
    return logits, labels, visual


def conversation_logits(
    model: nn.Module, images: Sequence[Any], rows: Sequence[tuple[list[int], list[int]]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """LLM logits (B, L, V) and aligned labels (B, L) for tokenised conversations."""
    logits, labels, _ = conversation_forward(model, images, rows)
    return logits, labels


def conversation_logprobs(
    model: nn.Module, images: Sequence[Any], rows: Sequence[tuple[list[int], list[int]]]
) -> torch.Tensor:
    """Summed log-probability of each row's target tokens: (B,)."""
    logits, labels = conversation_logits(model, images, rows)
    return sequence_logprobs(logits, labels)


def dpo_logprobs(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Log-probs of the chosen then the rejected rows (each sample's images serve both)."""
    return conversation_logprobs(model, batch.images + batch.images, batch.rows).detach()


__all__ = [
    "ContrastiveHeads",
    "StageObjective",
    "WordAlignmentHead",
    "conversation_forward",
    "encode_rows",
    "conversation_logits",
    "conversation_logprobs",
    "dpo_logprobs",
    "lm_loss",
    "pooled_image_features",
]
