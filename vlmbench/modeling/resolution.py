"""Resolution strategies: how one image becomes the encoder inputs (tiles) of a VLM.

Four published schemes, each one class registered in `STRATEGIES`:

- `fixed`: one S×S input, stretched or (LLaVA-1.5 "pad") letterboxed with the mean colour.
- `anyres` (LLaVA-NeXT): pick the best pinpoint canvas, fit + pad into it, cut tiles, and feed a
  squashed tile-sized view of the whole image first.
- `dynamic_tiles` (InternVL): a cols×rows grid (min..max tiles) whose aspect ratio is closest to the
  image's, tiles row-major, plus a thumbnail last.
- `native` (Qwen2-VL): one input at (close to) the image's own size, sides multiples of
  patch_size*merge_size and area clamped into [min_pixels, max_pixels].

`plan(width, height)` is pure arithmetic (so token budgets are known without pixels, e.g. for
`vlmbench inspect`); `prepare(image)` cuts the pixels and returns the same plan. All sizes are (W, H).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from PIL import Image

from vlmbench.errors import UserError
from vlmbench.modeling.config import ResolutionConfig

Size = tuple[int, int]  # (width, height)

CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
MAX_ASPECT_RATIO = 200  # Qwen2-VL refuses images more elongated than this
_RESAMPLE = Image.Resampling.BICUBIC


@dataclass(frozen=True)
class ResolutionPlan:
    """What a strategy does to an image of a given size, without touching pixels."""

    strategy: str
    resized: Size  # size the image is resized to before cropping (anyres: the chosen pinpoint canvas)
    grid: tuple[int, int] | None  # (columns, rows) of tiles; None for fixed and native
    tile_sizes: tuple[Size, ...]  # (W, H) of every encoder input in feeding order, thumbnail included
    thumbnail_index: int | None  # position of the thumbnail / base image in tile_sizes, or None


# ---- validation helpers ----------------------------------------------------------------------


def _check_size(strategy: str, width: Any, height: Any) -> tuple[int, int]:
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise UserError(f"resolution '{strategy}': image {name} must be an integer, got {value!r}")
    width, height = int(width), int(height)
    if width < 1 or height < 1:
        raise UserError(
            f"resolution '{strategy}': image size {width}x{height} is empty; width and height must be at least 1 pixel"
        )
    return width, height


def _check_image(strategy: str, image: Any) -> Image.Image:
    if not isinstance(image, Image.Image):
        raise UserError(
            f"resolution '{strategy}': expected a PIL image, got {type(image).__name__}; "
            "open the file with PIL.Image.open first"
        )
    _check_size(strategy, image.width, image.height)
    return image.convert("RGB") if image.mode != "RGB" else image


def _positive(strategy: str, **values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"resolution '{strategy}': {name} must be a positive integer, got {value!r}")


def _crop_grid(image: Image.Image, tile: int, cols: int, rows: int) -> list[Image.Image]:
    """Cut a (cols*tile)×(rows*tile) image into tile×tile crops, row by row."""
    return [
        image.crop((c * tile, r * tile, (c + 1) * tile, (r + 1) * tile))
        for r in range(rows)
        for c in range(cols)
    ]


# ---- strategies ------------------------------------------------------------------------------


class ResolutionStrategy:
    """Base class: subclasses set `name` and implement `params`, `plan` and `_tiles`."""

    name: str = ""

    def params(self) -> dict[str, Any]:  # pragma: no cover - abstract
        """The strategy's parameters under the names of the `inspect` contract (DESIGN.md)."""
        raise NotImplementedError

    def plan(self, width: int, height: int) -> ResolutionPlan:  # pragma: no cover - abstract
        raise NotImplementedError

    def _tiles(self, image: Image.Image, plan: ResolutionPlan) -> list[Image.Image]:  # pragma: no cover
        raise NotImplementedError

    def prepare(self, image: Image.Image) -> tuple[list[Image.Image], ResolutionPlan]:
        """RGB encoder inputs in the order of `plan.tile_sizes`, and that plan."""
        image = _check_image(self.name, image)
        plan = self.plan(image.width, image.height)
        return self._tiles(image, plan), plan


class FixedResolution(ResolutionStrategy):
    """One S×S input. `letterbox` follows LLaVA-1.5's "pad" mode: the image is first centred on a
    square canvas of its longer side filled with the mean colour, so nothing is stretched."""

    name = "fixed"

    def __init__(self, size: int, letterbox: bool = False, image_mean: Sequence[float] = CLIP_MEAN) -> None:
        _positive(self.name, size=size)
        if len(image_mean) != 3:
            raise UserError(f"resolution 'fixed': image_mean needs 3 values (RGB), got {list(image_mean)}")
        self.size = size
        self.letterbox = bool(letterbox)
        # LLaVA-1.5 fills with the encoder mean as 0..255 integers (truncated, not rounded).
        self.fill: tuple[int, int, int] = (
            int(image_mean[0] * 255),
            int(image_mean[1] * 255),
            int(image_mean[2] * 255),
        )

    def params(self) -> dict[str, Any]:
        return {"size": self.size, "letterbox": self.letterbox}

    def plan(self, width: int, height: int) -> ResolutionPlan:
        _check_size(self.name, width, height)
        s = (self.size, self.size)
        return ResolutionPlan(self.name, s, None, (s,), None)

    def _tiles(self, image: Image.Image, plan: ResolutionPlan) -> list[Image.Image]:
        if self.letterbox and image.width != image.height:
            side = max(image.width, image.height)
            canvas = Image.new("RGB", (side, side), self.fill)
            canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
            image = canvas
        return [image.resize(plan.resized, _RESAMPLE)]


def best_pinpoint(width: int, height: int, pinpoints: Sequence[Size]) -> Size:
    """LLaVA-NeXT's choice of canvas (W, H): the most image pixels kept after an aspect-preserving fit
    (never counting upscaling beyond the original), then the least padding; the first pinpoint wins
    exact ties. Effective areas start below 0 so that a sliver whose fitted side truncates to 0 px
    still gets a canvas (transformers' `select_best_resolution` returns None there)."""
    best = pinpoints[0]
    best_effective, best_wasted = -1, math.inf
    for pw, ph in pinpoints:
        scale = min(pw / width, ph / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        wasted = pw * ph - effective
        if effective > best_effective or (effective == best_effective and wasted < best_wasted):
            best, best_effective, best_wasted = (pw, ph), effective, wasted
    return best


def fit_within(width: int, height: int, target: Size) -> Size:
    """Aspect-preserving size that fills `target` along its limiting side (LLaVA-NeXT rounds the other up)."""
    tw, th = target
    scale_w, scale_h = tw / width, th / height
    if scale_w < scale_h:
        return tw, min(math.ceil(height * scale_w), th)
    return min(math.ceil(width * scale_h), tw), th


class AnyRes(ResolutionStrategy):
    """LLaVA-NeXT "anyres": tiles of the best pinpoint canvas plus a tile-sized base image, fed first."""

    name = "anyres"

    def __init__(self, tile_size: int, pinpoints: Sequence[Sequence[int]]) -> None:
        _positive(self.name, tile_size=tile_size)
        points: list[Size] = []
        for point in pinpoints or []:
            if len(point) != 2:
                raise UserError(f"resolution 'anyres': pinpoint {list(point)} must be [width, height]")
            w, h = point
            _positive(self.name, pinpoint_width=w, pinpoint_height=h)
            if w % tile_size or h % tile_size:
                raise UserError(
                    f"resolution 'anyres': pinpoint {w}x{h} is not a multiple of tile_size {tile_size}; "
                    "use whole numbers of tiles"
                )
            points.append((w, h))
        if not points:
            raise UserError("resolution 'anyres': pinpoints is empty; give at least one [width, height]")
        self.tile_size = tile_size
        self.pinpoints: tuple[Size, ...] = tuple(points)

    def params(self) -> dict[str, Any]:
        return {"tile_size": self.tile_size, "pinpoints": [list(p) for p in self.pinpoints]}

    def plan(self, width: int, height: int) -> ResolutionPlan:
        width, height = _check_size(self.name, width, height)
        canvas = best_pinpoint(width, height, self.pinpoints)
        t = self.tile_size
        cols, rows = canvas[0] // t, canvas[1] // t
        return ResolutionPlan(self.name, canvas, (cols, rows), ((t, t),) * (1 + cols * rows), 0)

    def _tiles(self, image: Image.Image, plan: ResolutionPlan) -> list[Image.Image]:
        assert plan.grid is not None
        t = self.tile_size
        fitted = fit_within(image.width, image.height, plan.resized)
        canvas = Image.new("RGB", plan.resized, (0, 0, 0))  # LLaVA-NeXT pads with black
        canvas.paste(
            image.resize(fitted, _RESAMPLE),
            ((plan.resized[0] - fitted[0]) // 2, (plan.resized[1] - fitted[1]) // 2),
        )
        base = image.resize((t, t), _RESAMPLE)
        return [base, *_crop_grid(canvas, t, *plan.grid)]


def tile_grids(min_tiles: int, max_tiles: int) -> list[tuple[int, int]]:
    """Every (cols, rows) with min_tiles <= cols*rows <= max_tiles, by tile count (cols-major within a count).

    The order matters: InternVL breaks aspect-ratio ties in favour of the later candidate. This is the
    order of transformers' InternVL/GOT-OCR2 port; InternVL's own code sorts a Python set, whose order
    within one tile count differs, which changes the result only for exact ties between same-count grids
    (possible only with min_tiles > 1, e.g. a 5x2 image with exactly 4 tiles: 2x2 here, 4x1 there)."""
    grids = [
        (c, r)
        for c in range(1, max_tiles + 1)
        for r in range(1, max_tiles + 1)
        if min_tiles <= c * r <= max_tiles
    ]
    return sorted(grids, key=lambda g: g[0] * g[1])


def closest_grid(
    width: int, height: int, tile_size: int, grids: Sequence[tuple[int, int]]
) -> tuple[int, int]:
    """InternVL's `find_closest_aspect_ratio`: the grid whose cols/rows is nearest the image's aspect
    ratio; on an exact tie a later (bigger) grid replaces the current one only while the image has more
    than half the pixels that grid would cover, so small images are not blown up into many tiles."""
    aspect = width / height
    area = width * height
    best, best_diff = (1, 1), math.inf
    for cols, rows in grids:
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and area > 0.5 * tile_size * tile_size * cols * rows:
            best = (cols, rows)
    return best


class DynamicTiles(ResolutionStrategy):
    """InternVL dynamic high resolution: resize to a whole grid of tiles, then a thumbnail last."""

    name = "dynamic_tiles"

    def __init__(
        self, tile_size: int, min_tiles: int = 1, max_tiles: int = 12, thumbnail: bool = True
    ) -> None:
        _positive(self.name, tile_size=tile_size, min_tiles=min_tiles, max_tiles=max_tiles)
        if min_tiles > max_tiles:
            raise UserError(
                f"resolution 'dynamic_tiles': min_tiles {min_tiles} exceeds max_tiles {max_tiles}; "
                "set min_tiles <= max_tiles"
            )
        self.tile_size = tile_size
        self.min_tiles = min_tiles
        self.max_tiles = max_tiles
        self.thumbnail = bool(thumbnail)
        self._grids = tuple(tile_grids(min_tiles, max_tiles))

    def params(self) -> dict[str, Any]:
        return {
            "tile_size": self.tile_size,
            "min_tiles": self.min_tiles,
            "max_tiles": self.max_tiles,
            "thumbnail": self.thumbnail,
        }

    def plan(self, width: int, height: int) -> ResolutionPlan:
        width, height = _check_size(self.name, width, height)
        t = self.tile_size
        cols, rows = closest_grid(width, height, t, self._grids)
        n = cols * rows
        with_thumb = self.thumbnail and n > 1
        sizes = ((t, t),) * (n + int(with_thumb))
        return ResolutionPlan(self.name, (cols * t, rows * t), (cols, rows), sizes, n if with_thumb else None)

    def _tiles(self, image: Image.Image, plan: ResolutionPlan) -> list[Image.Image]:
        assert plan.grid is not None
        t = self.tile_size
        tiles = _crop_grid(image.resize(plan.resized, _RESAMPLE), t, *plan.grid)
        if plan.thumbnail_index is not None:
            tiles.append(image.resize((t, t), _RESAMPLE))
        return tiles


def smart_resize(width: int, height: int, factor: int, min_pixels: int, max_pixels: int) -> Size:
    """Qwen2-VL's size rule, returned as (W, H): sides rounded to multiples of `factor`, then, if the
    area leaves [min_pixels, max_pixels], both sides rescaled by the same sqrt factor (down: floored,
    at least one factor; up: ceiled). Raises UserError beyond Qwen2-VL's aspect-ratio limit."""
    width, height = _check_size("native", width, height)
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        raise UserError(
            f"resolution 'native': image size {width}x{height} has aspect ratio {ratio:.1f}, "
            f"above the limit of {MAX_ASPECT_RATIO}; crop or pad the image first"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return w_bar, h_bar


class NativeResolution(ResolutionStrategy):
    """Qwen2-VL native resolution: one input of the smart-resized size (a variable patch grid)."""

    name = "native"

    def __init__(self, patch_size: int, merge_size: int, min_pixels: int, max_pixels: int) -> None:
        _positive(
            self.name,
            patch_size=patch_size,
            merge_size=merge_size,
            min_pixels=min_pixels,
            max_pixels=max_pixels,
        )
        factor = patch_size * merge_size
        if max_pixels < factor * factor or min_pixels > max_pixels:
            raise UserError(
                f"resolution 'native': need {factor * factor} (= (patch_size*merge_size)^2) <= max_pixels and "
                f"min_pixels <= max_pixels, got min_pixels {min_pixels}, max_pixels {max_pixels}"
            )
        self.patch_size = patch_size
        self.merge_size = merge_size
        self.min_pixels = min_pixels
        self.max_pixels = max_pixels

    def params(self) -> dict[str, Any]:
        return {
            "patch_size": self.patch_size,
            "merge_size": self.merge_size,
            "min_pixels": self.min_pixels,
            "max_pixels": self.max_pixels,
        }

    def plan(self, width: int, height: int) -> ResolutionPlan:
        size = smart_resize(
            width, height, self.patch_size * self.merge_size, self.min_pixels, self.max_pixels
        )
        return ResolutionPlan(self.name, size, None, (size,), None)

    def _tiles(self, image: Image.Image, plan: ResolutionPlan) -> list[Image.Image]:
        return [image.resize(plan.resized, _RESAMPLE)]


STRATEGIES: Mapping[str, type[ResolutionStrategy]] = MappingProxyType(
    {
        FixedResolution.name: FixedResolution,
        AnyRes.name: AnyRes,
        DynamicTiles.name: DynamicTiles,
        NativeResolution.name: NativeResolution,
    }
)


def build_resolution(cfg: ResolutionConfig, image_mean: Sequence[float] = CLIP_MEAN) -> ResolutionStrategy:
    """The strategy named by `cfg.name`. `image_mean` (0..1 per channel) is the letterbox fill colour of
    `fixed`, as LLaVA-1.5 pads with the encoder's mean."""
    if cfg.name not in STRATEGIES:
        raise UserError(f"resolution.name '{cfg.name}' is unknown; valid options: {', '.join(STRATEGIES)}")
    if cfg.name == "fixed":
        return FixedResolution(cfg.size, cfg.letterbox, image_mean)
    if cfg.name == "anyres":
        return AnyRes(cfg.tile_size, cfg.pinpoints)
    if cfg.name == "dynamic_tiles":
        return DynamicTiles(cfg.tile_size, cfg.min_tiles, cfg.max_tiles, cfg.thumbnail)
    return NativeResolution(cfg.patch_size, cfg.merge_size, cfg.min_pixels, cfg.max_pixels)


# ---- pixels ----------------------------------------------------------------------------------


def _normaliser(mean: Sequence[float], std: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std need 3 values (RGB), got {len(mean)} and {len(std)}")
    m = torch.tensor([float(v) for v in mean], dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor([float(v) for v in std], dtype=torch.float32).view(3, 1, 1)
    return m, s


def _to_chw(image: Image.Image, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    if image.mode != "RGB":
        image = image.convert("RGB")
    array = np.asarray(image, dtype=np.uint8)  # (H, W, 3)
    x = torch.from_numpy(array.copy()).permute(2, 0, 1).to(torch.float32).div_(255.0)  # (3, H, W)
    return (x - mean) / std


def to_pixel_tensors(
    images: Sequence[Image.Image], mean: Sequence[float], std: Sequence[float]
) -> list[torch.Tensor]:
    """One normalised float32 (3, H, W) tensor per image; sizes may differ (native resolution)."""
    m, s = _normaliser(mean, std)
    return [_to_chw(image, m, s) for image in images]


def to_pixel_tensor(
    images: Sequence[Image.Image], mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """Stack same-size images into a normalised float32 (T, 3, H, W) tensor."""
    if not images:
        raise ValueError("to_pixel_tensor needs at least one image")
    sizes = {image.size for image in images}
    if len(sizes) != 1:
        raise ValueError(
            f"to_pixel_tensor needs images of one size, got {sorted(sizes)}; use to_pixel_tensors for mixed sizes"
        )
    return torch.stack(to_pixel_tensors(images, mean, std))
