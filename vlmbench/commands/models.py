"""`vlmbench models`: list presets with their design choices and visual tokens for a reference image."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("models", help="list model presets and their design choices")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vlmbench.modeling.presets import build_random, demo_checkpoint, load_preset, preset_names
    from vlmbench.modeling.summary import REFERENCE_IMAGE

    rows = []
    for name in preset_names():
        config = load_preset(name)
        model = build_random(config)  # weights are irrelevant for the token/parameter budget
        plan = model.resolution.plan(*REFERENCE_IMAGE)
        rows.append(
            {
                "name": name,
                "vision": f"{config.vision.kind}/{config.vision.style}",
                "projector": config.projector.kind + ("+xattn" if config.cross_attention_every else ""),
                "resolution": config.resolution.name,
                "tiles": len(plan.tile_sizes),
                "visual_tokens": model.visual_tokens_for(plan),
                "params": model.parameter_counts()["total"],
                "demo_checkpoint": demo_checkpoint(name) is not None,
                "description": config.description,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    w, h = REFERENCE_IMAGE
    header = f"{'preset':<18} {'vision':<16} {'projector':<22} {'resolution':<14} {'tiles':>5} {'tokens@' + f'{w}x{h}':>15} {'params':>9}  demo"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['name']:<18} {r['vision']:<16} {r['projector']:<22} {r['resolution']:<14} {r['tiles']:>5} "
            f"{r['visual_tokens']:>15} {r['params'] / 1e6:>8.2f}M  {'yes' if r['demo_checkpoint'] else 'no'}"
        )
    return 0
