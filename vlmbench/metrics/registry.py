"""Finding a task's scorer: the built-in ones by name, or a class a task YAML names (see the package docs)."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType, ModuleType

from vlmbench.errors import UserError
from vlmbench.metrics.amber import AmberScorer
from vlmbench.metrics.anls import AnlsScorer
from vlmbench.metrics.chair import ChairScorer
from vlmbench.metrics.grounding import GroundingScorer
from vlmbench.metrics.hallusionbench import HallusionBenchScorer
from vlmbench.metrics.ocr import OcrScorer
from vlmbench.metrics.pope import PopeScorer
from vlmbench.metrics.probes import ProbesScorer
from vlmbench.metrics.relaxed import RelaxedAccuracyScorer
from vlmbench.metrics.scorer import Direction, Scorer, leaf
from vlmbench.metrics.vqa import VqaScorer

BUILTIN_SCORERS: Mapping[str, Scorer] = MappingProxyType(
    {
        scorer.task_name: scorer
        for scorer in (
            PopeScorer(),
            AnlsScorer(),
            VqaScorer("textvqa"),
            VqaScorer("vqav2"),
            RelaxedAccuracyScorer(),
            OcrScorer(),
            ChairScorer(),
            ProbesScorer(),
            AmberScorer(),
            HallusionBenchScorer(),
            GroundingScorer(),
        )
    }
)

_FIX = (
    "use a built-in scorer ({names}), 'file.py:Class' (a file next to the task YAML) "
    "or 'package.module:Class'"
)


def _fix() -> str:
    return _FIX.format(names=", ".join(BUILTIN_SCORERS))


def _module_from_file(path: Path, source: str, spec: str) -> ModuleType:
    """Import a scorer file once per process (keyed by its resolved path in ``sys.modules``)."""
    resolved = path.resolve()
    name = "vlmbench_user_scorer_" + hashlib.sha1(str(resolved).encode()).hexdigest()[:16]
    if name in sys.modules:
        return sys.modules[name]
    if not resolved.is_file():
        raise UserError(
            f"{source}: field 'scorer': {spec!r} names {resolved}, which does not exist; {_fix()}"
        )
    module_spec = importlib.util.spec_from_file_location(name, resolved)
    if module_spec is None or module_spec.loader is None:
        raise UserError(f"{source}: field 'scorer': cannot import {resolved} as a Python module; {_fix()}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        detail = " ".join(str(exc).split())
        raise UserError(
            f"{source}: field 'scorer': importing {resolved} failed ({type(exc).__name__}: {detail})"
        ) from exc
    return module


def resolve_scorer(spec: str, *, base_dir: Path | None = None, source: str = "task config") -> Scorer:
    """The scorer a task YAML's ``scorer`` field names; every problem is a one-line `UserError`
    naming ``source`` (the YAML) and the fix. ``base_dir`` is the folder 'file.py:Class' is read from."""
    if spec in BUILTIN_SCORERS:
        return BUILTIN_SCORERS[spec]
    target, sep, class_name = spec.rpartition(":")
    if not sep or not target or not class_name.isidentifier():
        raise UserError(f"{source}: field 'scorer': unknown scorer {spec!r}; {_fix()}")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_absolute():
            path = (base_dir or Path.cwd()) / path
        module = _module_from_file(path, source, spec)
    else:
        try:
            module = importlib.import_module(target)
        except Exception as exc:  # a broken plugin module is the YAML's problem, reported in one line
            detail = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            raise UserError(
                f"{source}: field 'scorer': cannot import module {target!r} ({detail}); {_fix()}"
            ) from exc
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Scorer)):
        raise UserError(
            f"{source}: field 'scorer': {class_name!r} in {target} is not a vlmbench.metrics.Scorer subclass; {_fix()}"
        )
    try:
        return cls()
    except TypeError as exc:  # abstract methods left unimplemented, or required constructor arguments
        raise UserError(f"{source}: field 'scorer': cannot instantiate {class_name} ({exc})") from exc


def builtin_direction(metric: str) -> Direction:
    """A metric's direction by its leaf name, from the first built-in scorer that knows it (True if none)."""
    for scorer in BUILTIN_SCORERS.values():
        if scorer.knows(metric):
            return scorer.direction(metric)
    return True


def builtin_by_headline(metric: str) -> Scorer | None:
    """The built-in scorer whose default headline is ``metric`` (for runs that predate the recorded
    scorer name and whose task is not named after a built-in scorer)."""
    return next((s for s in BUILTIN_SCORERS.values() if s.default_metric == leaf(metric) == metric), None)
