"""The `Scorer` interface: everything vlmbench knows about one metric family, in one class.

A scorer owns, for its family:

* `Scorer.score` -- scoring rows into ``{"task", "n", "metrics", "ci95", "per_sample"}``;
* `Scorer.outcome` -- the per-sample ``(score, correct)`` pair the sample logs, reports and
  `vlmbench check` use (score: higher is better; correct: a right/wrong judgement or None);
* `Scorer.statistics` -- a vectorised recomputation of its metrics from aligned per-sample rows,
  for paired bootstrap tests (and which metrics are right/wrong means, for McNemar);
* `Scorer.directions` -- each metric's direction (True: higher is better, False: lower is better,
  None: neither), keyed by the metric's leaf name (``"random.f1"`` -> ``"f1"``);
* `Scorer.default_metric` / `Scorer.headline` -- the number a task is ranked by;
* `Scorer.conventions` -- the sentence the report prints about how the numbers are computed;
* `Scorer.check_reference` -- validation of one reference row (ValueError with the reason).

`MeanScorer` is the base of families whose metrics are means of one per-question value each.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from vlmbench.metrics.stats import DEFAULT_RESAMPLES, bootstrap_ci

Direction = bool | None
"""True: higher is better; False: lower is better; None: no better direction (e.g. yes_ratio)."""

Statistic = Callable[[np.ndarray], dict[str, np.ndarray]]


@dataclass
class SampleStats:
    """Vectorised recomputation of a task's metrics from aligned per-sample rows.

    ``compute(idx)`` takes an index matrix ``(k, n)`` and returns ``{metric: array (k,)}``;
    ``binary[metric] = (outcome, mask)``: the metric is the mean of the boolean ``outcome`` over
    the rows where ``mask`` holds, so McNemar applies.
    """

    compute: Statistic
    binary: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested metric dict -> ``{"random.f1": 0.8, ...}`` (numeric leaves only, order kept)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def leaf(metric: str) -> str:
    """The metric's own name without its group: ``"random.f1"`` -> ``"f1"``."""
    return metric.rsplit(".", 1)[-1]


def ratio_matrix(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Element-wise ``num / den``, 0.0 where ``den`` is zero (the convention of every ratio metric)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def ci(
    values: Sequence[Any] | np.ndarray,
    statistic: Callable[[np.ndarray], float] | None,
    seed: int,
    n_resamples: int,
) -> list[float]:
    """A percentile-bootstrap interval as the ``[low, high]`` list results.json stores."""
    low, high = bootstrap_ci(values, statistic, n_resamples=n_resamples, seed=seed)
    return [low, high]


def mean(values: Sequence[float] | np.ndarray) -> float:
    """The mean, 0.0 for no values."""
    return float(np.mean(values)) if len(values) else 0.0


def result(task: str, n: int, metrics: dict, ci95: dict, per_sample: list) -> dict[str, Any]:
    """The scorer result shape (see the package docstring)."""
    return {"task": task, "n": n, "metrics": metrics, "ci95": ci95, "per_sample": per_sample}


def base_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    """The per-sample dict a scorer starts from: the row's question id when it has one."""
    return {"question_id": row["question_id"]} if "question_id" in row else {}


def _is_text(value: Any) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def checked_answers(row: Mapping[str, Any]) -> list[Any]:
    """The reference answers of a reference row (``answers`` list or ``answer``), validated strictly."""
    if "answers" in row:
        answers = row["answers"]
        if not isinstance(answers, list) or not answers or not all(_is_text(a) for a in answers):
            raise ValueError(f"'answers' must be a non-empty list of strings, got {answers!r}")
        return list(answers)
    if "answer" in row:
        if not _is_text(row["answer"]):
            raise ValueError(f"'answer' must be a string, got {row['answer']!r}")
        return [row["answer"]]
    raise ValueError("missing field 'answer' (or 'answers')")


def reference_answers(row: Mapping[str, Any]) -> list[str]:
    """The reference answers of a row: ``answers`` (non-empty list) or ``[answer]``, as strings."""
    if "answers" in row:
        answers = row["answers"]
        if not isinstance(answers, (list, tuple)) or not answers:
            raise ValueError("'answers' must be a non-empty list of strings")
        return [str(a) for a in answers]
    if "answer" in row:
        return [str(row["answer"])]
    raise ValueError("row has neither 'answers' nor 'answer'")


def mean_statistics(
    rows: Sequence[Mapping[str, Any]], names: Sequence[str], headline: str | None
) -> SampleStats:
    """Means of per-sample fields named like the metrics (dotted names are skipped).

    A headline metric without its own per-sample field falls back to the rows' ``score``. A column
    holding only 0.0/1.0 is a right/wrong mean, so McNemar applies to it.
    """
    columns: dict[str, np.ndarray] = {}
    for name in names:
        if "." in name:
            continue
        values = [finite(r.get(name)) for r in rows]
        if rows and all(v is not None for v in values):
            columns[name] = np.array(values, dtype=np.float64)
    if headline is not None and headline not in columns:
        scores = [finite(r.get("score")) for r in rows]
        if rows and all(v is not None for v in scores):
            columns[headline] = np.array(scores, dtype=np.float64)
    binary = {
        name: (col >= 1.0, np.ones(col.size, dtype=bool))
        for name, col in columns.items()
        if np.all((col == 0.0) | (col == 1.0))
    }

    def compute(idx: np.ndarray) -> dict[str, np.ndarray]:
        return {name: col[idx].mean(axis=1) for name, col in columns.items()}

    return SampleStats(compute, binary)


def finite(value: Any) -> float | None:
    """``value`` as a float when it is a finite number, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


class Scorer(ABC):
    """One metric family (see the module docstring). Instances are stateless and immutable."""

    name: ClassVar[str] = ""
    """The registry name (and the result's ``task``); an instance may be given another one."""
    directions: ClassVar[Mapping[str, Direction]]
    """Leaf metric name -> direction, in the order the metrics are reported."""
    default_metric: ClassVar[str]
    conventions: ClassVar[str] = ""

    def __init__(self, name: str | None = None) -> None:
        self._name = name or type(self).name or type(self).__name__.lower()

    @property
    def task_name(self) -> str:
        """The name this instance scores under (the result's ``task``)."""
        return self._name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._name!r})"

    # --- scoring ---------------------------------------------------------------------------------

    @abstractmethod
    def score(
        self, rows: Sequence[Mapping[str, Any]], *, seed: int = 0, n_resamples: int = DEFAULT_RESAMPLES
    ) -> dict[str, Any]:
        """Score rows (``prediction`` plus references): ``{"task", "n", "metrics", "ci95", "per_sample"}``."""

    @abstractmethod
    def outcome(self, fields: Mapping[str, Any]) -> tuple[float, bool | None]:
        """(score, correct) of one sample from its per-sample fields (score: higher is better)."""

    @abstractmethod
    def statistics(self, rows: Sequence[Mapping[str, Any]]) -> SampleStats | None:
        """Vectorised recomputation from sample-log rows; None when the rows lack the needed fields."""

    def check_reference(self, row: Mapping[str, Any]) -> None:
        """Raise ValueError (the message names the field) when a reference row cannot be scored."""
        checked_answers(row)

    # --- metric knowledge ------------------------------------------------------------------------

    def metric_names(self) -> tuple[str, ...]:
        """Every (dotted) metric name the scorer reports."""
        return tuple(self.directions)

    def direction(self, metric: str) -> Direction:
        """The direction of a metric of this family; KeyError for a metric it does not know."""
        return self.directions[leaf(metric)]

    def knows(self, metric: str) -> bool:
        return leaf(metric) in self.directions

    def headline(self, primary_metric: str = "") -> tuple[str, bool]:
        """(metric, higher_is_better) a task is ranked by: ``primary_metric`` when given, else the
        default. ValueError when the metric is not one of the family's or has no direction."""
        metric = primary_metric or self.default_metric
        if metric not in self.metric_names():
            raise ValueError(
                f"{metric!r} is not a metric of the {self._name} scorer; choose one of {', '.join(self.metric_names())}"
            )
        higher = self.direction(metric)
        if higher is None:
            raise ValueError(f"{metric!r} has no better direction, so it cannot rank a task")
        return metric, higher

    def directions_of(self, metrics: Mapping[str, Any]) -> dict[str, Direction]:
        """Direction of every metric in a (nested) metrics dict, by dotted name (results.json records it)."""
        return {name: self.direction(name) for name in flatten(metrics) if self.knows(name)}


class MeanScorer(Scorer):
    """A family whose metrics are means over questions of one per-question value each.

    Subclasses set ``directions`` (the metrics, in order), ``default_metric`` and ``binary`` (the
    metrics whose per-question value is right/wrong) and implement `per_question`.
    """

    binary: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def per_question(self, prediction: str, answers: list[str]) -> Mapping[str, float]:
        """Every metric's value for one question."""

    def score(
        self, rows: Sequence[Mapping[str, Any]], *, seed: int = 0, n_resamples: int = DEFAULT_RESAMPLES
    ) -> dict[str, Any]:
        names = tuple(self.directions)
        per_sample = []
        columns: dict[str, list[float]] = {name: [] for name in names}
        for row in rows:
            values = self.per_question(str(row["prediction"]), reference_answers(row))
            sample = base_fields(row)
            for name in names:
                value = float(values[name])
                sample[name] = value
                columns[name].append(value)
            per_sample.append(sample)
        metrics = {name: mean(values) for name, values in columns.items()}
        ci95 = {name: ci(values, None, seed, n_resamples) for name, values in columns.items()}
        return result(self.task_name, len(rows), metrics, ci95, per_sample)

    def outcome(self, fields: Mapping[str, Any]) -> tuple[float, bool | None]:
        value = float(fields.get(self.default_metric, 0.0))
        return value, (value >= 1.0 if self.default_metric in self.binary else None)

    def statistics(self, rows: Sequence[Mapping[str, Any]]) -> SampleStats | None:
        if not all(all(finite(r.get(name)) is not None for name in self.directions) for r in rows):
            return None  # not this family's sample rows: the caller's generic fallback applies
        return mean_statistics(rows, tuple(self.directions), None)
