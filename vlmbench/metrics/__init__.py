"""Task scorers: official metrics, per-sample score fields and bootstrap 95% intervals.

Each metric family is one `Scorer` subclass (`vlmbench.metrics.scorer`), in its own module: POPE
(`pope`), ANLS/DocVQA (`anls`), VQA accuracy for TextVQA and VQAv2 (`vqa`), ChartQA relaxed accuracy
(`relaxed`), OCR exact match + CER (`ocr`) and CHAIR (`chair`). The scorer is the one place that
knows its metrics: scoring, per-sample outcome, paired statistics, directions, headline, the
conventions text and reference-row validation; the runner, `score`, reports and `check` ask it.

Which scorer a task uses is its YAML's ``scorer`` field (`vlmbench.metrics.registry.resolve_scorer`):

* a built-in name -- a key of `BUILTIN_SCORERS` (pope, docvqa, textvqa, vqav2, chartqa, ocr, chair);
* ``"file.py:Class"`` -- a `Scorer` subclass in a Python file, the path relative to the YAML's folder
  (so a tasks directory set with ``$VLMBENCH_TASKS_DIR`` can carry its own metric family);
* ``"package.module:Class"`` -- a `Scorer` subclass in an importable module.

The class is instantiated without arguments. Mistakes are one-line `UserError`s naming the YAML.
There is no registration call and no mutable registry: the built-ins are an immutable mapping.

``score_task(task, rows, seed=0)`` scores with a built-in scorer and returns
``{"task", "n", "metrics", "ci95", "per_sample"}``:

* ``metrics`` -- the DESIGN.md metric keys (all floats in [0, 1]); POPE nests per split;
* ``ci95`` -- ``[low, high]`` percentile-bootstrap intervals for the headline metrics, nested like
  ``metrics`` (POPE: ``f1``/``accuracy`` (and ``auc``) of each split and of ``all``, plus
  ``f1_mean_of_splits``; the other tasks: every metric);
* ``per_sample`` -- one dict per input row, in order, with ``question_id`` (when the row has one)
  and that row's score fields.

Input rows carry ``prediction`` plus the references: ``answers`` (list) or ``answer`` (string),
``category`` (and optionally ``choice_logprobs``) for POPE, ``gt_objects`` for CHAIR. Bad rows raise
ValueError.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vlmbench.metrics.registry import BUILTIN_SCORERS, resolve_scorer
from vlmbench.metrics.scorer import MeanScorer, SampleStats, Scorer, reference_answers
from vlmbench.metrics.stats import DEFAULT_RESAMPLES

SCORERS: Mapping[str, Scorer] = BUILTIN_SCORERS
TASKS: tuple[str, ...] = tuple(SCORERS)


def score_task(
    task: str, rows: Sequence[Mapping[str, Any]], seed: int = 0, n_resamples: int = DEFAULT_RESAMPLES
) -> dict[str, Any]:
    """Score ``rows`` with the built-in scorer ``task`` (one of :data:`TASKS`); see the module docstring."""
    if task not in SCORERS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    return SCORERS[task].score(rows, seed=seed, n_resamples=n_resamples)


__all__ = [
    "SCORERS",
    "TASKS",
    "MeanScorer",
    "SampleStats",
    "Scorer",
    "reference_answers",
    "resolve_scorer",
    "score_task",
]
