"""The model a recipe trains: built from its config and seed (optionally starting from saved
components), its tokenizer, and the frozen clone that DPO compares against."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlmbench.distributed import DistContext
from vlmbench.errors import UserError
from vlmbench.modeling.config import VLMConfig
from vlmbench.training.data import corpus_texts
from vlmbench.training.recipe import Recipe


def build_model(recipe: Recipe, tokenizer: Any) -> nn.Module:
    """The recipe's VLM, its weights a pure function of the recipe seed (plus `init` components)."""
    from vlmbench.modeling.vlm import VLM

    config = VLMConfig.from_dict(recipe.model, source=f"{recipe.source}: model")
    config.name = recipe.name  # an ablation of a preset is named after its recipe, not the preset
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        model = VLM(config, tokenizer)
    if recipe.init is not None:
        load_components(model, recipe.init.weights, recipe.init.components)
    return model


def load_components(model: nn.Module, weights: str | Path, components: tuple[str, ...]) -> None:
    """Copy the named components' tensors from a saved VLM; every tensor must exist with its shape."""
    from safetensors.torch import load_file

    if not Path(weights).is_file():
        raise UserError(
            f"init: {weights} does not exist; run the recipe that produces it first "
            "(an ablation recipe starts from its base recipe's stage weights: see its header)"
        )
    saved = load_file(str(weights))
    own = model.state_dict()
    wanted = {k: v for k, v in own.items() if k.split(".")[0] in components}
    # tied tensors (embeddings / LM head) are saved under one of their names: load through that one
    by_storage: dict[int, list[str]] = {}
    for key, value in own.items():
        by_storage.setdefault(value.data_ptr(), []).append(key)
    for key in [k for k in wanted if k not in saved]:
        alias = next((k for k in by_storage[own[key].data_ptr()] if k in saved), None)
        if alias is not None:
            wanted.pop(key)
            wanted[alias] = own[alias]
    missing = sorted(k for k in wanted if k not in saved)
    if missing:
        raise UserError(
            f"init: {weights} lacks {len(missing)} tensors of {', '.join(components)} (e.g. {missing[0]}); "
            "it must come from a model with the same architecture for those components"
        )
    for key, value in wanted.items():
        if saved[key].shape != value.shape:
            raise UserError(
                f"init: {key} is {tuple(saved[key].shape)} in {weights} but {tuple(value.shape)} here; "
                "the components loaded must have the same configuration"
            )
    model.load_state_dict({k: saved[k].to(v.dtype) for k, v in wanted.items()}, strict=False)


def clone_model(model: nn.Module) -> nn.Module:
    """A frozen copy of a VLM (rebuilt, not deep-copied: the cross-attention hooks of a copy would
    still point at the original's blocks)."""
    from transformers import AutoModelForCausalLM

    from vlmbench.modeling.vlm import VLM

    with torch.random.fork_rng(devices=[]):
        llm = AutoModelForCausalLM.from_config(copy.deepcopy(model.llm.config))
        clone = VLM(model.config, model.tokenizer, llm=llm, load_pretrained=False)
    clone.load_state_dict(model.state_dict())
    clone.to(next(model.parameters()).device)
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone


def build_tokenizer(recipe: Recipe, datasets: dict[str, list[Any]], work: Path, ctx: DistContext) -> Any:
    """Load the recipe's tokenizer path, or train one on the corpus sets (saved in the work dir, and
    reloaded from there on resume so a resumed run uses the very same vocabulary)."""
    from vlmbench.modeling.tokenizer import load_tokenizer, train_tokenizer

    spec = recipe.tokenizer
    if spec.path:
        return load_tokenizer(spec.path)
    saved = work / "tokenizer"
    if ctx.is_main and not (saved / "tokenizer.json").exists():
        texts = corpus_texts([datasets[name] for name in spec.corpus], spec.split_digits)
        tokenizer = train_tokenizer(texts, vocab_size=spec.vocab_size, min_frequency=spec.min_frequency)
        tokenizer.save_pretrained(str(saved))
    ctx.barrier()
    return load_tokenizer(saved)


__all__ = ["build_model", "build_tokenizer", "clone_model", "load_components"]
