"""Resumable stage checkpoints: model + optimizer + scheduler + RNG state + step.

Tensors go to safetensors, everything else to JSON — nothing is ever unpickled. A checkpoint is a
directory `checkpoint-<step>/` holding

    weights.safetensors     the stage's trainable module (model + auxiliary heads / LoRA adapters)
    optimizer.safetensors   optimizer state tensors, keyed "<param index>/<name>"
    optimizer.json          param groups and non-tensor state (the index into the .safetensors)
    rng.safetensors         torch CPU (and CUDA) generator states
    state.json              step, scheduler state, recipe fingerprint — written last

and `latest.json` next to them names the newest complete one (replaced atomically), so a process
killed while writing leaves the previous checkpoint usable.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

LATEST_FILE = "latest.json"
STATE_FILE = "state.json"


def save_checkpoint(
    stage_dir: Path, step: int, module: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> Path:
    """Write `checkpoint-<step>/` under `stage_dir`, point `latest.json` at it, drop older ones."""
    from safetensors.torch import save_file, save_model

    stage_dir = Path(stage_dir)
    directory = stage_dir / f"checkpoint-{step:07d}"
    tmp = stage_dir / f".tmp-checkpoint-{step:07d}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_model(module, str(tmp / "weights.safetensors"))
    tensors, index = optimizer_state_to_flat(optimizer)
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "optimizer.json").write_text(json.dumps(index) + "\n")
    save_file(rng_state(), str(tmp / "rng.safetensors"))
    (tmp / STATE_FILE).write_text(json.dumps({**state, "step": step}, indent=1) + "\n")
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(tmp, directory)
    pointer = stage_dir / f".{LATEST_FILE}.tmp"
    pointer.write_text(json.dumps({"checkpoint": directory.name, "step": step}) + "\n")
    os.replace(pointer, stage_dir / LATEST_FILE)
    for old in stage_dir.glob("checkpoint-*"):
        if old != directory:
            shutil.rmtree(old, ignore_errors=True)
    return directory


def latest_checkpoint(stage_dir: Path) -> Path | None:
    pointer = Path(stage_dir) / LATEST_FILE
    if not pointer.exists():
        return None
    name = json.loads(pointer.read_text())["checkpoint"]
    directory = Path(stage_dir) / name
    return directory if (directory / STATE_FILE).exists() else None


def load_checkpoint(directory: Path, module: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore module weights, optimizer state and RNG state in place; returns state.json."""
    from safetensors.torch import load_file, load_model

    directory = Path(directory)
    load_model(module, str(directory / "weights.safetensors"), strict=True)
    index = json.loads((directory / "optimizer.json").read_text())
    tensors = load_file(str(directory / "optimizer.safetensors"))
    optimizer.load_state_dict(optimizer_state_from_flat(tensors, index))
    set_rng_state(load_file(str(directory / "rng.safetensors")))
    return json.loads((directory / STATE_FILE).read_text())


def optimizer_state_to_flat(
    optimizer: torch.optim.Optimizer,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split `optimizer.state_dict()` into tensors (for safetensors) and a JSON-able index."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    state_index: dict[str, dict[str, Any]] = {}
    for pid, entries in sd["state"].items():
        row: dict[str, Any] = {}
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                key = f"{pid}/{name}"
                tensors[key] = value.detach().contiguous().cpu()
                row[name] = {"tensor": key}
            else:
                row[name] = {"value": value}
        state_index[str(pid)] = row
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"state": state_index, "param_groups": groups}


def optimizer_state_from_flat(tensors: dict[str, torch.Tensor], index: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for pid, row in index["state"].items():
        state[int(pid)] = {
            name: tensors[entry["tensor"]] if "tensor" in entry else entry["value"]
            for name, entry in row.items()
        }
    groups = []
    for group in index["param_groups"]:
        restored = dict(group)
        if isinstance(restored.get("betas"), list):
            restored["betas"] = tuple(restored["betas"])
        groups.append(restored)
    return {"state": state, "param_groups": groups}


def rng_state() -> dict[str, torch.Tensor]:
    out = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"torch_cuda_{i}"] = s
    return out


def set_rng_state(states: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(states["torch_cpu"])
    cuda_keys = sorted(
        (k for k in states if k.startswith("torch_cuda_")), key=lambda k: int(k.rsplit("_", 1)[1])
    )
    cuda = [states[k] for k in cuda_keys]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])


__all__ = [
    "latest_checkpoint",
    "load_checkpoint",
    "optimizer_state_from_flat",
    "optimizer_state_to_flat",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]
