"""Referring-expression grounding (RefCOCO-style): the prompt names an object by an expression, the
model answers with a box, the scorer computes its IoU with the object's ``bbox``.

Release rows (lmms-lab/RefCOCO, and the synthetic set in its layout) hold one object with a list of
expressions; the loader repeats each row once per expression (`vlmbench.data.releases.explode_expressions`)
and `Adapter.assign_ids` gives the k-th repeat the k-th expression and the id ``<question_id>/<k>``.
The image size the scorer needs (to read boxes in fractions or on Qwen's 0-1000 grid) comes from the
``width``/``height`` columns when present, else from the image header.
"""

from __future__ import annotations

import io
import logging
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from vlmbench.metrics.scorer import finite
from vlmbench.tasks.base import MalformedRow, Sample, TaskAdapter, as_text

if TYPE_CHECKING:
    from vlmbench.data.loaders import ReleaseTable

logger = logging.getLogger(__name__)


class Adapter(TaskAdapter):
    """Grounding rows: expressions (``answers`` role), ``bbox`` [x, y, w, h] in pixels, image."""

    family: ClassVar[str] = "grounding"
    required_roles: ClassVar[tuple[str, ...]] = ("answers", "image")

    def required_columns(self) -> tuple[str, ...]:
        return (*super().required_columns(), "bbox")

    def parse_row(
        self, row: Mapping[str, Any], meta: dict[str, Any]
    ) -> tuple[str, list[str], dict[str, Any]]:
        value = row.get(self.config.columns["answers"])
        expressions = self.parse_answers(value) if value is not None else []
        if not expressions:
            raise MalformedRow("no referring expression")
        box = row.get("bbox")
        if not isinstance(box, (list, tuple)) or len(box) != 4 or any(finite(v) is None for v in box):
            raise MalformedRow(f"bbox must be [x, y, w, h] in pixels, got {box!r}")
        if float(box[2]) <= 0 or float(box[3]) <= 0:
            raise MalformedRow(f"bbox {list(box)!r} has no area")
        meta["expressions"] = expressions
        width, height = finite(row.get("width")), finite(row.get("height"))
        size = [width, height] if width and height else None
        fields = {"bbox": [float(v) for v in box], "image_size": size, "expression": expressions[0]}
        return expressions[0], [as_text(expressions[0])], fields

    def empty_reference_fields(self, meta: Mapping[str, Any]) -> dict[str, Any]:
        return {"bbox": [0.0, 0.0, 1.0, 1.0], "image_size": None, "expression": ""}

    def assign_ids(self, samples: list[Sample], where: str) -> None:
        """The k-th repeat of an object's row asks its k-th expression, as ``<question_id>/<k>``
        (an object with one expression keeps its id)."""
        totals = Counter(s.question_id for s in samples)
        seen: Counter[str] = Counter()
        for sample in samples:
            qid = sample.question_id
            k = seen[qid]
            seen[qid] += 1
            if totals[qid] == 1:
                continue
            expressions = sample.meta.get("expressions") or []
            if k < len(expressions):
                sample.question = expressions[k]
                sample.prompt = self.config.build_prompt(sample.question)
                sample.references = [expressions[k]]
                sample.reference_fields = {**sample.reference_fields, "expression": expressions[k]}
            sample.question_id = f"{qid}/{k}"
        super().assign_ids(samples, where)

    def attach_images(self, samples: list[Sample], table: ReleaseTable) -> None:
        """Images as the base class attaches them, then each sample's image size where the row has none."""
        super().attach_images(samples, table)
        from PIL import Image

        for sample in samples:
            if sample.reference_fields.get("image_size") or sample.meta.get("error"):
                continue
            try:
                source = (
                    io.BytesIO(sample.image_bytes) if sample.image_bytes is not None else sample.image_path
                )
                if source is None:
                    continue
                with Image.open(source) as image:  # reads the header only
                    sample.reference_fields["image_size"] = [image.width, image.height]
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                logger.debug("no image size for %s: %s", sample.question_id, exc)
