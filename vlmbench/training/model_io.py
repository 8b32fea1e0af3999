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
    loaded_vocab = 0
    if recipe.init is not None:
        loaded_vocab = load_components(model, recipe.init.weights, recipe.init.components)
    start_location_tokens(model, tokenizer, location_levels(recipe), loaded_vocab)
    return model


def location_levels(recipe: Recipe) -> tuple[int, ...]:
    """The location-token levels the recipe's grounding sets answer in (none for pixel answers)."""
    return tuple(sorted({spec.location_levels for spec in recipe.data.values() if spec.location_levels}))


def start_location_tokens(
    model: nn.Module, tokenizer: Any, levels: tuple[int, ...], loaded_vocab: int
) -> None:
    """Give the location tokens that no loaded weights cover an ordered starting embedding
    (`initial_location_embeddings`, from the other tokens' rows); rows below `loaded_vocab` came from
    the init weights and stay."""
    from vlmbench.modeling.location_tokens import initial_location_embeddings, location_bins, location_token

    weight = model.llm.get_input_embeddings().weight
    per_level = {
        count: tokenizer.convert_tokens_to_ids([location_token(b) for b in location_bins(count)])
        for count in levels
    }
    located = {row for ids in per_level.values() for row in ids}
    base = weight[[row for row in range(weight.shape[0]) if row not in located]].detach()
    for count, ids in per_level.items():
        fresh = [(i, row) for i, row in enumerate(ids) if row >= loaded_vocab]
        if not fresh:
            continue
        start = initial_location_embeddings(base, count)
        with torch.no_grad():
            for i, row in fresh:
                weight[row] = start[i]


def load_components(model: nn.Module, weights: str | Path, components: tuple[str, ...]) -> int:
    """Copy the named components' tensors from a saved VLM; every tensor must exist with its shape,
    except the token embeddings when tokens have been added since (location tokens): their saved rows
    are copied and the new rows left to the caller. Returns the saved vocabulary size when the LLM
    was loaded (0 otherwise)."""
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
    embedding = model.llm.get_input_embeddings().weight
    vocab = embedding.shape[0]
    grown: dict[str, torch.Tensor] = {}
    for key, value in wanted.items():
        if saved[key].shape == value.shape:
            continue
        is_embedding = value.data_ptr() == embedding.data_ptr()  # input embedding or the LM head tied to it
        if is_embedding and saved[key].shape[0] < vocab and saved[key].shape[1:] == value.shape[1:]:
            grown[key] = saved[key]  # the tokenizer gained tokens since these weights were saved
            continue
        raise UserError(
            f"init: {key} is {tuple(saved[key].shape)} in {weights} but {tuple(value.shape)} here; "
            "the components loaded must have the same configuration"
        )
    model.load_state_dict(
        {k: saved[k].to(v.dtype) for k, v in wanted.items() if k not in grown}, strict=False
    )
    own = model.state_dict()
    with torch.no_grad():
        for key, rows in grown.items():
            own[key][: rows.shape[0]] = rows.to(own[key].dtype)
    if "llm" not in components:
        return 0
    return min((rows.shape[0] for rows in grown.values()), default=vocab)


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
    from vlmbench.modeling.location_tokens import add_location_tokens
    from vlmbench.modeling.tokenizer import load_tokenizer, train_tokenizer

    spec = recipe.tokenizer
    if spec.path:
        tokenizer = load_tokenizer(spec.path)
    else:
        saved = work / "tokenizer"
        if ctx.is_main and not (saved / "tokenizer.json").exists():
            texts = corpus_texts([datasets[name] for name in spec.corpus], spec.split_digits)
            trained = train_tokenizer(texts, vocab_size=spec.vocab_size, min_frequency=spec.min_frequency)
            trained.save_pretrained(str(saved))
        ctx.barrier()
        tokenizer = load_tokenizer(saved)
    for levels in location_levels(recipe):  # added the same way on every start, so resumes match
        add_location_tokens(tokenizer, levels)
    return tokenizer


__all__ = ["build_model", "build_tokenizer", "clone_model", "load_components", "location_levels"]
