"""Task configs, samples and the generic task adapter.

A task is one YAML file in the repository's top-level ``tasks/`` directory (parsed into `TaskConfig`)
plus an adapter class that turns rows of the task's data set into `Sample`s and scores predictions.
The generic `TaskAdapter` here covers question → answer(s) tasks (docvqa, textvqa, chartqa, ocr);
a family whose rows need custom parsing has its own module ``vlmbench/tasks/<family>.py`` exposing
``Adapter`` (pope, chair, vqav2), named by the YAML's ``adapter`` field ("generic" names this one).

Where the YAML files are found (see `vlmbench.tasks.registry.default_tasks_dir`): an explicit
``tasks_dir`` argument, else ``$VLMBENCH_TASKS_DIR``, else the bundled ``tasks/`` folder as
`vlmbench.resources` finds it: the checkout's own (source checkout, editable install), else the copy
that the wheel build puts inside the package. Keeping one canonical copy in ``tasks/`` means a task is
edited in one place.

The YAML schema and its column roles are in `vlmbench.tasks.config`.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import logging
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from vlmbench.errors import UserError
from vlmbench.tasks.config import TaskConfig, field_error

if TYPE_CHECKING:
    from PIL import Image as PILImage

    from vlmbench.data.loaders import ReleaseTable
    from vlmbench.metrics.scorer import Scorer

logger = logging.getLogger(__name__)


class SampleError(Exception):
    """A failure confined to one sample (e.g. an unreadable image): the runner records it and goes on."""


class MalformedRow(Exception):
    """Raised by an adapter's row parser: the row cannot be evaluated (the reason is the message)."""


MALFORMED_ERROR_PREFIX = "malformed row: "
"""How a malformed row's `error` starts in the sample logs (it is counted in errors, not scored)."""


@dataclass(frozen=True)
class SampleImage:
    """One image of a sample, undecoded: its feature-cache key and its bytes or file path."""

    key: str
    image_bytes: bytes | None = field(default=None, repr=False)
    image_path: str | None = None

    def load(self, question_id: str) -> PILImage.Image:
        """Decode as RGB; a missing or corrupt image raises `SampleError` naming the question."""
        from PIL import Image

        prefix = f"cannot read image for question_id {question_id}"
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


@dataclass
class Sample:
    """One evaluation item: its image(s), the prompt and the references it is scored against.

    `image_key` / `image_bytes` / `image_path` are the (first) image; a multi-image sample holds the
    others in `extra_images`, in prompt order (its prompt places them with `<image>` markers).
    `image_keys` and `load_images` cover all of them."""

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
    extra_images: list[SampleImage] = field(default_factory=list)
    """The images after the first one (multi-image tasks); empty for one-image samples."""

    @property
    def images(self) -> list[SampleImage]:
        """Every image of the sample, in prompt order."""
        return [SampleImage(self.image_key, self.image_bytes, self.image_path), *self.extra_images]

    @property
    def image_keys(self) -> list[str]:
        """The feature-cache key of every image, in prompt order."""
        return [image.key for image in self.images]

    def load_image(self) -> PILImage.Image:
        """Decode the (first) image as RGB; a missing or corrupt image raises `SampleError`."""
        return self.images[0].load(self.question_id)

    def load_images(self) -> list[PILImage.Image]:
        """Decode every image as RGB, in prompt order; `SampleError` for the first unreadable one."""
        return [image.load(self.question_id) for image in self.images]

    def reference_row(self) -> dict[str, Any]:
        """The reference row that `vlmbench.metrics.score_task` expects (plus the question id)."""
        return {"question_id": self.question_id, **self.reference_fields}


def content_key(image_bytes: bytes | None, image_path: str | None, fallback: str) -> str:
    """The cache key of an image the data gives no id for: a hash of its bytes, else its path."""
    if image_bytes is not None:
        return "sha1:" + hashlib.sha1(image_bytes).hexdigest()[:16]
    return image_path or fallback


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
    """A cell as stripped text: '' for None (and NaN, how pandas-made files mark a missing value),
    3.0 → '3', a binary cell (Parquet ``binary``) decoded as UTF-8.

    A cell that holds no text (bytes that are not UTF-8, a list, a mapping, an image) raises
    `MalformedRow`: its ``str()`` (``"b'...'"``, ``"[...]"``) must never become a prompt or a reference.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise MalformedRow(
                f"a binary cell is not UTF-8 text (byte {exc.start} is 0x{raw[exc.start]:02x})"
            ) from None
    if isinstance(value, float) and math.isnan(value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (numbers.Number, datetime.date, datetime.time)):
        return str(value).strip()
    raise MalformedRow(f"expected text, got a {type(value).__name__}")


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
            raise field_error(
                src, "columns", f"the '{self.family}' adapter needs the role(s) {', '.join(missing)}"
            )
        if self.family == "generic" and ("answer" in roles) == ("answers" in roles):
            raise field_error(src, "columns", "map exactly one of the roles 'answer' and 'answers'")

    def required_columns(self) -> tuple[str, ...]:
        """Release columns that must be present: the layout's list for this task plus the mapped roles
        that are not optional."""
        from vlmbench.data.layout import RELEASE_COLUMNS

        needed = list(RELEASE_COLUMNS.get(self.config.name, ()))
        for role, column in self.config.columns.items():
            # image_key is optional (the image bytes are hashed without it); so is a question id that
            # the release does not have (e.g. ChartQA): the row number stands in for it.
            optional = role == "image_key" or (role == "question_id" and column not in needed)
            columns = self._extra_image_columns() if role == "extra_images" else (column,)
            needed.extend(c for c in columns if not optional and c not in needed)
        return tuple(needed)

    # --- loading ---------------------------------------------------------------------------------

    def read_samples(
        self,
        data_dir: Path | None,
        limit: int | None,
        cache_dir: Path | None,
        synthetic_n: int | None,
    ) -> tuple[list[Sample], DataInfo]:
        """`load` without the clean-up: opens the source, builds the samples and their `DataInfo`."""
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
        rows = table.rows(exclude=(self._image_column(), *self._extra_image_columns()))
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
        return samples, info

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

        samples, info = self.read_samples(data_dir, limit, cache_dir, synthetic_n)
        # The table is gone with `read_samples`' frame; the samples hold what they need. Arrow keeps
        # the freed read buffers pooled unless told to hand them back.
        loaders.release_arrow_memory()
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

    def _extra_image_columns(self) -> tuple[str, ...]:
        """The columns of a sample's further images (the ``extra_images`` role, comma-separated)."""
        value = self.config.columns.get("extra_images", "")
        return tuple(c.strip() for c in value.split(",") if c.strip())

    def attach_images(self, samples: list[Sample], table: ReleaseTable) -> None:
        """Fill ``image_bytes``/``image_path`` (and a content-hash ``image_key`` where the data has no
        image id) and the ``extra_images`` of the kept samples; images are read undecoded."""
        from vlmbench.data.loaders import undecoded

        # Releases such as POPE store the image in every row (18 questions per image): rows with equal
        # bytes share one object, so the samples hold each distinct image once, not once per question.
        shared: dict[bytes, bytes] = {}
        images = table.images(self._image_column(), len(samples))
        for sample, (data, path) in zip(samples, images, strict=True):
            sample.image_bytes = shared.setdefault(data, data) if data is not None else None
            sample.image_path = path
            if not sample.image_key:
                sample.image_key = content_key(data, path, fallback=f"row:{sample.question_id}")
        for number, column in enumerate(self._extra_image_columns(), start=2):
            table.dataset = undecoded(table.dataset, column)
            for sample, (data, path) in zip(samples, table.images(column, len(samples)), strict=True):
                key = content_key(data, path, fallback=f"row:{sample.question_id}:image{number}")
                sample.extra_images.append(
                    SampleImage(key, shared.setdefault(data, data) if data is not None else None, path)
                )

    def build_sample(self, index: int, row: Mapping[str, Any]) -> Sample:
        """Turn one row (without its image) into a `Sample`; a malformed row gets ``meta["error"]``."""
        cols = self.config.columns
        qid_col = cols.get("question_id")
        key_col = cols.get("image_key")
        meta: dict[str, Any] = {}
        for name in self.config.meta_columns:
            if name in row:
                meta[name] = row[name]
        qid = f"row-{index}"  # unique stand-in so a row without a usable id is still recorded
        image_key = ""
        question = ""
        references: list[str] = []
        fields: dict[str, Any] = {}
        try:
            try:
                qid = as_text(row.get(qid_col)) if qid_col and qid_col in row else str(index)
            except MalformedRow as exc:
                raise MalformedRow(f"question id: {exc}") from None
            if not qid:
                qid = f"row-{index}"
                raise MalformedRow("empty question id")
            try:
                image_key = as_text(row.get(key_col)) if key_col and key_col in row else ""
            except MalformedRow:
                image_key = ""  # the image's content hash stands in for an unusable image id
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
        """The row's question; empty or not text → `MalformedRow`."""
        try:
            question = as_text(row.get(self.config.columns["question"]))
        except MalformedRow as exc:
            raise MalformedRow(f"question: {exc}") from None
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

    @property
    def scorer(self) -> Scorer:
        """The metric family the YAML's ``scorer`` field names (`vlmbench.metrics.registry.resolve_scorer`;
        a ``file.py:Class`` path is read relative to the YAML's folder)."""
        from vlmbench.metrics.registry import resolve_scorer

        base_dir = self.source_file.parent if self.source_file is not None else None
        source = str(self.source_file or f"task '{self.config.name}'")
        return resolve_scorer(self.config.scorer, base_dir=base_dir, source=source)

    def score(self, rows: list[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
        """Score prediction rows with the task's scorer."""
        return self.scorer.score(rows, seed=seed)


def duplicate_ids(ids: Any) -> list[str]:
    """The ids that occur more than once, in first-repeat order."""
    seen: set[str] = set()
    dups: dict[str, None] = {}
    for qid in ids:
        if qid in seen:
            dups[qid] = None
        seen.add(qid)
    return list(dups)
