"""Reading JSON Lines files: one JSON object per line, blank lines skipped.

Two modes:

- strict (the default), for files a user hands in or a finished run holds: a line that is not a JSON
  object is a `UserError` naming the file and the line (exit code 2), as is a missing file, a
  directory or a file that is not UTF-8;
- ``tolerant=True``, for append-only logs written by a process that may be killed (the runner's
  prediction logs, the training log): the last line without its newline is a torn write and is
  dropped, and any other line that does not parse is skipped, so its record is simply recomputed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vlmbench.errors import UserError


def iter_rows(path: Path, *, tolerant: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line of ``path``, streamed."""
    path = Path(path)
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the with below; bytes: exact line numbers
    except FileNotFoundError as exc:
        raise UserError(f"{path}: file not found") from exc
    except IsADirectoryError as exc:
        raise UserError(f"{path}: is a directory, expected a .jsonl file") from exc
    with handle:
        for number, raw in enumerate(handle, start=1):
            torn = not raw.endswith(b"\n")
            if torn and tolerant:
                return  # a write cut short by a killed process
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                if tolerant:
                    continue
                raise UserError(f"{path} line {number}: not UTF-8 text ({exc.reason})") from exc
            if not line.strip():
                continue
            row = _parse(path, number, line, tolerant=tolerant, last_incomplete=torn)
            if row is not None:
                yield number, row


def read_rows(path: Path, *, tolerant: bool = False) -> list[dict[str, Any]]:
    """Every object of ``path`` in file order (see the module docstring for ``tolerant``)."""
    return [row for _, row in iter_rows(path, tolerant=tolerant)]


def read_numbered_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) pairs, for callers whose own checks name the line of a bad row."""
    return list(iter_rows(path))


def _parse(path: Path, number: int, line: str, *, tolerant: bool, last_incomplete: bool) -> dict[str, Any] | None:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        if tolerant:
            return None
        hint = "; the file looks truncated (its last line is incomplete)" if last_incomplete else ""
        raise UserError(f"{path} line {number}: not valid JSON ({exc.msg} at column {exc.colno}){hint}") from exc
    if not isinstance(row, dict):
        if tolerant:
            return None
        raise UserError(f"{path} line {number}: expected a JSON object, got {type(row).__name__}")
    return row


__all__ = ["iter_rows", "read_numbered_rows", "read_rows"]
