"""The on-disk layout of a training run: the work dir (fingerprint marker, tokenizer, one folder
per stage with its log, checkpoints, weights and `done.json`) and the final checkpoint directory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlmbench.errors import UserError
from vlmbench.jsonl import read_rows
from vlmbench.training.recipe import Recipe, StageConfig

LOG_FILE = "train_log.jsonl"
DONE_FILE = "done.json"
STAGE_WEIGHTS = "model.safetensors"
PROBED_DIR = "probed"  # keep_probed: the weights at every probe, step-N.safetensors
SUMMARY_FILE = "train_summary.json"


def stage_name(index: int, stage: StageConfig) -> str:
    """A stage's folder name under `stages/` (and its log's name in the final `logs/`)."""
    return f"{index:02d}-{stage.name}"


def stage_dir(work: Path, index: int, stage: StageConfig) -> Path:
    return work / "stages" / stage_name(index, stage)


def prepare_work_dir(work: Path, recipe: Recipe, resume: bool) -> None:
    """A fresh run clears the work dir. --resume keeps it: finished stages whose recipe prefix
    (model, seed, tokenizer, data, stages so far) is unchanged are reused, the rest rerun; a work dir
    whose tokenizer/data/model differ from the recipe's is refused."""
    marker = work / "fingerprint.json"
    base = recipe.fingerprint(upto=-1)  # everything but the stages
    if resume and marker.exists():
        found = json.loads(marker.read_text()).get("base")
        if found != base:
            raise UserError(
                f"{work} holds a run with another model, seed, tokenizer or data (fingerprint {found} != {base}); "
                "run without --resume to start over"
            )
        return
    if work.exists():
        for name in ("stages", "tokenizer"):
            shutil.rmtree(work / name, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"base": base, "fingerprint": recipe.fingerprint()}) + "\n")


def save_final(
    recipe: Recipe, model: nn.Module, out: Path, work: Path, stages: list[dict[str, Any]]
) -> None:
    """The final VLM in `recipe.save_dtype`, the stage logs, a summary and the recipe file."""
    dtype = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[recipe.save_dtype]
    model.save(out, dtype=dtype)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    for index, stage in enumerate(recipe.stages):
        source = stage_dir(work, index, stage) / LOG_FILE
        if source.exists():
            shutil.copyfile(source, logs / f"{stage_name(index, stage)}.jsonl")
    summary = {
        "recipe": recipe.name,
        "recipe_file": recipe.source,
        "fingerprint": recipe.fingerprint(),
        "seed": recipe.seed,
        "save_dtype": recipe.save_dtype,
        "stages": stages,
        "train_wall_s": round(sum(s.get("wall_s", 0.0) for s in stages), 1),
        "params": model.parameter_counts(),
    }
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=1) + "\n")
    if Path(recipe.source).exists():
        shutil.copyfile(recipe.source, out / "recipe.yaml")


def truncate_log(path: Path, step: int) -> None:
    """Keep only the log rows up to `step` (a resumed stage rewrites what came after)."""
    if not path.exists():
        return
    if step == 0:
        path.unlink()
        return
    kept = [row for row in read_rows(path, tolerant=True) if row["step"] <= step]  # killed: torn last line
    path.write_text("".join(json.dumps(row) + "\n" for row in kept))  # as the loop writes them


__all__ = [
    "DONE_FILE",
    "LOG_FILE",
    "STAGE_WEIGHTS",
    "SUMMARY_FILE",
    "prepare_work_dir",
    "save_final",
    "stage_dir",
    "stage_name",
    "truncate_log",
]
