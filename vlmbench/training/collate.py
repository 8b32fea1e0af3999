"""Items of a stage's data → a `Batch`: image preparation and tokenisation (no model calls).

The rows hold token ids with the `<image>` placeholder still in them; the objectives hand them,
with the images' visual tokens, to the shared input builder (`vlmbench.modeling.inputs`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlmbench.modeling.tokenizer import IMAGE_TOKEN
from vlmbench.training.data import (
    Conversation,
    Preference,
    caption_of,
    conversation_segments,
    load_image,
    text_only_segments,
    tokenize_segments,
)
from vlmbench.training.packing import branch_groups, packed_text_length
from vlmbench.training.recipe import StageConfig
from vlmbench.training.region_tags import RegionLabels, patch_labels, planned_tile_view, tile_view


@dataclass
class Batch:
    """A collated batch. `rows` are (ids, labels) per example; for dpo `rows` are the chosen then the
    rejected answers (2B rows, images repeated) and `reference` the frozen model's log-probs."""

    kind: str
    images: list[Any]
    rows: list[tuple[list[int], list[int]]]
    tokens: int
    reference: torch.Tensor | None = None
    patch_labels: list[torch.Tensor] | None = None  # vision_tagging: (patches, labels) per encoder input
    # word alignment: per row, the multi-hot presence of the categories in its image (None: unannotated)
    presence: list[torch.Tensor | None] | None = None
    # pack_branches: the rows of each packed sequence (one image's branches, at most max_branches)
    packs: list[list[int]] | None = None


class Collator:
    """Items of a stage's data → a `Batch` (image preparation and tokenisation)."""

    def __init__(
        self,
        stage: StageConfig,
        model: nn.Module,
        tokenizer: Any,
        regions: RegionLabels | None = None,
        seed: int = 0,
    ) -> None:
        self.stage = stage
        self.model = model
        self.tokenizer = tokenizer
        self.regions = regions
        self.seed = seed

    def __call__(self, items: list[Conversation | Preference], step: int = 0) -> Batch:
        kind = self.stage.kind
        tok = self.tokenizer
        if kind == "vision_tagging":
            return self._tagging(items, step)
        if kind == "lm_pretrain":
            rows = [
                tokenize_segments(tok, text_only_segments(tok, c, self.stage.lm_targets), self.stage.max_text_tokens)
                for c in items
            ]
            return Batch(kind, [], rows, sum(len(r[0]) for r in rows))
        if kind == "vision_contrastive" and self.stage.image_view == "tile":
            images = [self._single_tile(load_image(item.image)) for item in items]
        else:
            images = [self.model.prepare_image(load_image(item.image)) for item in items]
        visual_tokens = sum(self.model.visual_tokens_for(p.plan) for p in images)
        if kind == "vision_contrastive":
            rows = []
            for c in items:
                ids = tok(caption_of(c), add_special_tokens=False)["input_ids"][: self.stage.max_text_tokens]
                rows.append((ids, ids))
            return Batch(kind, images, rows, sum(len(r[0]) for r in rows) + visual_tokens)
        if kind == "dpo":
            chosen = [self._pair_row(p.prompt, p.chosen) for p in items]
            rejected = [self._pair_row(p.prompt, p.rejected) for p in items]
            rows = chosen + rejected
            return Batch(kind, images, rows, sum(len(r[0]) for r in rows) + 2 * visual_tokens)
        if self.stage.branches:
            return self._branches(items, images)
        rows = [tokenize_segments(tok, conversation_segments(tok, c.turns)) for c in items]
        presence = [self._presence(c) for c in items] if self.stage.word_alignment else None
        return Batch(kind, images, rows, sum(len(r[0]) for r in rows) + visual_tokens, presence=presence)

    def _branches(self, items: list[Any], images: list[Any]) -> Batch:
        """One row per user turn, each holding the image and that question only; the rows of one
        conversation share its PreparedImage object, which the objective encodes once. With
        `pack_branches`, `packs` groups them into packed sequences (`vlmbench.training.packing`)."""
        rows, row_images, presence, tokens = [], [], [], 0
        packs: list[list[int]] = []
        for conversation, image in zip(items, images, strict=True):
            labels = self._presence(conversation) if self.stage.word_alignment else None
            first = len(rows)
            for user, answer in conversation.turns:
                if not user.startswith(IMAGE_TOKEN):
                    user = f"{IMAGE_TOKEN}\n{user}"
                row = tokenize_segments(self.tokenizer, conversation_segments(self.tokenizer, [(user, answer)]))
                rows.append(row)
                row_images.append(image)
                presence.append(labels)
                tokens += len(row[0]) + self.model.visual_tokens_for(image.plan)
            if self.stage.pack_branches:
                packs += branch_groups(len(rows) - first, self.stage.max_branches, first)
        if self.stage.pack_branches:  # what the LLM runs: each packed sequence's prefix once
            tokens = sum(
                packed_text_length(rows, group, self.model.image_token_id)
                + self.model.visual_tokens_for(row_images[group[0]].plan)
                for group in packs
            )
        return Batch(
            self.stage.kind,
            row_images,
            rows,
            tokens,
            presence=presence if self.stage.word_alignment else None,
            packs=packs if self.stage.pack_branches else None,
        )

    def _presence(self, conversation: Conversation) -> torch.Tensor | None:
        """Multi-hot (categories,) of the categories annotated in the conversation's image."""
        assert self.regions is not None
        boxes = self.regions.boxes.get(Path(conversation.image).resolve()) if conversation.image else None
        if boxes is None:
            return None
        out = torch.zeros(len(self.regions.categories))
        for label, _ in boxes:
            out[label] = 1.0
        return out

    def _tagging(self, items: list[Any], step: int) -> Batch:
        """Views and per-patch labels; the crops are a pure function of (seed, step) like the batches."""
        import numpy as np

        from vlmbench.modeling.resolution import to_pixel_tensor
        from vlmbench.modeling.vlm import PreparedImage

        assert self.regions is not None
        rng = np.random.default_rng([self.seed, step])
        cfg = self.model.vision.config
        patch = self.model.config.vision.patch_size
        num_labels = len(self.regions.categories)
        images, labels = [], []
        for item in items:
            image = load_image(item.image)
            boxes = self.regions.of(item.image)
            if self.model.config.vision.kind == "native_vit":
                prepared = self.model.prepare_image(image)  # the image at its smart-resized size
                (pixels,) = prepared.pixels
                grid = (pixels.shape[1] // patch, pixels.shape[2] // patch)
                scale = (pixels.shape[2] / image.width, pixels.shape[1] / image.height)
                images.append(prepared)
                labels.append(patch_labels(boxes, (0, 0, image.width, image.height), scale, grid, patch, num_labels))
            else:
                size = self.model.config.vision.image_size
                plan = (
                    self.model.resolution.plan(image.width, image.height)
                    if Path(item.image).resolve() in self.regions.text_images
                    else None
                )
                if plan is not None and plan.grid is not None:  # a page, cut as the model's tiles
                    view, lab = planned_tile_view(image, boxes, plan.resized, plan.grid, size, patch, num_labels, rng)
                else:
                    view, lab = tile_view(image, boxes, size, patch, num_labels, rng, self.stage.crop_p)
                images.append(PreparedImage(to_pixel_tensor([view], cfg.image_mean, cfg.image_std), None))
                labels.append(lab)
        tokens = sum(int(lab.shape[0]) for lab in labels)
        return Batch("vision_tagging", images, [], tokens, patch_labels=labels)

    def _single_tile(self, image: Any) -> Any:
        """The whole image squeezed into one ViT-size tile (cheap contrastive pre-training)."""
        from vlmbench.modeling.resolution import to_pixel_tensor
        from vlmbench.modeling.vlm import PreparedImage

        size = self.model.config.vision.image_size
        cfg = self.model.vision.config
        tile = image.resize((size, size), resample=3)  # bicubic
        plan = self.model.resolution.plan(size, size)
        return PreparedImage(to_pixel_tensor([tile], cfg.image_mean, cfg.image_std), plan)

    def _pair_row(self, prompt: str, answer: str) -> tuple[list[int], list[int]]:
        return tokenize_segments(self.tokenizer, conversation_segments(self.tokenizer, [(prompt, answer)]))


__all__ = ["Batch", "Collator"]
