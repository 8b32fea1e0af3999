"""`vlmbench score`: score a predictions file against a references file; metrics JSON on stdout.

Inputs (JSON Lines, one object per line, blank lines ignored):

* predictions: ``{"question_id", "prediction"}`` -- ``prediction`` a string (``""`` is a valid,
  scored answer: POPE "unknown", 0 elsewhere);
* references: ``{"question_id", "answer"}`` or ``{"question_id", "answers": [...]}``, plus
  ``category`` (random/popular/adversarial) for POPE; for CHAIR ``gt_objects`` (COCO category
  names) and no answer.

Question ids are strings or integers and are matched as strings. Every reference needs exactly
one prediction and every prediction a reference. Output: ``{"task", "n", "metrics", "ci95"}``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from vlmbench.errors import UserError

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
    p.add_argument("--task", required=True, help="pope, docvqa, textvqa, vqav2, chartqa, ocr or chair")
    p.add_argument("--predictions", required=True, type=Path, metavar="P.jsonl", help="model predictions")
    p.add_argument("--references", required=True, type=Path, metavar="R.jsonl", help="reference answers")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed for the ci95 intervals (default 0)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vlmbench.metrics import TASKS, score_task

    task = args.task
    if task not in TASKS:
        raise UserError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    references = _read_jsonl(args.references)
    predictions = _read_jsonl(args.predictions)
    if not references:
        raise UserError(f"{args.references}: no reference rows; the file is empty")

    ref_rows = _index(args.references, references, partial(_check_reference, task))
    pred_rows = _index(args.predictions, predictions, _check_prediction)
    _check_pairing(args.predictions, args.references, pred_rows, ref_rows)

    rows = [{**ref, "prediction": pred_rows[key][1]["prediction"]} for key, (_, ref) in ref_rows.items()]
    try:
        result = score_task(task, rows, seed=args.seed)
    except ValueError as exc:  # validation above should have caught it; still a bad-input error
        raise UserError(f"{args.references}: {exc}") from exc
    output = {key: result[key] for key in ("task", "n", "metrics", "ci95")}
    print(json.dumps(output, indent=2))
    return 0


# ------------------------------------------------------------------------------------------- I/O


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; UserError naming file and line otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise UserError(f"{path}: file not found") from exc
    except IsADirectoryError as exc:
        raise UserError(f"{path}: is a directory, expected a .jsonl file") from exc
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(
                f"{path} line {number}: not valid JSON ({exc.msg} at column {exc.colno})"
            ) from exc
        if not isinstance(row, dict):
            raise UserError(f"{path} line {number}: expected a JSON object, got {type(row).__name__}")
        rows.append((number, row))
    return rows


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


def _check_prediction(path: Path, number: int, row: Mapping[str, Any]) -> None:
    if "prediction" not in row:
        raise UserError(f"{path} line {number}: missing field 'prediction'")
    if not isinstance(row["prediction"], str):
        raise UserError(
            f"{path} line {number}: 'prediction' must be a string (use \"\" for an empty answer), "
            f"got {row['prediction']!r}"
        )


def _is_text(value: Any) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _check_reference(task: str, path: Path, number: int, row: Mapping[str, Any]) -> None:
    where = f"{path} line {number}"
    if task == "chair":
        from vlmbench.metrics.chair import check_categories

        objects = row.get("gt_objects")
        if objects is None:
            raise UserError(f"{where}: missing field 'gt_objects' (list of COCO category names) for chair")
        if not isinstance(objects, list) or not all(isinstance(o, str) for o in objects):
            raise UserError(f"{where}: 'gt_objects' must be a list of strings, got {objects!r}")
        try:
            check_categories(objects)
        except ValueError as exc:
            raise UserError(f"{where}: {exc}") from exc
        return

    if "answers" in row:
        answers = row["answers"]
        if not isinstance(answers, list) or not answers or not all(_is_text(a) for a in answers):
            raise UserError(f"{where}: 'answers' must be a non-empty list of strings, got {answers!r}")
    elif "answer" in row:
        if not _is_text(row["answer"]):
            raise UserError(f"{where}: 'answer' must be a string, got {row['answer']!r}")
        answers = [row["answer"]]
    else:
        raise UserError(f"{where}: missing field 'answer' (or 'answers')")

    if task == "pope":
        from vlmbench.metrics.pope import POPE_SPLITS

        if len(answers) != 1 or str(answers[0]).strip().lower() not in ("yes", "no"):
            raise UserError(f"{where}: a POPE answer must be 'yes' or 'no', got {answers!r}")
        if "category" not in row:
            raise UserError(f"{where}: missing field 'category' (the POPE split: {', '.join(POPE_SPLITS)})")
        if row["category"] not in POPE_SPLITS:
            raise UserError(
                f"{where}: unknown POPE split {row['category']!r}; expected one of {', '.join(POPE_SPLITS)}"
            )


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
