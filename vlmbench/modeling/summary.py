"""Architecture summaries: what `vlmbench inspect` prints and what results.json records as `model`."""

from __future__ import annotations

from typing import Any

from vlmbench.errors import UserError

REFERENCE_IMAGE = (640, 480)  # (W, H) used when listing presets: a typical COCO photo


def strategy_summary(model: Any) -> dict[str, Any]:
    return {"name": model.resolution.name, **model.resolution.params()}


def inspect_model(model: Any, name: str, width: int, height: int) -> dict[str, Any]:
    """The `vlmbench inspect` object (keys fixed by DESIGN.md)."""
    if width < 1 or height < 1:
        raise UserError(f"--image-size {width}x{height} is not a valid size: give WxH with positive integers")
    plan = model.resolution.plan(width, height)
    return {
        "model": name,
        "image_size": [width, height],
        "strategy": strategy_summary(model),
        "resized": list(plan.resized),
        "grid": list(plan.grid) if plan.grid is not None else None,
        "tiles": len(plan.tile_sizes),
        "visual_tokens": model.visual_tokens_for(plan),
        "params": model.parameter_counts(),
    }


def model_summary(model: Any, name: str, preset: str | None) -> dict[str, Any]:
    """results.json's `model` object (visual tokens per image are filled in by the runner from the data).

    Models that are not a vlmbench `VLM` (released HF models) describe themselves via `summary()`."""
    if hasattr(model, "summary"):
        return model.summary(name, preset)
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
            "visual_tokens": model.visual_tokens_for(model.resolution.plan(*REFERENCE_IMAGE)),
        },
    }
