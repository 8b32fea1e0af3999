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
    """Every finished record of a task over all rank logs (any world size), by question id."""
    records: dict[str, dict[str, Any]] = {}
    for path in sorted((run_dir / "logs").glob(f"{task}.rank*.jsonl")):
        for _, record in iter_rows(path, tolerant=True):  # a torn last line: that batch is recomputed
            records.setdefault(record["question_id"], record)
    return records


def _drop_torn_tail(path: Path) -> None:
    """Cut a partial last line left by a killed writer, so appended records start on a fresh line."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        with open(path, "r+b") as handle:
            handle.truncate(keep)
