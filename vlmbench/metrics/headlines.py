"""The number each task is ranked by, and its direction: one table for the runner, reports and `check`."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

HEADLINES: Mapping[str, tuple[str, bool]] = MappingProxyType(
    {
        "pope": ("f1_mean_of_splits", True),
        "docvqa": ("anls", True),
        "textvqa": ("accuracy", True),
        "vqav2": ("accuracy", True),
        "chartqa": ("relaxed_accuracy", True),
        "ocr": ("exact_match", True),
        "chair": ("chair_i", False),
    }
)
