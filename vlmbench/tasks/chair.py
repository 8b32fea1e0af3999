"""CHAIR (caption hallucination): the model captions an image; the scorer compares the objects it
mentions with the image's annotated objects (``gt_objects``).

There is no question: every sample gets the YAML's fixed prompt, and the image id is the question id.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

from vlmbench.tasks.base import MalformedRow, TaskAdapter, as_text


class Adapter(TaskAdapter):
    """CHAIR rows: image id, image, list of ground-truth object names."""

    family: ClassVar[str] = "chair"
    required_roles: ClassVar[tuple[str, ...]] = ("question_id", "gt_objects", "image")

    def parse_row(
        self, row: Mapping[str, Any], meta: dict[str, Any]
    ) -> tuple[str, list[str], dict[str, Any]]:
        """The references are the object names. A missing list, or a name that is not a COCO category
        (the scorer's vocabulary), is `MalformedRow`; an empty list is valid."""
        value = row.get(self.config.columns["gt_objects"])
        if isinstance(value, str):  # some exports store the list as JSON text
            try:
                value = json.loads(value)
            except ValueError:
                raise MalformedRow("gt_objects is text but not a JSON list") from None
        if value is None:
            raise MalformedRow("no gt_objects")
        if not isinstance(value, (list, tuple)):
            raise MalformedRow(f"gt_objects must be a list of object names, got {type(value).__name__}")
        objects = [as_text(v) for v in value if as_text(v)]
        meta["gt_objects"] = objects
        from vlmbench.metrics.chair import check_categories

        try:  # the scorer only knows COCO category names: catch a bad name now, not after inference
            check_categories(objects)
        except ValueError as exc:
            raise MalformedRow(f"gt_objects: {exc}") from None
        return "", objects, {"gt_objects": objects}

    def empty_reference_fields(self, meta: Mapping[str, Any]) -> dict[str, Any]:
        """A malformed row scores against no objects (it is recorded as an error anyway)."""
        return {"gt_objects": []}
