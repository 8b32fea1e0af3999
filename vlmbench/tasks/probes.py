"""Attribute / relation / count probes: POPE-style yes/no rows that also carry their ``probe_type``
(color, position, count); ``category`` is the negative-sampling regime, as POPE's split."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from vlmbench.metrics.probes import PROBE_TYPES
from vlmbench.tasks.base import MalformedRow, as_text
from vlmbench.tasks.pope import Adapter as PopeAdapter

PROBE_TYPE_COLUMN = "probe_type"


class Adapter(PopeAdapter):
    """Probe rows: POPE's fields plus the probe type."""

    family: ClassVar[str] = "probes"

    def required_columns(self) -> tuple[str, ...]:
        columns = super().required_columns()
        return columns if PROBE_TYPE_COLUMN in columns else (*columns, PROBE_TYPE_COLUMN)

    def parse_row(
        self, row: Mapping[str, Any], meta: dict[str, Any]
    ) -> tuple[str, list[str], dict[str, Any]]:
        """POPE's checks, then the probe type (unknown → `MalformedRow`)."""
        question, references, fields = super().parse_row(row, meta)
        probe = as_text(row.get(PROBE_TYPE_COLUMN)).lower()
        if probe not in PROBE_TYPES:
            raise MalformedRow(f"probe_type {probe!r} is not one of {', '.join(PROBE_TYPES)}")
        meta[PROBE_TYPE_COLUMN] = probe
        return question, references, {**fields, PROBE_TYPE_COLUMN: probe}

    def empty_reference_fields(self, meta: Mapping[str, Any]) -> dict[str, Any]:
        return {**super().empty_reference_fields(meta), PROBE_TYPE_COLUMN: meta.get(PROBE_TYPE_COLUMN, "")}
