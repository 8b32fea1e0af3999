"""Jinja2 setup shared by the report and the leaderboard: autoescaping on, safe JSON in <script>.

Templates and static assets live at the repository root in ``reports/`` and ``leaderboard/`` (a wheel
carries a copy; `vlmbench.resources` finds either).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from vlmbench.report.metricspec import fmt_count, fmt_number, fmt_p
from vlmbench.resources import bundled_dir

# Characters that must not appear raw inside an inline <script> (HTML parser / JS line terminators).
_SCRIPT_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def asset_dir(name: str) -> Path:
    """``reports/`` or ``leaderboard/`` (see `vlmbench.resources`); UserError when neither copy exists."""
    return bundled_dir(name)


def _json_ready(value: Any) -> Any:
    """Replace NaN/inf by None (JSON has no such numbers) and tuples by lists, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def json_text(value: Any, *, indent: int | None = None) -> str:
    """Plain JSON text (for data.json files); compact (no spaces after separators) unless ``indent``."""
    separators = (",", ":") if indent is None else (",", ": ")
    return json.dumps(
        _json_ready(value), ensure_ascii=False, indent=indent, separators=separators, allow_nan=False
    )


def script_json(value: Any) -> Markup:
    """JSON that is safe inside ``<script type="application/json">``: ``<``, ``>``, ``&``, U+2028/9 escaped.

    The escapes are JSON string escapes, so ``JSON.parse`` yields the original text; no sequence
    such as ``</script>`` or ``<!--`` can appear in the output.
    """
    text = json_text(value)
    for raw, escaped in _SCRIPT_ESCAPES.items():
        text = text.replace(raw, escaped)
    return Markup(text)  # noqa: S704 - every HTML-significant character is escaped above


def nonce_for(*parts: str) -> str:
    """A deterministic CSP nonce for one rendered page (same input -> same page bytes)."""
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()
    return digest[:24]


def make_environment(folder: Path) -> Environment:
    """A Jinja2 environment over ``folder`` with autoescaping for every template and our filters."""
    env = Environment(
        loader=FileSystemLoader(str(folder)),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["num"] = fmt_number
    env.filters["count"] = fmt_count
    env.filters["pval"] = fmt_p
    env.filters["script_json"] = script_json
    return env
