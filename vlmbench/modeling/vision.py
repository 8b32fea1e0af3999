"""Vision encoders: a fixed-grid ViT (CLIP / SigLIP style) and a native-resolution ViT (2D RoPE, packed).

Both return patch features in row-major order from the hidden state selected by
`VisionConfig.feature_layer`, indexed like transformers' `hidden_states`
(`[embeddings, layer_1, ..., layer_L]`; -1 = last, -2 = penultimate as in LLaVA).
Blocks after the selected layer are never built, so they cost neither time nor
memory and leave no unused parameters behind (which DDP would reject).

`load_hf_vision` imports a transformers `CLIPVisionModel` / `SiglipVisionModel`
(or full `CLIPModel` / `SiglipModel`) directory through an explicit key table
(`hf_vision_key_map`); only safetensors are read, never pickles.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlmbench.errors import UserError
from vlmbench.modeling.config import VisionConfig

__all__ = [
    "NativeViT",
    "ViT",
    "apply_rope_2d",
    "build_vision_encoder",
    "hf_vision_key_map",
    "load_hf_vision",
    "rope_2d_angles",
]


# ---- building blocks ---------------------------------------------------------------------------


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the activation OpenAI's CLIP was trained with."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


def make_activation(name: str) -> nn.Module:
    """The activation module for a transformers `hidden_act` name."""
    if name == "quick_gelu":
        return QuickGELU()
    if name == "gelu":
        return nn.GELU()
    if name in ("gelu_pytorch_tanh", "gelu_new"):
        return nn.GELU(approximate="tanh")
    raise UserError(
        f"vision.hidden_act '{name}' is unknown; valid options: quick_gelu, gelu, gelu_pytorch_tanh"
    )


def resolve_feature_layer(feature_layer: int, num_layers: int) -> int:
    """Turn a python index over the `num_layers + 1` hidden states into a non-negative one."""
    n_states = num_layers + 1
    if not -n_states <= feature_layer < n_states:
        raise UserError(
            f"vision.feature_layer {feature_layer} is out of range for a {num_layers}-layer encoder; "
            f"use {-n_states}..{n_states - 1} (-1 = last layer, -2 = penultimate, 0 = embeddings)"
        )
    return feature_layer % n_states


def _check_sizes(cfg: VisionConfig) -> None:
    if cfg.patch_size < 1 or cfg.image_size % cfg.patch_size:
        raise UserError(
            f"vision.image_size {cfg.image_size} is not a multiple of vision.patch_size {cfg.patch_size}"
        )
    if cfg.hidden_size % cfg.num_heads:
        raise UserError(
            f"vision.hidden_size {cfg.hidden_size} must be divisible by vision.num_heads {cfg.num_heads}"
        )


def _flash_varlen() -> Callable[..., Tensor] | None:
    """`flash_attn.flash_attn_varlen_func` when the optional package is installed, else None."""
    try:
        module = importlib.import_module("flash_attn")
    except ImportError:
        return None
    return getattr(module, "flash_attn_varlen_func", None)


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, act: str) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = make_activation(act)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention through `scaled_dot_product_attention`.

    Optional 2D rotary angles (native ViT), a boolean mask (True = may attend), or, for packed
    sequences on CUDA with flash-attn installed, `cu_seqlens` for the varlen kernel."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(
        self,
        x: Tensor,  # [B, N, D]
        angles: Tensor | None = None,  # [N, head_dim/2]
        attn_mask: Tensor | None = None,  # [1, 1, N, N] bool
        cu_seqlens: Tensor | None = None,  # [n_seq + 1] int32, flash path only (B == 1)
        max_seqlen: int = 0,
    ) -> Tensor:
        b, n, d = x.shape
        q = self.q_proj(x).view(b, n, self.num_heads, self.head_dim)  # [B, N, H, Dh]
        k = self.k_proj(x).view(b, n, self.num_heads, self.head_dim)
        v = self.v_proj(x).view(b, n, self.num_heads, self.head_dim)
        if angles is not None:
            q, k = apply_rope_2d(q, angles), apply_rope_2d(k, angles)
        if cu_seqlens is not None:
            flash = _flash_varlen()
            if flash is None:
                raise RuntimeError("cu_seqlens given but flash_attn is not importable")
            out = flash(q[0], k[0], v[0], cu_seqlens, cu_seqlens, max_seqlen, max_seqlen)  # [N, H, Dh]
            return self.out_proj(out.reshape(b, n, d))
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=attn_mask
        )  # [B, H, N, Dh]
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.attn = Attention(cfg.hidden_size, cfg.num_heads)
        self.norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act)

    def forward(self, x: Tensor, **attn_kwargs: Any) -> Tensor:
        x = x + self.attn(self.norm1(x), **attn_kwargs)
        return x + self.mlp(self.norm2(x))


# ---- fixed-grid ViT (CLIP / SigLIP) -------------------------------------------------------------



def patch_grid(height: int, width: int, patch: int, hint: str = "") -> tuple[int, int]:
    """(rows, cols) of patches for an H×W input; UserError when a side is not a positive multiple of `patch`."""
    if height % patch or width % patch or height <= 0 or width <= 0:
        raise UserError(
            f"image size {width}x{height} (WxH) is not a multiple of the vision patch size {patch}; "
            f"resize to multiples of {patch}{hint}"
        )
    return height // patch, width // patch

class ViT(nn.Module):
    """CLIP- or SigLIP-style ViT with learned absolute positions for the `image_size` grid.

    style "clip": a LayerNorm right after the embeddings (CLIP's `pre_layrnorm`), no final norm
    on patch features (CLIP's post-LN only touches the pooled CLS token), bias-free patch conv.
    style "siglip": no embedding norm, a final LayerNorm applied when the last layer is selected
    (so feature_layer=-1 equals transformers' `last_hidden_state`), patch conv with bias.
    Other sizes than `image_size` are handled by bicubic 2D interpolation of the position table.
    """

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        _check_sizes(cfg)
        self.config = cfg
        d, side = cfg.hidden_size, cfg.grid_side
        self.patch_size = cfg.patch_size
        self.grid_side = side
        self.use_cls = cfg.use_cls
        self.num_run = resolve_feature_layer(cfg.feature_layer, cfg.num_layers)  # blocks actually built

        self.patch_embed = nn.Conv2d(
            3, d, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=cfg.style == "siglip"
        )
        self.cls_token = nn.Parameter(torch.randn(d) * 0.02) if cfg.use_cls else None
        # row-major patch positions, preceded by the CLS position when use_cls
        self.pos_embed = nn.Parameter(torch.randn(side * side + int(cfg.use_cls), d) * 0.02)
        self.norm_pre = nn.LayerNorm(d, eps=cfg.layer_norm_eps) if cfg.style == "clip" else None
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(self.num_run))
        last_selected = self.num_run == cfg.num_layers
        self.norm_post = (
            nn.LayerNorm(d, eps=cfg.layer_norm_eps) if cfg.style == "siglip" and last_selected else None
        )

    @property
    def out_dim(self) -> int:
        return self.config.hidden_size

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """(rows, cols) of patches for an H×W input; both must be multiples of patch_size."""
        return patch_grid(height, width, self.patch_size)

    def position_embeddings(self, rows: int, cols: int) -> Tensor:
        """Patch position table for a rows×cols grid: [rows*cols, D], interpolated when needed."""
        table = self.pos_embed[int(self.use_cls) :]  # [side*side, D]
        if (rows, cols) == (self.grid_side, self.grid_side):
            return table
        side, d = self.grid_side, table.shape[-1]
        grid = table.float().reshape(1, side, side, d).permute(0, 3, 1, 2)  # [1, D, side, side]
        grid = F.interpolate(grid, size=(rows, cols), mode="bicubic", align_corners=False)  # [1, D, r, c]
        return grid.permute(0, 2, 3, 1).reshape(rows * cols, d).to(table.dtype)

    def forward(self, pixel_values: Tensor) -> Tensor:
        """pixel_values [B, 3, H, W] → features [B, rows*cols, D] (row-major, CLS dropped)."""
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise UserError(f"ViT expects pixel_values [B, 3, H, W], got {list(pixel_values.shape)}")
        rows, cols = self.grid(pixel_values.shape[2], pixel_values.shape[3])
        x = self.patch_embed(pixel_values.to(self.patch_embed.weight.dtype))  # [B, D, rows, cols]
        x = x.flatten(2).transpose(1, 2)  # [B, rows*cols, D]
        x = x + self.position_embeddings(rows, cols)
        if self.cls_token is not None:
            cls = (self.cls_token + self.pos_embed[0]).expand(x.shape[0], 1, -1)  # [B, 1, D]
            x = torch.cat([cls, x], dim=1)  # [B, 1 + rows*cols, D]
        if self.norm_pre is not None:
            x = self.norm_pre(x)
        for block in self.blocks:
            x = block(x)
        if self.norm_post is not None:
            x = self.norm_post(x)
        return x[:, 1:] if self.cls_token is not None else x


# ---- native-resolution ViT (Qwen2-VL style) -----------------------------------------------------


def rope_2d_angles(rows: Tensor, cols: Tensor, head_dim: int, theta: float) -> Tensor:
    """Rotation angles [N, head_dim/2] for patches at integer (row, col) positions [N].

    One frequency ladder theta^(-2i/head_dim) spans the whole head; rows take its even rungs and
    columns its odd rungs, so the two axes rotate at distinct frequencies. The first head_dim/4
    angles (the first half of the head's channels) follow the row, the rest the column."""
    if head_dim % 4:
        raise UserError(f"native_vit needs a head dim divisible by 4 for 2D RoPE, got {head_dim}")
    ladder = theta ** (-torch.arange(0, head_dim, 2, device=rows.device, dtype=torch.float32) / head_dim)
    row_angles = rows.float()[:, None] * ladder[0::2]  # [N, head_dim/4]
    col_angles = cols.float()[:, None] * ladder[1::2]  # [N, head_dim/4]
    return torch.cat([row_angles, col_angles], dim=-1)  # [N, head_dim/2]


def apply_rope_2d(x: Tensor, angles: Tensor) -> Tensor:
    """Rotate channel pairs (2j, 2j+1) of x [B, N, H, Dh] by angles [N, Dh/2] (computed in fp32)."""
    pairs = x.float().unflatten(-1, (-1, 2))  # [B, N, H, Dh/2, 2]
    even, odd = pairs.unbind(-1)  # [B, N, H, Dh/2] each
    cos, sin = angles.cos()[:, None, :], angles.sin()[:, None, :]  # [N, 1, Dh/2]
    out = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1)  # [B, N, H, Dh/2, 2]
    return out.flatten(-2).to(x.dtype)


def block_diagonal_mask(lengths: list[int], device: torch.device) -> Tensor:
    """[1, 1, N, N] boolean mask letting each packed sequence attend only to itself."""
    seq_id = torch.repeat_interleave(
        torch.arange(len(lengths), device=device), torch.tensor(lengths, device=device)
    )
    return (seq_id[:, None] == seq_id[None, :])[None, None]


class NativeViT(nn.Module):
    """Native-resolution ViT: any H×W (multiples of patch_size), 2D RoPE, no absolute positions.

    All images of a call are packed into one sequence [1, ΣN_i, D]; attention is block-diagonal
    (boolean SDPA mask, or flash-attn's varlen kernel on CUDA in fp16/bf16 when installed), so
    each image's features are independent of what it is packed with."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        _check_sizes(cfg)
        head_dim = cfg.hidden_size // cfg.num_heads
        if head_dim % 4:
            raise UserError(
                f"native_vit needs hidden_size / num_heads divisible by 4 for 2D RoPE, got "
                f"{cfg.hidden_size} / {cfg.num_heads} = {head_dim}"
            )
        self.config = cfg
        self.patch_size = cfg.patch_size
        self.head_dim = head_dim
        self.num_run = resolve_feature_layer(cfg.feature_layer, cfg.num_layers)
        # A linear map over flattened (channel, dy, dx) patches == a stride-p conv; no bias, like Qwen2-VL.
        self.patch_embed = nn.Linear(3 * cfg.patch_size**2, cfg.hidden_size, bias=False)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(self.num_run))

    @property
    def out_dim(self) -> int:
        return self.config.hidden_size

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """(rows, cols) of patches for an H×W image; both must be multiples of patch_size."""
        return patch_grid(height, width, self.patch_size, hint=" (the native resolution strategy does this)")

    def _patchify(self, image: Tensor) -> tuple[Tensor, int, int]:
        """image [3, H, W] → patches [rows*cols, 3*p*p] in row-major order."""
        if image.ndim != 3 or image.shape[0] != 3:
            raise UserError(f"NativeViT expects images as [3, H, W] tensors, got {list(image.shape)}")
        rows, cols = self.grid(image.shape[1], image.shape[2])
        p = self.patch_size
        patches = image.reshape(3, rows, p, cols, p).permute(1, 3, 0, 2, 4)  # [rows, cols, 3, p, p]
        return patches.reshape(rows * cols, 3 * p * p), rows, cols

    def forward(self, images: list[Tensor]) -> list[Tensor]:
        """images: list of [3, H_i, W_i] → list of features [rows_i*cols_i, D] (row-major)."""
        if not images:
            return []
        weight = self.patch_embed.weight
        patches, rows_idx, cols_idx, lengths = [], [], [], []
        for image in images:
            flat, rows, cols = self._patchify(image)
            patches.append(flat)
            rows_idx.append(torch.arange(rows, device=weight.device).repeat_interleave(cols))  # [N_i]
            cols_idx.append(torch.arange(cols, device=weight.device).repeat(rows))  # [N_i]
            lengths.append(rows * cols)
        x = self.patch_embed(torch.cat(patches).to(weight.device, weight.dtype))[None]  # [1, ΣN, D]
        angles = rope_2d_angles(
            torch.cat(rows_idx), torch.cat(cols_idx), self.head_dim, self.config.rope_theta
        )

        attn_kwargs: dict[str, Any] = {"angles": angles}
        use_flash = x.is_cuda and x.dtype in (torch.float16, torch.bfloat16) and _flash_varlen() is not None
        if use_flash:
            bounds = torch.tensor([0, *lengths], device=x.device).cumsum(0).to(torch.int32)  # [n+1]
            attn_kwargs.update(cu_seqlens=bounds, max_seqlen=max(lengths))
        elif len(lengths) > 1:
            attn_kwargs["attn_mask"] = block_diagonal_mask(lengths, x.device)
        for block in self.blocks:
            x = block(x, **attn_kwargs)
        return list(x[0].split(lengths))


# ---- transformers checkpoints -------------------------------------------------------------------

# transformers model_type → our style. Siglip2 (NaFlex, linear patch embedding) is deliberately absent.
_HF_STYLES = (
    ("clip_vision_model", "clip"),
    ("clip", "clip"),
    ("siglip_vision_model", "siglip"),
    ("siglip", "siglip"),
)


def _hf_style(model_type: Any) -> str | None:
    return dict(_HF_STYLES).get(str(model_type))


def _hf_defaults(style: str) -> dict[str, Any]:
    """transformers' vision-config defaults, for config.json files that omit default values."""
    common = {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
    }
    if style == "clip":
        return {
            **common,
            "image_size": 224,
            "patch_size": 32,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
        }
    return {
        **common,
        "image_size": 224,
        "patch_size": 16,
        "hidden_act": "gelu_pytorch_tanh",
        "layer_norm_eps": 1e-6,
    }


def hf_vision_key_map(cfg: VisionConfig) -> tuple[dict[str, str], list[str]]:
    """(transformers key → ViT key, transformers key prefixes deliberately not loaded).

    Keys are those of a vision tower without its `vision_model.` prefix. Not loaded: CLIP's
    `post_layernorm` (it normalises the pooled CLS only) and SigLIP's attention-pool `head`,
    both unused for patch features; blocks after `feature_layer` (never built); SigLIP's
    `post_layernorm` unless the last layer is selected; the `position_ids` buffer of old exports."""
    num_run = resolve_feature_layer(cfg.feature_layer, cfg.num_layers)
    table = {
        "embeddings.patch_embedding.weight": "patch_embed.weight",
        "embeddings.position_embedding.weight": "pos_embed",
    }
    skipped = ["embeddings.position_ids", "head."]
    if cfg.use_cls:
        table["embeddings.class_embedding"] = "cls_token"
    if cfg.style == "clip":
        table["pre_layrnorm.weight"] = "norm_pre.weight"
        table["pre_layrnorm.bias"] = "norm_pre.bias"
        skipped.append("post_layernorm.")
    else:
        table["embeddings.patch_embedding.bias"] = "patch_embed.bias"
        if num_run == cfg.num_layers:
            table["post_layernorm.weight"] = "norm_post.weight"
            table["post_layernorm.bias"] = "norm_post.bias"
        else:
            skipped.append("post_layernorm.")
    per_layer = {
        "layer_norm1": "norm1",
        "self_attn.q_proj": "attn.q_proj",
        "self_attn.k_proj": "attn.k_proj",
        "self_attn.v_proj": "attn.v_proj",
        "self_attn.out_proj": "attn.out_proj",
        "layer_norm2": "norm2",
        "mlp.fc1": "mlp.fc1",
        "mlp.fc2": "mlp.fc2",
    }
    for i in range(num_run):
        for theirs, ours in per_layer.items():
            for param in ("weight", "bias"):
                table[f"encoder.layers.{i}.{theirs}.{param}"] = f"blocks.{i}.{ours}.{param}"
    skipped.extend(f"encoder.layers.{i}." for i in range(num_run, cfg.num_layers))
    return table, skipped


_ARCH_FIELDS = (
    "kind",
    "style",
    "image_size",
    "patch_size",
    "hidden_size",
    "num_layers",
    "num_heads",
    "intermediate_size",
    "use_cls",
)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path}: {exc}; re-export the model with save_pretrained") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a JSON object; re-export the model with save_pretrained")
    return data


def _hf_vision_config(root: Path, overrides: dict[str, Any] | None) -> VisionConfig:
    raw = _read_json(root / "config.json")
    vision = raw.get("vision_config") if isinstance(raw.get("vision_config"), dict) else raw
    model_type = vision.get("model_type") or raw.get("model_type")
    style = _hf_style(model_type)
    if style is None and isinstance(raw.get("vision_config"), dict):
        style = _hf_style(raw.get("model_type"))
    if style is None:
        raise UserError(
            f"{root / 'config.json'}: model_type '{model_type}' is not supported; vlmbench loads "
            f"CLIP and SigLIP vision towers (model_type {', '.join(name for name, _ in _HF_STYLES)})"
        )
    if vision.get("num_channels", 3) != 3:
        raise UserError(f"{root / 'config.json'}: num_channels {vision['num_channels']} is not 3 (RGB)")
    hf = {**_hf_defaults(style), **vision}
    fields: dict[str, Any] = {
        "kind": "vit",
        "style": style,
        "image_size": int(hf["image_size"]),
        "patch_size": int(hf["patch_size"]),
        "hidden_size": int(hf["hidden_size"]),
        "num_layers": int(hf["num_hidden_layers"]),
        "num_heads": int(hf["num_attention_heads"]),
        "intermediate_size": int(hf["intermediate_size"]),
        "use_cls": style == "clip",
        "hidden_act": str(hf["hidden_act"]),
        "layer_norm_eps": float(hf["layer_norm_eps"]),
        "pretrained": str(root),
    }
    if style == "siglip":
        fields["image_mean"] = fields["image_std"] = (0.5, 0.5, 0.5)
    preprocessor = root / "preprocessor_config.json"
    if preprocessor.is_file():
        pre = _read_json(preprocessor)
        for key in ("image_mean", "image_std"):
            if isinstance(pre.get(key), list) and len(pre[key]) == 3:
                fields[key] = tuple(float(v) for v in pre[key])

    valid = {f.name for f in dataclasses.fields(VisionConfig)}
    for key, value in (overrides or {}).items():
        if key not in valid:
            raise UserError(f"vision override '{key}' is unknown; valid fields: {', '.join(sorted(valid))}")
        if key in _ARCH_FIELDS and value != fields[key]:
            raise UserError(
                f"vision.{key}={value!r} conflicts with the checkpoint {root} ({key}={fields[key]!r}); "
                f"remove it from the preset, the checkpoint defines the architecture"
            )
        fields[key] = tuple(value) if key in ("image_mean", "image_std") else value
    return VisionConfig(**fields)


def _load_safetensors(root: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    single = root / "model.safetensors"
    index = root / "model.safetensors.index.json"
    if single.is_file():
        return load_file(str(single))
    if index.is_file():
        shards = sorted(set(_read_json(index).get("weight_map", {}).values()))
        tensors: dict[str, Tensor] = {}
        for shard in shards:
            if not (root / shard).is_file():
                raise UserError(
                    f"{index} lists shard {shard}, which is missing; re-download or re-export the model"
                )
            tensors.update(load_file(str(root / shard)))
        return tensors
    hint = ""
    if any((root / name).exists() for name in ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        hint = " It holds only pickled pytorch_model.bin weights, which vlmbench does not load;"
    raise UserError(
        f"no model.safetensors in {root}.{hint} re-save it with "
        f"model.save_pretrained(dir, safe_serialization=True)"
    )


def load_hf_vision(path: str | Path, overrides: dict[str, Any] | None = None) -> tuple[ViT, VisionConfig]:
    """Load a transformers CLIP/SigLIP vision tower (or the vision half of a full CLIPModel /
    SiglipModel) from a local `save_pretrained` directory.

    `overrides` sets VisionConfig fields the checkpoint does not fix (e.g. `feature_layer`);
    overriding an architecture field with a different value is an error."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise UserError(
            f"vision checkpoint {root} does not exist or is not a directory; pass a local directory written "
            f"by CLIPVisionModel/SiglipVisionModel.save_pretrained (config.json + model.safetensors)"
        )
    if not (root / "config.json").is_file():
        raise UserError(
            f"{root} has no config.json; pass a directory written by transformers save_pretrained"
        )
    cfg = _hf_vision_config(root, overrides)
    tensors = _load_safetensors(root)
    if any(key.startswith("vision_model.") for key in tensors):
        # full CLIPModel / SiglipModel, or a vision tower saved by transformers < 5
        tensors = {k[len("vision_model.") :]: v for k, v in tensors.items() if k.startswith("vision_model.")}

    table, skipped = hf_vision_key_map(cfg)
    missing = sorted(key for key in table if key not in tensors)
    unexpected = sorted(k for k in tensors if k not in table and not any(k.startswith(s) for s in skipped))
    if missing or unexpected:
        raise UserError(
            f"weights in {root} do not match a {cfg.style} vision tower: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}; check that the directory holds a CLIP/SigLIP vision model"
        )
    model = ViT(cfg)
    state = {ours: tensors[theirs] for theirs, ours in table.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise UserError(f"weights in {root} do not fit the config in {root / 'config.json'}: {exc}") from None
    return model, cfg


def build_vision_encoder(cfg: VisionConfig) -> nn.Module:
    """ViT or NativeViT for `cfg.kind`; random init, or `cfg.pretrained` loaded for kind "vit".

    With `pretrained`, the checkpoint defines the architecture and normalisation; only
    `feature_layer` is taken from `cfg`. The resolved config is `encoder.config`."""
    if cfg.kind == "vit":
        if cfg.pretrained:
            model, _ = load_hf_vision(cfg.pretrained, {"feature_layer": cfg.feature_layer})
            return model
        return ViT(cfg)
    if cfg.kind == "native_vit":
        if cfg.pretrained:
            raise UserError(
                f"vision.pretrained {cfg.pretrained!r}: loading weights is supported for kind 'vit' "
                f"(CLIP/SigLIP) only; remove vision.pretrained to train a native_vit from scratch"
            )
        return NativeViT(cfg)
    raise UserError(f"vision.kind '{cfg.kind}' is unknown; valid options: vit, native_vit")
