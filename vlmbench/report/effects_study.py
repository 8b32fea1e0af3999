"""An effects study as data: which runs are compared, on which metrics, and by which verdict rules.

The default study is ``effects_study.yaml`` next to this module (the five literature effects); any
file of the same shape can be passed to `vlmbench effects --study FILE`. Loading validates every field,
so a bad study is one `UserError` naming the file, the effect and the field. `vlmbench.report.effects`
measures a study; nothing here reads runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vlmbench.errors import UserError

DEFAULT_STUDY = Path(__file__).with_name("effects_study.yaml")

KINDS: tuple[str, ...] = ("within_run", "pairs")
RULES: tuple[str, ...] = ("sign", "little_loss", "collapse")
EXPECTED: tuple[str, ...] = ("lower", "higher")
MEAN_STATISTICS: tuple[str, ...] = ("anls",)
"""Statistics that are the mean of a per-row value (paired bootstrap of the mean)."""
RECOMPUTED_TASKS: tuple[str, ...] = ("pope", "chair")
"""Tasks whose other statistics are recomputed from the rows on every resample."""


@dataclass(frozen=True)
class Guard:
    """Downgrade a sign verdict's "appears" when ``statistic`` of the same pair drops to ``at_most``."""

    statistic: str
    at_most: float


@dataclass(frozen=True)
class Verdict:
    rule: str  # one of RULES
    expected: str = "lower"  # sign: the side B - A should fall on
    margin: float = 0.0  # little_loss: the ± band that counts as "little"
    at_most: float = 0.0  # collapse: a delta at or below this is a collapse
    guard: Guard | None = None


@dataclass(frozen=True)
class RowFilter:
    """Keep the paired rows whose ``field`` is at most ``at_most`` (all rows when no row carries it)."""

    field: str
    at_most: float

    @property
    def text(self) -> str:
        return f"{self.field} ≤ {self.at_most:g}"


@dataclass(frozen=True)
class Metric:
    task: str
    statistic: str
    label: str
    verdict: Verdict
    note: str = ""  # appended to the label once measured
    show_n: bool = False  # append "(n=…)" once measured
    rows: RowFilter | None = None

    @property
    def base_label(self) -> str:
        """The label before measuring (as a not-measured row shows it)."""
        return f"{self.label}, {self.rows.text}" if self.rows else self.label


@dataclass(frozen=True)
class Splits:
    field: str
    a: str
    b: str


@dataclass(frozen=True)
class Effect:
    number: int  # 1-based position in the study
    title: str
    kind: str  # one of KINDS
    metrics: tuple[Metric, ...]
    baseline: str = ""  # pairs: run A
    candidates: tuple[str, ...] = ()  # pairs: the runs B
    splits: Splits | None = None  # within_run

    @property
    def heading(self) -> str:
        return f"{self.number}. {self.title}"


@dataclass(frozen=True)
class Study:
    title: str
    effects: tuple[Effect, ...]
    other_runs: tuple[str, ...]
    source: str

    @property
    def known_runs(self) -> tuple[str, ...]:
        """Every run name the study addresses, plus the ones it names as entering only within-run effects."""
        names: list[str] = []
        for effect in self.effects:
            names += [effect.baseline, *effect.candidates] if effect.kind == "pairs" else []
        return tuple(dict.fromkeys([*names, *self.other_runs]))

    @property
    def within_run(self) -> tuple[Effect, ...]:
        return tuple(e for e in self.effects if e.kind == "within_run")


# --- loading --------------------------------------------------------------------------------------


def load_study(path: Path | None = None) -> Study:
    """Read and validate a study file (default: the bundled five-effect study)."""
    path = Path(path) if path is not None else DEFAULT_STUDY
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"--study {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--study {path}: cannot read it ({exc})") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({exc})".replace("\n", " ")) from None
    return parse_study(data, str(path))


def parse_study(data: Any, source: str) -> Study:
    """Validate a parsed study mapping; every problem is a `UserError` naming ``source`` and the field."""
    top = _Fields(data, source, ("title", "effects"), ("other_runs",))
    effects = top.list("effects")
    if not effects:
        raise top.error("effects", "expected a non-empty list of effects")
    return Study(
        title=top.text("title"),
        effects=tuple(_effect(item, f"{source}: effect {i}", i) for i, item in enumerate(effects, 1)),
        other_runs=top.names("other_runs"),
        source=source,
    )


def _effect(data: Any, where: str, number: int) -> Effect:
    kind_fields = {"within_run": ("splits",), "pairs": ("baseline", "candidates")}
    kind = _Fields(data, where, ("kind",), ("title", "metrics", "splits", "baseline", "candidates")).choice(
        "kind", KINDS
    )
    fields = _Fields(data, where, ("title", "kind", "metrics", *kind_fields[kind]), ())
    metrics = tuple(_metric(m, f"{where}, metric {j}") for j, m in enumerate(fields.list("metrics"), 1))
    if not metrics:
        raise fields.error("metrics", "expected a non-empty list of metrics")
    statistics = {m.statistic for m in metrics}
    for metric in metrics:
        guard = metric.verdict.guard
        if guard is not None and guard.statistic not in statistics:
            raise fields.error("metrics", f"guard statistic {guard.statistic!r} is not a metric of this effect")
    if kind == "within_run":
        splits = _Fields(fields.get("splits"), f"{where}, splits", ("field", "a", "b"), ())
        return Effect(
            number,
            fields.text("title"),
            kind,
            metrics,
            splits=Splits(splits.text("field"), splits.text("a"), splits.text("b")),
        )
    candidates = fields.names("candidates")
    if not candidates:
        raise fields.error("candidates", "expected a non-empty list of run names")
    return Effect(number, fields.text("title"), kind, metrics, fields.text("baseline"), candidates)


def _metric(data: Any, where: str) -> Metric:
    fields = _Fields(data, where, ("task", "statistic", "label", "verdict"), ("note", "show_n", "rows"))
    task, statistic = fields.text("task"), fields.text("statistic")
    if statistic not in MEAN_STATISTICS and task not in RECOMPUTED_TASKS:
        raise fields.error(
            "statistic",
            f"{statistic!r} on task {task!r} cannot be measured: use {', '.join(MEAN_STATISTICS)}, "
            f"or a statistic of a task recomputed from its rows ({', '.join(RECOMPUTED_TASKS)})",
        )
    rows = None
    if fields.get("rows") is not None:
        spec = _Fields(fields.get("rows"), f"{where}, rows", ("field", "at_most"), ())
        rows = RowFilter(spec.text("field"), spec.number("at_most"))
    return Metric(
        task=task,
        statistic=statistic,
        label=fields.text("label"),
        verdict=_verdict(fields.get("verdict"), f"{where}, verdict"),
        note=fields.text("note", default=""),
        show_n=fields.flag("show_n"),
        rows=rows,
    )


def _verdict(data: Any, where: str) -> Verdict:
    rule = _Fields(data, where, ("rule",), ("expected", "margin", "at_most", "guard")).choice("rule", RULES)
    needs = {"sign": (("expected",), ("guard",)), "little_loss": (("margin",), ()), "collapse": (("at_most",), ())}
    required, optional = needs[rule]
    fields = _Fields(data, where, ("rule", *required), optional)
    if rule == "sign":
        guard = None
        if fields.get("guard") is not None:
            spec = _Fields(fields.get("guard"), f"{where}, guard", ("statistic", "at_most"), ())
            guard = Guard(spec.text("statistic"), spec.number("at_most"))
        return Verdict(rule, expected=fields.choice("expected", EXPECTED), guard=guard)
    if rule == "little_loss":
        margin = fields.number("margin")
        if margin <= 0:
            raise fields.error("margin", f"expected a positive number, got {margin:g}")
        return Verdict(rule, margin=margin)
    return Verdict(rule, at_most=fields.number("at_most"))


class _Fields:
    """Typed access to one mapping of the study, with errors that name the file, place and field."""

    def __init__(self, data: Any, where: str, required: tuple[str, ...], optional: tuple[str, ...]) -> None:
        if not isinstance(data, Mapping):
            raise UserError(f"{where}: expected a mapping, got {type(data).__name__}")
        allowed = (*required, *optional)
        unknown = [str(k) for k in data if k not in allowed]
        if unknown:
            raise UserError(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
        missing = [k for k in required if k not in data]
        if missing:
            raise UserError(f"{where}: missing field(s) {', '.join(missing)}")
        self.data, self.where = data, where

    def error(self, name: str, problem: str) -> UserError:
        return UserError(f"{self.where}: field '{name}': {problem}")

    def get(self, name: str) -> Any:
        return self.data.get(name)

    def text(self, name: str, default: str | None = None) -> str:
        value = self.data.get(name, default)
        if not isinstance(value, str) or (default is None and not value.strip()):
            raise self.error(name, f"expected a non-empty string, got {value!r}")
        return value

    def number(self, name: str) -> float:
        value = self.data.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(name, f"expected a number, got {value!r}")
        return float(value)

    def flag(self, name: str) -> bool:
        value = self.data.get(name, False)
        if not isinstance(value, bool):
            raise self.error(name, f"expected true or false, got {value!r}")
        return value

    def choice(self, name: str, choices: tuple[str, ...]) -> str:
        value = self.data.get(name)
        if value not in choices:
            raise self.error(name, f"expected one of {', '.join(choices)}, got {value!r}")
        return str(value)

    def list(self, name: str) -> list[Any]:
        value = self.data.get(name, [])
        if not isinstance(value, list):
            raise self.error(name, f"expected a list, got {type(value).__name__}")
        return value

    def names(self, name: str) -> tuple[str, ...]:
        values = self.list(name)
        if not all(isinstance(v, str) and v.strip() for v in values):
            raise self.error(name, f"expected a list of run names, got {values!r}")
        return tuple(values)


__all__ = ["DEFAULT_STUDY", "Effect", "Metric", "Study", "Verdict", "load_study", "parse_study"]
