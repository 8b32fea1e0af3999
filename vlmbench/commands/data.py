"""`vlmbench data`: write data sets in a task's release layout.

    vlmbench data synth --task TASK --out DIR [--seed N] [--n N]
    vlmbench data pope-from-coco --annotations instances.json --images DIR --out DIR [--seed N] [--n-images N]

Both write into a temporary sibling of ``--out`` and rename it into place, so an interrupted command
leaves no half-written set; an existing non-empty ``--out`` is refused.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from vlmbench.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `data` sub-command and its `synth` and `pope-from-coco` actions."""
    parser = subparsers.add_parser(
        "data",
        help="write synthetic or COCO-derived data sets",
        description="Write a task's data set in the layout of its public release (see `vlmbench tasks`).",
    )
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION")
    parser.set_defaults(handler=_missing_action(parser))

    synth = actions.add_parser(
        "synth",
        help="write the deterministic synthetic set of a task",
        description="Write the deterministic synthetic set of a task (same seed and n: byte-identical files).",
    )
    synth.add_argument("--task", required=True, help="task name (see `vlmbench tasks`)")
    synth.add_argument("--out", required=True, type=Path, help="output directory (must not hold files)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument(
        "--n", type=int, default=None, help="set size (default: the generator's; POPE, CHAIR and probes count images)"
    )
    synth.set_defaults(handler=run_synth)

    pope = actions.add_parser(
        "pope-from-coco",
        help="build POPE from COCO instance annotations",
        description="Build the three POPE splits (random/popular/adversarial) from a COCO instances file "
        "and its images, following the official POPE recipe.",
    )
    pope.add_argument("--annotations", required=True, type=Path, help="COCO instances_*.json")
    pope.add_argument("--images", required=True, type=Path, help="folder holding the annotated images")
    pope.add_argument("--out", required=True, type=Path, help="output directory (must not hold files)")
    pope.add_argument(
        "--seed", type=int, default=0, help="random seed for image and negative sampling (default 0)"
    )
    pope.add_argument("--n-images", type=int, default=500, help="images to sample (default 500, as POPE)")
    pope.set_defaults(handler=run_pope_from_coco)


def _missing_action(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        raise UserError(f"choose an action: synth or pope-from-coco (see `{parser.prog} --help`)")

    return handler


def _write_atomically(out: Path, write: Callable[[Path], object]) -> Path:
    """Run ``write(tmp)`` on a fresh temporary sibling of ``out``, then rename it to ``out``."""
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} already exists and is not empty; choose a new directory or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        write(tmp)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.rename(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _summary(out: Path) -> str:
    from vlmbench.data.loaders import read_meta

    meta = read_meta(out)
    rows = meta.get("n")
    return f"{rows} rows" if isinstance(rows, int) else "data"


def run_synth(args: argparse.Namespace) -> int:
    """`vlmbench data synth`."""
    from vlmbench.data.synth import SYNTH_TASKS, generate

    if args.task not in SYNTH_TASKS:
        raise UserError(
            f"no synthetic generator for task '{args.task}'; choose one of: {', '.join(SYNTH_TASKS)}"
        )
    if args.n is not None and args.n < 1:
        raise UserError(f"--n must be a positive integer, got {args.n}")
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    out = _write_atomically(args.out, lambda tmp: generate(args.task, tmp, seed=args.seed, n=args.n))
    print(f"wrote the synthetic {args.task} set ({_summary(out)}, seed {args.seed}) to {out}")
    return 0


def run_pope_from_coco(args: argparse.Namespace) -> int:
    """`vlmbench data pope-from-coco`."""
    from vlmbench.data.pope_coco import build_pope_from_coco

    if not Path(args.annotations).is_file():
        raise UserError(f"--annotations {args.annotations} is not a file (pass a COCO instances_*.json)")
    if not Path(args.images).is_dir():
        raise UserError(f"--images {args.images} is not a directory (pass the folder of the COCO images)")
    if args.n_images < 1:
        raise UserError(f"--n-images must be a positive integer, got {args.n_images}")
    out = _write_atomically(
        args.out,
        lambda tmp: build_pope_from_coco(
            args.annotations, args.images, tmp, seed=args.seed, n_images=args.n_images
        ),
    )
    print(f"wrote POPE ({_summary(out)}, seed {args.seed}) built from {args.annotations} to {out}")
    return 0
