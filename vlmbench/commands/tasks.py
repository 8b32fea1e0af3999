"""`vlmbench tasks`: list the task configs with their answer mode, headline metric and default source."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `tasks` sub-command."""
    parser = subparsers.add_parser(
        "tasks",
        help="list the evaluation tasks",
        description="List the tasks (tasks/*.yaml): answer mode, headline metric and the data a run uses "
        "without --data-dir (the real release when it is in the Hugging Face cache, else the bundled "
        "synthetic set).",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.set_defaults(handler=run)


def default_source(config: Any) -> str:
    """What a run of this task reads without --data-dir, as of now."""
    from vlmbench.data.loaders import default_cache_dir, find_in_hf_cache
    from vlmbench.data.releases import JSON_RELEASES
    from vlmbench.data.synth import SYNTH_TASKS

    if config.adapter in JSON_RELEASES:
        folder = default_cache_dir() / "releases" / config.name
        return f"local:{folder}" if folder.is_dir() else "none (--data-dir: its release)"
    if config.hf_dataset and find_in_hf_cache(config.hf_dataset, config.split, config.hf_config):
        return f"hf-cache:{config.hf_dataset}"
    if config.name not in SYNTH_TASKS:
        return "none (--data-dir or the HF cache)"
    return f"synthetic (n={config.synthetic_n}, seed={config.synthetic_seed})"


def run(args: argparse.Namespace) -> int:
    """Print the task list."""
    from vlmbench.tasks.registry import list_tasks

    rows = []
    for config in list_tasks():
        rows.append(
            {
                "name": config.name,
                "answer_mode": config.answer_mode,
                "metric": config.primary_metric,
                "default_source": default_source(config),
                "release": config.hf_dataset,
                "split": config.split,
                "description": config.description,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    headers = ("TASK", "ANSWER MODE", "METRIC", "DEFAULT SOURCE", "RELEASE")
    table = [
        (
            r["name"],
            r["answer_mode"],
            r["metric"],
            r["default_source"],
            f"{r['release']} ({r['split']})" if r["release"] else "-",
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(line[i]) for line in table)) for i, h in enumerate(headers)]
    for line in (headers, *table):
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    return 0
