"""Loading run directories: `results.json` plus `samples/<task>.jsonl` (layout in DESIGN.md).

A run is addressed by its directory or by the path of its `results.json`; samples are always
read from the `samples/` folder next to that file.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vlmbench.errors import UserError
from vlmbench.jsonl import read_rows

RESULTS_FILE = "results.json"
_SLUG_MAX = 80


class Run:
    """One finished run: its parsed `results.json` and lazily read per-task samples."""

    def __init__(self, run_dir: Path, results: dict[str, Any]) -> None:
        self.dir = run_dir
        self.results = results
        self._samples: dict[str, list[dict[str, Any]]] = {}

    # --- identity -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The run name (falls back to the directory name)."""
        return str(self.results.get("run_name") or self.dir.name)

    @property
    def model(self) -> dict[str, Any]:
        """The `model` object of results.json (empty dict when absent)."""
        model = self.results.get("model")
        return model if isinstance(model, dict) else {}

    @property
    def model_name(self) -> str:
        return str(self.model.get("name") or "unknown model")

    @property
    def tasks(self) -> dict[str, dict[str, Any]]:
        """Task name -> task result object, in results.json order."""
        return self.results["tasks"]

    @property
    def label(self) -> str:
        """Short human label: run name, and the model name when it adds information."""
        if self.model_name and self.model_name not in self.name:
            return f"{self.name} ({self.model_name})"
        return self.name

    @property
    def base_slug(self) -> str:
        """The slug before de-duplication: run name + model name, sanitised."""
        return slugify(f"{self.name}-{self.model_name}")

    # --- samples --------------------------------------------------------------------------
    def samples_path(self, task: str) -> Path:
        return self.dir / "samples" / f"{task}.jsonl"

    def has_samples(self, task: str) -> bool:
        return self.samples_path(task).is_file()

    def samples(self, task: str) -> list[dict[str, Any]]:
        """The rows of `samples/<task>.jsonl` ([] when the file does not exist)."""
        if task not in self._samples:
            path = self.samples_path(task)
            self._samples[task] = read_rows(path) if path.is_file() else []
        return self._samples[task]


def slugify(text: str) -> str:
    """Lower-case ASCII letters, digits and single dashes; never empty, at most 80 characters."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if len(slug) > _SLUG_MAX:
        cut = slug[: _SLUG_MAX + 1]
        slug = cut[: cut.rfind("-")] if cut.rfind("-") > _SLUG_MAX // 2 else slug[:_SLUG_MAX]
    slug = slug.rstrip("-")
    return slug or "run"


def unique_slugs(runs: list[Run]) -> list[str]:
    """Stable slugs for ``runs``: the base slug, plus a short content hash where two runs collide."""
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.base_slug] = counts.get(run.base_slug, 0) + 1
    slugs: list[str] = []
    seen: set[str] = set()
    for run in runs:
        slug = run.base_slug
        if counts[slug] > 1:
            key = f"{run.name}\0{run.model_name}\0{run.results.get('created', '')}\0{run.dir.name}"
            slug = f"{slug}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"
        base, k = slug, 2
        while slug in seen:
            slug = f"{base}-{k}"
            k += 1
        seen.add(slug)
        slugs.append(slug)
    return slugs


def results_path(path: Path) -> Path:
    """The results.json addressed by ``path`` (the file itself or a run directory)."""
    if path.is_dir():
        candidate = path / RESULTS_FILE
        if not candidate.is_file():
            raise UserError(f"{path}: no {RESULTS_FILE} in this directory; pass a finished run directory")
        return candidate
    if path.is_file():
        return path
    raise UserError(f"{path}: no such file or directory")


def load_run(path: Path) -> Run:
    """Load a run from its directory or its results.json; malformed input raises UserError."""
    file = results_path(Path(path))
    try:
        results = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{file}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    except UnicodeDecodeError as exc:
        raise UserError(f"{file}: not a UTF-8 text file") from exc
    if not isinstance(results, dict):
        raise UserError(f"{file}: expected a JSON object with 'run_name', 'model' and 'tasks'")
    tasks = results.get("tasks")
    if not isinstance(tasks, dict):
        raise UserError(f"{file}: missing the 'tasks' object; is this a vlmbench results.json?")
    for task, result in tasks.items():
        if not isinstance(result, dict) or not isinstance(result.get("metrics"), dict):
            raise UserError(f"{file}: task {task!r} has no 'metrics' object")
    return Run(file.parent, results)


def find_runs(paths: Iterable[Path]) -> list[Run]:
    """Runs under ``paths``: results.json files, run directories, or folders searched recursively.

    Each run appears once (by resolved path), in the order found (sorted within a folder).
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            found.append(path)
        elif (path / RESULTS_FILE).is_file():
            found.append(path / RESULTS_FILE)
        elif path.is_dir():
            hits = sorted(path.rglob(RESULTS_FILE))
            if not hits:
                raise UserError(f"{path}: no {RESULTS_FILE} found in this folder or below it")
            found.extend(hits)
        else:
            raise UserError(f"{path}: no such file or directory")
    runs: list[Run] = []
    seen: set[Path] = set()
    for file in found:
        key = file.resolve()
        if key in seen:
            continue
        seen.add(key)
        runs.append(load_run(file))
    return runs
