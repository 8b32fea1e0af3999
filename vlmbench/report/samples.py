"""Rows of the report's sample browser: outcome, highlighted hallucinations, shared sample fields.

Each sample (task, question id, prompt, references, image) is shown once, as a :class:`BrowserItem`;
the runs' predictions for it follow as :class:`BrowserRow` entries, side by side. Thumbnails are
named by content key (see :mod:`vlmbench.report.thumbnails`), so an image is stored once per page.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmbench.report.metricspec import finite
from vlmbench.report.runs import Run
from vlmbench.report.thumbnails import InlineThumbnails, ThumbnailStore, data_uri, read_image


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
    thumb: str | None  # content key of the thumbnail (see vlmbench.report.thumbnails)
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
    image = read_image(run_dir, relative)
    return None if image is None else data_uri(image)


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


def browser_rows(
    run: Run, run_index: int, task: str, limit: int, thumbs: ThumbnailStore | None = None
) -> BrowserTask:
    """The first ``limit`` samples of ``task`` in ``run`` as browser rows (thumbnails go into ``thumbs``)."""
    thumbs = InlineThumbnails() if thumbs is None else thumbs
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
                thumb=thumbs.add(run.dir, row.get("thumbnail")),
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


@dataclass
class BrowserItem:
    """One sample as the browser shows it: the fields every run shares, then each run's row."""

    task: str
    question_id: str
    split: str
    prompt: str
    references: list[str]
    thumb: str | None
    rows: list[BrowserRow] = field(default_factory=list)


def browser_items(tasks: Sequence[BrowserTask], task_order: Sequence[str]) -> list[BrowserItem]:
    """Group the rows of every run by sample, tasks in ``task_order``, samples in order of first sight.

    Rows are grouped only when they agree on everything shown once (prompt, references, split,
    image); runs that saw a different sample under the same question id get their own item.
    """
    items: dict[tuple[Any, ...], BrowserItem] = {}
    rank = {name: i for i, name in enumerate(task_order)}
    ordered = sorted(tasks, key=lambda bt: (rank.get(bt.task, len(rank)), bt.run_index))
    for bt in ordered:
        for row in bt.rows:
            key = (row.task, row.question_id, row.split, row.prompt, tuple(row.references), row.thumb)
            item = items.get(key)
            if item is None:
                item = items[key] = BrowserItem(
                    row.task, row.question_id, row.split, row.prompt, row.references, row.thumb
                )
            item.rows.append(row)
    for item in items.values():
        item.rows.sort(key=lambda r: r.run_index)
    return list(items.values())
