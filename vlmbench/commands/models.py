"""`vlmbench models`: list presets with their design choices and visual tokens for a reference image.

Listing imports neither torch nor transformers: see `vlmbench.modeling.catalog`."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("models", help="list model presets and their design choices")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the preset table; the numbers that need a built model come from `models/catalog.json`."""
    from vlmbench.modeling.catalog import preset_rows
    from vlmbench.modeling.interface import REFERENCE_IMAGE

    rows = preset_rows()
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
