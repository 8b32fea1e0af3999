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


def add_mitigation_flag(p: argparse.ArgumentParser) -> None:
    """--mitigation (vlmbench/mitigation/spec.py, docs/mitigation.md)."""
    p.add_argument("--mitigation", metavar="SPEC", default="none",
                   help="inference-time hallucination mitigation, measured against the plain run on the same samples: "
                        "self-consistency[:K[@T]] (K sampled answers, majority vote; default K=5, T=0.7) or recheck "
                        "(caption tasks: one yes/no question per named object, unconfirmed objects removed); default none")


def add_prefix_sharing_flag(p: argparse.ArgumentParser) -> None:
    """--prefix-sharing on|off (default on; docs/prefix-sharing.md)."""
    p.add_argument("--prefix-sharing", choices=["on", "off"], default="on",
                   help="prefill each image's prefix once and answer all its questions from that KV cache "
                        "(default on; same answers, less prefill work; docs/prefix-sharing.md)")


__all__ = ["add_inference_flags", "add_mitigation_flag", "add_model_and_data_flags", "add_prefix_sharing_flag"]
