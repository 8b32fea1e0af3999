"""`LoadedModel`: a model in eval mode together with where it came from (what results.json records).

It sits apart from the loaders so that both the preset path (`vlmbench.modeling.resolve`) and the
transformers adapter (`vlmbench.modeling.hf`) can build one without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class LoadedModel:
    model: Any  # VLM, or an HF adapter with the same inference interface (vlmbench.modeling.interface)
    name: str
    preset: str | None
    checkpoint: str | None  # the weights' directory; None for random weights
    trained: bool


__all__ = ["LoadedModel"]
