"""Task configs, samples and the generic task adapter.

A task is one YAML file in the repository's top-level ``tasks/`` directory (parsed into `TaskConfig`)
plus an adapter class that turns rows of the task's data set into `Sample`s and scores predictions.
The generic `TaskAdapter` here covers question → answer(s) tasks (docvqa, textvqa, chartqa, ocr);
a family whose rows need custom parsing has its own module ``vlmbench/tasks/<family>.py`` exposing
``Adapter`` (pope, chair, vqav2), named by the YAML's ``adapter`` field ("generic" names this one).

Where the YAML files are found (see `vlmbench.tasks.registry.default_tasks_dir`): an explicit
``tasks_dir`` argument, else ``$VLMBENCH_TASKS_DIR``, else ``Path(vlmbench.__file__).parents[1] / "tasks"``
(the canonical copies, which is where they are for a source checkout and an editable install), else a
copy shipped inside the package as ``vlmbench/task_configs/`` read through `importlib.resources`
(for a wheel: the build must copy ``tasks/*.yaml`` there as package data). Keeping one canonical copy
in ``tasks/`` means a task is edited in one place.

Column roles (the keys of ``columns`` in the YAML; values are the release's column names):
``question_id``, ``question``, ``answer`` (one string), ``answers`` (a list), ``image``,
``image_key`` (a column identifying the image, for feature caching; optional: when the data lacks it the
image bytes are hashed), ``category`` (pope split), ``gt_objects`` (chair). Without a ``question_id``
role the row number (file order) is the question id.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from vlmbench.errors import UserError

if TYPE_CHECKING:
    from PIL import Image as PILImage

    from vlmbench.data.loaders import ReleaseTable

logger = logging.getLogger(__name__)

ANSWER_MODES: tuple[str, ...] = ("generate", "choices")
COLUMN_ROLES: tuple[str, ...] = (
    "question_id",
    "question",
    "answer",
    "answers",
    "image",
    "image_key",
    "category",
    "gt_objects",
)


def default_cache_dir() -> Path:
    """Where vlmbench keeps generated data and other caches: ``$VLMBENCH_CACHE`` or ``~/.cache/vlmbench``."""
    env = os.environ.get("VLMBENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vlmbench"


class SampleError(Exception):
    """A failure confined to one sample (e.g. an unreadable image): the runner records it and goes on."""


class MalformedRow(Exception):
    """Raised by an adapter's row parser: the row cannot be evaluated (the reason is the message)."""


@dataclass(frozen=True)
class TaskConfig:
    """One task, as declared in ``tasks/<name>.yaml``. Build it with `parse_task_config`."""

    name: str
    description: str
    adapter: str
    hf_dataset: str | None
    split: str
    columns: dict[str, str]
    prompt_template: str
    max_new_tokens: int
    stop: tuple[str, ...]
    answer_mode: str
    choices: tuple[str, ...]
    scorer: str
    synthetic_n: int
    synthetic_seed: int
    # optional fields (defaults apply when the YAML omits them)
    hf_config: str | None = None
    primary_metric: str = ""
    meta_columns: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (tuples as lists)."""
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    def build_prompt(self, question: str) -> str:
        """The model's prompt for one question."""
        return self.prompt_template.format(question=question)


_REQUIRED_FIELDS: tuple[str, ...] = (
    "name",
    "description",
    "adapter",
    "hf_dataset",
    "split",
    "columns",
    "prompt_template",
    "max_new_tokens",
    "answer_mode",
    "scorer",
    "primary_metric",
    "synthetic_n",
    "synthetic_seed",
)
_OPTIONAL_FIELDS: tuple[str, ...] = ("stop", "choices", "hf_config", "meta_columns")


def _field_error(source: str, name: str, problem: str) -> UserError:
    return UserError(f"{source}: field '{name}': {problem}")


def _get_str(data: Mapping[str, Any], key: str, source: str, *, nullable: bool = False) -> str | None:
    value = data.get(key)
    if value is None and nullable:
        return None
    if not isinstance(value, str) or not value.strip():
        expected = "a non-empty string or null" if nullable else "a non-empty string"
        raise _field_error(source, key, f"expected {expected}, got {value!r}")
    return value


def _get_int(data: Mapping[str, Any], key: str, source: str, minimum: int) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _field_error(source, key, f"expected an integer >= {minimum}, got {value!r}")
    return value


def _get_str_list(data: Mapping[str, Any], key: str, source: str) -> tuple[str, ...]:
    value = data.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _field_error(source, key, f"expected a list of non-empty strings, got {value!r}")
    return tuple(value)


def parse_task_config(data: Any, source: str | Path, expected_name: str | None = None) -> TaskConfig:
    """Validate a parsed YAML mapping into a `TaskConfig`; every problem is a `UserError` naming
    ``source`` (the file) and the field."""
    src = str(source)
    if not isinstance(data, dict):
        raise UserError(
            f"{src}: expected a mapping of task fields at the top level, got {type(data).__name__}"
        )
    allowed = set(_REQUIRED_FIELDS) | set(_OPTIONAL_FIELDS)
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise UserError(
            f"{src}: unknown field(s) {', '.join(repr(k) for k in unknown)}; "
            f"allowed fields: {', '.join(sorted(allowed))}"
        )
    missing = [k for k in _REQUIRED_FIELDS if k not in data]
    if missing:
        raise UserError(f"{src}: missing field(s) {', '.join(repr(k) for k in missing)}")

    name = _get_str(data, "name", src)
    assert name is not None
    if expected_name is not None and name != expected_name:
        raise _field_error(src, "name", f"'{name}' does not match the file name '{expected_name}'")
    columns = data["columns"]
    if (
        not isinstance(columns, dict)
        or not columns
        or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in columns.items())
    ):
        raise _field_error(src, "columns", f"expected a mapping role -> release column name, got {columns!r}")
    bad_roles = sorted(set(columns) - set(COLUMN_ROLES))
    if bad_roles:
        raise _field_error(
            src, "columns", f"unknown role(s) {', '.join(bad_roles)}; known roles: {', '.join(COLUMN_ROLES)}"
        )
    template = _get_str(data, "prompt_template", src)
    assert template is not None
    try:
        template.format(question="?")
    except (KeyError, IndexError, ValueError) as exc:
        raise _field_error(
            src,
            "prompt_template",
            f"only the placeholder {{question}} is allowed ({exc!r}); write {{{{ for a brace",
        ) from None
    answer_mode = _get_str(data, "answer_mode", src)
    if answer_mode not in ANSWER_MODES:
        raise _field_error(
            src, "answer_mode", f"expected one of {', '.join(ANSWER_MODES)}, got {answer_mode!r}"
        )
    choices = _get_str_list(data, "choices", src)
    if answer_mode == "choices" and len(choices) < 2:
        raise _field_error(src, "choices", "answer_mode 'choices' needs at least two choices")
    if answer_mode == "generate" and choices:
        raise _field_error(src, "choices", "choices are only used with answer_mode 'choices'")
    description = data["description"]
    if not isinstance(description, str):
        raise _field_error(src, "description", f"expected a string, got {description!r}")
    return TaskConfig(
        name=name,
        description=" ".join(description.split()),
        adapter=_get_str(data, "adapter", src) or "",
        hf_dataset=_get_str(data, "hf_dataset", src, nullable=True),
        split=_get_str(data, "split", src) or "",
        columns=dict(columns),
        prompt_template=template,
        max_new_tokens=_get_int(data, "max_new_tokens", src, 1),
        stop=_get_str_list(data, "stop", src),
        answer_mode=answer_mode,
        choices=choices,
        scorer=_get_str(data, "scorer", src) or "",
        synthetic_n=_get_int(data, "synthetic_n", src, 1),
        synthetic_seed=_get_int(data, "synthetic_seed", src, 0),
        hf_config=_get_str(data, "hf_config", src, nullable=True),
        primary_metric=_get_str(data, "primary_metric", src) or "",
        meta_columns=_get_str_list(data, "meta_columns", src),
    )


@dataclass
class Sample:
    """One evaluation item: an image, the prompt and the references it is scored against."""

    question_id: str
    image_key: str
    question: str
    prompt: str
    references: list[str]
    meta: dict[str, Any]
    image_bytes: bytes | None = field(default=None, repr=False)
    image_path: str | None = None
    reference_fields: dict[str, Any] = field(default_factory=dict)
    """The task-specific fields of `reference_row` (answer/answers/category/gt_objects)."""

    def load_image(self) -> PILImage.Image:
        """Decode the image as RGB; a missing or corrupt image raises `SampleError`."""
        from PIL import Image

        prefix = f"cannot read image for question_id {self.question_id}"
        try:
            if self.image_bytes is not None:
                with Image.open(io.BytesIO(self.image_bytes)) as image:
                    return image.convert("RGB")
            if self.image_path:
                with Image.open(self.image_path) as image:
                    return image.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise SampleError(f"{prefix}: {type(exc).__name__}: {exc}") from exc
        raise SampleError(f"{prefix}: the row has neither image bytes nor an image path")

    def reference_row(self) -> dict[str, Any]:
        """The reference row that `vlmbench.metrics.score_task` expects (plus the question id)."""
        return {"question_id": self.question_id, **self.reference_fields}


@dataclass(frozen=True)
class DataInfo:
    """Where a task's samples came from.

    ``source`` is ``local:<dir>``, ``hf-cache:<repo id>`` or ``synthetic:<dir>``; ``fingerprint`` is a
    sha256 over the data files and the task config.
    """

    source: str
    fingerprint: str
    synthetic: bool
    meta: dict[str, Any]


def as_text(value: Any) -> str:
    """A cell as stripped text ('' for None; 3.0 → '3')."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


class TaskAdapter:
    """The generic adapter: a question, an image and one (``answer``) or several (``answers``) references.

    Subclasses override `parse_row` (and perhaps `assign_ids`, `empty_reference_fields`) for families
    with other row shapes.
    """

    family: ClassVar[str] = "generic"
    required_roles: ClassVar[tuple[str, ...]] = ("question", "image")
    """Roles the YAML's ``columns`` must map (besides those checked in `check_columns`)."""

    def __init__(self, config: TaskConfig, source_file: Path | None = None) -> None:
        self.config = config
        self.source_file = source_file
        self.check_columns()

    # --- configuration ---------------------------------------------------------------------------

    def check_columns(self) -> None:
        """Validate the YAML's column roles for this family; raise `UserError` naming the file."""
        roles = set(self.config.columns)
        src = str(self.source_file or f"task '{self.config.name}'")
        missing = [r for r in self.required_roles if r not in roles]
        if missing:
            raise _field_error(
                src, "columns", f"the '{self.family}' adapter needs the role(s) {', '.join(missing)}"
            )
        if self.family == "generic" and ("answer" in roles) == ("answers" in roles):
            raise _field_error(src, "columns", "map exactly one of the roles 'answer' and 'answers'")

    def required_columns(self) -> tuple[str, ...]:
        """Release columns that must be present: the layout's list for this task plus the mapped roles
        that are not optional."""
        from vlmbench.data.layout import RELEASE_COLUMNS

        needed = list(RELEASE_COLUMNS.get(self.config.name, ()))
        for role, column in self.config.columns.items():
            # image_key is optional (the image bytes are hashed without it); so is a question id that
            # the release does not have (e.g. ChartQA): the row number stands in for it.
            optional = role == "image_key" or (role == "question_id" and column not in needed)
            if not optional and column not in needed:
                needed.append(column)
        return tuple(needed)

    # --- loading ---------------------------------------------------------------------------------

    def load(
        self,
        data_dir: Path | None = None,
        limit: int | None = None,
        cache_dir: Path | None = None,
        synthetic_n: int | None = None,
    ) -> tuple[list[Sample], DataInfo]:
        """Read the task's samples.

        With ``data_dir``: that directory (any layout `datasets` reads). Without: the real release in
        the local Hugging Face cache, else the bundled synthetic set under ``cache_dir`` (default
        `default_cache_dir`), generated on first use with ``synthetic_n`` samples (default
        ``config.synthetic_n``). ``limit`` keeps the first N samples in file order.
        """
        from vlmbench.data import loaders

        if limit is not None and limit < 1:
            raise UserError(f"--limit must be a positive integer, got {limit}")
        table = loaders.resolve_source(
            self.config,
            data_dir=data_dir,
            cache_dir=cache_dir,
            synthetic_n=synthetic_n,
            required_columns=self.required_columns(),
        )
        present = set(table.column_names)
        missing = [c for c in self.required_columns() if c not in present]
        if missing:
            raise UserError(
                f"the data at {table.root} for task '{self.config.name}' lacks the column(s) "
                f"{', '.join(missing)}; expected the columns of {self.config.hf_dataset or 'the task release'}: "
                f"{', '.join(self.required_columns())} (found: {', '.join(sorted(present))})"
            )
        rows = table.rows(exclude=(self._image_column(),))
        samples: list[Sample] = []
        malformed: list[str] = []
        for index, row in enumerate(rows):
            sample = self.build_sample(index, row)
            if "error" in sample.meta:
                malformed.append(sample.meta["error"])
            samples.append(sample)
        if not samples:
            raise UserError(f"the data at {table.root} for task '{self.config.name}' has no rows")
        if len(malformed) == len(samples):
            raise UserError(
                f"all {len(samples)} rows at {table.root} are unusable for task '{self.config.name}' "
                f"(first: {malformed[0]}); is this the right split ({self.config.split}) of "
                f"{self.config.hf_dataset or 'the release'}?"
            )
        if malformed:
            logger.warning(
                "%s: %d of %d rows are malformed and will be recorded as errors (first: %s)",
                self.config.name,
                len(malformed),
                len(samples),
                malformed[0],
            )
        self.assign_ids(samples, str(table.root))
        if limit is not None:
            samples = samples[:limit]
        self.attach_images(samples, table)
        info = DataInfo(
            source=table.source,
            fingerprint=loaders.fingerprint(table.files, table.root, self.config),
            synthetic=table.synthetic,
            meta={
                "path": str(table.root),
                "split": self.config.split,
                "rows": len(rows),
                "malformed": len(malformed),
                "files": [p.relative_to(table.root).as_posix() for p in table.files],
                **({"generator": table.meta} if table.meta else {}),
            },
        )
        logger.info(
            "%s: %d samples from %s%s",
            self.config.name,
            len(samples),
            info.source,
            " (synthetic)" if info.synthetic else "",
        )
        return samples, info

    def _image_column(self) -> str:
        return self.config.columns["image"]

    def attach_images(self, samples: list[Sample], table: ReleaseTable) -> None:
        """Fill ``image_bytes``/``image_path`` (and a content-hash ``image_key`` where the data has no
        image id) for the kept samples; images are read undecoded."""
        images = table.images(self._image_column(), len(samples))
        for sample, image in zip(samples, images, strict=True):
            sample.image_bytes, sample.image_path = image
            if not sample.image_key:
                if sample.image_bytes is not None:
                    sample.image_key = "sha1:" + hashlib.sha1(sample.image_bytes).hexdigest()[:16]
                else:
                    sample.image_key = sample.image_path or f"row:{sample.question_id}"

    def build_sample(self, index: int, row: Mapping[str, Any]) -> Sample:
        """Turn one row (without its image) into a `Sample`; a malformed row gets ``meta["error"]``."""
        cols = self.config.columns
        qid_col = cols.get("question_id")
        qid = as_text(row.get(qid_col)) if qid_col and qid_col in row else str(index)
        key_col = cols.get("image_key")
        image_key = as_text(row.get(key_col)) if key_col and key_col in row else ""
        meta: dict[str, Any] = {}
        for name in self.config.meta_columns:
            if name in row:
                meta[name] = row[name]
        question = ""
        references: list[str] = []
        fields: dict[str, Any] = {}
        try:
            if not qid:
                qid = f"row-{index}"  # unique stand-in so the row is still recorded
                raise MalformedRow("empty question id")
            question, references, fields = self.parse_row(row, meta)
        except MalformedRow as exc:
            meta["error"] = f"row {index} (question_id {qid}): {exc}"
            fields = self.empty_reference_fields(meta)
        return Sample(
            question_id=qid,
            image_key=image_key,
            question=question,
            prompt=self.config.build_prompt(question),
            references=references,
            meta=meta,
            reference_fields=fields,
        )

    def empty_reference_fields(self, meta: Mapping[str, Any]) -> dict[str, Any]:
        """The reference fields of a malformed row (so `Sample.reference_row` keeps its shape)."""
        return {"answers": []} if "answers" in self.config.columns else {"answer": ""}

    def parse_question(self, row: Mapping[str, Any]) -> str:
        """The row's question; empty → `MalformedRow`."""
        question = as_text(row.get(self.config.columns["question"]))
        if not question:
            raise MalformedRow("empty question")
        return question

    def parse_answers(self, value: Any) -> list[str]:
        """The reference strings of an ``answers`` cell (a list of strings)."""
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, Sequence) or isinstance(value, bytes):
            raise MalformedRow(f"expected a list of answers, got {type(value).__name__}")
        answers = [as_text(a) for a in value if a is not None]
        return [a for a in answers if a]

    def parse_row(
        self, row: Mapping[str, Any], meta: dict[str, Any]
    ) -> tuple[str, list[str], dict[str, Any]]:
        """(question, references, reference fields) of one row; raise `MalformedRow` when unusable."""
        question = self.parse_question(row)
        cols = self.config.columns
        if "answers" in cols:
            value = row.get(cols["answers"])
            if value is None:
                raise MalformedRow("no reference answers")
            answers = self.parse_answers(value)
            if not answers:
                raise MalformedRow("no reference answers")
            return question, answers, {"answers": answers}
        answer = as_text(row.get(cols["answer"]))
        if not answer:
            raise MalformedRow("empty answer")
        return question, [answer], {"answer": answer}

    def assign_ids(self, samples: list[Sample], where: str) -> None:
        """Check that question ids are unique; duplicates are a `UserError` naming them."""
        duplicates = duplicate_ids(s.question_id for s in samples)
        if duplicates:
            raise UserError(
                f"duplicate question ids in {where} for task '{self.config.name}': "
                f"{', '.join(duplicates[:10])}{' ...' if len(duplicates) > 10 else ''} "
                f"({len(duplicates)} in all); each question needs its own id"
            )

    # --- scoring ---------------------------------------------------------------------------------

    def score(self, rows: list[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
        """Score prediction rows with the task's official metric (`vlmbench.metrics.score_task`)."""
        from vlmbench.metrics import score_task

        return score_task(self.config.scorer, rows, seed=seed)


def duplicate_ids(ids: Any) -> list[str]:
    """The ids that occur more than once, in first-repeat order."""
    seen: set[str] = set()
    dups: dict[str, None] = {}
    for qid in ids:
        if qid in seen:
            dups[qid] = None
        seen.add(qid)
    return list(dups)
