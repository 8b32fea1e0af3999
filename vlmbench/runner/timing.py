"""Time to the first answered sample: from process start (imports and model loading included) to the
first batch of answers written to a prediction log.

This is what a user waits before a run shows that it works, so it is counted from when the process
started, not from when the runner began: on Linux that is the kernel's start time of the process
(``/proc/self/stat``), elsewhere the moment this module was imported (later than the true start by
the imports before it, which the record says). The runner logs the figure once, when the first answer
is written, and records it in results.json under ``timing``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("vlmbench.run")

_IMPORTED = time.monotonic()


def seconds_since_process_start() -> tuple[float, str]:
    """(seconds since this process started, how that was measured)."""
    try:
        # Field 22 of /proc/self/stat is the start time in clock ticks since boot; /proc/uptime is
        # seconds since boot. The command name (field 2) may hold spaces: split after its ')'.
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - started), "process start (/proc/self/stat)"
    except (OSError, ValueError, IndexError, AttributeError):
        return time.monotonic() - _IMPORTED, "import of vlmbench.runner.timing (process start unknown here)"


class FirstAnswerClock:
    """Notes when the first answered samples reach a log (one clock per run, every pass feeds it)."""

    def __init__(self, announce: bool = True) -> None:
        elapsed, self.origin = seconds_since_process_start()
        self._start = time.monotonic() - elapsed
        self._announce = announce
        self.first_sample_s: float | None = None

    def elapsed(self) -> float:
        """Seconds since the process started."""
        return time.monotonic() - self._start

    def wrap(self, on_progress: Callable[[int], Any]) -> Callable[[int], None]:
        """``on_progress`` (called with the number of samples just answered) that also marks the first."""

        def update(n: int) -> None:
            if n > 0 and self.first_sample_s is None:
                self.first_sample_s = round(self.elapsed(), 3)
                if self._announce:
                    self._log_beside_progress_bars()
            on_progress(n)

        return update

    def _log_beside_progress_bars(self) -> None:
        """The log line, written while tqdm has cleared its bars (else it lands inside the bar)."""
        from tqdm import tqdm

        with tqdm.external_write_mode(file=sys.stderr):
            log.info(
                "first answered sample %.2f s after %s (model loading included)",
                self.first_sample_s,
                self.origin,
            )

    def record(self) -> dict[str, Any]:
        """results.json's ``timing``: null first_sample_s when nothing was answered (a resume with no work)."""
        return {
            "first_sample_s": self.first_sample_s,
            "measured_from": self.origin,
            "process_s": round(self.elapsed(), 3),
        }
