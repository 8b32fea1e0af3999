"""`vlmbench score`: score a predictions file against a references file; metrics JSON on stdout.

Inputs (JSON Lines, one object per line, blank lines ignored):

* predictions: ``{"question_id", "prediction"}`` -- ``prediction`` a string (``""`` is a valid,
  scored answer: POPE "unknown", 0 elsewhere); optionally ``choice_logprobs`` (``{"Yes": lp, "No": lp}``),
  which gives POPE its ``auc`` when every prediction has them;
* references: ``{"question_id", "answer"}`` or ``{"question_id", "answers": [...]}``, plus
  ``category`` (random/popular/adversarial) for POPE; for CHAIR ``gt_objects`` (COCO category
  names) and no answer.

``--task`` is a built-in scorer name, or the name of a task YAML in the tasks directory
(``$VLMBENCH_TASKS_DIR``), whose ``scorer`` may name a scorer class of its own; the scorer also
validates the reference rows. Question ids are strings or integers and are matched as strings. Every
reference needs exactly one prediction and every prediction a reference. Output:
``{"task", "n", "metrics", "ci95"}``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmbench.errors import UserError
from vlmbench.jsonl import read_numbered_rows

if TYPE_CHECKING:
    from vlmbench.metrics.scorer import Scorer

_SHOW = 5  # how many offending ids an error message lists


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "score",
        help="score predictions against references (metrics JSON on stdout)",
        description=(
            "Score a predictions JSONL file ({question_id, prediction}) against a references JSONL file "
            "({question_id, answer | answers}, + category for pope, gt_objects for chair) and print "
            '{"task", "n", "metrics", "ci95"} as JSON.'
        ),
    )
    p.add_argument(
        "--task",
        required=True,
        help="pope, docvqa, textvqa, vqav2, chartqa, ocr, chair, or a task YAML's name in the tasks directory",
    )
    p.add_argument("--predictions", required=True, type=Path, metavar="P.jsonl", help="model predictions")
    p.add_argument("--references", required=True, type=Path, metavar="R.jsonl", help="reference answers")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed for the ci95 intervals (default 0)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vlmbench.arguments import check_seed

    check_seed(args.seed)
    task = args.task
    scorer = _scorer_for(task)
    references = read_numbered_rows(args.references)
    predictions = read_numbered_rows(args.predictions)
    if not references:
        raise UserError(f"{args.references}: no reference rows; the file is empty")

    ref_rows = _index(args.references, references, partial(_check_reference, scorer))
    pred_rows = _index(args.predictions, predictions, _check_prediction)
    _check_pairing(args.predictions, args.references, pred_rows, ref_rows)

    rows = [{**ref, **_prediction_fields(pred_rows[key][1])} for key, (_, ref) in ref_rows.items()]
    try:
        result = scorer.score(rows, seed=args.seed)
    except ValueError as exc:  # validation above should have caught it; still a bad-input error
        raise UserError(f"{args.references}: {exc}") from exc
    output = {"task": task, **{key: result[key] for key in ("n", "metrics", "ci95")}}
    print(json.dumps(output, indent=2))
    return 0


# ------------------------------------------------------------------------------------------- I/O


def _index(
    path: Path, rows: list[tuple[int, dict[str, Any]]], check: Callable[[Path, int, dict[str, Any]], None]
) -> dict[str, tuple[int, dict[str, Any]]]:
    """Validate rows and key them by question id (as a string); duplicates are an error."""
    indexed: dict[str, tuple[int, dict[str, Any]]] = {}
    for number, row in rows:
        key = _question_id(path, number, row)
        if key in indexed:
            raise UserError(
                f"{path} line {number}: duplicate question_id {row['question_id']!r} "
                f"(first on line {indexed[key][0]}); each question must appear once"
            )
        check(path, number, row)
        indexed[key] = (number, row)
    return indexed


def _question_id(path: Path, number: int, row: Mapping[str, Any]) -> str:
    if "question_id" not in row:
        raise UserError(f"{path} line {number}: missing field 'question_id'")
    qid = row["question_id"]
    if isinstance(qid, bool) or not isinstance(qid, (str, int)):
        raise UserError(f"{path} line {number}: 'question_id' must be a string or an integer, got {qid!r}")
    return str(qid)


# ------------------------------------------------------------------------------------ validation


def _prediction_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    """What the scorer reads from a prediction row: ``prediction``, and ``choice_logprobs`` when given."""
    fields = {"prediction": row["prediction"]}
    if "choice_logprobs" in row:
        fields["choice_logprobs"] = row["choice_logprobs"]
    return fields


def _check_prediction(path: Path, number: int, row: Mapping[str, Any]) -> None:
    if "prediction" not in row:
        raise UserError(f"{path} line {number}: missing field 'prediction'")
    if not isinstance(row["prediction"], str):
        raise UserError(
            f"{path} line {number}: 'prediction' must be a string (use \"\" for an empty answer), "
            f"got {row['prediction']!r}"
        )
    logprobs = row.get("choice_logprobs")
    if "choice_logprobs" in row and not (
        isinstance(logprobs, dict) and all(_is_number(v) for v in logprobs.values())
    ):
        raise UserError(
            f"{path} line {number}: 'choice_logprobs' must map each choice to a number, got {logprobs!r}"
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _scorer_for(task: str) -> Scorer:
    """A built-in scorer by name, else the scorer of the task YAML of that name."""
    from vlmbench.metrics import SCORERS, resolve_scorer
    from vlmbench.tasks.registry import read_task_config, task_files

    if task in SCORERS:
        return SCORERS[task]
    try:
        files = task_files()
    except UserError:
        files = {}
    if task not in files:
        names = [*SCORERS, *(name for name in files if name not in SCORERS)]
        raise UserError(f"unknown task {task!r}; choose one of: {', '.join(names)}")
    path = files[task]
    config = read_task_config(path)
    return resolve_scorer(config.scorer, base_dir=path.parent, source=str(path))


def _check_reference(scorer: Scorer, path: Path, number: int, row: Mapping[str, Any]) -> None:
    try:
        scorer.check_reference(row)
    except ValueError as exc:
        raise UserError(f"{path} line {number}: {exc}") from exc


def _check_pairing(
    pred_path: Path,
    ref_path: Path,
    preds: Mapping[str, tuple[int, dict[str, Any]]],
    refs: Mapping[str, tuple[int, dict[str, Any]]],
) -> None:
    unknown = [(line, row["question_id"]) for key, (line, row) in preds.items() if key not in refs]
    if unknown:
        shown = ", ".join(f"{qid!r} (line {line})" for line, qid in unknown[:_SHOW])
        more = f" and {len(unknown) - _SHOW} more" if len(unknown) > _SHOW else ""
        raise UserError(
            f"{pred_path}: {len(unknown)} prediction(s) have a question_id that is not in {ref_path}: "
            f"{shown}{more}; check that both files come from the same task and split"
        )
    missing = [(line, row["question_id"]) for key, (line, row) in refs.items() if key not in preds]
    if missing:
        shown = ", ".join(f"{qid!r} (line {line})" for line, qid in missing[:_SHOW])
        more = f" and {len(missing) - _SHOW} more" if len(missing) > _SHOW else ""
        raise UserError(
            f"{ref_path}: {len(missing)} of {len(refs)} reference(s) have no prediction in {pred_path}: "
            f"{shown}{more}; predict them (an empty string counts as an answer) or drop them from the references"
        )
