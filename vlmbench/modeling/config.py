"""One small config dataclass per design axis, and the assembled `VLMConfig`.

Presets (`models/*.yaml`) and checkpoint directories (`config.json`) are plain
dicts of these fields; `VLMConfig.from_dict` validates names and combinations so
that a bad preset fails with one line naming the field and the valid options.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from vlmbench.errors import UserError

VISION_KINDS = ("vit", "native_vit")
VISION_STYLES = ("clip", "siglip")
PROJECTOR_KINDS = (
    "linear",
    "mlp",
    "qformer",
    "perceiver",
    "c_abstractor",
    "pixel_shuffle_mlp",
    "patch_merger",
    "avg_pool",
)
RESOLUTION_NAMES = ("fixed", "anyres", "dynamic_tiles", "native")
LLM_ARCHS = ("llama", "qwen2")

# Projectors that reduce the patch grid spatially need the grid to be divisible by `factor`.
SPATIAL_PROJECTORS = ("pixel_shuffle_mlp", "patch_merger", "avg_pool")


@dataclass
class VisionConfig:
    """ViT settings. `style` picks CLIP (CLS token, pre-LN, quick-GELU) or SigLIP (no CLS, tanh-GELU, post-LN)
    defaults; `kind="native_vit"` is the Qwen2-VL-style encoder with 2D RoPE and any H×W."""

    kind: str = "vit"
    style: str = "clip"
    image_size: int = 64  # training/position-table size of the ViT (a tile side)
    patch_size: int = 8
    hidden_size: int = 64
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 256
    use_cls: bool = True
    feature_layer: int = -2  # which hidden state feeds the projector; LLaVA takes the penultimate (-2)
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    rope_theta: float = 10000.0  # native_vit only
    image_mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    image_std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    pretrained: str | None = None  # local transformers CLIPVisionModel / SiglipVisionModel directory

    @property
    def grid_side(self) -> int:
        """Patches per side for an `image_size` tile."""
        return self.image_size // self.patch_size


@dataclass
class ProjectorConfig:
    """Maps (B, N, D_vis) visual features to (B, M, D_llm) LLM tokens.

    `factor` is the spatial reduction side for pixel_shuffle_mlp / patch_merger / avg_pool (2 → 4:1);
    `num_queries` the output length of qformer / perceiver; `output_tokens` the pooled length
    of c_abstractor (a square number)."""

    kind: str = "mlp"
    factor: int = 2
    num_queries: int = 32
    output_tokens: int = 16
    num_layers: int = 2
    num_heads: int = 4
    hidden_size: int | None = None  # internal width of qformer / perceiver / c_abstractor; default D_vis


@dataclass
class ResolutionConfig:
    """How one image becomes encoder inputs. Only the fields of the chosen `name` matter."""

    name: str = "fixed"
    size: int = 64  # fixed: S×S
    letterbox: bool = False  # fixed: pad to square instead of stretching
    tile_size: int = 64  # anyres / dynamic_tiles
    pinpoints: list[list[int]] = field(default_factory=lambda: [[128, 64], [64, 128], [128, 128]])  # anyres [W, H]
    min_tiles: int = 1  # dynamic_tiles
    max_tiles: int = 12
    thumbnail: bool = True
    patch_size: int = 8  # native
    merge_size: int = 2
    min_pixels: int = 32 * 32
    max_pixels: int = 256 * 256


@dataclass
class LLMConfig:
    """A causal LM from transformers: built from these sizes, or loaded from `pretrained` (a local path)."""

    arch: str = "llama"
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 344
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0
    vocab_size: int | None = None  # taken from the tokenizer when None
    pretrained: str | None = None


@dataclass
class VLMConfig:
    """Vision encoder × projector × resolution strategy × LLM.

    `cross_attention_every`: when set (Flamingo-style), visual tokens are not placed in the input
    sequence but enter through tanh-gated cross-attention layers inserted before every N-th LLM layer."""

    name: str = "custom"
    vision: VisionConfig = field(default_factory=VisionConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    resolution: ResolutionConfig = field(default_factory=ResolutionConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    cross_attention_every: int | None = None
    description: str = ""

    # ---- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> VLMConfig:
        data = dict(data)
        parts: dict[str, Any] = {}
        for key, sub in (
            ("vision", VisionConfig),
            ("projector", ProjectorConfig),
            ("resolution", ResolutionConfig),
            ("llm", LLMConfig),
        ):
            parts[key] = _build(sub, data.pop(key, {}) or {}, f"{source}: {key}")
        top = _build(cls, data, source, allow_nested=False)
        for key, value in parts.items():
            setattr(top, key, value)
        top.validate(source)
        return top

    def validate(self, source: str = "config") -> None:
        """Reject unknown names and impossible combinations with a message naming the fix."""
        _choice(self.vision.kind, VISION_KINDS, f"{source}: vision.kind")
        _choice(self.vision.style, VISION_STYLES, f"{source}: vision.style")
        _choice(self.projector.kind, PROJECTOR_KINDS, f"{source}: projector.kind")
        _choice(self.resolution.name, RESOLUTION_NAMES, f"{source}: resolution.name")
        _choice(self.llm.arch, LLM_ARCHS, f"{source}: llm.arch")
        v, p, r = self.vision, self.projector, self.resolution
        if v.image_size % v.patch_size:
            raise UserError(
                f"{source}: vision.image_size {v.image_size} is not a multiple of vision.patch_size {v.patch_size}"
            )
        if v.hidden_size % v.num_heads:
            raise UserError(f"{source}: vision.hidden_size {v.hidden_size} must be divisible by vision.num_heads")
        if r.name == "native" and v.kind != "native_vit":
            raise UserError(
                f"{source}: resolution 'native' needs an encoder with 2D RoPE (vision.kind: native_vit), "
                f"got vision.kind '{v.kind}'; use fixed, anyres or dynamic_tiles with a 'vit' encoder"
            )
        if v.kind == "native_vit" and r.name != "native":
            raise UserError(
                f"{source}: vision.kind 'native_vit' is used with resolution 'native' only, got '{r.name}'"
            )
        if r.name == "native" and r.patch_size != v.patch_size:
            raise UserError(
                f"{source}: resolution.patch_size {r.patch_size} differs from vision.patch_size {v.patch_size}"
            )
        if r.name in ("anyres", "dynamic_tiles") and r.tile_size != v.image_size:
            raise UserError(
                f"{source}: resolution.tile_size {r.tile_size} must equal vision.image_size {v.image_size}"
            )
        if r.name == "fixed" and r.size % v.patch_size:
            raise UserError(f"{source}: resolution.size {r.size} is not a multiple of vision.patch_size")
        if p.kind in SPATIAL_PROJECTORS:
            if r.name == "native":
                if p.kind != "patch_merger" or p.factor != r.merge_size:
                    raise UserError(
                        f"{source}: with resolution 'native' use projector 'patch_merger' with factor "
                        f"= resolution.merge_size ({r.merge_size}); got '{p.kind}' factor {p.factor}"
                    )
            else:
                side = (r.size if r.name == "fixed" else r.tile_size) // v.patch_size
                if side % p.factor:
                    raise UserError(
                        f"{source}: projector '{p.kind}' folds {p.factor}x{p.factor} patches but the patch grid is "
                        f"{side}x{side}, not divisible by {p.factor}; choose an image/tile size giving an even grid"
                    )
        elif r.name == "native":
            raise UserError(
                f"{source}: resolution 'native' needs projector 'patch_merger' (variable grids), got '{p.kind}'"
            )
        if p.kind == "c_abstractor" and round(p.output_tokens**0.5) ** 2 != p.output_tokens:
            raise UserError(f"{source}: projector.output_tokens {p.output_tokens} must be a square number")
        if self.cross_attention_every is not None and self.cross_attention_every < 1:
            raise UserError(f"{source}: cross_attention_every must be a positive integer or null")


def _choice(value: str, options: tuple[str, ...], what: str) -> None:
    if value not in options:
        raise UserError(f"{what} '{value}' is unknown; valid options: {', '.join(options)}")


def _build(cls: type, data: dict[str, Any], what: str, allow_nested: bool = True) -> Any:
    if not isinstance(data, dict):
        raise UserError(f"{what} must be a mapping, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserError(f"{what}: unknown field(s) {', '.join(unknown)}; valid fields: {', '.join(sorted(names))}")
    kwargs = dict(data)
    for key in ("image_mean", "image_std"):
        if key in kwargs and kwargs[key] is not None:
            kwargs[key] = tuple(kwargs[key])
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise UserError(f"{what}: {exc}") from None
