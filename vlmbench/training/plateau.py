"""Stop a stage on a plateau of its held-out probe (`plateau_patience`, `plateau_min_delta`).

The watch sees the probe accuracy each time it is measured; a stage stops once `patience` probes in a
row have not beaten the best so far by `min_delta`. It is rebuilt from the stage's log on resume, so a
resumed stage stops where an uninterrupted one would have."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PROBE_KEY = "probe_accuracy"


@dataclass
class PlateauWatch:
    patience: int
    min_delta: float
    best: float = float("-inf")
    since_best: int = 0

    def update(self, accuracy: float) -> bool:
        """Record one probe; True when the stage should stop here."""
        if accuracy >= self.best + self.min_delta:
            self.best, self.since_best = accuracy, 0
        else:
            self.since_best += 1
        return self.since_best >= self.patience

    def replay(self, accuracies: Iterable[float]) -> bool:
        """Feed earlier probes (a resume); True when they already ended the stage."""
        stopped = False
        for accuracy in accuracies:
            stopped = self.update(accuracy)
        return stopped


def logged_probes(log_file: Path) -> list[float]:
    """The probe accuracies of a stage's log (train_log.jsonl rows that carry one), in step order."""
    if not log_file.exists():
        return []
    values = []
    for line in log_file.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            if PROBE_KEY in row:
                values.append(float(row[PROBE_KEY]))
    return values


__all__ = ["PROBE_KEY", "PlateauWatch", "logged_probes"]
