"""`vlmbench ablate CHECKPOINT --zero-vision|--permute-projector --out DIR`: a sabotaged copy of a
checkpoint (blind vision tower, or scrambled projector output) for testing that the regression gate
and the visual-dependence controls catch a model that does not use the image."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "ablate", help="write a sabotaged copy of a checkpoint (zeroed vision tower or permuted projector)"
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a vlmbench checkpoint directory, or a preset name (its demo checkpoint)")
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--zero-vision", action="store_true", help="set every vision-tower weight to zero")
    kind.add_argument("--permute-projector", action="store_true",
                      help="permute the output features of the projector's last linear layer (seeded)")
    p.add_argument("--out", required=True, help="output directory (must not exist or be empty)")
    p.add_argument("--seed", type=int, default=0, help="seed of the projector permutation (default 0)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vlmbench.arguments import check_seed
    from vlmbench.errors import UserError
    from vlmbench.modeling.ablation import permute_projector, zero_vision
    from vlmbench.modeling.presets import demo_checkpoint, preset_names

    check_seed(args.seed)
    source = Path(args.checkpoint).expanduser()
    if not source.is_dir():
        if args.checkpoint not in preset_names():
            raise UserError(f"{args.checkpoint} is neither a checkpoint directory nor a preset (see `vlmbench models`)")
        found = demo_checkpoint(args.checkpoint)
        if found is None:
            raise UserError(f"preset {args.checkpoint} ships no demo checkpoint; pass a checkpoint directory")
        source = Path(found)
    out = zero_vision(source, args.out) if args.zero_vision else permute_projector(source, args.out, seed=args.seed)
    print(f"wrote {out} ({'zeroed vision tower' if args.zero_vision else 'permuted projector output'} of {source}); "
          f"evaluate it with --model {out}")
    return 0
