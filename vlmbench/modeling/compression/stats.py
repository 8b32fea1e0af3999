"""What one model call reports about compression: visual tokens the LLM saw and prefill time.

A backend that takes `--visual-tokens` sets `last_call` (a `CallStats`) after each `generate` /
`score_choices`; the runner copies `per_sample()` into every sample's record. Prefill is the time
from the start of building the LLM inputs (including a FastV attention probe) to the logits of the
first answer token; a batch's prefill time is shared equally among its samples."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CallStats:
    llm_visual_tokens: tuple[int, ...]  # per prompt: visual tokens in the LLM's input sequence
    prefill_s: float  # the whole batch's prefill

    def per_sample(self) -> list[dict[str, float | int]]:
        share = self.prefill_s / max(1, len(self.llm_visual_tokens))
        return [{"llm_visual_tokens": n, "prefill_s": round(share, 6)} for n in self.llm_visual_tokens]


def clock(device: torch.device) -> float:
    """`time.perf_counter()` after the device's queued work is done (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()




class FirstForward:
    """Times a batch's prefill inside transformers' `generate`: the clock when `module`'s first
    forward returns (the prompt's pass; the later ones decode one token each)."""

    def __init__(self, module: torch.nn.Module, device: torch.device) -> None:
        self.module, self.device = module, device
        self.start = 0.0
        self.seconds: float | None = None

    def __enter__(self) -> FirstForward:
        self.start = clock(self.device)
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def _hook(self, module: torch.nn.Module, args: tuple, output: object) -> None:
        if self.seconds is None:
            self.seconds = clock(self.device) - self.start

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()
        if self.seconds is None:
            self.seconds = clock(self.device) - self.start


__all__ = ["CallStats", "FirstForward", "clock"]
