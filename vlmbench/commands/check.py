"""`vlmbench check`: the regression gate between a baseline run and a candidate run.

Exit 0 when no judged number dropped significantly, 1 when one did (p < alpha and the drop exceeds
--max-drop, in the metric's own direction), 2 when the runs cannot be compared -- which includes a run
whose results.json disagrees with its own samples, since the gate judges the samples. Judged: each
task's headline, its pooled accuracy (McNemar), and, when both runs have controls, the visual gain of
both (`vlmbench.report.gate`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vlmbench.arguments import check_seed
from vlmbench.errors import CheckFailed


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "check",
        help="regression gate: fail when the candidate is significantly worse than the baseline",
        description=(
            "Compare two runs on the same samples (matched by question_id). Exit 1 when some task's "
            "headline metric, its pooled accuracy (POPE all.accuracy, McNemar) or, when both runs were made "
            "with --controls, its visual gain (metric(real) - metric(control)) drops with p < ALPHA and by "
            "more than MAX_DROP; exit 0 otherwise; exit 2 when "
            "the runs differ in tasks, data fingerprints or question ids, or when a run's results.json "
            "disagrees with its samples. Every metric is recomputed from the samples of both runs and "
            "printed with baseline, candidate, delta, the 95% paired-bootstrap CI of the delta and a "
            "p-value (McNemar for right/wrong metrics, paired bootstrap otherwise)."
        ),
    )
    p.add_argument(
        "--baseline", required=True, type=Path, metavar="A", help="baseline results.json or run directory"
    )
    p.add_argument(
        "--candidate", required=True, type=Path, metavar="B", help="candidate results.json or run directory"
    )
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    p.add_argument(
        "--max-drop",
        type=float,
        default=0.0,
        metavar="X",
        help="tolerated drop of a headline metric, in metric units (default 0: any significant drop fails)",
    )
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vlmbench.report.gate import format_table, run_check, summary

    check_seed(args.seed)
    outcome = run_check(
        args.baseline,
        args.candidate,
        alpha=args.alpha,
        max_drop=args.max_drop,
        n_resamples=args.resamples,
        seed=args.seed,
    )
    print(f"baseline:  {outcome.baseline.name} ({outcome.baseline.dir})")
    print(f"candidate: {outcome.candidate.name} ({outcome.candidate.dir})")
    print(format_table(outcome))
    line = summary(outcome)
    if outcome.regressions:
        raise CheckFailed(line)
    print(line)
    return 0
