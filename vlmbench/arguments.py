"""Checks for command-line values shared by several commands: seeds, names that become folders, and
files or folders a command is about to write.

Each check raises `UserError` (exit 2, one line naming the flag and the fix), so a command can run
them all before it reads data or loads a model. They are plain functions of their value: no
filesystem writes, nothing imported beyond the standard library.
"""

from __future__ import annotations

import math
from pathlib import Path

from vlmbench.errors import UserError

SEED_MAX = 2**32 - 1
"""Seeds are 0 .. 2**32-1: what NumPy's generators, torch's and every other seeded library accept."""

NAME_MAX_BYTES = 255  # the longest file name common file systems allow


def check_seed(value: int, flag: str = "--seed") -> int:
    """``value`` when it is an integer in 0 .. 2**32-1, else `UserError`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEED_MAX:
        raise UserError(f"{flag} {value} is out of range; use an integer from 0 to {SEED_MAX} (2**32-1)")
    return value


def check_folder_name(name: str, flag: str) -> str:
    """``name`` when it names one folder directly inside its parent, else `UserError`.

    Refused: empty names, ``.`` and ``..``, path separators (so no absolute paths and no nesting),
    control characters and names longer than file systems allow."""
    problem = None
    if not name:
        problem = "is empty"
    elif name in (".", ".."):
        problem = "names the output directory or its parent"
    elif "/" in name or "\\" in name:
        problem = "contains a path separator (absolute paths and nested folders are not allowed)"
    elif any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        problem = "contains a control character"
    elif len(name.encode("utf-8", "surrogateescape")) > NAME_MAX_BYTES:
        problem = f"is longer than {NAME_MAX_BYTES} bytes"
    if problem:
        raise UserError(
            f"{flag} {name!r} {problem}; use a plain folder name such as my-run (letters, digits, '.', '_', '-')"
        )
    return name


def check_writable_dir(path: Path, flag: str) -> Path:
    """``path`` when it is a directory or can be created as one, else `UserError`."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file, not a directory; pass a directory (it is created if missing)")
    _check_parents(path, flag)
    return path


def check_output_file(path: Path, flag: str) -> Path:
    """``path`` when a file can be written there (it is not a directory, no parent is a file)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise UserError(f"{flag} {path} is a directory; pass a file path such as {path / 'report.html'}")
    _check_parents(path, flag)
    return path


def check_positive_seconds(value: float, flag: str, maximum: float) -> float:
    """``value`` when it is a finite number of seconds in (0, maximum], else `UserError`."""
    if not (isinstance(value, int | float) and math.isfinite(value) and 0 < value <= maximum):
        raise UserError(f"{flag} {value} must be a number of seconds above 0 and at most {maximum:g}")
    return float(value)


def _check_parents(path: Path, flag: str) -> None:
    """The nearest existing parent of ``path`` must be a directory (mkdir would fail on a file)."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{flag} {path}: {parent} is a file, not a directory; choose another path")
            return
