"""What vlmbench knows about each released transformers VLM family, one class per family.

`HFVLM` (modeling/hf.py) is family-agnostic: whatever differs between LLaVA, LLaVA-NeXT, Qwen2-VL,
InternVL and BLIP-2 — DESIGN.md's projector and resolution-strategy names, the prompt used when the
processor has no chat template, how parameter names map to components, how images reach the LLM,
how many images one prompt may hold, and how to describe the resolution strategy from the image
processor's settings — lives here. `family_for(model_type)` picks the class; a model type not listed
gets `Generic`, which runs through the common path but cannot describe its resolution strategy.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

from vlmbench.errors import UserError
from vlmbench.modeling.interface import IMAGE_MARKER

Size = tuple[int, int]

_TOWER_PREFIXES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "projector": ("multi_modal_projector.", "image_newline"),
        "vision": ("vision_tower.",),
        "llm": ("language_model.", "lm_head."),
    }
)


class Generic:
    """The defaults, and the family of any model type vlmbench has no specific knowledge of."""

    name: ClassVar[str] = ""  # "" → the model type itself is reported as the family
    model_types: ClassVar[tuple[str, ...]] = ()
    projector: ClassVar[str] = "unknown"
    strategy: ClassVar[str] = "unknown"
    component_prefixes: ClassVar[Mapping[str, tuple[str, ...]]] = _TOWER_PREFIXES
    """Parameter-name prefixes (after an optional leading `model.`) of each component."""
    splices_embeddings: ClassVar[bool] = False
    """True: image features are written over the placeholder embeddings by vlmbench (BLIP-2's own
    generate does this); False: features (or pixels) go to the model's forward / generate."""
    max_images: ClassVar[int | None] = None
    """How many images one prompt may hold (None: any number)."""
    vision_width_attrs: ClassVar[tuple[str, ...]] = ("hidden_size",)

    def fallback_prompt(self, question: str, n_images: int, image_token: str | None) -> str:
        """The prompt when the processor has no chat template: image placeholders, then the question
        (or the question with each `IMAGE_MARKER` replaced by the placeholder)."""
        if image_token is None:
            raise UserError("the processor defines no image token and no chat template; this model is not supported")
        if IMAGE_MARKER in question:
            return question.replace(IMAGE_MARKER, image_token)
        return image_token * n_images + "\n" + question

    def resolution_summary(self, image_processor: Any, config: Any) -> dict[str, Any]:
        return {"name": self.strategy}

    def geometry(self, size: Size, plan_resized: Size | None, image_processor: Any, config: Any) -> tuple[Size, Size | None]:
        """(resized, grid) of an image of `size` (W, H), as `vlmbench inspect` reports them."""
        raise UserError(
            f"vlmbench cannot describe the resolution strategy of this model (model_type not one of "
            f"{', '.join(t for f in FAMILY_CLASSES for t in f.model_types)})"
        )


class Llava(Generic):
    """LLaVA-1.5: one fixed-size view through an MLP projector."""

    name = "llava"
    model_types = ("llava",)
    projector = "mlp"
    strategy = "fixed"

    def resolution_summary(self, image_processor: Any, config: Any) -> dict[str, Any]:
        return {"name": "fixed", "size": tile_side(image_processor)}

    def geometry(self, size: Size, plan_resized: Size | None, image_processor: Any, config: Any) -> tuple[Size, Size | None]:
        side = tile_side(image_processor) or 0
        return (side, side), None


class LlavaNext(Llava):
    """LLaVA-NeXT: anyres — a base view plus tiles of the best-fitting pinpoint canvas."""

    name = "llava_next"
    model_types = ("llava_next",)
    strategy = "anyres"

    @staticmethod
    def _pinpoints(image_processor: Any, config: Any) -> list[Size]:
        """The canvases as (W, H) (transformers stores them as [H, W])."""
        pins = getattr(image_processor, "image_grid_pinpoints", None) or getattr(config, "image_grid_pinpoints", [])
        return [(int(w), int(h)) for h, w in pins]

    def resolution_summary(self, image_processor: Any, config: Any) -> dict[str, Any]:
        pins = self._pinpoints(image_processor, config)
        return {"name": "anyres", "tile_size": tile_side(image_processor), "pinpoints": [list(p) for p in pins]}

    def geometry(self, size: Size, plan_resized: Size | None, image_processor: Any, config: Any) -> tuple[Size, Size | None]:
        from transformers.image_processing_utils import select_best_resolution

        side = tile_side(image_processor) or 1
        pins = [(h, w) for w, h in self._pinpoints(image_processor, config)]
        height, width = select_best_resolution((size[1], size[0]), pins)
        return (int(width), int(height)), (int(width) // side, int(height) // side)


class Qwen2VL(Generic):
    """Qwen2-VL / Qwen2.5-VL: native resolution, 2x2 patch merger, M-RoPE."""

    name = "qwen2_vl"
    model_types = ("qwen2_vl", "qwen2_5_vl")
    projector = "patch_merger"
    strategy = "native"
    component_prefixes = MappingProxyType(
        {"projector": ("visual.merger.",), "vision": ("visual.",), "llm": ("language_model.", "lm_head.")}
    )
    vision_width_attrs = ("embed_dim", "hidden_size")

    def resolution_summary(self, image_processor: Any, config: Any) -> dict[str, Any]:
        size = as_dict(getattr(image_processor, "size", None))
        return {
            "name": "native",
            "patch_size": int(getattr(image_processor, "patch_size", 14)),
            "merge_size": int(getattr(image_processor, "merge_size", 2)),
            "min_pixels": int(size.get("shortest_edge", getattr(image_processor, "min_pixels", 0) or 0)),
            "max_pixels": int(size.get("longest_edge", getattr(image_processor, "max_pixels", 0) or 0)),
        }

    def geometry(self, size: Size, plan_resized: Size | None, image_processor: Any, config: Any) -> tuple[Size, Size | None]:
        return plan_resized or size, None


class InternVL(Generic):
    """InternVL: dynamic tiles (plus a thumbnail) through a pixel-shuffle MLP."""

    name = "internvl"
    model_types = ("internvl",)
    projector = "pixel_shuffle_mlp"
    strategy = "dynamic_tiles"

    def resolution_summary(self, image_processor: Any, config: Any) -> dict[str, Any]:
        return {
            "name": "dynamic_tiles",
            "tile_size": tile_side(image_processor),
            "min_tiles": int(getattr(image_processor, "min_patches", 1)),
            "max_tiles": int(getattr(image_processor, "max_patches", 12)),
            "thumbnail": True,  # GotOcr2/InternVL adds a whole-image thumbnail whenever it cuts >1 tile
        }

    def geometry(self, size: Size, plan_resized: Size | None, image_processor: Any, config: Any) -> tuple[Size, Size | None]:
        from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import get_optimal_tiled_canvas

        side = tile_side(image_processor) or 1
        if not getattr(image_processor, "crop_to_patches", False):
            return (side, side), (1, 1)
        summary = self.resolution_summary(image_processor, config)
        cols, rows = get_optimal_tiled_canvas((size[1], size[0]), (side, side), summary["min_tiles"], summary["max_tiles"])
        return (int(cols) * side, int(rows) * side), (int(cols), int(rows))


class Blip2(Llava):
    """BLIP-2: a Q-Former's query tokens, spliced into the LLM's input embeddings; one image per prompt."""

    name = "blip2"
    model_types = ("blip-2",)
    projector = "qformer"
    component_prefixes = MappingProxyType(
        {
            "projector": ("qformer.", "query_tokens", "language_projection."),
            "vision": ("vision_model.",),
            "llm": ("language_model.", "lm_head."),
        }
    )
    splices_embeddings = True
    max_images = 1

    def fallback_prompt(self, question: str, n_images: int, image_token: str | None) -> str:
        """BLIP-2's zero-shot VQA prompt (the paper's format); the query tokens go in front of it."""
        text = question.replace(IMAGE_MARKER, "").strip() if IMAGE_MARKER in question else question
        return f"Question: {text} Answer:"


FAMILY_CLASSES: tuple[type[Generic], ...] = (Llava, LlavaNext, Qwen2VL, InternVL, Blip2)


def family_for(model_type: str) -> Generic:
    """The family object of a transformers `model_type` (`Generic` when vlmbench has none for it)."""
    for cls in FAMILY_CLASSES:
        if model_type in cls.model_types:
            return cls()
    return Generic()


# ---- reading image-processor settings ------------------------------------------------------------
def as_dict(value: Any) -> dict[str, Any]:
    """An image processor's `size` / `crop_size` (a dict or a SizeDict) as a plain dict."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    keys = ("height", "width", "shortest_edge", "longest_edge")
    return {k: getattr(value, k) for k in keys if getattr(value, k, None) is not None}


def tile_side(image_processor: Any) -> int | None:
    """The side of the square an encoder input is cropped/resized to (crop_size, else size)."""
    for value in (getattr(image_processor, "crop_size", None), getattr(image_processor, "size", None)):
        data = as_dict(value)
        for key in ("height", "shortest_edge"):
            if data.get(key):
                return int(data[key])
    return None


__all__ = ["FAMILY_CLASSES", "Blip2", "Generic", "InternVL", "Llava", "LlavaNext", "Qwen2VL", "as_dict", "family_for", "tile_side"]
