"""Scoring gathered predictions and writing `results.json` and `samples/<task>.jsonl` (DESIGN.md)."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

CONVENTIONS: dict[str, str] = {
    "pope": (
        "Official POPE parsing (first sentence, commas removed, 'no'/'not' -> no, else yes; empty -> unknown). "
        "yes_ratio is the share of predicted yes; unknown answers are wrong and not yes. "
        "f1_mean_of_splits as LLaVA-1.5/InternVL report it."
    ),
    "docvqa": "ANLS with threshold 0.5 (similarity below 0.5 -> 0), max over reference answers, case-insensitive.",
    "textvqa": "Official VQA normalisation; accuracy = mean over 10 leave-one-out subsets of min(1, matches/3).",
    "vqav2": "Official VQA normalisation; accuracy = mean over 10 leave-one-out subsets of min(1, matches/3).",
    "chartqa": "Relaxed accuracy: numbers within 5% relative error (trailing % read as a fraction), else exact match.",
    "ocr": "Exact match after whitespace normalisation (case-sensitive); CER = edit distance / reference length, clipped to 1.",
    "chair": "CHAIR (Rohrbach et al. 2018) with the 80 COCO categories and their synonym lists; lower is better.",
}

ERROR_NOTE = (
    "Samples whose image or inference failed are scored as empty predictions (counted in n and errors); "
    "malformed rows are counted in errors and left out of the metrics."
)


def per_sample_outcome(task_scorer: str, fields: dict[str, Any]) -> tuple[float, bool | None]:
    """(score, correct): the per-sample headline value (higher is better) used by reports and `check`."""
    if task_scorer == "pope":
        correct = bool(fields.get("correct"))
        return float(correct), correct
    if task_scorer == "chair":
        clean = not fields.get("hallucinated")
        return float(clean), clean
    if task_scorer == "docvqa":
        return float(fields.get("anls", 0.0)), None
    if task_scorer in ("textvqa", "vqav2"):
        return float(fields.get("accuracy", 0.0)), None
    if task_scorer == "chartqa":
        value = float(fields.get("relaxed_accuracy", 0.0))
        return value, value >= 1.0
    if task_scorer == "ocr":
        value = float(fields.get("exact_match", 0.0))
        return value, value >= 1.0
    return float(fields.get("score", 0.0)), None


def score_records(adapter: Any, samples: list[Any], records: dict[str, dict[str, Any]], seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score every sample (failed ones as empty predictions) and build the samples/<task>.jsonl rows.

    Malformed rows (no usable references) cannot be scored: they are left out of the metrics and
    counted in `errors`, with the reason in their sample row."""
    rows = []
    for sample in samples:
        if sample.meta.get("error"):
            continue
        record = records[sample.question_id]
        rows.append({**sample.reference_row(), "question_id": sample.question_id, "prediction": record.get("prediction") or ""})
    scored = adapter.score(rows, seed=seed)
    per_sample = {str(item["question_id"]): item for item in scored.get("per_sample", [])}
    sample_rows = []
    for sample in samples:
        record = records[sample.question_id]
        fields = {k: v for k, v in per_sample.get(sample.question_id, {}).items() if k not in ("question_id", "prediction")}
        score, correct = per_sample_outcome(adapter.config.scorer, fields)
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
        for key in ("choice_logprobs", "visual_tokens", "tiles", "image_size"):
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
