"""Model presets (`models/*.yaml`) and resolving a MODEL argument to a loaded VLM.

MODEL is a preset name, a vlmbench checkpoint directory, or `hf:<path or repo id>` (released
Hugging Face VLMs; see `vlmbench.modeling.hf`). A preset uses its bundled demo checkpoint
(`models/checkpoints/<name>/`) when there is one, else random weights — callers must say so loudly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

import vlmbench
from vlmbench.errors import UserError
from vlmbench.modeling.config import VLMConfig

log = logging.getLogger(__name__)

# Keys of a preset file that are documentation, not model fields.
_DOC_KEYS = ("full_size",)


def models_dir() -> Path:
    """The repository's `models/` directory (the package is installed editable from the repo)."""
    return Path(vlmbench.__file__).resolve().parents[1] / "models"


def preset_names(directory: Path | None = None) -> list[str]:
    directory = directory or models_dir()
    return sorted(p.stem for p in directory.glob("*.yaml"))


def load_preset(name: str, directory: Path | None = None, full_size: bool = False) -> VLMConfig:
    """The preset's config (or its documented full-size variant)."""
    directory = directory or models_dir()
    path = directory / f"{name}.yaml"
    if not path.exists():
        raise UserError(
            f"unknown model '{name}': not a preset, a checkpoint directory or hf:<path>; "
            f"presets: {', '.join(preset_names(directory)) or '(none found in ' + str(directory) + ')'}"
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


@dataclass
class LoadedModel:
    model: Any  # VLM, or an HF adapter with the same inference interface
    name: str
    preset: str | None
    checkpoint: str | None
    trained: bool


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


def load_model(
    spec: str,
    device: str = "cpu",
    dtype: Any = None,
    seed: int = 0,
    checkpoint: str | None = None,
    attn_implementation: str | None = None,
) -> LoadedModel:
    """Resolve MODEL (preset / checkpoint dir / hf:...) and load it in eval mode.

    `attn_implementation` applies to hf: models only (default: sdpa, flash_attention_2 on CUDA when
    flash_attn imports); vlmbench's own VLM always uses PyTorch SDPA."""
    from vlmbench.modeling.vlm import VLM

    if spec.startswith("hf:"):
        try:
            from vlmbench.modeling.hf import load_hf_model
        except ModuleNotFoundError as exc:
            raise UserError("hf: models need vlmbench.modeling.hf, which this build does not have") from exc
        return load_hf_model(spec[3:], device=device, dtype=dtype, attn_implementation=attn_implementation)
    if checkpoint:
        model = VLM.load(checkpoint, device=device, dtype=dtype)
        preset = spec if spec in preset_names() else None
        return LoadedModel(model, spec, preset, str(checkpoint), True)
    path = Path(spec)
    if path.is_dir():
        model = VLM.load(path, device=device, dtype=dtype)
        return LoadedModel(model, model.config.name, None, str(path), True)
    config = load_preset(spec)
    ckpt = demo_checkpoint(spec)
    if ckpt is not None:
        return LoadedModel(VLM.load(ckpt, device=device, dtype=dtype), spec, spec, str(ckpt), True)
    log.warning(
        "preset %s has no demo checkpoint (models/checkpoints/%s): using RANDOM weights; "
        "its scores are chance level. Train one with `vlmbench train` or pass --checkpoint.",
        spec,
        spec,
    )
    model = build_random(config, seed=seed)
    model.to(device=device, dtype=dtype)
    return LoadedModel(model.eval(), spec, spec, None, False)
