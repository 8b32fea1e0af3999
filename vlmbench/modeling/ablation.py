"""Sabotaged copies of a vlmbench checkpoint, the models a regression gate must catch.

* `zero_vision`: every weight and bias of the vision tower set to zero. The tower's output is then
  the same for every image, so the model is blind while its projector and LLM are untouched.
* `permute_projector`: the output features of the projector's last linear layer (its weight rows and
  bias entries) permuted by a seeded permutation without fixed points. Shapes and the LLM stay as
  they were; every visual token reaches the LLM with its features scrambled.

Both read and write safetensors only, copy the rest of the checkpoint directory (config, tokenizer,
LLM config) as it is, rename the model in its config.json (``<name>-zero-vision``,
``<name>-permuted-projector``) and record what was done in ``ablation.json``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from vlmbench.errors import UserError

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
RECORD_FILE = "ablation.json"
KINDS = ("zero-vision", "permute-projector")


def zero_vision(checkpoint: str | Path, out: str | Path) -> Path:
    """Write a copy of ``checkpoint`` to ``out`` with every ``vision.*`` tensor zeroed."""
    def edit(tensors: dict[str, torch.Tensor], _: Path) -> dict[str, object]:
        names = [k for k in tensors if k.startswith("vision.")]
        if not names:
            raise UserError(f"{checkpoint}: its {WEIGHTS_FILE} has no vision.* tensors to zero")
        for name in names:
            tensors[name] = torch.zeros_like(tensors[name])
        return {"tensors_zeroed": len(names)}

    return _write_copy(Path(checkpoint), Path(out), "zero-vision", edit)


def permute_projector(checkpoint: str | Path, out: str | Path, seed: int = 0) -> Path:
    """Write a copy of ``checkpoint`` to ``out`` whose projector output features are permuted (seeded)."""
    def edit(tensors: dict[str, torch.Tensor], source: Path) -> dict[str, object]:
        layer = output_layer(source)
        weight = tensors.get(f"{layer}.weight")
        if weight is None:
            raise UserError(f"{checkpoint}: its {WEIGHTS_FILE} lacks {layer}.weight (the projector's output layer)")
        perm = derangement(weight.shape[0], seed)
        tensors[f"{layer}.weight"] = weight[perm].clone()
        if f"{layer}.bias" in tensors:
            tensors[f"{layer}.bias"] = tensors[f"{layer}.bias"][perm].clone()
        return {"layer": layer, "features": int(weight.shape[0]), "seed": seed}

    return _write_copy(Path(checkpoint), Path(out), "permute-projector", edit)


def derangement(n: int, seed: int) -> torch.Tensor:
    """A seeded permutation of ``range(n)`` that moves every index (a single cycle); n >= 2."""
    if n < 2:
        raise UserError(f"cannot permute {n} feature(s): a permutation that moves every feature needs at least 2")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    perm = torch.empty(n, dtype=torch.long)
    perm[order] = torch.roll(order, -1)  # order[i] -> order[i + 1]
    return perm


def output_layer(checkpoint: Path) -> str:
    """The state-dict prefix of the projector's last `nn.Linear` (registration order, the order of
    its forward pass in every vlmbench projector), e.g. ``projector.mlp.2``."""
    from vlmbench.modeling.vlm import VLM

    model = VLM.load(checkpoint)
    linears = [name for name, module in model.projector.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise UserError(f"{checkpoint}: its projector ({model.config.projector.kind}) has no linear layer to permute")
    return f"projector.{linears[-1]}"


def _write_copy(
    source: Path, out: Path, kind: str, edit: Callable[[dict[str, torch.Tensor], Path], dict[str, object]]
) -> Path:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from vlmbench.modeling.vlm import check_checkpoint_dir

    check_checkpoint_dir(source)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} exists and is not an empty directory; choose a new directory")
    if out.resolve().is_relative_to(source.resolve()):
        raise UserError(f"--out {out} lies inside the checkpoint {source}; write the copy elsewhere")
    weights = source / WEIGHTS_FILE
    with safe_open(str(weights), "pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(weights))
    details = edit(tensors, source)
    shutil.copytree(source, out, ignore=shutil.ignore_patterns(WEIGHTS_FILE, RECORD_FILE, "logs"), dirs_exist_ok=True)
    save_file(tensors, str(out / WEIGHTS_FILE), metadata=metadata)
    config = json.loads((out / CONFIG_FILE).read_text(encoding="utf-8"))
    config["name"] = f"{config.get('name') or 'model'}-{'zero-vision' if kind == 'zero-vision' else 'permuted-projector'}"
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    record = {"ablation": kind, "source": str(source.resolve()), **details}
    (out / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return out
