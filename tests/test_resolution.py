"""Resolution strategies against the published algorithms (transformers' LLaVA-NeXT, Qwen2-VL and
GOT-OCR2/InternVL code, plus a re-statement of InternVL's `dynamic_preprocess`), hand-checked tile
counts, plan/prepare agreement, and the error messages for impossible inputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.image_processing_utils import select_best_resolution
from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import (
    get_all_supported_aspect_ratios,
    get_optimal_tiled_canvas,
)
from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize

from vlmbench.errors import UserError
from vlmbench.modeling.config import RESOLUTION_NAMES, ResolutionConfig
from vlmbench.modeling.resolution import (
    STRATEGIES,
    AnyRes,
    DynamicTiles,
    FixedResolution,
    NativeResolution,
    ResolutionPlan,
    ResolutionStrategy,
    best_pinpoint,
    build_resolution,
    closest_grid,
    smart_resize,
    tile_grids,
    to_pixel_tensor,
    to_pixel_tensors,
)

# 40 sizes sweeping from tall and thin (16x900) to wide and flat (3000x200), then their transposes
# and a few awkward ones (tiny, square, exact multiples of common tile sizes).
SWEEP = [(round(16 * (3000 / 16) ** (i / 39)), round(900 * (200 / 900) ** (i / 39))) for i in range(40)]
SIZES = (
    SWEEP
    + [(h, w) for (w, h) in SWEEP]
    + [
        (1, 1),
        (1, 7),
        (5, 4),
        (33, 33),
        (336, 336),
        (448, 448),
        (896, 896),
        (1000, 500),
        (1344, 896),
        (4000, 3000),
    ]
)

LLAVA_NEXT_PINPOINTS = [[672, 336], [336, 672], [672, 672], [1008, 336], [336, 1008]]


def random_image(width: int, height: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    return image if mode == "RGB" else image.convert(mode)


def tile_arrays(tiles: list[Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(t, dtype=np.uint8) for t in tiles])


# ---- registry and parameters -------------------------------------------------------------------


def test_registry_covers_config_names_and_is_read_only() -> None:
    assert set(STRATEGIES) == set(RESOLUTION_NAMES)
    for name, cls in STRATEGIES.items():
        assert cls.name == name and issubclass(cls, ResolutionStrategy)
    with pytest.raises(TypeError):
        STRATEGIES["other"] = FixedResolution  # type: ignore[index]


@pytest.mark.parametrize(
    ("name", "keys"),
    [
        ("fixed", {"size", "letterbox"}),
        ("anyres", {"tile_size", "pinpoints"}),
        ("dynamic_tiles", {"tile_size", "min_tiles", "max_tiles", "thumbnail"}),
        ("native", {"patch_size", "merge_size", "min_pixels", "max_pixels"}),
    ],
)
def test_params_use_the_inspect_contract_names(name: str, keys: set[str]) -> None:
    strategy = build_resolution(ResolutionConfig(name=name))
    assert strategy.name == name
    params = strategy.params()
    assert set(params) == keys
    json.dumps(params)  # goes into `vlmbench inspect` output as is
    if name == "anyres":
        assert params["pinpoints"] == ResolutionConfig().pinpoints  # [[W, H], ...] as configured


def test_build_resolution_passes_config_values() -> None:
    cfg = ResolutionConfig(name="dynamic_tiles", tile_size=32, min_tiles=2, max_tiles=6, thumbnail=False)
    assert build_resolution(cfg).params() == {
        "tile_size": 32,
        "min_tiles": 2,
        "max_tiles": 6,
        "thumbnail": False,
    }
    cfg = ResolutionConfig(name="native", patch_size=14, merge_size=2, min_pixels=3136, max_pixels=1003520)
    assert build_resolution(cfg).params() == {
        "patch_size": 14,
        "merge_size": 2,
        "min_pixels": 3136,
        "max_pixels": 1003520,
    }
    with pytest.raises(UserError, match="valid options"):
        build_resolution(ResolutionConfig(name="crop"))


# ---- hand-checked tile counts (what sets the visual token budget) --------------------------------


def test_anyres_llava_next_1000x500() -> None:
    plan = AnyRes(336, LLAVA_NEXT_PINPOINTS).plan(1000, 500)
    # 672x336, 672x672 and 1008x336 all keep 672x336 image pixels; 672x336 wastes the least.
    assert plan == ResolutionPlan("anyres", (672, 336), (2, 1), ((336, 336),) * 3, 0)


def test_anyres_tall_and_square_images() -> None:
    strategy = AnyRes(336, LLAVA_NEXT_PINPOINTS)
    assert strategy.plan(300, 900).grid == (1, 3)  # 336x1008 keeps all 270000 pixels
    assert strategy.plan(800, 800).grid == (2, 2)
    assert len(strategy.plan(800, 800).tile_sizes) == 5


def test_dynamic_tiles_internvl_448() -> None:
    strategy = DynamicTiles(448, 1, 12, True)
    plan = strategy.plan(1344, 896)  # aspect 1.5 → exactly 3x2
    assert plan == ResolutionPlan("dynamic_tiles", (1344, 896), (3, 2), ((448, 448),) * 7, 6)
    # A single tile gets no thumbnail.
    assert strategy.plan(448, 448) == ResolutionPlan("dynamic_tiles", (448, 448), (1, 1), ((448, 448),), None)
    # Square ties (1x1, 2x2, 3x3): 896² > 0.5·448²·4 moves to 2x2, but not > 0.5·448²·9, so not 3x3.
    assert strategy.plan(896, 896).grid == (2, 2)
    assert len(strategy.plan(896, 896).tile_sizes) == 5
    assert strategy.plan(3000, 200).grid == (12, 1)
    assert DynamicTiles(448, 1, 12, False).plan(1344, 896).thumbnail_index is None
    assert len(DynamicTiles(448, 1, 12, False).plan(1344, 896).tile_sizes) == 6


def test_native_qwen2_vl_sizes() -> None:
    strategy = NativeResolution(14, 2, 56 * 56, 28 * 28 * 1280)
    # round(500/28)=18, round(1000/28)=36 → 1008x504, i.e. 36x18 merged tokens.
    assert strategy.plan(1000, 500) == ResolutionPlan("native", (1008, 504), None, ((1008, 504),), None)
    # Too small: scaled up to min_pixels with ceil.
    w, h = strategy.plan(20, 10).resized
    assert w % 28 == 0 and h % 28 == 0 and w * h >= 56 * 56
    # Too big: scaled down below max_pixels with floor.
    w, h = strategy.plan(4000, 3000).resized
    assert w % 28 == 0 and h % 28 == 0 and w * h <= 28 * 28 * 1280


def test_fixed_is_one_input() -> None:
    for letterbox in (False, True):
        plan = FixedResolution(64, letterbox).plan(1000, 10)
        assert plan == ResolutionPlan("fixed", (64, 64), None, ((64, 64),), None)


# ---- agreement with the reference implementations ------------------------------------------------


@pytest.mark.parametrize(
    "pinpoints",
    [
        LLAVA_NEXT_PINPOINTS,
        [[672, 336], [1008, 336], [336, 1344], [672, 672], [1344, 336]],  # asymmetric: catches W/H swaps
        ResolutionConfig().pinpoints,
        [[384 * c, 384 * r] for c in range(1, 5) for r in range(1, 5)],  # LLaVA-OneVision-like grid
    ],
)
def test_anyres_choice_matches_transformers(pinpoints: list[list[int]]) -> None:
    hf_pinpoints = [(h, w) for (w, h) in pinpoints]  # transformers works in (height, width)
    for width, height in SIZES:
        hf_h, hf_w = select_best_resolution((height, width), hf_pinpoints)
        assert best_pinpoint(width, height, [tuple(p) for p in pinpoints]) == (hf_w, hf_h), (width, height)


def test_anyres_pixels_match_transformers_llava_next() -> None:
    pinpoints = [[64, 32], [32, 64], [64, 64], [96, 32], [32, 96]]
    hf = LlavaNextImageProcessorPil(
        size={"shortest_edge": 32},
        crop_size={"height": 32, "width": 32},
        image_grid_pinpoints=[[h, w] for (w, h) in pinpoints],
        do_rescale=False,
        do_normalize=False,
        do_pad=False,
    )
    strategy = AnyRes(32, pinpoints)
    for seed, (width, height) in enumerate([(100, 50), (37, 91), (200, 41), (33, 33), (17, 70)]):
        image = random_image(width, height, seed)
        expected = hf(image, return_tensors="np")["pixel_values"][0]  # (1 + tiles, 3, 32, 32), base first
        tiles, _ = strategy.prepare(image)
        np.testing.assert_array_equal(tile_arrays(tiles).transpose(0, 3, 1, 2), expected.astype(np.uint8))


def internvl_grid(width: int, height: int, min_num: int, max_num: int, image_size: int) -> tuple[int, int]:
    """InternVL's published `find_closest_aspect_ratio` with its candidate list, restated plainly:
    candidate grids from a set sorted by tile count, nearest aspect ratio wins, an exact tie goes to
    the later grid only when the image area exceeds half the area that grid covers."""
    aspect = width / height
    candidates = {
        (i, j)
        for n in range(min_num, max_num + 1)
        for i in range(1, n + 1)
        for j in range(1, n + 1)
        if min_num <= i * j <= max_num
    }
    best, best_diff = (1, 1), float("inf")
    for cols, rows in sorted(candidates, key=lambda g: g[0] * g[1]):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and width * height > 0.5 * image_size * image_size * cols * rows:
            best = (cols, rows)
    return best


def internvl_dynamic_preprocess(
    image: Image.Image, min_num: int, max_num: int, image_size: int, use_thumbnail: bool
) -> tuple[tuple[int, int], list[Image.Image]]:
    """InternVL's published `dynamic_preprocess`: resize to the grid, crop row-major, thumbnail last."""
    cols, rows = internvl_grid(image.width, image.height, min_num, max_num, image_size)
    resized = image.resize((cols * image_size, rows * image_size))  # PIL's default filter: bicubic
    crops = []
    for k in range(cols * rows):
        x, y = (k % cols) * image_size, (k // cols) * image_size
        crops.append(resized.crop((x, y, x + image_size, y + image_size)))
    if use_thumbnail and len(crops) != 1:
        crops.append(image.resize((image_size, image_size)))
    return (cols, rows), crops


@pytest.mark.parametrize("max_tiles", [1, 4, 6, 12, 24])
@pytest.mark.parametrize("tile", [448, 32])
def test_dynamic_tiles_grid_matches_internvl(max_tiles: int, tile: int) -> None:
    strategy = DynamicTiles(tile, 1, max_tiles, True)
    for width, height in SIZES:
        expected = internvl_grid(width, height, 1, max_tiles, tile)
        plan = strategy.plan(width, height)
        assert plan.grid == expected, (width, height)
        assert plan.resized == (expected[0] * tile, expected[1] * tile)


@pytest.mark.parametrize(
    ("min_tiles", "max_tiles"), [(1, 1), (1, 6), (1, 12), (2, 6), (4, 4), (3, 9), (6, 7)]
)
def test_dynamic_tiles_grid_matches_transformers_internvl(min_tiles: int, max_tiles: int) -> None:
    """transformers' InternVL / GOT-OCR2 port enumerates grids columns-major within a tile count, as we do.
    InternVL's own code iterates a Python set there; the two orders differ only on exact aspect-ratio
    ties between same-count grids, which need min_tiles > 1 (e.g. 5x2 with 4..4 tiles)."""
    assert tile_grids(min_tiles, max_tiles) == get_all_supported_aspect_ratios(min_tiles, max_tiles)
    for tile in (448, 32):
        strategy = DynamicTiles(tile, min_tiles, max_tiles)
        for width, height in SIZES:
            expected = get_optimal_tiled_canvas((height, width), (tile, tile), min_tiles, max_tiles)
            assert strategy.plan(width, height).grid == tuple(expected), (width, height, tile)


def test_dynamic_tiles_pixels_match_internvl() -> None:
    strategy = DynamicTiles(32, 1, 12, True)
    for seed, (width, height) in enumerate([(100, 50), (37, 91), (150, 150), (20, 20), (300, 30), (64, 96)]):
        image = random_image(width, height, seed)
        grid, expected = internvl_dynamic_preprocess(image, 1, 12, 32, True)
        tiles, plan = strategy.prepare(image)
        assert plan.grid == grid
        np.testing.assert_array_equal(tile_arrays(tiles), tile_arrays(expected))


@pytest.mark.parametrize(
    ("patch", "merge", "min_pixels", "max_pixels"),
    [(14, 2, 56 * 56, 28 * 28 * 1280), (8, 2, 32 * 32, 256 * 256), (16, 2, 4 * 32 * 32, 16 * 32 * 32)],
)
def test_native_matches_transformers_smart_resize(
    patch: int, merge: int, min_pixels: int, max_pixels: int
) -> None:
    strategy = NativeResolution(patch, merge, min_pixels, max_pixels)
    factor = patch * merge
    for width, height in SIZES:
        if max(width, height) / min(width, height) > 200:
            continue
        h, w = hf_smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
        assert strategy.plan(width, height).resized == (w, h), (width, height)
        assert smart_resize(width, height, factor, min_pixels, max_pixels) == (w, h)


def test_native_aspect_ratio_limit() -> None:
    strategy = NativeResolution(8, 2, 32 * 32, 256 * 256)
    strategy.plan(2000, 10)  # exactly 200:1 is allowed
    with pytest.raises(UserError, match=r"2010x10.*200"):
        strategy.plan(2010, 10)
    with pytest.raises(UserError, match=r"10x2010.*200"):
        strategy.prepare(Image.new("RGB", (10, 2010)))


def test_fixed_letterbox_pads_with_the_mean_colour() -> None:
    mean = (0.5, 0.25, 0.75)
    strategy = build_resolution(ResolutionConfig(name="fixed", size=32, letterbox=True), image_mean=mean)
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    (tile,), _ = strategy.prepare(image)
    pixels = np.asarray(tile)
    fill = [int(m * 255) for m in mean]
    assert pixels[0, 16].tolist() == fill and pixels[-1, 16].tolist() == fill  # top and bottom bands
    assert pixels[16, 16].tolist() == [255, 0, 0]  # centred content, not stretched
    # Stretch mode is a plain bicubic resize.
    (stretched,), _ = FixedResolution(32).prepare(image)
    assert (
        np.asarray(stretched).tolist()
        == np.asarray(image.resize((32, 32), Image.Resampling.BICUBIC)).tolist()
    )
    # A square image is not padded.
    square = random_image(50, 50)
    (a,), _ = strategy.prepare(square)
    (b,), _ = FixedResolution(32).prepare(square)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# ---- plan == prepare, modes ----------------------------------------------------------------------

STRATEGY_CASES = [
    FixedResolution(32),
    FixedResolution(32, letterbox=True),
    AnyRes(32, [[64, 32], [32, 64], [64, 64], [96, 32]]),
    DynamicTiles(32, 1, 6, True),
    DynamicTiles(32, 2, 4, False),
    NativeResolution(8, 2, 16 * 16, 96 * 96),
]


@pytest.mark.parametrize("strategy", STRATEGY_CASES, ids=lambda s: f"{s.name}-{sorted(s.params().items())}")
def test_prepare_produces_the_plan(strategy: ResolutionStrategy) -> None:
    for seed, ((width, height), mode) in enumerate(
        [((100, 50), "RGB"), ((37, 91), "L"), ((1, 1), "RGBA"), ((150, 3), "P"), ((64, 64), "RGB")]
    ):
        image = random_image(width, height, seed, mode)
        tiles, plan = strategy.prepare(image)
        assert plan == strategy.plan(width, height)
        assert [t.size for t in tiles] == list(plan.tile_sizes)
        assert all(t.mode == "RGB" for t in tiles)
        if plan.thumbnail_index is not None:
            assert 0 <= plan.thumbnail_index < len(tiles)
        if plan.grid is not None:
            cols, rows = plan.grid
            assert cols * rows + (plan.thumbnail_index is not None) == len(tiles)


# ---- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", RESOLUTION_NAMES)
def test_bad_sizes_and_inputs_are_user_errors(name: str) -> None:
    strategy = build_resolution(ResolutionConfig(name=name))
    for width, height in [(0, 10), (10, 0), (-3, 5)]:
        with pytest.raises(UserError, match=rf"{width}x{height}"):
            strategy.plan(width, height)
    with pytest.raises(UserError, match="integer"):
        strategy.plan(10.5, 10)  # type: ignore[arg-type]
    with pytest.raises(UserError, match="PIL image"):
        strategy.prepare("photo.jpg")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="0x5"):
        strategy.prepare(Image.new("RGB", (0, 5)))


def test_bad_strategy_parameters_are_user_errors() -> None:
    with pytest.raises(UserError, match="multiple of tile_size"):
        AnyRes(32, [[64, 40]])
    with pytest.raises(UserError, match="pinpoints is empty"):
        AnyRes(32, [])
    with pytest.raises(UserError, match="min_tiles 5 exceeds max_tiles 4"):
        DynamicTiles(32, 5, 4)
    with pytest.raises(UserError, match="max_pixels"):
        NativeResolution(8, 2, 16, 100)
    with pytest.raises(UserError, match="size must be a positive integer"):
        FixedResolution(0)


def test_grid_enumeration_is_ordered_by_tile_count() -> None:
    grids = tile_grids(1, 4)
    assert grids == [(1, 1), (1, 2), (2, 1), (1, 3), (3, 1), (1, 4), (2, 2), (4, 1)]
    assert closest_grid(5, 2, 448, tile_grids(4, 4)) == (2, 2)  # the documented same-count tie


# ---- pixel tensors --------------------------------------------------------------------------------


def test_to_pixel_tensor_normalises_and_stacks() -> None:
    images = [Image.new("RGB", (8, 6), (255, 255, 255)), Image.new("L", (8, 6), 0)]
    x = to_pixel_tensor(images, (0.5, 0.5, 0.5), (0.5, 0.25, 0.5))
    assert x.shape == (2, 3, 6, 8) and x.dtype == torch.float32
    assert torch.allclose(x[0], torch.tensor([1.0, 2.0, 1.0]).view(3, 1, 1).expand(3, 6, 8))
    assert torch.allclose(x[1], torch.tensor([-1.0, -2.0, -1.0]).view(3, 1, 1).expand(3, 6, 8))
    image = random_image(5, 4)
    channel_first = torch.from_numpy(np.asarray(image).astype(np.float32) / 255).permute(2, 0, 1)
    assert torch.allclose(to_pixel_tensor([image], (0, 0, 0), (1, 1, 1))[0], channel_first)
    with pytest.raises(ValueError, match="one size"):
        to_pixel_tensor([Image.new("RGB", (8, 8)), Image.new("RGB", (8, 4))], (0, 0, 0), (1, 1, 1))
    with pytest.raises(ValueError, match="at least one"):
        to_pixel_tensor([], (0, 0, 0), (1, 1, 1))


def test_to_pixel_tensors_keeps_each_size() -> None:
    tiles, plan = NativeResolution(8, 2, 16 * 16, 96 * 96).prepare(random_image(100, 37))
    (x,) = to_pixel_tensors(tiles, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert x.shape == (3, plan.resized[1], plan.resized[0])
    mixed = to_pixel_tensors([Image.new("RGB", (16, 32)), Image.new("RGB", (48, 16))], (0, 0, 0), (1, 1, 1))
    assert [tuple(t.shape) for t in mixed] == [(3, 32, 16), (3, 16, 48)]
    assert math.isclose(float(mixed[0].sum()), 0.0)
