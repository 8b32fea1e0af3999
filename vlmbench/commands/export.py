"""`vlmbench export --checkpoint DIR --format llava --out DIR`: a vlmbench checkpoint as a transformers model."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="write a vlmbench checkpoint in a transformers layout (LLaVA), loadable as hf:<dir>"
    )
    p.add_argument("--checkpoint", required=True, help="a vlmbench checkpoint directory (what `vlmbench train` writes)")
    p.add_argument("--format", default="llava", choices=["llava", "internvl"], help="target layout (default llava)")
    p.add_argument("--out", required=True, help="output directory (created)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vlmbench.errors import UserError
    from vlmbench.modeling.hf_export import export_model
    from vlmbench.modeling.vlm import VLM

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"--out {out} exists and is not empty; choose a new directory")
    model = VLM.load(args.checkpoint)
    path = export_model(model, out, args.format)
    print(f"exported {args.checkpoint} as transformers {args.format} to {path}; evaluate it with --model hf:{path}")
    return 0
