"""`vlmbench sweep`: one model at several `--visual-tokens` settings, one run per grid point.

Every point is an ordinary `vlmbench run` (batched, sharded under torchrun, resumable) written to
`<output-dir>/<name>/<point>/`; `sweep.json` records the command's settings and grid, so that
`--resume` continues the same sweep (finished points are skipped, an unfinished one is resumed in
place) and refuses another. `sweep.html` then shows, per task, the headline against the visual
tokens the LLM saw and against prefill time, the Pareto front, and each point against the
uncompressed run (`none`, which the grid must hold) with a paired test (vlmbench/report/sweep.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

from vlmbench.commands.evaluation_flags import add_inference_flags, add_model_and_data_flags
from vlmbench.errors import UserError

log = logging.getLogger("vlmbench.sweep")

SWEEP_FILE = "sweep.json"
REPORT_FILE = "sweep.html"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("sweep", help="evaluate a model at several --visual-tokens settings; accuracy vs tokens vs prefill")
    add_model_and_data_flags(p)
    p.add_argument("--grid", required=True,
                   help='semicolon-separated --visual-tokens specs, "none" included, e.g. "none; pool:2; tome:0.5; random:0.25"')
    p.add_argument("--output-dir", default="sweeps", help="where sweep directories are created (default sweeps/)")
    p.add_argument("--name", help="name of the sweep directory (default <model>-sweep)")
    p.add_argument("--resume", action="store_true", help="continue the named sweep: skip finished points, resume the rest")
    add_inference_flags(p, "seed for random init, random:R subsets and bootstrap CIs")
    p.add_argument("--no-report", action="store_true", help="do not render sweep.html")
    p.set_defaults(handler=sweep)


def parse_grid(text: str) -> list[tuple[str, str]]:
    """(run directory name, canonical spec) per grid point, in order; UserError on a bad or repeated point."""
    from vlmbench.modeling.compression.spec import parse_spec

    points: list[tuple[str, str]] = []
    for raw in text.split(";"):
        if not raw.strip():
            raise UserError(f"--grid {text!r} has an empty point (two semicolons or a trailing one); separate specs by ';'")
        spec = parse_spec(raw, flag=f"--grid point {raw.strip()!r}").text
        if spec in (s for _, s in points):
            raise UserError(f"--grid names {spec} more than once; give each point once")
        points.append((point_dir_name(spec), spec))
    if "none" not in (s for _, s in points):
        raise UserError(f"--grid {text!r} has no 'none' point: add it, every point is compared with the uncompressed run")
    return points


def point_dir_name(spec: str) -> str:
    """A folder name for a canonical spec: 'pool:2,tome:0.5' → 'pool2_tome0.5', 'prune-attn:0.25@2' → 'prune-attn0.25at2'."""
    return spec.replace(":", "").replace("@", "at").replace(",", "_")


def sweep(args: argparse.Namespace) -> int:
    from vlmbench.arguments import check_folder_name
    from vlmbench.distributed import init_distributed, shutdown
    from vlmbench.runner import state
    from vlmbench.runner.run import RunOptions

    grid = parse_grid(args.grid)
    name = args.name or f"{state.slug(args.model)}-sweep"
    check_folder_name(name, "--name")
    sweep_dir = Path(args.output_dir) / name
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    settings = {
        "model": args.model, "tasks": tasks, "checkpoint": args.checkpoint, "data_dir": args.data_dir,
        "limit": args.limit, "batch_size": args.batch_size, "seed": args.seed, "device": args.device,
        "dtype": args.dtype, "answer_mode": args.answer_mode, "synthetic_n": args.synthetic_n,
        "grid": [{"run": run, "visual_tokens": spec} for run, spec in grid],
    }
    options = [
        RunOptions(
            model=args.model, tasks=tasks, checkpoint=args.checkpoint, data_dir=args.data_dir, limit=args.limit,
            batch_size=args.batch_size, output_dir=str(sweep_dir), run_name=run, seed=args.seed, device=args.device,
            dtype=args.dtype, answer_mode=args.answer_mode, synthetic_n=args.synthetic_n, visual_tokens=spec,
        )
        for run, spec in grid
    ]
    for opts in options:  # every point's flags are checked before anything is written
        opts.validate()
    main = int(os.environ.get("RANK", "0")) == 0
    if main:
        _claim(sweep_dir, settings, args.resume)
    else:  # under torchrun rank 0 decides; the others follow once its sweep.json is there
        _await_claim(sweep_dir, settings)
    # under torchrun one process group serves every point (each run would otherwise tear it down
    # and set it up again on the same port)
    ctx = init_distributed(args.device)
    try:
        _run_points(options, sweep_dir)
    finally:
        shutdown(ctx)
    if main and not args.no_report:
        from vlmbench.report.sweep import render_sweep_report

        out = render_sweep_report(sweep_dir)
        log.info("sweep report: %s", out)
    return 0


def _run_points(options: list[Any], sweep_dir: Path) -> None:
    """Each grid point's run: finished ones skipped, an unfinished one resumed in place."""
    from vlmbench.runner import state
    from vlmbench.runner.run import run_evaluation

    for opts in options:
        manifest = state.read_manifest(sweep_dir / str(opts.run_name))
        if manifest is not None and manifest.get("status") == "finished":
            log.info("sweep point %s: finished, skipped", opts.visual_tokens)
            continue
        opts.resume = manifest is not None
        log.info("sweep point %s%s", opts.visual_tokens, " (resumed)" if opts.resume else "")
        run_evaluation(opts)


def _claim(sweep_dir: Path, settings: dict[str, Any], resume: bool) -> None:
    """A new sweep's directory must not exist; a resumed one must record the same settings."""
    path = sweep_dir / SWEEP_FILE
    if resume:
        if not path.is_file():
            raise UserError(f"--resume: {sweep_dir} holds no {SWEEP_FILE}; drop --resume to start the sweep")
        _check_recorded(path, settings)
        return
    if sweep_dir.exists() and any(sweep_dir.iterdir()):
        raise UserError(f"sweep directory {sweep_dir} already exists; choose another --name or add --resume")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # the other ranks wait for this file: it appears whole


def _check_recorded(path: Path, settings: dict[str, Any]) -> None:
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is corrupt ({exc}); start a new sweep under another --name") from None
    differ = sorted(k for k in set(recorded) | set(settings) if recorded.get(k) != settings.get(k))
    if differ:
        raise UserError(
            f"--resume: {path.parent} was started with other settings ({', '.join(differ)} differ); resume it with "
            "its own settings or start a new sweep under another --name"
        )


def _await_claim(sweep_dir: Path, settings: dict[str, Any], timeout_s: float = 600.0) -> None:
    """A non-zero rank: wait for rank 0's sweep.json (torchrun stops every rank if rank 0 fails)."""
    import time

    path = sweep_dir / SWEEP_FILE
    deadline = time.monotonic() + timeout_s
    while not path.is_file():
        if time.monotonic() > deadline:
            raise UserError(f"rank 0 wrote no {path} within {timeout_s:.0f} s; is the output directory shared by all ranks?")
        time.sleep(0.2)
    _check_recorded(path, settings)
