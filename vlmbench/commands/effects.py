"""`vlmbench effects`: do effects the VLM literature reports appear in finished demo runs?

Prints a Markdown table (and writes it with --out): per effect and pair of runs, the two values, the
difference with its 95% bootstrap interval and a verdict. The effects are a study file (default: the
bundled five-effect study, vlmbench/report/effects_study.yaml; another with --study). Exit 0; exit 2
on a missing run directory, a run that lacks a task an effect needs, runs evaluated on different
question ids, or a malformed study file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "effects",
        help="test five effects from the VLM literature on finished runs (Markdown table)",
        description=(
            "Measure, from the per-sample outputs of finished runs named by preset, five effects the VLM "
            "literature reports: adversarial POPE below random; higher resolution beats fixed 64 px on "
            "small-font DocVQA; a 32-query Q-Former loses fine detail; pixel shuffle 4:1 loses little; DPO "
            "lowers CHAIR_i without collapsing recall. Each gets a point estimate, a 95% bootstrap CI and a "
            "verdict; effects whose runs are not given are listed as not measured."
        ),
    )
    p.add_argument(
        "--run",
        dest="runs",
        action="append",
        required=True,
        metavar="NAME=RUN_DIR",
        help="a finished run under its preset name, e.g. llava-1.5-style=runs/llava15 (repeatable)",
    )
    p.add_argument("--out", type=Path, metavar="FILE.md", help="also write the table to this file")
    p.add_argument(
        "--study",
        type=Path,
        metavar="FILE.yaml",
        help="the effects to measure (default: the five literature effects; format in effects_study.yaml)",
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vlmbench.arguments import check_seed
    from vlmbench.errors import UserError
    from vlmbench.report.effects import parse_run_specs, run_effects, unknown_run_note
    from vlmbench.report.effects_study import load_study

    check_seed(args.seed)
    study = load_study(args.study)
    for name in parse_run_specs(args.runs):
        if name not in study.known_runs:
            print(
                f"vlmbench effects: note: {name!r} is not one of the compared presets; {unknown_run_note(study)}",
                file=sys.stderr,
            )
    _, table = run_effects(args.runs, seed=args.seed, n_resamples=args.resamples, study=study)
    print(table, end="")
    if args.out is not None:
        try:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(table, encoding="utf-8")
        except OSError as exc:
            raise UserError(f"--out {args.out}: cannot write the table ({exc.strerror or exc})") from None
        print(f"wrote {args.out}", file=sys.stderr)
    return 0
