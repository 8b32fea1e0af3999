"""`vlmbench report`: one self-contained HTML report for one or more runs."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report",
        help="render an offline HTML report comparing runs",
        description=(
            "Render a self-contained HTML file (inline CSS/JS/SVG, no network) for the given runs: every metric "
            "with its 95% CI, runs grouped by projector and by resolution strategy, accuracy vs visual tokens and "
            "vs throughput with the Pareto front, POPE per split, CHAIR, paired significance tests and a sample browser."
        ),
    )
    p.add_argument(
        "runs", nargs="+", type=Path, metavar="RUN_DIR", help="run directories (or their results.json)"
    )
    p.add_argument("--out", required=True, type=Path, metavar="report.html", help="where to write the report")
    p.add_argument(
        "--max-samples",
        type=int,
        default=100,
        metavar="N",
        help="sample browser: at most N samples per task and run (default 100; the page says when it is capped)",
    )
    p.add_argument(
        "--alpha", type=float, default=0.05, help="significance level for marking p-values (default 0.05)"
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed, 0 to 2**32-1 (default 0)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vlmbench.arguments import check_output_file, check_seed
    from vlmbench.errors import UserError
    from vlmbench.report.html import render_report

    if args.max_samples < 0:
        raise UserError(f"--max-samples {args.max_samples} must be >= 0")
    if not 0.0 < args.alpha < 1.0:
        raise UserError(f"--alpha {args.alpha} must lie strictly between 0 and 1")
    check_seed(args.seed)
    check_output_file(args.out, "--out")  # before the runs are read: a directory here would fail only at the end
    out = render_report(
        args.runs, args.out, max_samples_per_task=args.max_samples, alpha=args.alpha, seed=args.seed
    )
    print(f"wrote {out}")
    return 0
