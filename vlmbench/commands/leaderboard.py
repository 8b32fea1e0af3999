"""`vlmbench leaderboard`: a static, offline leaderboard site from many runs."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "leaderboard",
        help="build a static leaderboard site from run directories",
        description=(
            "Find every results.json under the given paths (run directories or folders holding them) and write "
            "SITE_DIR/index.html (sortable, filterable; data inlined so it works from file://), data.json, "
            "models/<slug>.html per run, reports/<slug>.html (each run's report, rendered here) and thumbs/ "
            "(the sample thumbnails, each distinct image once)."
        ),
    )
    p.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="RESULTS_DIR",
        help="run directories or folders containing runs",
    )
    p.add_argument("--out", required=True, type=Path, metavar="SITE_DIR", help="output folder for the site")
    p.add_argument(
        "--max-samples",
        type=int,
        default=None,
        metavar="N",
        help="samples per task and run in the reports' sample browsers (default 40, which keeps the site small)",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vlmbench.errors import UserError
    from vlmbench.report.leaderboard import SITE_MAX_SAMPLES, build_leaderboard

    cap = SITE_MAX_SAMPLES if args.max_samples is None else args.max_samples
    if cap < 0:
        raise UserError(f"--max-samples {cap} must be >= 0")
    index = build_leaderboard(args.paths, args.out, max_samples_per_task=cap)
    print(f"wrote {index}")
    return 0
