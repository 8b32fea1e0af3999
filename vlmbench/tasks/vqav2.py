"""VQAv2: each question has ten human answers, stored in the release as dicts
``{"answer", "answer_confidence", "answer_id"}``; the references are the ten answer strings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from vlmbench.tasks.base import MalformedRow, TaskAdapter, as_text


class Adapter(TaskAdapter):
    """VQAv2 rows: question, image, ``answers`` as dicts (or plain strings)."""

    family: ClassVar[str] = "vqav2"
    required_roles: ClassVar[tuple[str, ...]] = ("question", "answers", "image")

    def parse_answers(self, value: Any) -> list[str]:
        """The ``answer`` string of each answer dict, in order (duplicates kept: they are votes)."""
        if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
            raise MalformedRow(f"expected a list of answers, got {type(value).__name__}")
        answers = []
        for item in value:
            text = as_text(item.get("answer")) if isinstance(item, Mapping) else as_text(item)
            if text:
                answers.append(text)
        return answers
