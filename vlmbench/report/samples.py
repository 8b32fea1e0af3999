"""Rows of the report's sample browser: inlined thumbnails, outcome, highlighted hallucinations."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmbench.report.metricspec import finite
from vlmbench.report.runs import Run

_IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}
MAX_THUMBNAIL_BYTES = 256 * 1024


@dataclass(frozen=True)
class Segment:
    """A piece of prediction text; ``marked`` pieces are hallucinated object mentions."""

    text: str
    marked: bool


@dataclass(frozen=True)
class BrowserRow:
    run_index: int
    task: str
    question_id: str
    thumbnail: str | None  # data: URI
    prompt: str
    references: list[str]
    segments: list[Segment]
    score: float | None
    outcome: str  # right, wrong, partial, error
    error: str | None
    split: str
    parsed: str | None
    logprobs: str | None
    hallucinated: list[str]
    mentioned: list[str]


@dataclass(frozen=True)
class BrowserTask:
    run_index: int
    task: str
    total: int
    rows: list[BrowserRow]

    @property
    def capped(self) -> bool:
        return len(self.rows) < self.total


def thumbnail_uri(run_dir: Path, relative: Any) -> str | None:
    """The thumbnail as a data: URI, or None (missing, outside the run directory, too big, not an image)."""
    if not isinstance(relative, str) or not relative:
        return None
    base = run_dir.resolve()
    path = (base / relative).resolve()
    mime = _IMAGE_TYPES.get(path.suffix.lower())
    if mime is None or not path.is_relative_to(base) or not path.is_file():
        return None
    if path.stat().st_size > MAX_THUMBNAIL_BYTES:
        return None
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def highlight(text: str, objects: Sequence[str]) -> list[Segment]:
    """Split ``text`` so that mentions of ``objects`` (whole words, simple plurals, any case) are marked."""
    names = sorted({o for o in objects if isinstance(o, str) and o.strip()}, key=len, reverse=True)
    if not names or not text:
        return [Segment(text, False)]
    pattern = re.compile(
        r"\b(?:" + "|".join(re.escape(n) + r"(?:e?s)?" for n in names) + r")\b", re.IGNORECASE
    )
    segments: list[Segment] = []
    pos = 0
    for match in pattern.finditer(text):
        if match.start() > pos:
            segments.append(Segment(text[pos : match.start()], False))
        segments.append(Segment(match.group(0), True))
        pos = match.end()
    if pos < len(text):
        segments.append(Segment(text[pos:], False))
    return segments


def _outcome(row: Mapping[str, Any], score: float | None) -> str:
    if row.get("error"):
        return "error"
    correct = row.get("correct")
    if isinstance(correct, bool):
        return "right" if correct else "wrong"
    if score is None:
        return "wrong"
    if score >= 1.0:
        return "right"
    return "wrong" if score <= 0.0 else "partial"


def _logprobs(value: Any) -> str | None:
    if not isinstance(value, Mapping):
        return None
    parts = [f"{k}: {v:.2f}" for k, v in value.items() if finite(v) is not None]
    return ", ".join(parts) or None


def _strings(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    return [] if value is None else [str(value)]


def browser_rows(run: Run, run_index: int, task: str, limit: int) -> BrowserTask:
    """The first ``limit`` samples of ``task`` in ``run`` as browser rows."""
    samples = run.samples(task)
    rows: list[BrowserRow] = []
    for row in samples[: max(limit, 0)]:
        score = finite(row.get("score"))
        hallucinated = _strings(row.get("hallucinated"))
        rows.append(
            BrowserRow(
                run_index=run_index,
                task=task,
                question_id=str(row.get("question_id")),
                thumbnail=thumbnail_uri(run.dir, row.get("thumbnail")),
                prompt=str(row.get("prompt") or ""),
                references=_strings(row.get("references")),
                segments=highlight(str(row.get("prediction") or ""), hallucinated),
                score=score,
                outcome=_outcome(row, score),
                error=str(row["error"]) if row.get("error") else None,
                split=str(row.get("category") or ""),
                parsed=str(row["parsed"]) if row.get("parsed") else None,
                logprobs=_logprobs(row.get("choice_logprobs")),
                hallucinated=hallucinated,
                mentioned=_strings(row.get("mentioned")),
            )
        )
    return BrowserTask(run_index, task, len(samples), rows)
