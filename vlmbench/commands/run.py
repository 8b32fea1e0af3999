"""`vlmbench run`: the main job. Also runs under `torchrun --nproc-per-node N -m vlmbench run ...`.

The runner evaluates and writes the run directory; this command then renders its `report.html` (and
the optional lmms-eval copy) on the main process. A report that fails to render is logged and leaves
results.json and samples/ as they are, so `vlmbench report` can render it again later.

Exit code: 0 when the run finished, also when some samples failed (they are counted in results.json's
``errors``), unless ``--max-errors`` is given: then 1 when a task has more failed samples than it
allows, after every file is written. Under torchrun only rank 0 applies it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from vlmbench.commands.evaluation_flags import (
    add_inference_flags,
    add_mitigation_flag,
    add_model_and_data_flags,
    add_prefix_sharing_flag,
)
from vlmbench.errors import CheckFailed
from vlmbench.runner.options import ErrorBudget

log = logging.getLogger("vlmbench.run")

REPORT_FILE = "report.html"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("run", help="evaluate a model on tasks (batched, sharded with torchrun, resumable)")
    add_model_and_data_flags(p)
    p.add_argument("--output-dir", default="runs", help="where run directories are created (default runs/)")
    p.add_argument("--run-name", help="name of the run directory (default <model>-<UTC time>)")
    p.add_argument("--resume", action="store_true", help="continue the named (or latest unfinished) run in place")
    add_inference_flags(p, "seed for random init, sampling and bootstrap CIs (0 to 2**32-1)")
    p.add_argument("--no-feature-cache", action="store_true", help="re-encode images for every question")
    p.add_argument("--dist-timeout", type=float, default=1800.0, help="seconds before a collective gives up")
    p.add_argument("--no-report", action="store_true", help="do not render report.html")
    p.add_argument("--attn-implementation", choices=["sdpa", "eager", "flash_attention_2"],
                   help="hf: models: attention kernel (default sdpa; flash_attention_2 on CUDA when flash_attn imports)")
    p.add_argument("--lmms-eval-output", metavar="PATH",
                   help="also write the results in lmms-eval's layout (a directory, or a *_results.json file)")
    p.add_argument("--max-errors", metavar="N|P%",
                   help="exit 1 when a task has more than N failed samples (or P%% of its samples); "
                        "default: failed samples are counted in results.json and the run exits 0")
    p.add_argument("--controls", metavar="LIST", default="none",
                   help="visual-dependence controls, comma-separated: blank (mean-colour image of the same size), "
                        "shuffled (another sample's image); each re-answers every sample and results.json gets "
                        "the visual gain metric(real) - metric(control) with a paired 95%% CI (default none)")
    p.add_argument("--visual-tokens", metavar="SPEC",
                   help="compress visual tokens at inference, operators applied in order: pool:K, tome:R, "
                        "prune-attn:R[@L], random:R, downsample:F, max-tiles:N, max-pixels:P (docs/compression.md)")
    p.add_argument("--concurrency", type=int, default=8,
                   help="openai: models: requests in flight at once, within a batch (default 8; use --batch-size >= N)")
    add_mitigation_flag(p)
    add_prefix_sharing_flag(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vlmbench.runner.controls import parse_controls
    from vlmbench.runner.run import RunOptions, run_evaluation

    budget = ErrorBudget.parse(args.max_errors)
    controls = parse_controls(args.controls)
    if args.lmms_eval_output:
        _check_lmms_output(Path(args.lmms_eval_output))
    opts = RunOptions(
        model=args.model,
        tasks=[t.strip() for t in args.tasks.split(",") if t.strip()],
        checkpoint=args.checkpoint,
        data_dir=args.data_dir,
        limit=args.limit,
        batch_size=args.batch_size,
        output_dir=args.output_dir,
        run_name=args.run_name,
        resume=args.resume,
        seed=args.seed,
        device=args.device,
        dtype=args.dtype,
        answer_mode=args.answer_mode,
        feature_cache=not args.no_feature_cache,
        dist_timeout_s=args.dist_timeout,
        synthetic_n=args.synthetic_n,
        attn_implementation=args.attn_implementation,
        controls=controls,
        visual_tokens=args.visual_tokens,
        concurrency=args.concurrency,
        mitigation=args.mitigation,
        prefix_sharing=args.prefix_sharing == "on",
    )
    run_dir = run_evaluation(opts)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 writes files
        return 0
    if not args.no_report:
        write_report(run_dir)
    if args.lmms_eval_output:
        from vlmbench.interop.lmms import write_lmms_eval_results

        write_lmms_eval_results(run_dir, args.lmms_eval_output)
    _apply_error_budget(run_dir, budget)
    return 0


def _apply_error_budget(run_dir: Path, budget: ErrorBudget) -> None:
    """`CheckFailed` (exit 1) when a task of the finished run has more failed samples than allowed."""
    if budget.unlimited:
        return
    tasks = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))["tasks"]
    over = budget.over(tasks)
    if over:
        raise CheckFailed(
            f"{'; '.join(over)}: more than --max-errors {budget.text} allows; the results are in {run_dir} "
            "(each failed sample has its reason in samples/<task>.jsonl, field error)"
        )


def _check_lmms_output(path: Path) -> None:
    """``--lmms-eval-output``: a ``.json`` file or a directory that can be written (checked before the run)."""
    from vlmbench.arguments import check_output_file, check_writable_dir

    if path.suffix == ".json":
        check_output_file(path, "--lmms-eval-output")
    else:
        check_writable_dir(path, "--lmms-eval-output")


def write_report(run_dir: Path) -> Path | None:
    """Render ``run_dir/report.html``; on failure log why and how to retry, and return None."""
    from vlmbench.report.html import render_report

    out = run_dir / REPORT_FILE
    try:
        render_report([run_dir], out)
    except Exception as exc:  # noqa: BLE001 - the run's results are written; a report bug must not hide them
        log.error(
            "report.html was not rendered (%s: %s); the results are in %s. Retry with "
            "`vlmbench report %s --out %s`",
            type(exc).__name__, exc, run_dir, run_dir, out,
        )
        return None
    return out
