"""Deterministic synthetic data sets, one generator per task, in the public releases' layout.

`generate(task, out, seed, n)` dispatches to the task's generator (imported only when asked for);
every generator has the signature `(out: Path, seed: int, n: int) -> Path` and returns the parquet
file it wrote. The default sizes keep the embedded demo to a few minutes on CPU.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import MappingProxyType

from vlmbench.errors import UserError

SYNTH_TASKS: tuple[str, ...] = (
    "pope", "chair", "vqav2", "docvqa", "textvqa", "ocr", "chartqa", "pair_compare", "probes", "grounding",
)

# task -> (module, function)
_GENERATORS: MappingProxyType[str, tuple[str, str]] = MappingProxyType(
    {
        "pope": ("vlmbench.data.synth.scenes", "generate_pope"),
        "chair": ("vlmbench.data.synth.scenes", "generate_chair"),
        "vqav2": ("vlmbench.data.synth.scenes", "generate_vqav2"),
        "docvqa": ("vlmbench.data.synth.documents", "generate_docvqa"),
        "textvqa": ("vlmbench.data.synth.textvqa", "generate_textvqa"),
        "ocr": ("vlmbench.data.synth.ocr", "generate_ocr"),
        "chartqa": ("vlmbench.data.synth.charts", "generate_chartqa"),
        "pair_compare": ("vlmbench.data.synth.pairs", "generate_pair_compare"),
        "probes": ("vlmbench.data.synth.scenes.probes", "generate_probes"),
        "grounding": ("vlmbench.data.synth.scenes.refexp", "generate_refexp"),
    }
)

# What `n` counts differs per task: POPE and probe images (18 questions each), CHAIR images, questions
# (grounding: expressions) otherwise.
DEFAULT_N: MappingProxyType[str, int] = MappingProxyType(
    {
        "pope": 30,
        "chair": 100,
        "vqav2": 200,
        "docvqa": 200,
        "textvqa": 200,
        "ocr": 200,
        "chartqa": 200,
        "pair_compare": 100,
        "probes": 30,
        "grounding": 200,
    }
)


def generate(task: str, out: Path, seed: int = 0, n: int | None = None) -> Path:
    """Write the synthetic set for `task` to `out`; returns the parquet file written."""
    if task not in _GENERATORS:
        raise UserError(f"no synthetic generator for task {task!r}; choose one of: {', '.join(SYNTH_TASKS)}")
    count = DEFAULT_N[task] if n is None else n
    if count < 1:
        raise UserError(f"--n must be at least 1 (got {count})")
    module_name, function_name = _GENERATORS[task]
    module = importlib.import_module(module_name)
    return getattr(module, function_name)(Path(out), seed, count)
