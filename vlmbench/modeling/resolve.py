"""Resolving a MODEL argument (`vlmbench run/inspect --model`, the lmms-eval plugin) to a loaded model.

MODEL is one of, tried in this order:

- ``hf:<local dir or repo id>``: a released transformers VLM (`vlmbench.modeling.hf`);
- a path to a vlmbench checkpoint directory (what `vlmbench train` / `VLM.save` writes);
- a preset name (``models/<name>.yaml``, see `vlmbench models`): its bundled demo checkpoint
  (``models/checkpoints/<name>/``) when there is one, else seeded random weights, said loudly;
- ``openai:<base_url>[#model id]``: a model served behind an OpenAI-compatible endpoint
  (`vlmbench.modeling.openai_client`); the server is asked for its model list when resolving.

``checkpoint=`` (``--checkpoint``) loads that directory instead of the preset's demo weights.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vlmbench.errors import UserError
from vlmbench.modeling.loaded import LoadedModel
from vlmbench.modeling.presets import build_random, demo_checkpoint, load_preset, preset_names

log = logging.getLogger(__name__)

HF_PREFIX = "hf:"
OPENAI_PREFIX = "openai:"


def load_model(
    spec: str,
    device: str = "cpu",
    dtype: Any = None,
    seed: int = 0,
    checkpoint: str | None = None,
    attn_implementation: str | None = None,
    concurrency: int = 8,
) -> LoadedModel:
    """Resolve MODEL (hf:... / checkpoint dir / preset) and load it in eval mode.

    `attn_implementation` applies to hf: models only (default: sdpa, flash_attention_2 on CUDA when
    flash_attn imports); vlmbench's own VLM always uses PyTorch SDPA. `concurrency` is the number of
    requests an ``openai:`` model keeps in flight. An unknown MODEL is a `UserError` naming it and
    the accepted forms."""
    if spec.startswith(OPENAI_PREFIX):
        from vlmbench.modeling.openai_client import load_openai_model

        return load_openai_model(spec, concurrency=concurrency)
    if spec.startswith(HF_PREFIX):
        from vlmbench.modeling.hf import load_hf_model

        return load_hf_model(
            spec[len(HF_PREFIX) :], device=device, dtype=dtype, attn_implementation=attn_implementation
        )

    from vlmbench.modeling.vlm import VLM

    presets = preset_names()
    if checkpoint:
        model = VLM.load(checkpoint, device=device, dtype=dtype)
        return LoadedModel(model, spec, spec if spec in presets else None, str(checkpoint), True)
    path = Path(spec).expanduser()
    if path.is_dir():
        model = VLM.load(path, device=device, dtype=dtype)
        return LoadedModel(model, model.config.name, None, str(path), True)
    if spec not in presets:
        raise _unknown_model(spec, presets)
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


def check_model_spec(spec: str, checkpoint: str | None = None) -> None:
    """Refuse a MODEL (and ``--checkpoint``) that `load_model` would refuse, without loading anything.

    `vlmbench run` calls this before it reads or generates data. It checks what the name resolves
    to: an ``hf:`` directory or cached repo id, a checkpoint directory's files, a preset name. Files
    that exist but are broken are still found by `load_model`. An ``openai:`` URL is parsed and its
    server asked for its model list (unreachable, refused or unknown model id: `UserError`)."""
    if spec.startswith(OPENAI_PREFIX):
        if checkpoint:
            raise UserError(f"--checkpoint applies to vlmbench models, not {spec}; drop --checkpoint")
        from vlmbench.modeling.openai_client import api_key_from_env, discover_model_id, parse_endpoint

        discover_model_id(parse_endpoint(spec), api_key_from_env())
        return
    if spec.startswith(HF_PREFIX):
        if checkpoint:
            raise UserError(
                f"--checkpoint applies to vlmbench models, not {spec}; drop --checkpoint "
                f"(an {HF_PREFIX} model's weights are in its own directory)"
            )
        from vlmbench.modeling.hf import resolve_hf_path

        resolve_hf_path(spec[len(HF_PREFIX) :])
        return
    from vlmbench.modeling.vlm import check_checkpoint_dir

    if checkpoint:
        if not Path(checkpoint).expanduser().is_dir():
            raise UserError(f"--checkpoint {checkpoint} is not a directory; pass what `vlmbench train` wrote")
        check_checkpoint_dir(Path(checkpoint).expanduser())
        return
    path = Path(spec).expanduser()
    if path.is_dir():
        check_checkpoint_dir(path)
    elif spec not in preset_names():
        raise _unknown_model(spec, preset_names())


def _unknown_model(spec: str, presets: list[str]) -> UserError:
    return UserError(
        f"unknown model '{spec}': not a preset ({', '.join(presets) or 'none found'}), "
        f"a vlmbench checkpoint directory, {HF_PREFIX}<path or repo id> or {OPENAI_PREFIX}<base url>; "
        "see `vlmbench models`"
    )


__all__ = ["HF_PREFIX", "OPENAI_PREFIX", "check_model_spec", "load_model"]
