"""AMBER: one task over a query file of the release (the YAML's ``split``: all, generative,
discriminative, ...). Generative rows are scored against their ``truth``/``hallu`` objects with the
release's word lists (``relation.json``, ``safe_words.txt``), discriminative rows against yes/no.
The rows come from `vlmbench.data.releases.read_amber`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from vlmbench.metrics.amber import GENERATIVE
from vlmbench.tasks.base import DataInfo, MalformedRow, Sample, TaskAdapter, as_text


class Adapter(TaskAdapter):
    """AMBER rows: query, image, ``amber_type`` and its ground truth."""

    family: ClassVar[str] = "amber"
    required_roles: ClassVar[tuple[str, ...]] = ("question", "image")
    _association: dict[str, list[str]] | None = None
    _safe_words: list[str] | None = None

    def required_columns(self) -> tuple[str, ...]:
        return (*super().required_columns(), "amber_type", "answer", "truth", "hallu")

    def load(
        self,
        data_dir: Path | None = None,
        limit: int | None = None,
        cache_dir: Path | None = None,
        synthetic_n: int | None = None,
    ) -> tuple[list[Sample], DataInfo]:
        """The release's word lists first (the generative rows' references), then the rows."""
        from vlmbench.data.loaders import default_cache_dir
        from vlmbench.data.releases import amber_vocabulary

        root = (
            Path(data_dir).expanduser()
            if data_dir is not None
            else (Path(cache_dir) if cache_dir else default_cache_dir()) / "releases" / self.config.name
        )
        if root.is_dir():  # else the loader's error names the folder and what to download
            self._association, self._safe_words = amber_vocabulary(root)
        return super().load(data_dir, limit=limit, cache_dir=cache_dir, synthetic_n=synthetic_n)

    def parse_row(
        self, row: Mapping[str, Any], meta: dict[str, Any]
    ) -> tuple[str, list[str], dict[str, Any]]:
        question = self.parse_question(row)
        amber_type = as_text(row.get("amber_type"))
        meta["amber_type"] = amber_type
        if amber_type == GENERATIVE:
            truth = [as_text(t) for t in row.get("truth") or []]
            hallu = [as_text(t) for t in row.get("hallu") or []]
            if self._association is None or self._safe_words is None:
                raise MalformedRow("the release's relation.json / safe_words.txt were not read")
            fields = {"amber_type": amber_type, "truth": truth, "hallu": hallu,
                      "association": self._association, "safe_words": self._safe_words}  # fmt: skip
            return question, truth, fields
        answer = as_text(row.get("answer")).lower()
        if answer not in ("yes", "no"):
            raise MalformedRow(f"discriminative truth {answer!r} is neither yes nor no")
        return question, [answer], {"amber_type": amber_type, "answer": answer}

    def empty_reference_fields(self, meta: Mapping[str, Any]) -> dict[str, Any]:
        return {"amber_type": meta.get("amber_type", ""), "answer": ""}
