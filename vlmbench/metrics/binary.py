"""Yes/no confusion metrics over groups of rows, vectorised for point values, bootstrap intervals and
paired tests -- the shared arithmetic of the yes/no families (probes, AMBER's discriminative part).

Answers are integer codes (`YES`, `NO`, `UNKNOWN` from `vlmbench.metrics.pope`); ground truths are
`YES`/`NO`. A group is a boolean mask over the rows. ``positive`` names the class precision, recall
and F1 are about: `YES` for POPE-style probes, `NO` for AMBER (its official script scores the "No"
answers). Per group:

* ``accuracy``  -- answers equal to the ground truth / rows (an unknown answer is wrong);
* ``precision`` -- answers of the positive class that are right / answers of the positive class;
* ``recall``    -- rows of the positive class answered with it / rows of the positive class
  (an unknown answer is a miss);
* ``f1``        -- their harmonic mean;
* ``yes_ratio`` -- answers "yes" / rows (whatever the positive class);
* ``unknown``   -- answers that parse to neither / rows.

Every ratio with a zero denominator is 0.0. `GroupedConfusion.compute` takes a ``(k, n)`` index
matrix (k resamples of the n rows) and returns each ``"<group>.<metric>"`` as a ``(k,)`` array.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from vlmbench.metrics.pope import NO, UNKNOWN, YES
from vlmbench.metrics.scorer import SampleStats, ratio_matrix
from vlmbench.metrics.stats import bootstrap_ci_matrix

CONFUSION_METRICS: tuple[str, ...] = ("accuracy", "precision", "recall", "f1", "yes_ratio", "unknown")
CONFUSION_DIRECTIONS: Mapping[str, bool | None] = MappingProxyType(
    {"accuracy": True, "precision": True, "recall": True, "f1": True, "yes_ratio": None, "unknown": False}
)
"""Each confusion metric's direction (True: higher is better; yes_ratio has none)."""
_COLUMNS: tuple[str, ...] = ("n", "right", "pred_pos", "gt_pos", "tp", "pred_yes", "unk")


class GroupedConfusion:
    """Confusion metrics of several row groups, recomputable on any resample of the rows."""

    def __init__(
        self, pred: np.ndarray, gt: np.ndarray, groups: Mapping[str, np.ndarray], positive: int = YES
    ) -> None:
        if positive not in (YES, NO):
            raise ValueError(f"positive must be YES ({YES}) or NO ({NO}), got {positive}")
        pred = np.asarray(pred)
        gt = np.asarray(gt)
        self.n = int(pred.size)
        self.right = pred == gt
        self.groups = {name: np.asarray(mask, dtype=bool) for name, mask in groups.items()}
        base = {
            "right": self.right,
            "pred_pos": pred == positive,
            "gt_pos": gt == positive,
            "tp": (pred == positive) & (gt == positive),
            "pred_yes": pred == YES,
            "unk": pred == UNKNOWN,
        }
        # group -> column -> float indicator over the rows
        self._indicators = {
            name: {
                "n": mask.astype(np.float64),
                **{k: (mask & v).astype(np.float64) for k, v in base.items()},
            }
            for name, mask in self.groups.items()
        }

    def compute(self, idx: np.ndarray, groups: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """``{"<group>.<metric>": (k,)}`` for the resamples ``idx`` (all groups, or those named)."""
        out: dict[str, np.ndarray] = {}
        for name in self.groups if groups is None else groups:
            ind = self._indicators[name]
            c = {key: ind[key][idx].sum(axis=1) for key in _COLUMNS}
            precision = ratio_matrix(c["tp"], c["pred_pos"])
            recall = ratio_matrix(c["tp"], c["gt_pos"])
            out[f"{name}.accuracy"] = ratio_matrix(c["right"], c["n"])
            out[f"{name}.precision"] = precision
            out[f"{name}.recall"] = recall
            out[f"{name}.f1"] = ratio_matrix(2 * precision * recall, precision + recall)
            out[f"{name}.yes_ratio"] = ratio_matrix(c["pred_yes"], c["n"])
            out[f"{name}.unknown"] = ratio_matrix(c["unk"], c["n"])
        return out

    def point(self, groups: Iterable[str] | None = None) -> dict[str, float]:
        """The metrics on the rows as they are (no resampling)."""
        identity = np.arange(self.n)[None, :]
        return {key: float(value[0]) for key, value in self.compute(identity, groups).items()}

    def binary(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{"<group>.accuracy": (right, mask)}``: accuracy is a right/wrong mean, so McNemar applies."""
        return {f"{name}.accuracy": (self.right, mask) for name, mask in self.groups.items()}

    def intervals(self, metrics: Iterable[str], seed: int, n_resamples: int) -> dict[str, list[float]]:
        """Percentile-bootstrap ``[low, high]`` of ``"<group>.<metric>"`` for each group and metric named."""
        wanted = tuple(metrics)
        out: dict[str, list[float]] = {}
        for name in self.groups:
            for metric in wanted:
                key = f"{name}.{metric}"
                low, high = bootstrap_ci_matrix(
                    self.n,
                    lambda idx, g=name, k=key: self.compute(idx, (g,))[k],
                    n_resamples=n_resamples,
                    seed=seed,
                )
                out[key] = [low, high]
        return out

    def stats(
        self, extra: Callable[[np.ndarray, dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None
    ) -> SampleStats:
        """`SampleStats` over every group's metrics; ``extra(idx, metrics)`` may add metrics derived from them."""

        def compute(idx: np.ndarray) -> dict[str, np.ndarray]:
            out = self.compute(idx)
            if extra is not None:
                out.update(extra(idx, out))
            return out

        return SampleStats(compute, self.binary())


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"color.random.f1": 0.5}`` -> ``{"color": {"random": {"f1": 0.5}}}`` (insertion order kept)."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def yes_no_codes(labels: Iterable[Any]) -> np.ndarray:
    """``"yes"``/``"no"``/other strings -> YES/NO/UNKNOWN codes (case and surrounding space ignored)."""
    table = {"yes": YES, "no": NO}
    return np.array([table.get(str(v).strip().lower(), UNKNOWN) for v in labels], dtype=np.int8)
