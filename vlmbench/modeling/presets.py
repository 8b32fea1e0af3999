"""Model presets: the `models/*.yaml` configs, their bundled demo checkpoints, and random-weight builds.

A preset uses its bundled demo checkpoint (`models/checkpoints/<name>/`) when there is one, else random
weights. Turning a MODEL argument into a loaded model is `vlmbench.modeling.resolve`'s job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from vlmbench.errors import UserError
from vlmbench.modeling.config import VLMConfig
from vlmbench.resources import bundled_dir

# Keys of a preset file that are documentation, not model fields.
_DOC_KEYS = ("full_size",)


def models_dir() -> Path:
    """The bundled `models/` folder: the checkout's own, or the copy inside an installed wheel."""
    return bundled_dir("models")


def preset_names(directory: Path | None = None) -> list[str]:
    directory = directory or models_dir()
    return sorted(p.stem for p in directory.glob("*.yaml"))


def load_preset(name: str, directory: Path | None = None, full_size: bool = False) -> VLMConfig:
    """The preset's config (or its documented full-size variant)."""
    directory = directory or models_dir()
    path = directory / f"{name}.yaml"
    if not path.exists():
        raise UserError(
            f"unknown preset '{name}'; presets: "
            f"{', '.join(preset_names(directory)) or '(none found in ' + str(directory) + ')'}"
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML: {exc}") from None
    full = data.pop("full_size", None)
    for key in _DOC_KEYS:
        data.pop(key, None)
    if full_size:
        if not full:
            raise UserError(f"preset {name} documents no full_size config")
        data = {**data, **full}
    return VLMConfig.from_dict(data, source=str(path))


def demo_checkpoint(name: str, directory: Path | None = None) -> Path | None:
    path = (directory or models_dir()) / "checkpoints" / name
    return path if (path / "model.safetensors").exists() else None


def default_tokenizer():
    """A deterministic byte-level tokenizer for randomly initialised presets (no corpus needed)."""
    from vlmbench.modeling.tokenizer import train_tokenizer

    return train_tokenizer([], vocab_size=512)


def build_random(config: VLMConfig, seed: int = 0, tokenizer: Any = None):
    """A VLM with seeded random weights (the global RNG state is restored afterwards)."""
    import torch

    from vlmbench.modeling.vlm import VLM

    tokenizer = tokenizer or default_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VLM(config, tokenizer)
