"""One writer per run directory: an exclusive lock held while a process writes the run.

Two processes appending to the same prediction logs would interleave their batches and the run
would no longer say which setup produced a sample, so `vlmbench run` takes ``run.lock`` in the run
directory before it writes anything there and keeps it until the run is finished (under
``torchrun``, rank 0 holds it for the whole job).

The lock itself is an OS file lock (`filelock`): the kernel drops it when its process dies, even
under SIGKILL, so a crashed run never blocks the next ``--resume``. Next to it, ``run.lock.json``
names the holder (pid, host, start time) so that a refused process can say who is writing; a
record left behind by a process that died without releasing is stale, and it is cleared with a
warning when the next process takes the lock.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from vlmbench.errors import UserError

log = logging.getLogger(__name__)

LOCK_FILE = "run.lock"
HOLDER_FILE = "run.lock.json"


class RunLock:
    """The exclusive write lock of one run directory (a context manager; not re-entrant)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self._lock = FileLock(str(self.run_dir / LOCK_FILE), timeout=0)
        self._held = False

    @property
    def held(self) -> bool:
        return self._held

    def acquire(self) -> RunLock:
        """Take the lock now or raise a `UserError` naming the process that holds it."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except Timeout:
            raise UserError(
                f"run directory {self.run_dir} is being written by {_describe(read_holder(self.run_dir))}; "
                "wait for that run to finish (or stop it, then continue it with --resume), "
                "or choose another --run-name"
            ) from None
        self._held = True
        stale = read_holder(self.run_dir)
        if stale is not None and stale.get("pid") != os.getpid():
            log.warning(
                "%s: cleared a stale lock left by %s, which ended without releasing it",
                self.run_dir, _describe(stale),
            )
        _write_holder(self.run_dir)
        return self

    def release(self) -> None:
        if not self._held:
            return
        (self.run_dir / HOLDER_FILE).unlink(missing_ok=True)  # before unlocking: a record never outlives its lock
        self._lock.release()
        self._held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_holder(run_dir: Path) -> dict[str, Any] | None:
    """The holder record of `run_dir`'s lock, or None when there is none (or it is unreadable)."""
    try:
        holder = json.loads((Path(run_dir) / HOLDER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _write_holder(run_dir: Path) -> None:
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    tmp = run_dir / (HOLDER_FILE + ".tmp")
    tmp.write_text(json.dumps(record) + "\n", encoding="utf-8")
    os.replace(tmp, run_dir / HOLDER_FILE)


def _describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "another process"
    return f"process {holder.get('pid', '?')} on host {holder.get('host', '?')} (since {holder.get('since', '?')})"


__all__ = ["HOLDER_FILE", "LOCK_FILE", "RunLock", "read_holder"]
