"""Projector shapes, token counts, and InternVL's pixel-shuffle channel order."""

from __future__ import annotations

import pytest
import torch

from vlmbench.modeling.config import ProjectorConfig
from vlmbench.modeling.projectors import PROJECTORS, build_projector

D_VIS, D_LLM = 32, 48

CASES = {
    "linear": (ProjectorConfig(kind="linear"), lambda r, c: r * c),
    "mlp": (ProjectorConfig(kind="mlp"), lambda r, c: r * c),
    "qformer": (ProjectorConfig(kind="qformer", num_queries=8, num_layers=2, num_heads=4), lambda r, c: 8),
    "perceiver": (ProjectorConfig(kind="perceiver", num_queries=6, num_layers=2, num_heads=4), lambda r, c: 6),
    "c_abstractor": (ProjectorConfig(kind="c_abstractor", output_tokens=9, num_layers=1), lambda r, c: 9),
    "pixel_shuffle_mlp": (ProjectorConfig(kind="pixel_shuffle_mlp", factor=2), lambda r, c: r * c // 4),
    "patch_merger": (ProjectorConfig(kind="patch_merger", factor=2), lambda r, c: r * c // 4),
    "avg_pool": (ProjectorConfig(kind="avg_pool", factor=2), lambda r, c: r * c // 4),
}


def test_every_registered_projector_is_tested() -> None:
    assert set(CASES) == set(PROJECTORS)


@pytest.mark.parametrize("kind", sorted(CASES))
@pytest.mark.parametrize("grid", [(8, 8), (4, 6)])
def test_shapes_and_token_counts(kind: str, grid: tuple[int, int]) -> None:
    cfg, expected = CASES[kind]
    torch.manual_seed(0)
    proj = build_projector(cfg, D_VIS, D_LLM)
    x = torch.randn(3, grid[0] * grid[1], D_VIS)
    out = proj(x, grid)
    assert out.shape == (3, expected(*grid), D_LLM)
    assert proj.num_tokens(grid) == expected(*grid)
    out.sum().backward()
    assert all(p.grad is not None for p in proj.parameters())


def test_pixel_shuffle_matches_internvl_reference() -> None:
    from transformers.models.internvl.modeling_internvl import InternVLModel

    proj = build_projector(ProjectorConfig(kind="pixel_shuffle_mlp", factor=2), D_VIS, D_LLM)
    x = torch.randn(2, 36, D_VIS)
    ours = proj.shuffle(x, (6, 6))
    ref = InternVLModel.pixel_shuffle(None, x.reshape(2, 6, 6, D_VIS), scale_factor=0.5).reshape(2, -1, 4 * D_VIS)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)


def test_patch_merger_groups_spatial_neighbours() -> None:
    proj = build_projector(ProjectorConfig(kind="patch_merger", factor=2), 1, 4)
    # feature = index in the row-major 4x4 grid; after LayerNorm over D=1 values vanish, so check the layout
    x = torch.arange(16.0).reshape(1, 16, 1)
    rows, cols, f = 4, 4, 2
    windows = x.reshape(1, rows // f, f, cols // f, f, 1).permute(0, 1, 3, 2, 4, 5).reshape(1, 4, 4)
    assert windows[0, 0].tolist() == [0.0, 1.0, 4.0, 5.0]
    assert windows[0, 1].tolist() == [2.0, 3.0, 6.0, 7.0]
    assert proj(torch.randn(1, 16, 1), (4, 4)).shape == (1, 4, 4)


def test_grid_mismatch_is_an_error() -> None:
    proj = build_projector(ProjectorConfig(kind="pixel_shuffle_mlp"), D_VIS, D_LLM)
    with pytest.raises(ValueError, match="divisible"):
        proj(torch.randn(1, 15, D_VIS), (3, 5))


def test_query_projectors_keep_output_length_for_any_grid() -> None:
    proj = build_projector(ProjectorConfig(kind="qformer", num_queries=4, num_layers=1), D_VIS, D_LLM)
    assert proj(torch.randn(1, 16, D_VIS), (4, 4)).shape == proj(torch.randn(1, 100, D_VIS), (10, 10)).shape
