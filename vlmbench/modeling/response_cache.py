"""A persistent cache of endpoint responses, so that a resumed or repeated run sends nothing twice.

One SQLite file (stdlib `sqlite3`, WAL journal so readers never block the writer) maps a request key
to the response body the endpoint returned. The key is the SHA-256 of a canonical JSON document
holding everything that decides the answer: the endpoint URL (credentials stripped), the model id,
the messages with every image replaced by the SHA-256 of its bytes, and the sampling parameters.
Only successful responses are stored; a failure is retried next time. The API key is never part of
the key or the stored rows.

Where the file lives: ``$VLMBENCH_RESPONSE_CACHE`` (a file path, or ``off`` to disable), else
``<vlmbench cache dir>/responses.sqlite``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from vlmbench.errors import UserError

CACHE_ENV = "VLMBENCH_RESPONSE_CACHE"
_SCHEMA = "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, body TEXT NOT NULL, created REAL NOT NULL)"


def request_key(document: dict[str, Any]) -> str:
    """The cache key of a request: SHA-256 of its canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def default_cache_path() -> Path | None:
    """The cache file `$VLMBENCH_RESPONSE_CACHE` names (None for ``off``), else the default location."""
    value = os.environ.get(CACHE_ENV)
    if value is not None and value.strip().lower() in ("off", "none", "0", ""):
        return None
    if value:
        return Path(value).expanduser()
    from vlmbench.data.loaders import default_cache_dir

    return default_cache_dir() / "responses.sqlite"


class ResponseCache:
    """Request key → response body (a JSON object), persisted in one SQLite file.

    Safe to call from several threads of one process (one connection behind a lock); several
    processes may share the file (SQLite's own locking)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), timeout=30.0, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_SCHEMA)
            self._db.commit()
        except (OSError, sqlite3.Error) as exc:
            raise UserError(
                f"response cache {self.path} cannot be opened ({exc}); set {CACHE_ENV} to a writable file, or to off"
            ) from None
        self._lock = threading.Lock()

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT body FROM responses WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            body = json.loads(row[0])
        except json.JSONDecodeError:  # a damaged row is a miss; the fresh answer replaces it
            return None
        return body if isinstance(body, dict) else None

    def put(self, key: str, body: dict[str, Any]) -> None:
        text = json.dumps(body, sort_keys=True)
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses (key, body, created) VALUES (?, ?, ?)", (key, text, time.time())
            )
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


__all__ = ["CACHE_ENV", "ResponseCache", "default_cache_path", "request_key"]
