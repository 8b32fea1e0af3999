"""Projectors: visual features (B, N, D_vis) on an h×w patch grid → LLM tokens (B, M, D_llm).

Every projector has the same interface, `forward(x, grid)` with `grid = (rows, cols)` of the
patch grid (N = rows * cols), and `num_tokens(grid)` for the output length M, so that the token
budget of a design can be computed without running it (`vlmbench inspect`).
Adding a projector is one class here plus its entry in `PROJECTORS`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vlmbench.modeling.config import ProjectorConfig

Grid = tuple[int, int]  # (rows, cols) in patches


class Projector(nn.Module):
    """Base class: subclasses implement `forward` and `num_tokens`."""

    def num_tokens(self, grid: Grid) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def token_grid(self, grid: Grid) -> Grid | None:
        """(rows, cols) the output tokens lie on, row-major; None when they have no 2-D layout (queries)."""
        return None

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def _mlp(d_in: int, d_out: int, hidden: int | None = None) -> nn.Sequential:
    """LLaVA-1.5's 2-layer GELU MLP."""
    hidden = hidden or d_out
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))


def _to_map(x: torch.Tensor, grid: Grid) -> torch.Tensor:
    """(B, N, D) → (B, D, rows, cols)."""
    rows, cols = grid
    b, n, d = x.shape
    if n != rows * cols:
        raise ValueError(f"projector got {n} tokens for a {rows}x{cols} grid")
    return x.transpose(1, 2).reshape(b, d, rows, cols)


class LinearProjector(Projector):
    """LLaVA-1.0: one linear layer, every patch kept."""

    def __init__(self, cfg: ProjectorConfig, d_vis: int, d_llm: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_vis, d_llm)

    def num_tokens(self, grid: Grid) -> int:
        return grid[0] * grid[1]

    def token_grid(self, grid: Grid) -> Grid | None:
        return grid

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        return self.proj(x)  # (B, N, D_llm)


class MLPProjector(Projector):
    """LLaVA-1.5: 2-layer GELU MLP, every patch kept."""

    def __init__(self, cfg: ProjectorConfig, d_vis: int, d_llm: int) -> None:
        super().__init__()
        self.mlp = _mlp(d_vis, d_llm)

    def num_tokens(self, grid: Grid) -> int:
        return grid[0] * grid[1]

    def token_grid(self, grid: Grid) -> Grid | None:
        return grid

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        return self.mlp(x)


class PixelShuffleMLP(Projector):
    """InternVL: fold each f×f patch neighbourhood into channels (space-to-depth), LayerNorm, MLP.

    With f=2 the token count drops 4:1 while no feature is discarded. The channel order
    follows InternVL's `pixel_shuffle` (two reshapes through the transposed map), so that
    InternVL weights would line up.
    """

    def __init__(self, cfg: ProjectorConfig, d_vis: int, d_llm: int) -> None:
        super().__init__()
        self.factor = cfg.factor
        d_in = d_vis * self.factor**2
        self.norm = nn.LayerNorm(d_in)
        self.mlp = _mlp(d_in, d_llm)

    def num_tokens(self, grid: Grid) -> int:
        return (grid[0] // self.factor) * (grid[1] // self.factor)

    def token_grid(self, grid: Grid) -> Grid | None:
        return grid[0] // self.factor, grid[1] // self.factor

    def shuffle(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        """(B, N, D) → (B, N/f², D·f²), InternVL's channel order."""
        rows, cols = grid
        f = self.factor
        if rows % f or cols % f:
            raise ValueError(f"pixel shuffle needs a grid divisible by {f}, got {rows}x{cols}")
        b, _, d = x.shape
        # InternVL works on (B, W, H, C) maps; we follow the same sequence of reshapes.
        m = x.reshape(b, rows, cols, d)  # (B, h, w, C)
        m = m.reshape(b, rows, cols // f, d * f)  # fold along w
        m = m.permute(0, 2, 1, 3).contiguous()  # (B, w/f, h, C·f)
        m = m.reshape(b, cols // f, rows // f, d * f * f)  # fold along h
        m = m.permute(0, 2, 1, 3).contiguous()  # (B, h/f, w/f, C·f²)
        return m.reshape(b, -1, d * f * f)

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        return self.mlp(self.norm(self.shuffle(x, grid)))


class PatchMerger(Projector):
    """Qwen2-VL: concatenate each f×f window of patches (spatially adjacent), LayerNorm first, then MLP."""

    def __init__(self, cfg: ProjectorConfig, d_vis: int, d_llm: int) -> None:
        super().__init__()
        self.factor = cfg.factor
        self.norm = nn.LayerNorm(d_vis, eps=1e-6)
        d_in = d_vis * self.factor**2
        self.mlp = _mlp(d_in, d_llm, hidden=d_in)

    def num_tokens(self, grid: Grid) -> int:
        return (grid[0] // self.factor) * (grid[1] // self.factor)

    def token_grid(self, grid: Grid) -> Grid | None:
        return grid[0] // self.factor, grid[1] // self.factor

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        rows, cols = grid
        f = self.factor
        if rows % f or cols % f:
            raise ValueError(f"patch merger needs a grid divisible by {f}, got {rows}x{cols}")
        b, _, d = x.shape
        x = self.norm(x).reshape(b, rows // f, f, cols // f, f, d)
        x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, (rows // f) * (cols // f), f * f * d)  # windows row-major
        return self.mlp(x)


class AvgPoolProjector(Projector):
    """k×k average pooling of the patch map, then the 2-layer MLP (a lossy 4–16:1 compression)."""

    def __init__(self, cfg: ProjectorConfig, d_vis: int, d_llm: int) -> None:
        super().__init__()
        self.factor = cfg.factor
        self.mlp = _mlp(d_vis, d_llm)

    def num_tokens(self, grid: Grid) -> int:
        return (grid[0] // self.factor) * (grid[1] // self.factor)

    def token_grid(self, grid: Grid) -> Grid | None:
        return grid[0] // self.factor, grid[1] // self.factor

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        m = F.avg_pool2d(_to_map(x, grid), self.factor)  # (B, D, h/k, w/k)
        return self.mlp(m.flatten(2).transpose(1, 2))


class _CrossAttentionBlock(nn.Module):
    """Queries attend to themselves (optional) and to the visual features, then an MLP; pre-norm."""

    def __init__(self, dim: int, heads: int, self_attention: bool, kv_dim: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True) if self_attention else None
        self.norm_self = nn.LayerNorm(dim) if self_attention else None
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(kv_dim)
        self.cross_attn = nn.MultiheadAttention(dim, heads, kdim=kv_dim, vdim=kv_dim, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, q: torch.Tensor, kv: torch.Tensor, kv_with_latents: bool = False) -> torch.Tensor:
        if self.self_attn is not None:
            h = self.norm_self(q)
            q = q + self.self_attn(h, h, h, need_weights=False)[0]
        h = self.norm_q(q)
        kv = self.norm_kv(kv)
        if kv_with_latents:  # Flamingo's resampler: keys/values are [features; latents]
            kv = torch.cat([kv, h], dim=1)
        q = q + self.cross_attn(h, kv, kv, need_weights=False)[0]
        return q + self.mlp(self.norm_mlp(q))


class QFormer(Projector):
    """BLIP-2's Q-Former (compact): learnable queries with self-attention and cross-attention to the
    image features in every block; M = num_queries whatever the image size, then a linear map to D_llm."""

    def __init__(self, cfg: ProjectorConfig, d_vis: int, d_llm: int) -> None:
        super().__init__()
        dim = cfg.hidden_size or d_vis
        self.queries = nn.Parameter(torch.randn(1, cfg.num_queries, dim) * 0.02)
        self.blocks = nn.ModuleList(
            _CrossAttentionBlock(dim, cfg.num_heads, self_attention=True, kv_dim=d_vis) for _ in range(cfg.num_layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, d_llm)

    def num_tokens(self, grid: Grid) -> int:
        return self.queries.shape[1]

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        q = self.queries.expand(x.shape[0], -1, -1)  # (B, M, dim)
        for block in self.blocks:
            q = block(q, x)
        return self.proj(self.norm(q))


class PerceiverResampler(Projector):
    """Flamingo's Perceiver resampler: latents cross-attend to [features; latents] in several layers."""

    def __init__(self, cfg: ProjectorConfig, d_vis: int, d_llm: int) -> None:
        super().__init__()
        dim = cfg.hidden_size or d_vis
        self.latents = nn.Parameter(torch.randn(1, cfg.num_queries, dim) * 0.02)
        self.input_proj = nn.Linear(d_vis, dim) if dim != d_vis else nn.Identity()
        self.blocks = nn.ModuleList(
            _CrossAttentionBlock(dim, cfg.num_heads, self_attention=False, kv_dim=dim) for _ in range(cfg.num_layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, d_llm)

    def num_tokens(self, grid: Grid) -> int:
        return self.latents.shape[1]

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        x = self.input_proj(x)
        q = self.latents.expand(x.shape[0], -1, -1)
        for block in self.blocks:
            q = block(q, x, kv_with_latents=True)
        return self.proj(self.norm(q))


class _ResBlock(nn.Module):
    """Honeybee uses RegNet/ResNet blocks; a pre-activation 3×3 conv residual block keeps the idea."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(1, channels),
            nn.GELU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(1, channels),
            nn.GELU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class CAbstractor(Projector):
    """Honeybee's C-Abstractor: conv residual blocks → adaptive average pool to √M×√M → conv blocks → MLP.

    Convolutions keep locality, unlike a Q-Former whose queries can attend anywhere."""

    def __init__(self, cfg: ProjectorConfig, d_vis: int, d_llm: int) -> None:
        super().__init__()
        dim = cfg.hidden_size or d_vis
        self.side = math.isqrt(cfg.output_tokens)
        depth = max(1, cfg.num_layers)
        self.stem = nn.Conv2d(d_vis, dim, 1)
        self.pre = nn.Sequential(*(_ResBlock(dim) for _ in range(depth)))
        self.pool = nn.AdaptiveAvgPool2d(self.side)
        self.post = nn.Sequential(*(_ResBlock(dim) for _ in range(depth)))
        self.mlp = _mlp(dim, d_llm)

    def num_tokens(self, grid: Grid) -> int:
        return self.side * self.side

    def token_grid(self, grid: Grid) -> Grid | None:
        return self.side, self.side

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        m = self.post(self.pool(self.pre(self.stem(_to_map(x, grid)))))  # (B, dim, s, s)
        return self.mlp(m.flatten(2).transpose(1, 2))


PROJECTORS: dict[str, type[Projector]] = {
    "linear": LinearProjector,
    "mlp": MLPProjector,
    "qformer": QFormer,
    "perceiver": PerceiverResampler,
    "c_abstractor": CAbstractor,
    "pixel_shuffle_mlp": PixelShuffleMLP,
    "patch_merger": PatchMerger,
    "avg_pool": AvgPoolProjector,
}


def build_projector(cfg: ProjectorConfig, d_vis: int, d_llm: int) -> Projector:
    """Instantiate the projector named by `cfg.kind` (validated by `VLMConfig.validate`)."""
    return PROJECTORS[cfg.kind](cfg, d_vis, d_llm)
