"""What `vlmbench run` is asked to do (`RunOptions`), checked before any work starts.

`RunOptions.validate` refuses every value the runner would otherwise trip over later — after the
synthetic sets were generated, the model loaded, or the run directory created and marked running —
with a `UserError` naming the flag. It only reads the filesystem (the data folders, the output
directory); the model argument is checked by `vlmbench.modeling.resolve.check_model_spec` and the
task names by the task registry, both also before any data is read.

`ErrorBudget` is `--max-errors`: how many failed samples a finished run may have and still exit 0.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from vlmbench.arguments import check_folder_name, check_positive_seconds, check_seed, check_writable_dir
from vlmbench.errors import UserError
from vlmbench.modeling.compression.spec import parse_spec

DTYPES = MappingProxyType({
    "float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16",
})
"""`--dtype` spellings and the torch dtype (attribute of `torch`) each means."""


def torch_dtype(name: str | None) -> Any:
    """The `torch.dtype` that ``--dtype NAME`` means; None (the checkpoint's own dtype) for None."""
    if name is None:
        return None
    if name not in DTYPES:
        raise UserError(f"--dtype {name} is unknown; use one of {', '.join(DTYPES)}")
    import torch

    return getattr(torch, DTYPES[name])

ANSWER_MODES = ("generate", "choices")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")
MAX_DIST_TIMEOUT_S = 7 * 24 * 3600.0  # far above any real collective; keeps torch's millisecond count in range
_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


@dataclass
class RunOptions:
    model: str
    tasks: list[str]
    checkpoint: str | None = None
    data_dir: str | None = None
    limit: int | None = None
    batch_size: str = "8"
    output_dir: str = "runs"
    run_name: str | None = None
    resume: bool = False
    seed: int = 0
    device: str | None = None
    dtype: str | None = None
    answer_mode: str | None = None  # force "generate" (or "choices") for every task
    feature_cache: bool = True
    prefix_sharing: bool = True  # --prefix-sharing on|off (runner/engine.py; docs/prefix-sharing.md)
    prefix_cache_mb: int = 1024  # bytes of prefix KV states the LRU may hold, in MiB
    dist_timeout_s: float = 1800.0
    synthetic_n: int | None = None
    attn_implementation: str | None = None  # hf: models only (sdpa | eager | flash_attention_2)
    controls: tuple[str, ...] = ()  # visual-dependence controls (runner/controls.py), canonical order
    visual_tokens: str | None = None  # --visual-tokens SPEC (modeling/compression/spec.py)
    concurrency: int = 8  # openai: models: requests in flight (changes no prediction, so not a resume setting)
    mitigation: str | None = None  # --mitigation SPEC (vlmbench/mitigation/spec.py)
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Refuse bad values (`UserError`, named by their flag) before anything is loaded or written."""
        if not self.model:
            raise UserError("--model is empty; pass a preset name (see `vlmbench models`), a checkpoint directory or hf:<path>")
        if not self.tasks:
            raise UserError("--tasks is empty: give a comma-separated list, e.g. --tasks pope,docvqa (see `vlmbench tasks`)")
        repeated = sorted({t for t in self.tasks if self.tasks.count(t) > 1})
        if repeated:
            raise UserError(f"--tasks names {', '.join(repeated)} more than once; list each task once")
        _check_count(self.limit, "--limit")
        _check_count(self.synthetic_n, "--synthetic-n")
        _check_count(self.concurrency, "--concurrency")
        parse_batch_size(self.batch_size)
        check_seed(self.seed)
        check_positive_seconds(self.dist_timeout_s, "--dist-timeout", MAX_DIST_TIMEOUT_S)
        if self.run_name is not None:
            check_folder_name(self.run_name, "--run-name")
        check_writable_dir(Path(self.output_dir), "--output-dir")
        if self.device is not None and not _DEVICE.fullmatch(self.device):
            raise UserError(f"--device {self.device} is unknown; use cpu or cuda")
        torch_dtype(self.dtype)
        _check_choice(self.answer_mode, "--answer-mode", ANSWER_MODES)
        _check_choice(self.attn_implementation, "--attn-implementation", ATTN_IMPLEMENTATIONS)
        parse_spec(self.visual_tokens)
        _check_controls(self.controls, self.tasks)
        _check_mitigation(self.mitigation, self.tasks)
        self.task_data_dirs()

    def task_data_dirs(self) -> dict[str, Path]:
        """``--data-dir`` per task: the folder itself for one task, ``DIR/<task>/`` for several.

        With several tasks every task needs its folder: a missing (or misspelt) one is refused
        rather than silently replaced by the task's synthetic set."""
        if not self.data_dir:
            return {}
        root = Path(self.data_dir).expanduser()
        if not root.is_dir():
            what = "is not a directory" if root.exists() else "does not exist"
            raise UserError(f"--data-dir {root} {what}; pass the folder holding the task's data")
        if len(self.tasks) == 1:
            return {self.tasks[0]: root}
        missing = [name for name in self.tasks if not (root / name).is_dir()]
        if missing:
            present = sorted(p.name for p in root.iterdir() if p.is_dir())
            wanted = "; ".join(f"{name} (expected {root / name}/{_near_miss(name, present)})" for name in missing)
            raise UserError(
                f"--data-dir {root} has no folder for task {wanted}; found: {', '.join(present) or 'no folders'}. "
                "With several tasks each needs DIR/<task>/ named exactly like the task; run a task without "
                "its folder in a separate command without --data-dir"
            )
        return {name: root / name for name in self.tasks}


def parse_batch_size(value: str | int) -> int | None:
    """``--batch-size``: a positive integer, or None for ``auto``; anything else is a `UserError`."""
    if value == "auto":
        return None
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise UserError(f"--batch-size {value} is not a positive integer or 'auto'") from None
    if size < 1 or isinstance(value, bool) or (isinstance(value, float) and value != size):
        raise UserError(f"--batch-size {value} must be a positive integer (at least 1) or 'auto'")
    return size


@dataclass(frozen=True)
class ErrorBudget:
    """``--max-errors``: the failed samples a task may have before the run exits 1.

    ``count`` allows that many per task; ``share`` that fraction of the task's samples. Without the
    flag (`unlimited`) failed samples are counted in results.json and the run exits 0."""

    count: int | None = None
    share: float | None = None
    text: str = ""

    @classmethod
    def parse(cls, text: str | None) -> ErrorBudget:
        """``N`` (a count per task, N >= 0) or ``P%`` (0 <= P <= 100); None means no limit."""
        if text is None:
            return cls()
        raw = text.strip()
        try:
            if raw.endswith("%"):
                share = float(raw[:-1]) / 100.0
                if not (math.isfinite(share) and 0.0 <= share <= 1.0):
                    raise ValueError
                return cls(share=share, text=raw)
            count = int(raw)
            if count < 0:
                raise ValueError
            return cls(count=count, text=raw)
        except ValueError:
            raise UserError(
                f"--max-errors {text} is not a count (an integer >= 0, e.g. 0) or a percentage "
                "(0% to 100%, e.g. 5%) of each task's samples"
            ) from None

    @property
    def unlimited(self) -> bool:
        return self.count is None and self.share is None

    def allowed(self, n: int) -> float:
        """The most failed samples a task of ``n`` samples may have."""
        if self.count is not None:
            return float(self.count)
        return math.inf if self.share is None else self.share * n

    def over(self, tasks: dict[str, dict[str, Any]]) -> list[str]:
        """One phrase per task of results.json's ``tasks`` whose ``errors`` exceed the budget."""
        return [
            f"{name}: {int(r.get('errors') or 0)} of {int(r.get('n') or 0)} samples failed"
            for name, r in tasks.items()
            if (r.get("errors") or 0) > self.allowed(int(r.get("n") or 0))
        ]


def _check_count(value: int | None, flag: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise UserError(f"{flag} {value} must be a positive integer")


def _check_controls(controls: tuple[str, ...], tasks: list[str]) -> None:
    from vlmbench.runner.controls import CONTROLS, PASS_SEPARATOR, parse_controls

    if tuple(controls) != parse_controls(",".join(controls)) or not set(controls) <= set(CONTROLS):
        raise UserError(f"--controls {','.join(controls)}: use a comma-separated subset of {','.join(CONTROLS)}, each once")
    clash = [t for t in tasks if PASS_SEPARATOR in t]
    if controls and clash:
        raise UserError(f"--controls: task name {clash[0]} contains '{PASS_SEPARATOR}', which names control passes; rename the task")


def _check_mitigation(text: str | None, tasks: list[str]) -> None:
    from vlmbench.mitigation.spec import parse_mitigation
    from vlmbench.runner.controls import PASS_SEPARATOR

    clash = [t for t in tasks if PASS_SEPARATOR in t]
    if parse_mitigation(text) is not None and clash:
        raise UserError(f"--mitigation: task name {clash[0]} contains '{PASS_SEPARATOR}', which names the mitigated pass; rename the task")


def _check_choice(value: str | None, flag: str, choices: tuple[str, ...]) -> None:
    if value is not None and value not in choices:
        raise UserError(f"{flag} {value} is unknown; use one of {', '.join(choices)}")


def _near_miss(name: str, present: list[str]) -> str:
    """A hint naming a present folder that looks like ``name`` (a different case or a typo), else ``""``."""
    by_case = [p for p in present if p.lower() == name.lower()]
    close = by_case or difflib.get_close_matches(name, present, n=1, cutoff=0.75)
    return f"; {close[0]}/ is there: folder names are case-sensitive" if close else ""
