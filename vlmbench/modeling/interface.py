"""`EvalModel`: the one contract between the evaluation side (runner, lmms-eval plugin) and a model.

The runner never looks behind these calls, so any backend that implements them can be evaluated:
vlmbench's own `VLM` (modeling/vlm.py), the transformers adapter `HFVLM` (modeling/hf.py), and later
backends such as an HTTP client. Images flow through three steps, so that the expensive one is cached
per image by the runner:

    prepare_image(image)          → prepared   model-specific pixel inputs of ONE image; `prepared.plan`
                                                has `tile_sizes` (one (W, H) per encoder input)
    encode([prepared, ...])       → [visual]   one visual-token object per image (`visual.shape[0]` is its
                                                number of visual tokens); what the runner caches
    generate / score_choices(..., visual=v)    `v[i]` belongs to prompt i: one visual object (a one-image
                                                prompt) or a list of them, one per image placeholder

`format_prompt(question, n_images)` builds the model's own prompt. The question may hold `IMAGE_MARKER`
("<image>") exactly `n_images` times to interleave images and text (MMMU-style); without markers the
images come first. Passing `images=None` with `visual=` is the runner's path; passing prepared images
(one or a list per prompt) and `visual=None` lets the model encode them itself.

Description (`summary`, `parameter_counts`, `resolution_summary`, `visual_tokens_reference`) feeds
results.json's `model` object and `vlmbench inspect`; `inspect_plan` may raise `UserError` for a model
whose resolution strategy it cannot describe for a given image size.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # annotations only: importing the interface costs nothing
    import torch
    from PIL import Image

IMAGE_MARKER = "<image>"
"""Where a task prompt puts an image; each model replaces it with its own image placeholder."""

REFERENCE_IMAGE: tuple[int, int] = (640, 480)
"""(W, H) of the image that results.json's `visual_tokens_reference` counts tokens for (a COCO photo)."""


@runtime_checkable
class EvalModel(Protocol):
    """What the runner and the lmms-eval plugin call on a model; nothing else is used."""

    @property
    def device(self) -> torch.device:
        """Where inputs must be placed (the model's parameters' device)."""
        ...

    def prepare_image(self, image: Image.Image) -> Any:
        """Pixel inputs of one RGB image; the result has `plan.tile_sizes`. May raise on bad sizes."""
        ...

    def encode(self, images: list[Any]) -> list[Any]:
        """One visual object per prepared image (`shape[0]` = its visual tokens); independent of batching."""
        ...

    def format_prompt(self, question: str, n_images: int = 1) -> str:
        """The model's prompt for a question about `n_images` images (see `IMAGE_MARKER`)."""
        ...

    def generate(
        self,
        images: Sequence[Any] | None,
        prompts: list[str],
        max_new_tokens: int = 32,
        stop: tuple[str, ...] = (),
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        use_cache: bool = True,
        visual: Sequence[Any] | None = None,
    ) -> list[str]:
        """One answer per prompt (greedy unless `do_sample`), cut at the first stop string."""
        ...

    def score_choices(
        self,
        images: Sequence[Any] | None,
        prompts: list[str],
        choices: list[str],
        visual: Sequence[Any] | None = None,
    ) -> torch.Tensor:
        """Log-probability of each choice as the answer to each prompt, a (len(prompts), len(choices)) tensor."""
        ...

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per component (vision, projector, llm, …) and `total`."""
        ...

    def resolution_summary(self) -> dict[str, Any]:
        """The resolution strategy: `name` plus its parameters (DESIGN.md's names)."""
        ...

    def visual_tokens_reference(self, width: int = REFERENCE_IMAGE[0], height: int = REFERENCE_IMAGE[1]) -> int:
        """Visual tokens one image of this size becomes (no model run needed)."""
        ...

    def inspect_plan(self, width: int, height: int) -> dict[str, Any]:
        """`resized`, `grid`, `tiles`, `visual_tokens` for one image size (`vlmbench inspect`)."""
        ...

    def summary(self, name: str, preset: str | None = None) -> dict[str, Any]:
        """results.json's `model` object (the runner adds the visual tokens measured on the data)."""
        ...


@runtime_checkable
class VisualTokenCompression(Protocol):
    """Optional: a backend that takes `--visual-tokens SPEC` (docs/compression.md). The runner hands it
    the parsed spec once, after loading; the model applies it in its own calls and, after each
    `generate` / `score_choices`, leaves `last_call` (modeling/compression/stats.py `CallStats`: the
    visual tokens each prompt's LLM input held and the batch's prefill seconds)."""

    last_call: Any

    def set_visual_tokens(self, spec: Any, seed: int = 0) -> None:
        """Configure compression; `UserError` saying why when this model cannot take `spec`."""
        ...


@runtime_checkable
class PrefixSharing(Protocol):
    """Optional: answer many questions about one image from ONE prefill of the image prefix.

    A prompt from `format_prompt` splits into a *prefix* — everything up to and including the last image
    placeholder (system prompt, chat header, the visual tokens) — and a *suffix* (the question, the
    assistant header). Every question of a task about the same image has the same prefix, so the runner
    groups them (runner/plan.py), calls `prefill` once per image, holds the returned state in a
    byte-bounded LRU, and answers each question by extending a copy (or a batch-expanded view) of that
    state with its suffix. Results equal the unshared `generate` / `score_choices` (predictions exactly,
    log-probabilities to float tolerance). A model or prompt for which this does not hold returns None
    from `split_prompt`, and the runner takes the unshared path and records why.

    The state object is the model's own; the runner only reads `state.nbytes` (bytes held, for the LRU)
    and `state.tokens` (prefix tokens prefilled, for the prefill-work count) and never mutates it: the
    `*_from` calls must leave it reusable."""

    def split_prompt(self, prompt: str) -> tuple[str, str] | None:
        """(prefix, suffix) with prefix + suffix == prompt, or None where the image is not a shared prefix."""
        ...

    def prefill(self, prefixes: list[str], visual: Sequence[Any]) -> list[Any]:
        """One prefix state per prefix; `visual[i]` as in `generate` (the image(s) of prefix i)."""
        ...

    def score_choices_from(self, states: Sequence[Any], suffixes: list[str], choices: list[str]) -> torch.Tensor:
        """`score_choices` of prompts `prefix_i + suffixes[i]`, `states[i]` being prefix i's state: (B, C)."""
        ...

    def generate_from(
        self,
        states: Sequence[Any],
        suffixes: list[str],
        max_new_tokens: int = 32,
        stop: tuple[str, ...] = (),
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> list[str]:
        """`generate` of prompts `prefix_i + suffixes[i]`, continuing from `states[i]`."""
        ...


def protocol_mismatches(model: Any, protocol: type = EvalModel) -> list[str]:
    """The members of `protocol` that `model` lacks or whose parameters differ from the protocol's.

    `isinstance(model, EvalModel)` only checks that the names exist; this also checks that every
    parameter the protocol declares is accepted under the same name, in the same order, with a default
    where the protocol has one — what a caller relying on the contract needs. Empty list: it conforms."""
    problems: list[str] = []
    for name, member in vars(protocol).items():
        if name.startswith("_") or not (callable(member) or isinstance(member, property)):
            continue
        if not hasattr(model, name):
            problems.append(f"{name}: missing")
            continue
        if isinstance(member, property):
            continue
        problems.extend(f"{name}: {p}" for p in _signature_problems(member, getattr(model, name)))
    return problems


def _signature_problems(declared: Any, actual: Any) -> list[str]:
    if not callable(actual):
        return ["not callable"]
    wanted = [p for p in inspect.signature(declared).parameters.values() if p.name != "self"]
    params = inspect.signature(actual).parameters
    names = [p.name for p in params.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    problems = []
    for position, param in enumerate(wanted):
        got = params.get(param.name)
        if got is None:
            problems.append(f"no parameter {param.name!r}")
        elif names.index(param.name) != position:
            problems.append(f"parameter {param.name!r} at position {names.index(param.name)}, not {position}")
        elif param.default is not param.empty and got.default is got.empty:
            problems.append(f"parameter {param.name!r} needs a default")
    return problems


__all__ = [
    "IMAGE_MARKER",
    "REFERENCE_IMAGE",
    "EvalModel",
    "PrefixSharing",
    "VisualTokenCompression",
    "protocol_mismatches",
]
