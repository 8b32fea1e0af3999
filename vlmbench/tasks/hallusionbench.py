"""HallusionBench: yes/no questions on figures; the reference rows carry the release's keys
(``hb_category``, ``hb_subcategory``, ``hb_set_id``, ``hb_figure_id``, ``hb_question_id``) that
question-pair and figure accuracy group by. The rows come from `vlmbench.data.releases.read_hallusionbench`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from vlmbench.metrics.hallusionbench import KEY_FIELDS, ground_truth
from vlmbench.tasks.base import MalformedRow, TaskAdapter, as_text

_KEYS: tuple[str, ...] = tuple(f"hb_{k}" for k in KEY_FIELDS)


class Adapter(TaskAdapter):
    """HallusionBench rows: question, figure, gt_answer ("1"/"0") and the grouping keys."""

    family: ClassVar[str] = "hallusionbench"
    required_roles: ClassVar[tuple[str, ...]] = ("question", "answer", "image")

    def required_columns(self) -> tuple[str, ...]:
        return (*super().required_columns(), *_KEYS)

    def parse_row(
        self, row: Mapping[str, Any], meta: dict[str, Any]
    ) -> tuple[str, list[str], dict[str, Any]]:
        question = self.parse_question(row)
        raw = as_text(row.get(self.config.columns["answer"]))
        try:
            truth = ground_truth(raw)
        except ValueError as exc:
            raise MalformedRow(str(exc)) from None
        keys = {k: as_text(row.get(k)) for k in _KEYS}
        if not all(keys.values()):
            raise MalformedRow(f"missing {', '.join(k for k, v in keys.items() if not v)}")
        return question, [truth], {"answer": raw, **keys}

    def empty_reference_fields(self, meta: Mapping[str, Any]) -> dict[str, Any]:
        return {"answer": "", **{k: "" for k in _KEYS}}
