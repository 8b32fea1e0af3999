"""`vlmbench train --recipe FILE.yaml [--out DIR] [--resume]`: staged training from a recipe.

Also runs under `torchrun --nproc-per-node N -m vlmbench train ...` (DDP; gloo on CPU, nccl on GPU).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a VLM from a recipe (stages: lm_pretrain / vision_contrastive, align, sft, dpo)",
        description="Train a VLM stage by stage as a recipe (recipes/*.yaml) says; writes a checkpoint "
        "directory that `vlmbench run --model DIR` evaluates.",
    )
    p.add_argument("--recipe", required=True, type=Path, help="recipe YAML (see recipes/)")
    p.add_argument("--out", type=Path, help="final checkpoint directory (default: the recipe's output_dir)")
    p.add_argument(
        "--work-dir", type=Path, help="stage checkpoints and logs (default: the recipe's work_dir)"
    )
    p.add_argument("--data-dir", type=Path, help="generated training sets (default: the recipe's data_dir)")
    p.add_argument(
        "--resume", action="store_true", help="continue from the last stage checkpoint of the work dir"
    )
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument(
        "--stop-after",
        type=int,
        help="stop after N optimizer steps, as if killed (for testing --resume); exits 1",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from vlmbench.errors import UserError
    from vlmbench.training.loop import TrainControl, TrainingInterrupted, train
    from vlmbench.training.recipe import check_inputs, load_recipe

    overrides = {}
    if args.out is not None:
        overrides["output_dir"] = str(args.out.resolve())
    if args.work_dir is not None:
        overrides["work_dir"] = str(args.work_dir.resolve())
    if args.data_dir is not None:
        overrides["data_dir"] = str(args.data_dir.resolve())
    recipe = load_recipe(args.recipe, overrides)
    check_inputs(recipe)  # before any data set is generated
    if args.threads is not None:
        if args.threads < 1:
            raise UserError("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    if args.stop_after is not None and args.stop_after < 1:
        raise UserError("--stop-after must be >= 1")
    control = TrainControl(resume=args.resume, device=args.device, stop_after=args.stop_after)
    try:
        out = train(recipe, control)
    except TrainingInterrupted as exc:
        print(f"vlmbench train: {exc}; continue with --resume", file=sys.stderr)
        return 1
    summary = (
        json.loads((out / "train_summary.json").read_text()) if (out / "train_summary.json").exists() else {}
    )
    print(json.dumps({"checkpoint": str(out), "train_wall_s": summary.get("train_wall_s")}))
    return 0
