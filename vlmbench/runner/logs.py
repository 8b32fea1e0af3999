"""Per-rank prediction logs: JSON lines appended, flushed and fsynced once per batch.

A process killed with SIGKILL loses at most the batch in flight; a torn last line (the write
interrupted) is ignored on reading, and that batch is recomputed on resume.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vlmbench.errors import UserError
from vlmbench.jsonl import iter_rows


def log_path(run_dir: Path, task: str, rank: int) -> Path:
    return run_dir / "logs" / f"{task}.rank{rank}.jsonl"


class PredictionLog:
    """Append-only writer for one task and one rank."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        _drop_torn_tail(path)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def append_batch(self, records: Iterable[dict[str, Any]]) -> None:
        text = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)
        if not text:
            return
        self._file.write(text)
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> PredictionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_logs(run_dir: Path, task: str) -> dict[str, dict[str, Any]]:
    """Every finished record of a task over all rank logs (any world size), by question id.

    A record that parses but is not what the runner writes (no string ``question_id``, a prediction
    that is not a string, ...) is a `UserError` naming the file and line: the run directory was
    edited or written by something else, and scoring it would fail later or silently mislead."""
    records: dict[str, dict[str, Any]] = {}
    for path in log_files(run_dir, task):
        for number, record in iter_rows(path, tolerant=True):  # a torn last line: that batch is recomputed
            problem = record_problem(record)
            if problem:
                raise UserError(
                    f"{path} line {number}: not a prediction record vlmbench writes ({problem}); delete that line "
                    "to have its sample recomputed by --resume, or start a fresh run without --resume"
                )
            records.setdefault(record["question_id"], record)
    return records


def log_files(run_dir: Path, task: str | None = None) -> list[Path]:
    """The rank logs of one task (of every task when `task` is None), in a stable order."""
    return sorted((run_dir / "logs").glob(f"{task or '*'}.rank*.jsonl"))


def record_problem(record: dict[str, Any]) -> str | None:
    """What is wrong with a parsed log record, or None when it has the shape `_answer_batch` writes."""
    qid = record.get("question_id")
    if not isinstance(qid, str) or not qid:
        return f"'question_id' must be a non-empty string, got {_shown(qid)}"
    if not isinstance(record.get("prediction"), str):
        return f"'prediction' must be a string, got {_shown(record.get('prediction'))}"
    if record.get("error") is not None and not isinstance(record["error"], str):
        return f"'error' must be null or a string, got {_shown(record['error'])}"
    logprobs = record.get("choice_logprobs")
    if logprobs is not None and not (
        isinstance(logprobs, dict) and all(_is_number(v) for v in logprobs.values())
    ):
        return f"'choice_logprobs' must map each choice to a number, got {_shown(logprobs)}"
    for key in ("tiles", "visual_tokens"):
        if key in record and not _is_count(record[key]):
            return f"'{key}' must be a non-negative integer, got {_shown(record[key])}"
    each = record.get("visual_tokens_each")
    if each is not None and not (isinstance(each, list) and all(_is_count(v) for v in each)):
        return f"'visual_tokens_each' must be a list of non-negative integers, got {_shown(each)}"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _shown(value: Any) -> str:
    text = "nothing" if value is None else f"{type(value).__name__} {json.dumps(value, default=str)}"
    return text if len(text) <= 60 else text[:57] + "..."


def _drop_torn_tail(path: Path) -> None:
    """Cut a partial last line left by a killed writer, so appended records start on a fresh line."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        with open(path, "r+b") as handle:
            handle.truncate(keep)
