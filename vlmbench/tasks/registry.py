"""Finding task configs and building their adapters.

`load_task("pope")` reads ``tasks/pope.yaml`` (see `default_tasks_dir` for where ``tasks/`` is) and
returns the adapter named by its ``adapter`` field: ``generic`` is `vlmbench.tasks.base.TaskAdapter`,
any other name is the module ``vlmbench.tasks.<adapter>``, which exposes ``Adapter``.
The base names are re-exported here so callers can import everything from one place.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from pathlib import Path

import yaml

from vlmbench.data.loaders import default_cache_dir
from vlmbench.errors import UserError
from vlmbench.resources import bundled_dir
from vlmbench.tasks.base import DataInfo, Sample, SampleError, TaskAdapter
from vlmbench.tasks.config import TaskConfig, parse_task_config

__all__ = [
    "DataInfo",
    "Sample",
    "SampleError",
    "TaskAdapter",
    "TaskConfig",
    "adapter_class",
    "available_adapters",
    "default_cache_dir",
    "default_tasks_dir",
    "list_tasks",
    "load_task",
    "read_task_config",
    "task_files",
]

GENERIC_ADAPTER = "generic"
_NOT_ADAPTERS: frozenset[str] = frozenset({"base", "config", "registry"})


def default_tasks_dir() -> Path:
    """The directory of task YAMLs: ``$VLMBENCH_TASKS_DIR``, else the bundled ``tasks/`` folder (the
    checkout's own, or the copy inside an installed wheel; see `vlmbench.resources`)."""
    env = os.environ.get("VLMBENCH_TASKS_DIR")
    if env:
        return Path(env).expanduser()
    return bundled_dir("tasks")


def task_files(tasks_dir: Path | None = None) -> dict[str, Path]:
    """Task name → YAML path, sorted by name."""
    directory = Path(tasks_dir) if tasks_dir is not None else default_tasks_dir()
    if not directory.is_dir():
        raise UserError(
            f"no task directory at {directory}; set VLMBENCH_TASKS_DIR to the folder of task YAMLs"
        )
    files = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")], key=lambda p: p.stem)
    return {path.stem: path for path in files}


def read_task_config(path: Path) -> TaskConfig:
    """Parse and validate one task YAML (errors name the file and the field)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise UserError(f"cannot read task config {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from exc
    return parse_task_config(data, path, expected_name=Path(path).stem)


def available_adapters() -> list[str]:
    """The adapter names a task YAML may use."""
    import vlmbench.tasks as package

    names = {GENERIC_ADAPTER}
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_") and info.name not in _NOT_ADAPTERS:
            names.add(info.name)
    return sorted(names)


def adapter_class(name: str, source: Path | str = "task config") -> type[TaskAdapter]:
    """The adapter class for an ``adapter`` field value; unknown → `UserError` naming the file."""
    if name == GENERIC_ADAPTER:
        return TaskAdapter
    problem = f"unknown adapter '{name}'; available: {', '.join(available_adapters())}"
    if not name.isidentifier() or name in _NOT_ADAPTERS:
        raise UserError(f"{source}: field 'adapter': {problem}")
    module_name = f"vlmbench.tasks.{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise UserError(f"{source}: field 'adapter': {problem}") from None
        raise
    cls = getattr(module, "Adapter", None)
    if not (isinstance(cls, type) and issubclass(cls, TaskAdapter)):
        raise UserError(f"{source}: field 'adapter': module {module_name} defines no Adapter class")
    return cls


def load_task(name: str, tasks_dir: Path | None = None) -> TaskAdapter:
    """The adapter of task ``name``; an unknown name is a `UserError` listing the available tasks."""
    files = task_files(tasks_dir)
    if name not in files:
        available = ", ".join(files) or "none"
        raise UserError(f"unknown task '{name}'; available tasks: {available}")
    path = files[name]
    config = read_task_config(path)
    return adapter_class(config.adapter, path)(config, source_file=path)


def list_tasks(tasks_dir: Path | None = None) -> list[TaskConfig]:
    """Every task's config, sorted by name (an invalid YAML is a `UserError`)."""
    return [read_task_config(path) for path in task_files(tasks_dir).values()]
