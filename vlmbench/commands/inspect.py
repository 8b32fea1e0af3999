"""`vlmbench inspect --model M --image-size WxH`: the token budget and layout a design gives one image.

Works for every `EvalModel`: a preset or checkpoint (its resolution plan, no pixels touched) and an
`hf:` model (what its processor does to a blank image of that size). A released family whose strategy
vlmbench cannot describe exits 2 with the reason."""

from __future__ import annotations

import argparse
import json

from vlmbench.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("inspect", help="print a model's resolution plan, visual tokens and parameters as JSON")
    p.add_argument("--model", required=True, help="preset name, checkpoint directory or hf:<path>")
    p.add_argument("--image-size", required=True, help="WxH, e.g. 1024x768")
    p.set_defaults(handler=run)


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--image-size '{text}' is not WxH (e.g. 1024x768)") from None
    if w < 1 or h < 1:
        raise UserError(f"--image-size '{text}' must have positive width and height")
    return w, h


def run(args: argparse.Namespace) -> int:
    from vlmbench.modeling.summary import inspect_model

    width, height = parse_size(args.image_size)
    loaded = _load_quiet(args.model)
    print(json.dumps(inspect_model(loaded.model, args.model, width, height), indent=2))
    return 0


def _load_quiet(spec: str):
    """Weights do not matter for inspection: silence the random-weights warning."""
    import logging

    from vlmbench.modeling.resolve import load_model

    logger = logging.getLogger("vlmbench.modeling.resolve")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return load_model(spec)
    finally:
        logger.setLevel(level)
