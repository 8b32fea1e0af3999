"""The run directory and its manifest (`run.json`), which makes `--resume` safe.

The manifest records what the run evaluates — model identity, task configs and data
fingerprints — and whether it finished. A resume continues in place only when all of these
match; otherwise it is refused, because mixing predictions of two setups would be silently wrong.
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
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is corrupt ({exc}); start a new run without --resume") from None


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
            candidates.append((manifest.get("started", ""), manifest_path.parent))
    if not candidates:
        raise UserError(
            f"--resume: no unfinished run in {output_dir}; pass --run-name NAME of the run to continue, "
            "or drop --resume to start a new one"
        )
    return max(candidates)[1]


def check_resume(old: dict[str, Any], new: dict[str, Any], run_dir: Path) -> None:
    """Refuse to continue a run with another model, task config or data set."""
    for key, label in (("model_identity", "model"), ("task_fingerprints", "task config"), ("data_fingerprints", "data")):
        before, now = old.get(key), new.get(key)
        if key != "model_identity" and set(before or {}) != set(now or {}):
            raise UserError(
                f"--resume: {run_dir} evaluated tasks {sorted(before or {})}, this command asks for {sorted(now or {})}; "
                "use the same --tasks or start a new run"
            )
        if before != now:
            raise UserError(
                f"--resume: the {label} differs from the one {run_dir} was started with "
                f"({_short(before)} vs {_short(now)}); resume with the same settings or start a new run"
            )


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) < 160 else text[:157] + "..."
