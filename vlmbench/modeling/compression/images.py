"""The image operators: `downsample:F` on the PIL image, and the resolution budgets.

`max-tiles:N` caps a tiling strategy (InternVL dynamic tiles: `max_tiles`, and `min_tiles` lowered
to it when above; LLaVA-NeXT anyres: only the pinpoint canvases of at most N tiles stay), and
`max-pixels:P` caps native resolution (Qwen2-VL's `max_pixels`, `min_pixels` lowered to it when
above). A budget the model's strategy has no knob for is refused, not ignored."""

from __future__ import annotations

import dataclasses

from PIL import Image

from vlmbench.errors import UserError
from vlmbench.modeling.compression.spec import CompressionSpec
from vlmbench.modeling.config import ResolutionConfig

_RESAMPLE = Image.Resampling.BICUBIC


def downsample(image: Image.Image, spec: CompressionSpec) -> Image.Image:
    """The image resized by `downsample:F` (each side × F, rounded, at least 1 px; bicubic)."""
    factor = next((op.value for op in spec.image_ops if op.name == "downsample"), None)
    if factor is None or factor == 1.0:
        return image
    return image.resize(downsampled_size(image.width, image.height, factor), _RESAMPLE)


def downsampled_size(width: int, height: int, factor: float) -> tuple[int, int]:
    return max(1, round(width * factor)), max(1, round(height * factor))


def spec_size(width: int, height: int, spec: CompressionSpec) -> tuple[int, int]:
    """The size the resolution strategy sees for a `width`×`height` image under `spec`."""
    factor = next((op.value for op in spec.image_ops if op.name == "downsample"), 1.0)
    return (width, height) if factor == 1.0 else downsampled_size(width, height, factor)


def budget_resolution(resolution: ResolutionConfig, spec: CompressionSpec, model: str) -> ResolutionConfig:
    """A copy of a `ResolutionConfig` with the spec's tile / pixel budget applied (UserError if it has no such knob)."""
    for op in spec.image_ops:
        if op.name == "max-tiles":
            resolution = _max_tiles(resolution, int(op.value), model)
        elif op.name == "max-pixels":
            resolution = _max_pixels(resolution, int(op.value), model)
    return resolution


def _max_tiles(cfg: ResolutionConfig, n: int, model: str) -> ResolutionConfig:
    name = cfg.name
    if name == "dynamic_tiles":
        return dataclasses.replace(cfg, max_tiles=n, min_tiles=min(cfg.min_tiles, n))
    if name == "anyres":
        side = cfg.tile_size
        kept = [p for p in cfg.pinpoints if (p[0] // side) * (p[1] // side) <= n]
        if not kept:
            raise UserError(f"--visual-tokens max-tiles:{n}: every anyres canvas of {model} has more than {n} tiles; raise N")
        return dataclasses.replace(cfg, pinpoints=kept)
    raise UserError(
        f"--visual-tokens max-tiles:{n}: {model} uses the '{name}' resolution strategy, which cuts no tiles; "
        "max-tiles applies to dynamic_tiles and anyres models"
    )


def _max_pixels(cfg: ResolutionConfig, p: int, model: str) -> ResolutionConfig:
    name = cfg.name
    if name != "native":
        raise UserError(
            f"--visual-tokens max-pixels:{p}: {model} uses the '{name}' resolution strategy; "
            "max-pixels applies to native-resolution models (Qwen2-VL style)"
        )
    factor = cfg.patch_size * cfg.merge_size
    if p < factor * factor:
        raise UserError(f"--visual-tokens max-pixels:{p}: below one merged patch ({factor}x{factor} = {factor * factor} px); raise P")
    return dataclasses.replace(cfg, max_pixels=p, min_pixels=min(cfg.min_pixels, p))


__all__ = ["budget_resolution", "downsample", "downsampled_size", "spec_size"]
