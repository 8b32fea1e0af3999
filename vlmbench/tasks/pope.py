"""POPE (object-hallucination probing): yes/no questions in three negative-sampling splits.

Rows carry a ``category`` (random / popular / adversarial) that the scorer splits metrics by. Question
ids must be unique over the whole set; a release whose ids restart in each split gets ids of the form
``<category>/<question_id>``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from vlmbench.errors import UserError
from vlmbench.metrics.pope import POPE_SPLITS, parse_ground_truth
from vlmbench.tasks.base import MalformedRow, Sample, TaskAdapter, as_text, duplicate_ids

logger = logging.getLogger(__name__)


class Adapter(TaskAdapter):
    """POPE rows: question, yes/no answer, category; the reference row carries the category."""

    family: ClassVar[str] = "pope"
    required_roles: ClassVar[tuple[str, ...]] = ("question", "answer", "category", "image")

    def parse_row(
        self, row: Mapping[str, Any], meta: dict[str, Any]
    ) -> tuple[str, list[str], dict[str, Any]]:
        """Validate the category (unknown → `UserError`) and the yes/no answer (else `MalformedRow`)."""
        category = as_text(row.get(self.config.columns["category"])).lower()
        if category not in POPE_SPLITS:
            raise UserError(
                f"unknown POPE category {category!r} in the {self.config.name} data; "
                f"valid splits: {', '.join(sorted(POPE_SPLITS))}"
            )
        meta["category"] = category
        question = self.parse_question(row)
        answer = as_text(row.get(self.config.columns["answer"])).lower()
        try:
            parse_ground_truth(answer)  # the scorer's rule for a POPE label
        except ValueError:
            raise MalformedRow(f"answer {answer!r} is neither yes nor no") from None
        return question, [answer], {"answer": answer, "category": category}

    def empty_reference_fields(self, meta: Mapping[str, Any]) -> dict[str, Any]:
        """A malformed row keeps its category so per-split error counts stay right."""
        return {"answer": "", "category": meta.get("category", "")}

    def assign_ids(self, samples: list[Sample], where: str) -> None:
        """Ids repeated across splits (but unique within each) become ``<category>/<question_id>``."""
        if duplicate_ids(s.question_id for s in samples):
            scoped = [f"{s.meta.get('category', '')}/{s.question_id}" for s in samples]
            if not duplicate_ids(scoped):
                logger.info(
                    "%s: question ids repeat across splits; using <category>/<question_id>", self.config.name
                )
                for sample, qid in zip(samples, scoped, strict=True):
                    sample.question_id = qid
        super().assign_ids(samples, where)
