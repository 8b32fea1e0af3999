"""Minimal LoRA (Hu et al. 2021) for the DPO stage: low-rank adapters on the LLM's attention
projections, merged back into the base weights at the end so the saved checkpoint is a plain VLM.

    y = W x + (α / r) · B A x,   A (r, in) small random, B (out, r) zeros → the adapter starts as a no-op.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# Attention projections of Llama / Qwen2 / Mistral-style decoders in transformers.
DEFAULT_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


class LoRALinear(nn.Module):
    """A frozen `nn.Linear` plus a trainable low-rank update."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        self.rank = rank
        self.scaling = alpha / rank
        self.lora_a = nn.Parameter(
            torch.empty(rank, base.in_features, dtype=base.weight.dtype, device=base.weight.device)
        )
        self.lora_b = nn.Parameter(
            torch.zeros(base.out_features, rank, dtype=base.weight.dtype, device=base.weight.device)
        )
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        for p in self.base.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x (..., in) → (..., out)
        return self.base(x) + (x @ self.lora_a.T @ self.lora_b.T) * self.scaling

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """The base layer with W ← W + (α/r) B A (computed in float32)."""
        delta = (self.lora_b.float() @ self.lora_a.float()) * self.scaling
        self.base.weight.copy_((self.base.weight.float() + delta).to(self.base.weight.dtype))
        return self.base


def apply_lora(module: nn.Module, rank: int, alpha: float, targets: tuple[str, ...] = DEFAULT_TARGETS) -> int:
    """Replace every `nn.Linear` child named in `targets` with a LoRALinear; returns how many."""
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if name in targets and isinstance(child, nn.Linear):
                setattr(parent, name, LoRALinear(child, rank, alpha))
                count += 1
    if not count:
        raise ValueError(f"no nn.Linear named {', '.join(targets)} found to adapt with LoRA")
    return count


def merge_lora(module: nn.Module) -> int:
    """Fold every LoRALinear back into a plain nn.Linear (in place); returns how many."""
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                setattr(parent, name, child.merged())
                count += 1
    return count


def lora_parameters(module: nn.Module) -> list[nn.Parameter]:
    return [p for m in module.modules() if isinstance(m, LoRALinear) for p in (m.lora_a, m.lora_b)]


__all__ = ["DEFAULT_TARGETS", "LoRALinear", "apply_lora", "lora_parameters", "merge_lora"]
