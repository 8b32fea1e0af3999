"""The one JSON Lines reader: strict errors name the file and line; tolerant mode survives a torn log."""

from __future__ import annotations

from pathlib import Path

import pytest

from vlmbench.errors import UserError
from vlmbench.jsonl import iter_rows, read_numbered_rows, read_rows


def _write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_rows_in_order_blank_lines_skipped(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.jsonl", '{"q": 1}\n\n  \n{"q": "ü"}\n{"q": 3}')  # last line unterminated
    assert read_rows(path) == [{"q": 1}, {"q": "ü"}, {"q": 3}]
    assert read_numbered_rows(path) == [(1, {"q": 1}), (4, {"q": "ü"}), (5, {"q": 3})]
    assert read_rows(_write(tmp_path / "empty.jsonl", "")) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"q": 1}\n{not json}\n', r"b\.jsonl line 2: not valid JSON \(Expecting property name .* at column 2\)$"),
        ('{"q": 1}\n[1, 2]\n', r"b\.jsonl line 2: expected a JSON object, got list$"),
        ('{"q": 1}\n{"q": 2', r"b\.jsonl line 2: not valid JSON .*; the file looks truncated"),
        (b'{"q": 1}\n{"q": "\xff"}\n', r"b\.jsonl line 2: not UTF-8 text"),
    ],
)
def test_strict_errors_name_file_and_line(tmp_path: Path, text: str | bytes, message: str) -> None:
    path = _write(tmp_path / "b.jsonl", text)
    with pytest.raises(UserError, match=message):
        read_rows(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"nope\.jsonl: file not found"):
        read_rows(tmp_path / "nope.jsonl")
    with pytest.raises(UserError, match="is a directory"):
        read_rows(tmp_path)


def test_tolerant_drops_the_torn_tail_and_bad_lines(tmp_path: Path) -> None:
    path = _write(tmp_path / "log.jsonl", '{"q": 1}\ngarbage\n[2]\n{"q": 3}\n{"q": 4, "tor')
    assert read_rows(path, tolerant=True) == [{"q": 1}, {"q": 3}]
    # a complete last line that happens to be valid JSON but lacks its newline is still a torn write
    path = _write(tmp_path / "log2.jsonl", '{"q": 1}\n{"q": 2}')
    assert [n for n, _ in iter_rows(path, tolerant=True)] == [1]
