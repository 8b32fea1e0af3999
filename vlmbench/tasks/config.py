"""The task config schema: one ``tasks/<name>.yaml`` file, parsed and validated into a `TaskConfig`.

Column roles (the keys of ``columns`` in the YAML; values are the release's column names):
``question_id``, ``question``, ``answer`` (one string), ``answers`` (a list), ``image``,
``image_key`` (a column identifying the image, for feature caching; optional: when the data lacks it the
image bytes are hashed), ``extra_images`` (comma-separated columns of a sample's further images, for
multi-image tasks), ``category`` (pope split), ``gt_objects`` (chair). Without a ``question_id``
role the row number (file order) is the question id.

This module depends on nothing else in ``vlmbench.tasks``, so the data loaders can take a `TaskConfig`
without importing the adapters (`vlmbench.tasks.base`), which in turn use the loaders.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmbench.errors import UserError

ANSWER_MODES: tuple[str, ...] = ("generate", "choices")
COLUMN_ROLES: tuple[str, ...] = (
    "question_id",
    "question",
    "answer",
    "answers",
    "image",
    "image_key",
    "extra_images",
    "category",
    "gt_objects",
)


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


def field_error(source: str, name: str, problem: str) -> UserError:
    return UserError(f"{source}: field '{name}': {problem}")


def _get_str(data: Mapping[str, Any], key: str, source: str, *, nullable: bool = False) -> str | None:
    value = data.get(key)
    if value is None and nullable:
        return None
    if not isinstance(value, str) or not value.strip():
        expected = "a non-empty string or null" if nullable else "a non-empty string"
        raise field_error(source, key, f"expected {expected}, got {value!r}")
    return value


def _get_int(data: Mapping[str, Any], key: str, source: str, minimum: int) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise field_error(source, key, f"expected an integer >= {minimum}, got {value!r}")
    return value


def _get_str_list(data: Mapping[str, Any], key: str, source: str) -> tuple[str, ...]:
    value = data.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise field_error(source, key, f"expected a list of non-empty strings, got {value!r}")
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
        raise field_error(src, "name", f"'{name}' does not match the file name '{expected_name}'")
    columns = data["columns"]
    if (
        not isinstance(columns, dict)
        or not columns
        or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in columns.items())
    ):
        raise field_error(src, "columns", f"expected a mapping role -> release column name, got {columns!r}")
    bad_roles = sorted(set(columns) - set(COLUMN_ROLES))
    if bad_roles:
        raise field_error(
            src, "columns", f"unknown role(s) {', '.join(bad_roles)}; known roles: {', '.join(COLUMN_ROLES)}"
        )
    template = _get_str(data, "prompt_template", src)
    assert template is not None
    try:
        template.format(question="?")
    except (KeyError, IndexError, ValueError) as exc:
        raise field_error(
            src,
            "prompt_template",
            f"only the placeholder {{question}} is allowed ({exc!r}); write {{{{ for a brace",
        ) from None
    answer_mode = _get_str(data, "answer_mode", src)
    if answer_mode not in ANSWER_MODES:
        raise field_error(
            src, "answer_mode", f"expected one of {', '.join(ANSWER_MODES)}, got {answer_mode!r}"
        )
    choices = _get_str_list(data, "choices", src)
    if answer_mode == "choices" and len(choices) < 2:
        raise field_error(src, "choices", "answer_mode 'choices' needs at least two choices")
    if answer_mode == "generate" and choices:
        raise field_error(src, "choices", "choices are only used with answer_mode 'choices'")
    description = data["description"]
    if not isinstance(description, str):
        raise field_error(src, "description", f"expected a string, got {description!r}")
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
