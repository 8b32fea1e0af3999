"""``--mitigation SPEC``: what it may say, and which tasks can take it.

Grammar (case-insensitive, surrounding spaces ignored)::

    none                       no mitigation (the default)
    self-consistency[:K[@T]]   K sampled answers per question (default 5, 2..64), majority vote;
                               T is the sampling temperature (default 0.7, 0 < T <= 2); top_p is 1.0
    recheck                    caption tasks: one yes/no question per named object, unconfirmed
                               objects removed from the caption

Which tasks can take which mitigation is decided from the task config (its scorer and split) before
any data is read or any model loaded, so a refusal costs nothing:

* ``self-consistency`` votes over short answers; it refuses caption tasks (CHAIR, AMBER's generative
  part), where no two sampled captions are the same string, and box answers (grounding), which are
  continuous. ``amber`` (both parts) takes it on its discriminative rows; its captions keep the plain
  answer.
* ``recheck`` needs captions: CHAIR and AMBER's generative rows (``amber`` with both parts rechecks
  its captions and keeps the plain yes/no answers).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vlmbench.errors import UserError

MITIGATION_PASS = "mitigation"
"""The mitigated pass is logged and sampled under ``<task>@mitigation`` beside the plain pass."""

SELF_CONSISTENCY = "self-consistency"
RECHECK = "recheck"
DEFAULT_K = 5
MAX_K = 64
DEFAULT_TEMPERATURE = 0.7
TOP_P = 1.0

_SC = re.compile(r"self-consistency(?::(?P<k>[^@]+)(?:@(?P<t>.+))?)?")
_FORMS = "none, self-consistency[:K[@T]] (e.g. self-consistency:5@0.7) or recheck"

# What a task's rows are, as far as a mitigation is concerned.
ANSWERS, CAPTIONS, BOXES, MIXED = "answers", "captions", "boxes", "answers+captions"
_WHAT = {
    ANSWERS: "short answers",
    CAPTIONS: "captions",
    BOXES: "bounding boxes",
    MIXED: "short answers and captions",
}


@dataclass(frozen=True)
class MitigationSpec:
    """A parsed ``--mitigation``: the method and, for self-consistency, K, temperature and top_p."""

    method: str
    k: int = 0
    temperature: float = 0.0
    top_p: float = 1.0

    @property
    def text(self) -> str:
        """The canonical spelling (what run.json records and resume compares)."""
        if self.method == SELF_CONSISTENCY:
            return f"{SELF_CONSISTENCY}:{self.k}@{self.temperature:g}"
        return self.method

    def settings(self) -> dict[str, Any]:
        """results.json's description of the method's parameters."""
        if self.method == SELF_CONSISTENCY:
            return {"k": self.k, "temperature": self.temperature, "top_p": self.top_p}
        return {}


def parse_mitigation(text: str | None) -> MitigationSpec | None:
    """``--mitigation``'s value as a `MitigationSpec` (None for no mitigation); `UserError` otherwise."""
    if text is None or not text.strip() or text.strip().lower() == "none":
        return None
    raw = text.strip().lower()
    if raw == RECHECK:
        return MitigationSpec(RECHECK)
    match = _SC.fullmatch(raw)
    if not match:
        raise UserError(f"--mitigation {text} is unknown; use {_FORMS}")
    k = DEFAULT_K
    if match.group("k") is not None:
        try:
            k = int(match.group("k"))
        except ValueError:
            raise UserError(
                f"--mitigation {text}: K must be an integer from 2 to {MAX_K}, e.g. self-consistency:5"
            ) from None
        if not 2 <= k <= MAX_K:
            raise UserError(
                f"--mitigation {text}: K={k} is outside 2..{MAX_K}; a vote needs at least 2 answers"
            )
    temperature = DEFAULT_TEMPERATURE
    if match.group("t") is not None:
        try:
            temperature = float(match.group("t"))
        except ValueError:
            temperature = math.nan
        if not (math.isfinite(temperature) and 0.0 < temperature <= 2.0):
            raise UserError(
                f"--mitigation {text}: the temperature after @ must be a number in (0, 2], e.g. @0.7"
            )
    return MitigationSpec(SELF_CONSISTENCY, k=k, temperature=temperature, top_p=TOP_P)


def task_kind(adapter: Any) -> str:
    """What the task's rows hold: `ANSWERS`, `CAPTIONS`, `BOXES` or `MIXED` (AMBER with both parts)."""
    from vlmbench.metrics.amber import AmberScorer
    from vlmbench.metrics.chair import ChairScorer
    from vlmbench.metrics.grounding import GroundingScorer

    scorer = adapter.scorer
    if isinstance(scorer, ChairScorer):
        return CAPTIONS
    if isinstance(scorer, GroundingScorer):
        return BOXES
    if isinstance(scorer, AmberScorer):
        split = str(adapter.config.split).lower()
        return CAPTIONS if split == "generative" else ANSWERS if split.startswith("discriminative") else MIXED
    return ANSWERS


def check_tasks(spec: MitigationSpec | None, adapters: Mapping[str, Any]) -> None:
    """Refuse (`UserError`, naming the task and the fix) a mitigation that a task cannot take."""
    if spec is None:
        return
    for name, adapter in adapters.items():
        kind = task_kind(adapter)
        if spec.method == RECHECK and kind not in (CAPTIONS, MIXED):
            raise UserError(
                f"--mitigation recheck: task {name} has no captions to recheck (its answers are {_WHAT[kind]}); "
                "recheck takes caption tasks (chair, amber_generative, amber): run it on those, or use "
                "self-consistency for short-answer tasks"
            )
        if spec.method == SELF_CONSISTENCY and kind in (CAPTIONS, BOXES):
            why = "captions never repeat word for word" if kind == CAPTIONS else "boxes are continuous"
            raise UserError(
                f"--mitigation {spec.text}: task {name} cannot take a majority vote ({why}); use "
                "--mitigation recheck for caption tasks, or run this task without --mitigation"
            )


def row_takes(spec: MitigationSpec, sample: Any) -> bool:
    """Whether the mitigation changes this sample (AMBER with both parts: only its rows of the right kind)."""
    from vlmbench.metrics.amber import GENERATIVE

    amber_type = sample.meta.get("amber_type")
    if amber_type is None:
        return True
    return (amber_type == GENERATIVE) == (spec.method == RECHECK)
