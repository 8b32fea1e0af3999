"""Architecture summaries: what `vlmbench inspect` prints and what results.json records as `model`.

`inspect_model` and `model_summary` work on any `EvalModel`; the `vlm_*` functions are how vlmbench's
own `VLM` describes itself (its `resolution_summary` / `inspect_plan` / `summary` methods call them)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vlmbench.errors import UserError
from vlmbench.modeling.interface import REFERENCE_IMAGE

if TYPE_CHECKING:
    from vlmbench.modeling.interface import EvalModel

__all__ = ["REFERENCE_IMAGE", "inspect_model", "model_summary", "strategy_summary", "vlm_inspect_plan", "vlm_summary"]


def inspect_model(model: EvalModel, name: str, width: int, height: int) -> dict[str, Any]:
    """The `vlmbench inspect` object (keys fixed by DESIGN.md)."""
    if width < 1 or height < 1:
        raise UserError(f"--image-size {width}x{height} is not a valid size: give WxH with positive integers")
    plan = model.inspect_plan(width, height)
    return {
        "model": name,
        "image_size": [width, height],
        "strategy": model.resolution_summary(),
        "resized": plan["resized"],
        "grid": plan["grid"],
        "tiles": plan["tiles"],
        "visual_tokens": plan["visual_tokens"],
        "params": model.parameter_counts(),
    }


def model_summary(model: EvalModel, name: str, preset: str | None) -> dict[str, Any]:
    """results.json's `model` object (visual tokens per image are filled in by the runner from the data)."""
    return model.summary(name, preset)


# ---- vlmbench's own VLM --------------------------------------------------------------------------
def strategy_summary(model: Any) -> dict[str, Any]:
    """A `VLM`'s resolution strategy: its name and parameters."""
    return {"name": model.resolution.name, **model.resolution.params()}


def vlm_inspect_plan(model: Any, width: int, height: int) -> dict[str, Any]:
    """A `VLM`'s resolution plan for one image size (no pixels touched)."""
    plan = model.resolution.plan(width, height)
    return {
        "resized": list(plan.resized),
        "grid": list(plan.grid) if plan.grid is not None else None,
        "tiles": len(plan.tile_sizes),
        "visual_tokens": model.visual_tokens_for(plan),
    }


def vlm_summary(model: Any, name: str, preset: str | None) -> dict[str, Any]:
    """results.json's `model` object for a `VLM`."""
    cfg = model.config
    vision = f"{cfg.vision.kind}/{cfg.vision.style} {cfg.vision.image_size}px p{cfg.vision.patch_size} d{cfg.vision.hidden_size}x{cfg.vision.num_layers}"
    projector = cfg.projector.kind + (" + gated cross-attention" if cfg.cross_attention_every else "")
    llm_cfg = model.llm.config
    return {
        "name": name,
        "preset": preset,
        "vision_encoder": vision,
        "projector": projector,
        "resolution": strategy_summary(model),
        "llm": f"{llm_cfg.model_type} d{llm_cfg.hidden_size}x{llm_cfg.num_hidden_layers}",
        "params": model.parameter_counts(),
        "visual_tokens_reference": {
            "image_size": list(REFERENCE_IMAGE),
            "visual_tokens": model.visual_tokens_reference(*REFERENCE_IMAGE),
        },
    }
