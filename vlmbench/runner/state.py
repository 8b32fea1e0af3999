"""The run directory and its manifest (`run.json`), which makes `--resume` safe.

The manifest records what the run evaluates — model identity (weights fingerprint), the settings
that can change a prediction (answer mode, generation settings, dtype, device kind, limit, seed,
attention kernel, batch size, controls), task configs and data fingerprints — and whether it finished. A
resume continues in place only when all of these match; otherwise it is refused with every
difference listed, because mixing predictions of two setups would be silently wrong.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from pathlib import Path
from typing import Any

from vlmbench.errors import UserError

MANIFEST = "run.json"


def new_run_name(model: str) -> str:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{slug(model)}-{stamp}"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "model"


def read_manifest(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is corrupt ({exc}); start a new run without --resume") from None
    if not isinstance(manifest, dict):
        raise UserError(f"{path} is corrupt (a JSON {type(manifest).__name__}, not an object); start a new run without --resume")
    return manifest


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, run_dir / MANIFEST)


def find_resumable(output_dir: Path) -> Path:
    """The most recently started unfinished run in `output_dir`."""
    candidates = []
    for manifest_path in output_dir.glob(f"*/{MANIFEST}"):
        manifest = read_manifest(manifest_path.parent) or {}
        if manifest.get("status") != "finished":
            candidates.append((str(manifest.get("started", "")), manifest_path.parent))
    if not candidates:
        raise UserError(
            f"--resume: no unfinished run in {output_dir}; pass --run-name NAME of the run to continue, "
            "or drop --resume to start a new one"
        )
    return max(candidates)[1]


# What `--resume` compares, in two steps: what the command line and the task configs decide is
# checked before any data is generated or any model is loaded; what needs them (the weights' and
# the data's fingerprints) right after loading, before any prediction is made.
BEFORE_LOADING = ("settings", "task_fingerprints")
AFTER_LOADING = ("model_identity", "data_fingerprints")

_LABELS = {
    "settings": {
        "model": "model",
        "checkpoint": "--checkpoint",
        "answer_mode": "answer mode",
        "generation": "generation settings",
        "dtype": "--dtype",
        "device": "device",
        "limit": "--limit",
        "seed": "--seed",
        "synthetic_n": "--synthetic-n",
        "attn_implementation": "--attn-implementation",
        "batch_size": "--batch-size",
        "controls": "--controls",
        "visual_tokens": "--visual-tokens",
        "prefix_sharing": "--prefix-sharing",
        "mitigation": "--mitigation",
    },
    "model_identity": {
        "model": "model",
        "checkpoint": "weights directory",
        "weights_sha256": "model weights",
        "config_sha256": "model config",
        "trained": "trained weights",
        "seed": "random-init seed",
    },
}
_PER_TASK = {"task_fingerprints": "task config", "data_fingerprints": "data"}


def check_resume(old: dict[str, Any], new: dict[str, Any], run_dir: Path, keys: tuple[str, ...]) -> None:
    """Refuse to continue `run_dir` when any of the manifest's `keys` differ from this command's.

    One `UserError` lists every difference, so a user fixes them all at once."""
    problems = resume_differences(old, new, keys)
    if problems:
        raise UserError(
            f"--resume: {run_dir} was started with other settings: {'; '.join(problems)}. Nothing was changed: "
            "resume it with its own settings, or start a fresh run under another --run-name (without --resume)"
        )


def resume_differences(old: dict[str, Any], new: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    """Each difference between two manifests' `keys`, in words (empty when they agree)."""
    old, new = _plain(old), _plain(new)
    problems: list[str] = []
    for key in keys:
        if key not in old:
            problems.append(f"its run.json does not record '{key}' (it was started by an older vlmbench), so it cannot be compared")
            continue
        before, now = old[key], new.get(key)
        if key in _PER_TASK:
            problems += _per_task(_PER_TASK[key], before if isinstance(before, dict) else {}, now or {})
        elif isinstance(before, dict) and isinstance(now, dict):
            labels = _LABELS.get(key, {})
            for name in sorted(set(before) | set(now)):
                problems += _compare(labels.get(name, name), before.get(name), now.get(name))
        else:
            problems += _compare(key, before, now)
    return problems


def _per_task(label: str, before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    if set(before) != set(now):
        return [f"tasks differ (was {sorted(before)}, now {sorted(now)}; use the same --tasks)"]
    return [p for task in sorted(before) for p in _compare(f"{label} of {task}", before[task], now[task])]


def _compare(label: str, before: Any, now: Any) -> list[str]:
    if before == now:
        return []
    if isinstance(before, dict) and isinstance(now, dict) and set(before) == set(now):  # per task: name the task
        return [p for task in sorted(before) for p in _compare(f"{label} of {task}", before[task], now[task])]
    return [f"{label} differs (was {_short(before)}, now {_short(now)})"]


def _plain(value: Any) -> Any:
    """JSON's view of a value (tuples become lists), as it reads back from run.json."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _short(value: Any) -> str:
    if value is None:
        return "unset"
    text = json.dumps(value, sort_keys=True)
    return text if len(text) < 100 else text[:97] + "..."
