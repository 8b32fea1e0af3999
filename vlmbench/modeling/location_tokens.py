"""Location tokens: a box as four vocabulary entries, PaliGemma's `<locNNNN>` convention.

PaliGemma (and Pix2Seq / Kosmos-2 before it) writes a box as four tokens `<loc{y1}><loc{x1}><loc{y2}><loc{x2}>`,
each coordinate a bin of a 1024-bin grid over the image side (coordinate = bin / 1024 * side). Each
coordinate is then one classification over the location vocabulary instead of a number spelled digit
by digit, which a small LLM learns far more easily: a wrong digit token is as wrong as any other,
while a wrong location token can sit next to the right one.

A from-scratch demo model needs far fewer than 1024 bins, so a tokenizer may hold a subset: `levels`
evenly spaced bins (`levels` must divide 1024; 128 levels on a 128-pixel image is one bin per pixel).
The text stays PaliGemma's either way, so the grounding scorer reads one format for both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

LOC_BINS = 1024
LOC_PATTERN = r"<loc(\d{4})>"  # one coordinate; four in a row are (y1, x1, y2, x2)


def location_token(bin_index: int) -> str:
    """The token of one bin of the 1024-bin grid."""
    if not 0 <= bin_index < LOC_BINS:
        raise ValueError(f"location bin must lie in [0, {LOC_BINS}), got {bin_index}")
    return f"<loc{bin_index:04d}>"


def check_levels(levels: int) -> None:
    """ValueError unless `levels` evenly divides the 1024-bin grid."""
    if levels < 2 or levels > LOC_BINS or LOC_BINS % levels:
        raise ValueError(f"location levels must divide {LOC_BINS} (e.g. 64, 128, 256), got {levels}")


def location_bins(levels: int) -> list[int]:
    """The bins a tokenizer with `levels` location tokens holds: every (1024 / levels)-th bin."""
    check_levels(levels)
    step = LOC_BINS // levels
    return list(range(0, LOC_BINS, step))


def quantize(coordinate: float, side: float, levels: int) -> int:
    """The bin (on the 1024 grid, one of `location_bins(levels)`) nearest to a pixel coordinate."""
    step = LOC_BINS // levels
    level = round(coordinate / side * levels)
    return min(max(level, 0), levels - 1) * step


def box_to_location_text(bbox_xywh: Sequence[float], width: float, height: float, levels: int) -> str:
    """A COCO [x, y, w, h] pixel box as PaliGemma's four location tokens (y1, x1, y2, x2)."""
    check_levels(levels)
    x, y, w, h = bbox_xywh
    bins = (quantize(y, height, levels), quantize(x, width, levels),
            quantize(y + h, height, levels), quantize(x + w, width, levels))  # fmt: skip
    return "".join(location_token(b) for b in bins)


def add_location_tokens(tokenizer: Any, levels: int) -> list[int]:
    """Add the `levels` location tokens the tokenizer lacks (as plain added tokens, so decoding keeps
    them); their ids in bin order."""
    names = [location_token(b) for b in location_bins(levels)]
    vocab = tokenizer.get_vocab()
    missing = [n for n in names if n not in vocab]
    if missing:
        tokenizer.add_tokens(missing)
    return tokenizer.convert_tokens_to_ids(names)


def initial_location_embeddings(existing: torch.Tensor, levels: int) -> torch.Tensor:
    """Starting embeddings for `levels` new location tokens: the mean of the existing rows plus a
    sinusoidal code of the bin's position, scaled to the existing rows' typical norm, so that
    neighbouring bins start close together and distant ones apart (an ordered code the LLM can read
    and write), rather than unrelated random vectors."""
    dim = existing.shape[1]
    mean = existing.float().mean(0)
    spread = (existing.float() - mean).norm(dim=1).median()
    positions = torch.arange(levels, dtype=torch.float32).unsqueeze(1)
    # wavelengths from 4 levels up to 4x the range: fine and coarse position both present
    wavelengths = torch.logspace(math.log10(4.0), math.log10(4.0 * levels), dim // 2)
    angles = 2 * math.pi * positions / wavelengths.unsqueeze(0)
    code = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if code.shape[1] < dim:
        code = torch.cat([code, torch.zeros(levels, dim - code.shape[1])], dim=1)
    code = code / code.norm(dim=1, keepdim=True) * spread
    return (mean + code).to(existing.dtype)


__all__ = [
    "LOC_BINS",
    "LOC_PATTERN",
    "add_location_tokens",
    "box_to_location_text",
    "check_levels",
    "initial_location_embeddings",
    "location_bins",
    "location_token",
    "quantize",
]
