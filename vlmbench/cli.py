"""The single `vlmbench` entry point.

Each sub-command lives in its own module under `vlmbench.commands` and exposes
`register(subparsers)`; the module's handler imports heavy dependencies (torch,
transformers) lazily so that `vlmbench --help` stays fast.
Exit codes: 0 success, 1 a check/run found a failure, 2 bad input.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from vlmbench import __version__
from vlmbench.errors import CheckFailed, UserError

# Order is the order shown in `vlmbench --help`.
COMMAND_MODULES: tuple[str, ...] = (
    "run",
    "score",
    "inspect",
    "data",
    "train",
    "report",
    "leaderboard",
    "check",
    "sweep",
    "ablate",
    "effects",
    "models",
    "tasks",
    "export",
    "serve",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlmbench",
        description="Evaluate vision-language models on OCR, VQA and hallucination benchmarks.",
    )
    parser.add_argument("--version", action="version", version=f"vlmbench {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"vlmbench.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        result = args.handler(args)
    except UserError as exc:
        print(f"vlmbench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except CheckFailed as exc:
        print(f"vlmbench {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"vlmbench {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
