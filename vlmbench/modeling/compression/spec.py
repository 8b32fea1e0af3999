"""`--visual-tokens SPEC`: a comma-separated list of operators, applied in order.

Three kinds of operator act at three moments of a sample's way into the LLM:

- image operators (`downsample:F`, `max-tiles:N`, `max-pixels:P`) before the resolution strategy;
- token operators (`pool:K`, `tome:R`, `random:R`, `prune-attn:R` ranked by the vision CLS token)
  on each image's visual tokens right after the projector (so the runner's feature cache holds the
  compressed tokens);
- `prune-attn:R@L` (FastV) inside the LLM, because it ranks tokens by the attention of the prompt's
  last token at LLM layer L: it must be the last operator.

`parse_spec` refuses a malformed SPEC with one message naming the operator and the fix; it needs no
model. Whether a model can take a spec is each backend's check (see `own.py`, `hf_apply.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vlmbench.errors import UserError

NONE = "none"
IMAGE_OPS = ("downsample", "max-tiles", "max-pixels")
TOKEN_OPS = ("pool", "tome", "random", "prune-attn")
OPERATORS = TOKEN_OPS + IMAGE_OPS
_FORMS = "pool:K, tome:R, prune-attn:R[@L], random:R, downsample:F, max-tiles:N, max-pixels:P (or none)"


@dataclass(frozen=True)
class Operator:
    """One parsed operator: `value` is K, R, F, N or P; `layer` is prune-attn's L (None: CLS ranking)."""

    name: str
    value: float
    layer: int | None = None

    @property
    def text(self) -> str:
        value = int(self.value) if self.name in ("pool", "max-tiles", "max-pixels") else _number(self.value)
        return f"{self.name}:{value}" + (f"@{self.layer}" if self.layer is not None else "")

    @property
    def in_llm(self) -> bool:
        """True for FastV-style pruning, which needs the LLM's attention and so runs inside the LLM."""
        return self.name == "prune-attn" and self.layer is not None


@dataclass(frozen=True)
class CompressionSpec:
    """A parsed SPEC. `image_ops` act on the PIL image, `token_ops` on each image's visual tokens
    after the projector, `llm_op` (FastV) inside the LLM."""

    operators: tuple[Operator, ...] = ()

    @property
    def text(self) -> str:
        """The canonical spelling (what results.json and run.json record)."""
        return ",".join(op.text for op in self.operators) or NONE

    @property
    def image_ops(self) -> tuple[Operator, ...]:
        return tuple(op for op in self.operators if op.name in IMAGE_OPS)

    @property
    def token_ops(self) -> tuple[Operator, ...]:
        return tuple(op for op in self.operators if op.name in TOKEN_OPS and not op.in_llm)

    @property
    def llm_op(self) -> Operator | None:
        return next((op for op in self.operators if op.in_llm), None)

    def __bool__(self) -> bool:
        return bool(self.operators)


def parse_spec(text: str | None, flag: str = "--visual-tokens") -> CompressionSpec:
    """The spec `text` means; a `UserError` naming the bad operator otherwise. None, "" and "none" → no compression."""
    if text is None or text.strip().lower() in ("", NONE):
        return CompressionSpec()
    operators = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise UserError(f"{flag} {text!r} has an empty operator (two commas or a trailing comma); write e.g. pool:2,tome:0.5")
        operators.append(_operator(part, flag))
    _check_order(operators, text, flag)
    return CompressionSpec(tuple(operators))


def kept_count(n: int, ratio: float) -> int:
    """Tokens kept of `n` at fraction `ratio`: round half up, at least one (so `R=1` keeps all)."""
    return max(1, min(n, math.floor(n * ratio + 0.5)))


def pooled_side(side: int, k: int) -> int:
    """Rows (or columns) after K×K pooling: a side that K does not divide is padded (ceil)."""
    return -(-side // k)


def _operator(part: str, flag: str) -> Operator:
    name, sep, arg = part.partition(":")
    name = name.strip().lower()
    if name not in OPERATORS:
        raise UserError(f"{flag}: unknown operator {name!r} in {part!r}; operators: {_FORMS}")
    if not sep or not arg.strip():
        raise UserError(f"{flag}: operator {part!r} needs a value, e.g. {_example(name)}")
    arg = arg.strip()
    layer = None
    if "@" in arg:
        if name != "prune-attn":
            raise UserError(f"{flag}: {part!r}: only prune-attn takes @L (an LLM layer); write e.g. {_example(name)}")
        arg, _, layer_text = arg.partition("@")
        layer = _integer(layer_text, part, "L (the LLM layer, 1 = the first)", flag)
    if name in ("pool", "max-tiles", "max-pixels"):
        return Operator(name, float(_integer(arg, part, _what(name), flag)))
    value = _fraction(arg, part, flag, name)
    return Operator(name, value, layer)


def _integer(text: str, part: str, what: str, flag: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"{flag}: {part!r}: {what} must be a positive integer, got {text.strip()!r}")
    return value


def _fraction(text: str, part: str, flag: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0.0 < value <= 1.0):
        what = "F (the resize factor)" if name == "downsample" else "R (the fraction of tokens kept)"
        raise UserError(f"{flag}: {part!r}: {what} must be a number in (0, 1], got {text!r}; e.g. {_example(name)}")
    return value


def _check_order(operators: list[Operator], text: str, flag: str) -> None:
    for name in IMAGE_OPS:
        if sum(op.name == name for op in operators) > 1:
            raise UserError(f"{flag} {text!r} gives {name} more than once; give it once")
    ungridded = next((op for op in operators if op.name in ("tome", "random", "prune-attn")), None)
    if ungridded is not None and any(op.name == "pool" for op in operators[operators.index(ungridded) + 1 :]):
        raise UserError(
            f"{flag} {text!r}: pool needs the 2-D token grid, which {ungridded.name} does not keep; put pool first"
        )
    llm = [i for i, op in enumerate(operators) if op.in_llm]
    if len(llm) > 1:
        raise UserError(f"{flag} {text!r} has more than one prune-attn:R@L; the LLM can prune once, give one")
    if llm and any(op.name in TOKEN_OPS for op in operators[llm[0] + 1 :]):
        raise UserError(
            f"{flag} {text!r}: prune-attn@L runs inside the LLM, after every other token operator; put it last"
        )


def _what(name: str) -> str:
    return {"pool": "K (the pooling window side)", "max-tiles": "N (the tile budget)", "max-pixels": "P (the pixel budget)"}[name]


def _example(name: str) -> str:
    return {
        "pool": "pool:2", "tome": "tome:0.5", "random": "random:0.25", "prune-attn": "prune-attn:0.25@2",
        "downsample": "downsample:0.5", "max-tiles": "max-tiles:4", "max-pixels": "max-pixels:200704",
    }[name]


def _number(value: float) -> str:
    return f"{value:g}"


__all__ = ["CompressionSpec", "Operator", "kept_count", "parse_spec", "pooled_side"]
