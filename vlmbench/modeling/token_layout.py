"""Where each visual token looks: the part of the image a token of a whole-image input covers.

A token can only know its place in the image when the encoder input it comes from shows the whole
image: the single view of a fixed or native-resolution strategy, or the thumbnail (base image) of a
tiling strategy. A token of a high-resolution tile knows where it sits inside its tile, but nothing in
its content says which tile that is, so tile tokens have no layout here. Token order within an input
is the projector's raster order over its token grid; projectors without a grid (Q-Former,
Perceiver, ...) and compressed token sets have no layout at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from vlmbench.modeling.resolution import ResolutionPlan


@dataclass(frozen=True)
class TokenLayout:
    """Tokens of one image that cover a known region: their indices in the image's visual token
    sequence and each region as fractions of the image side (x0, x1, y0, y1 in [0, 1])."""

    indices: torch.Tensor  # (n,) long
    regions: torch.Tensor  # (n, 4) float: x0, x1, y0, y1


def whole_image_inputs(plan: ResolutionPlan, letterboxed: bool) -> list[int]:
    """Indices (in `plan.tile_sizes` order) of the encoder inputs that show the whole image."""
    if plan.grid is None:  # fixed or native: one view of the whole image (unless padded to a square)
        return [] if letterboxed else [0]
    return [] if plan.thumbnail_index is None else [plan.thumbnail_index]


def token_layout(model: Any, plan: ResolutionPlan) -> TokenLayout | None:
    """The layout of the tokens a VLM feeds the LLM for an image with this plan (None when no token
    has one: no whole-image input, a projector without a token grid, or token compression)."""
    if getattr(model, "compression", None) is not None:
        return None
    patch = model.config.vision.patch_size
    letterboxed = bool(getattr(model.resolution, "letterbox", False))
    whole = set(whole_image_inputs(plan, letterboxed))
    indices, regions, offset = [], [], 0
    for k, (width, height) in enumerate(plan.tile_sizes):
        grid = (height // patch, width // patch)
        count = model.projector.num_tokens(grid)
        token_grid = model.projector.token_grid(grid)
        if k in whole and token_grid is not None:
            rows, cols = token_grid
            for r in range(rows):
                for c in range(cols):
                    indices.append(offset + r * cols + c)
                    regions.append((c / cols, (c + 1) / cols, r / rows, (r + 1) / rows))
        offset += count
    if not indices:
        return None
    return TokenLayout(torch.tensor(indices, dtype=torch.long), torch.tensor(regions, dtype=torch.float32))


__all__ = ["TokenLayout", "token_layout", "whole_image_inputs"]
