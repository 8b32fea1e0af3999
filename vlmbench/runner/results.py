"""Scoring gathered predictions and writing `results.json` and `samples/<task>.jsonl` (DESIGN.md).

What the numbers mean (conventions, per-sample outcome, headline) is the task's scorer's
(`vlmbench.metrics.scorer.Scorer`); this module only moves rows between the logs and the scorer."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

ERROR_NOTE = (
    "Samples whose image or inference failed are scored as empty predictions (counted in n and errors); "
    "malformed rows are counted in errors and left out of the metrics."
)


def score_records(adapter: Any, samples: list[Any], records: dict[str, dict[str, Any]], seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score every sample (failed ones as empty predictions) and build the samples/<task>.jsonl rows.

    Malformed rows (no usable references) cannot be scored: they are left out of the metrics and
    counted in `errors`, with the reason in their sample row."""
    rows = []
    for sample in samples:
        if sample.meta.get("error"):
            continue
        record = records[sample.question_id]
        row = {**sample.reference_row(), "question_id": sample.question_id, "prediction": record.get("prediction") or ""}
        if "choice_logprobs" in record:  # POPE's ROC-AUC reads them (choices mode)
            row["choice_logprobs"] = record["choice_logprobs"]
        rows.append(row)
    scored = adapter.score(rows, seed=seed)
    per_sample = {str(item["question_id"]): item for item in scored.get("per_sample", [])}
    sample_rows = []
    for sample in samples:
        record = records[sample.question_id]
        fields = {k: v for k, v in per_sample.get(sample.question_id, {}).items() if k not in ("question_id", "prediction")}
        score, correct = adapter.scorer.outcome(fields)
        row = {
            "question_id": sample.question_id,
            "image_key": sample.image_key,
            "prompt": sample.prompt,
            "prediction": record.get("prediction") or "",
            "references": sample.references,
            "score": score,
            "correct": correct,
            "error": record.get("error"),
            **{k: v for k, v in sample.meta.items() if k in ("category", "font_px", "split")},
            **fields,
        }
        if len(sample.image_keys) > 1:  # multi-image samples: every image's key and per-image counts
            row["image_keys"] = sample.image_keys
        for key in ("choice_logprobs", "visual_tokens", "tiles", "image_size", "image_sizes", "visual_tokens_each",
                    "llm_visual_tokens", "prefill_s"):
            if key in record:
                row[key] = record[key]
        sample_rows.append(row)
    return scored, sample_rows


def write_samples(run_dir: Path, task: str, rows: list[dict[str, Any]]) -> Path:
    path = run_dir / "samples" / f"{task}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def write_thumbnails(run_dir: Path, samples: list[Any], rows: list[dict[str, Any]], limit: int = 200, size: int = 96) -> None:
    """Small PNGs for the report's sample browser (first `limit` samples of the task)."""
    folder = run_dir / "thumbnails"
    folder.mkdir(parents=True, exist_ok=True)
    for sample, row in zip(samples[:limit], rows[:limit], strict=False):
        name = hashlib.sha1(sample.image_key.encode()).hexdigest()[:16] + ".png"
        target = folder / name
        if not target.exists():
            try:
                image = sample.load_image()
            except Exception:  # noqa: BLE001 - a broken image simply has no thumbnail
                continue
            image.thumbnail((size, size))
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            target.write_bytes(buffer.getvalue())
        row["thumbnail"] = f"thumbnails/{name}"
    for row in rows[limit:]:
        row.setdefault("thumbnail", None)


def write_results(run_dir: Path, results: dict[str, Any]) -> Path:
    path = run_dir / "results.json"
    tmp = run_dir / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=2, sort_keys=False, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def headline_record(adapter: Any) -> dict[str, Any]:
    """results.json's ``headline`` for a task: the YAML's ``primary_metric`` (else the scorer's default)
    with the direction the scorer gives that metric. A metric the scorer does not report is a
    `UserError` naming the YAML, raised before any inference when the runner calls this up front."""
    from vlmbench.errors import UserError

    scorer = adapter.scorer
    try:
        metric, higher = scorer.headline(adapter.config.primary_metric)
    except ValueError as exc:
        source = adapter.source_file or f"task '{adapter.config.name}'"
        raise UserError(f"{source}: field 'primary_metric': {exc}") from exc
    return {"metric": metric, "higher_is_better": higher}


def scorer_record(adapter: Any, metrics: dict[str, Any]) -> dict[str, Any]:
    """What a task's results.json entry records about its scorer (additions), so reports can fall
    back on it where the scorer cannot be imported: its ``scorer`` spec, the ``headline``, the
    ``directions`` of its metrics and the ``conventions`` text."""
    scorer = adapter.scorer
    return {
        "scorer": adapter.config.scorer,
        "headline": headline_record(adapter),
        "directions": scorer.directions_of(metrics),
        "conventions": f"{scorer.conventions} {ERROR_NOTE}".strip(),
    }
