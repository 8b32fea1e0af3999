"""The flags that say what to evaluate and how, shared by `vlmbench run` and `vlmbench sweep` (a sweep
point is an ordinary run, so the two must accept the same values with the same meaning)."""

from __future__ import annotations

import argparse


def add_model_and_data_flags(p: argparse.ArgumentParser) -> None:
    """--model, --tasks, --checkpoint, --data-dir, --limit, --batch-size."""
    p.add_argument("--model", required=True, help="preset name (see `vlmbench models`), checkpoint directory, or hf:<path>")
    p.add_argument("--tasks", required=True, help="comma-separated task names (see `vlmbench tasks`)")
    p.add_argument("--checkpoint", help="a vlmbench checkpoint directory to load instead of the preset's demo weights")
    p.add_argument("--data-dir", help="local data: the task's release (one task) or DIR/<task>/ per task")
    p.add_argument("--limit", type=int, help="evaluate only the first N samples of each task")
    p.add_argument("--batch-size", default="8", help="samples per batch, or 'auto' (default 8)")


def add_inference_flags(p: argparse.ArgumentParser, seed_help: str) -> None:
    """--seed, --device, --dtype, --answer-mode, --synthetic-n."""
    p.add_argument("--seed", type=int, default=0, help=seed_help)
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    p.add_argument("--dtype", help="float32 | bfloat16 | float16 (default: the checkpoint's)")
    p.add_argument("--answer-mode", choices=["generate", "choices"], help="override the tasks' answer mode")
    p.add_argument("--synthetic-n", type=int, help="size of the bundled synthetic sets (default per task)")


__all__ = ["add_inference_flags", "add_model_and_data_flags"]
