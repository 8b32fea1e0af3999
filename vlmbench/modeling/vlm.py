"""The assembled VLM: vision encoder → projector → causal LM from transformers.

Visual tokens enter the LLM through `inputs_embeds` at the position of each `<image>` placeholder
(LLaVA, InternVL, Qwen2-VL style), or — when `cross_attention_every` is set — through tanh-gated
cross-attention layers inserted before every N-th decoder layer (Flamingo style), in which case the
placeholders stay ordinary tokens and the text attends to all of the sample's images. The layout
itself (splice, padding, positions, labels) lives in `vlmbench.modeling.inputs`, shared with training.

A prompt may hold several `<image>` placeholders: its images then come as a list, one per
placeholder in order (`images=[[a, b], ...]` or `visual=[[va, vb], ...]`); one image stays a plain item.

Images go through three steps, kept apart so the runner can cache the expensive one:
`prepare_image` (resolution strategy, pixels) → `encode` (ViT + projector, per image) → the LLM.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from vlmbench import __version__
from vlmbench.errors import UserError
from vlmbench.modeling.compression.attention import capture_cls_attention
from vlmbench.modeling.compression.images import downsample, spec_size
from vlmbench.modeling.compression.own import OwnCompression, configure
from vlmbench.modeling.compression.spec import CompressionSpec
from vlmbench.modeling.compression.stats import CallStats, clock
from vlmbench.modeling.config import VLMConfig
from vlmbench.modeling.inputs import IGNORE_INDEX, SampleVisual, build_sequences, images_of, visual_context
from vlmbench.modeling.interface import IMAGE_MARKER, REFERENCE_IMAGE
from vlmbench.modeling.prefix import (
    PrefixState,
    SuffixBatch,
    choice_logprobs,
    decline_reason,
    logits_kwargs,
    plain_dynamic_cache,
    prefill_states,
    split_at_last_image,
)
from vlmbench.modeling.projectors import build_projector
from vlmbench.modeling.resolution import ResolutionPlan, build_resolution, to_pixel_tensor, to_pixel_tensors
from vlmbench.modeling.tokenizer import IMAGE_TOKEN, format_prompt, load_tokenizer
from vlmbench.modeling.vision import build_vision_encoder

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
LLM_CONFIG_DIR = "llm"
TOKENIZER_DIR = "tokenizer"


@dataclass
class PreparedImage:
    """One image after the resolution strategy: encoder inputs and the plan that produced them."""

    pixels: torch.Tensor | list[torch.Tensor]  # (T, 3, S, S) tiles, or [ (3, H, W) ] for native resolution
    plan: ResolutionPlan


# One sample's images: a PreparedImage, or one per `<image>` placeholder of its prompt, in order.
SampleImages = PreparedImage | Sequence[PreparedImage]


class GatedCrossAttention(nn.Module):
    """Flamingo's gated xattn-dense block: text attends to visual tokens; tanh gates start at 0 so the
    pretrained LLM is unchanged at initialisation."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.attn_gate = nn.Parameter(torch.zeros(1))
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.mlp_gate = nn.Parameter(torch.zeros(1))

    def forward(
        self, hidden: torch.Tensor, visual: torch.Tensor, visual_mask: torch.Tensor | None
    ) -> torch.Tensor:
        # hidden (B, L, D) text states; visual (B, M, D); visual_mask (B, M) True where padding
        attended = self.attn(
            self.norm(hidden), visual, visual, key_padding_mask=visual_mask, need_weights=False
        )[0]
        hidden = hidden + torch.tanh(self.attn_gate) * attended
        return hidden + torch.tanh(self.mlp_gate) * self.mlp(self.mlp_norm(hidden))


class VLM(nn.Module):
    """Vision encoder × projector × resolution strategy × causal LM."""

    def __init__(
        self, config: VLMConfig, tokenizer: Any, llm: nn.Module | None = None, load_pretrained: bool = True
    ):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        vision_cfg = config.vision
        if not load_pretrained and vision_cfg.pretrained:
            vision_cfg = type(vision_cfg)(**{**vision_cfg.__dict__, "pretrained": None})
        self.vision = build_vision_encoder(vision_cfg)
        self.llm = llm if llm is not None else build_llm(config, tokenizer, load_pretrained)
        d_llm = self.llm.config.hidden_size
        self.projector = build_projector(config.projector, self.vision.out_dim, d_llm)
        self.resolution = build_resolution(config.resolution, image_mean=self.vision.config.image_mean)
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.cross_attention = nn.ModuleList()
        self._hooks: list[Any] = []
        if config.cross_attention_every:
            layers = _decoder_layers(self.llm)
            heads = self.llm.config.num_attention_heads
            for index in range(0, len(layers), config.cross_attention_every):
                block = GatedCrossAttention(d_llm, heads)
                self.cross_attention.append(block)
                self._hooks.append(
                    layers[index].register_forward_pre_hook(self._xattn_hook(block), with_kwargs=True)
                )
        self._visual_context: tuple[torch.Tensor, torch.Tensor] | None = None
        self.compression: OwnCompression | None = None  # --visual-tokens (set_visual_tokens)
        self.last_call: CallStats | None = None  # LLM visual tokens and prefill time of the last call
        # whether the LLM's KV cache allows prefix sharing (prefix_decline_reason), found on first use
        self._plain_cache: bool | None = None

    def set_visual_tokens(self, spec: CompressionSpec, seed: int = 0) -> None:
        """Apply `--visual-tokens` to every later call; UserError when this model cannot take `spec`."""
        self.compression = configure(self, spec, seed)

    # ---- images ------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def prepare_image(self, image: Image.Image) -> PreparedImage:
        """Apply the resolution strategy; raises UserError for sizes outside the strategy's limits."""
        if self.compression is not None:
            image = downsample(image, self.compression.spec)
        tiles, plan = self.resolution.prepare(image)
        # a pretrained encoder brings its own
        mean, std = self.vision.config.image_mean, self.vision.config.image_std
        if self.config.resolution.name == "native":
            return PreparedImage(to_pixel_tensors(tiles, mean, std), plan)
        return PreparedImage(to_pixel_tensor(tiles, mean, std), plan)

    def visual_tokens_for(self, plan: ResolutionPlan) -> int:
        """Tokens that enter the LLM for an image with this plan (no pixels needed)."""
        p = self.config.vision.patch_size
        if self.compression is not None:
            return self.compression.count(self.projector, [(h // p, w // p) for (w, h) in plan.tile_sizes])
        return sum(self.projector.num_tokens((h // p, w // p)) for (w, h) in plan.tile_sizes)

    def encode(self, images: list[PreparedImage]) -> list[torch.Tensor]:
        """Visual tokens per image: a list of (M_i, D_llm) tensors (tiles concatenated in plan order)."""
        if not images:
            return []
        device, dtype = self.device, self.projector_dtype
        counts = [len(image.pixels) for image in images]
        needs_cls = self.compression is not None and self.compression.needs_cls
        with capture_cls_attention(self.vision) if needs_cls else nullcontext() as cls:
            if self.config.vision.kind == "native_vit":
                flat = [t.to(device, dtype) for image in images for t in image.pixels]
                features = self.vision(flat)  # list of (N_i, D_vis)
                out, grids = [], []
                for feats, tensor in zip(features, flat, strict=True):
                    grids.append(self.vision.grid(tensor.shape[1], tensor.shape[2]))
                    out.append(self.projector(feats.unsqueeze(0), grids[-1])[0])
            else:
                tiles = torch.cat([image.pixels for image in images]).to(device, dtype)  # (T, 3, S, S)
                grid = self.vision.grid(tiles.shape[2], tiles.shape[3])
                feats = self.vision(tiles)  # (T, N, D_vis)
                out, grids = list(self.projector(feats, grid)), [grid] * tiles.shape[0]  # (M, D_llm) per tile
        if self.compression is None:
            return _regroup(out, counts)
        return self.compression.compress_all(self.projector, out, grids, counts, cls)

    def encode_samples(self, images: Sequence[SampleImages]) -> list[SampleVisual]:
        """Visual tokens per sample, in one `encode` call: a (M, D) tensor for a sample given one
        PreparedImage, a list of them for a sample given a list."""
        flat = [image for sample in images for image in _as_list(sample)]
        encoded = iter(self.encode(flat))
        return [
            [next(encoded) for _ in sample] if not isinstance(sample, PreparedImage) else next(encoded)
            for sample in images
        ]

    @property
    def projector_dtype(self) -> torch.dtype:
        return next(self.projector.parameters()).dtype

    # ---- sequence building -------------------------------------------------------------------
    def format_prompt(self, question: str, n_images: int = 1) -> str:
        """The chat-formatted user turn for `n_images` images. A question that already holds
        `n_images` `<image>` markers keeps them where they are (interleaved text and images);
        otherwise the placeholders go before the question, where a single one always went."""
        if question.count(IMAGE_MARKER) != n_images:
            question = f"{IMAGE_MARKER}\n" * n_images + question
        return format_prompt(self.tokenizer, question.replace(IMAGE_MARKER, IMAGE_TOKEN), with_image=False)

    def build_inputs(
        self,
        prompts: list[str],
        visual: Sequence[SampleVisual],
        targets: list[str] | None = None,
        with_visual_mask: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Left-padded `inputs_embeds`, `attention_mask`, `position_ids` (and `labels` when targets are
        given: loss on target tokens only). `visual[i]` holds prompt i's images, one per `<image>`.
        `with_visual_mask` adds `visual_mask` (B, L), True at spliced visual tokens (FastV prunes there)."""
        ids: list[list[int]] = []
        labels: list[list[int]] = []
        for index, prompt in enumerate(prompts):
            prompt_ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            target_ids: list[int] = []
            if targets is not None:
                target_ids = self.tokenizer(targets[index], add_special_tokens=False)["input_ids"]
                target_ids = [*target_ids, self.tokenizer.eos_token_id]
            ids.append(prompt_ids + target_ids)
            labels.append([IGNORE_INDEX] * len(prompt_ids) + target_ids)
        out = self.inputs_from_ids(ids, labels, visual)
        if with_visual_mask:  # the ids as labels: only visual tokens and padding come out as IGNORE_INDEX
            marked = self.inputs_from_ids(ids, ids, visual)
            out["visual_mask"] = (marked["labels"] == IGNORE_INDEX) & (marked["attention_mask"] == 1)
        if targets is None:
            del out["labels"]
        return out

    def inputs_from_ids(
        self, ids: Sequence[Sequence[int]], labels: Sequence[Sequence[int]], visual: Sequence[SampleVisual]
    ) -> dict[str, torch.Tensor]:
        """`build_inputs` for rows already tokenised (training's conversations): see `modeling.inputs`."""
        return build_sequences(
            self.llm.get_input_embeddings(),
            ids,
            labels,
            visual,
            self.image_token_id,
            inline=not self.config.cross_attention_every,
        )

    # ---- Flamingo-style cross-attention ------------------------------------------------------
    def _xattn_hook(self, block: GatedCrossAttention):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
            if self._visual_context is None:
                return None
            visual, visual_mask = self._visual_context
            if args:
                return (block(args[0], visual, visual_mask), *args[1:]), kwargs
            kwargs["hidden_states"] = block(kwargs["hidden_states"], visual, visual_mask)
            return args, kwargs

        return hook

    @contextmanager
    def cross_attending(self, visual: Sequence[SampleVisual]) -> Iterator[None]:
        """LLM calls inside this block see `visual` through the cross-attention layers (a no-op for
        inline models); the context is cleared on exit, also on error."""
        if self.config.cross_attention_every:
            self._visual_context = visual_context(visual)
        try:
            yield
        finally:
            self._visual_context = None

    # ---- training / scoring ------------------------------------------------------------------
    def forward(
        self, images: Sequence[SampleImages], prompts: list[str], targets: list[str] | None = None
    ) -> Any:
        """Logits (and the LM loss on `targets` when given) for a batch of image(s) + prompt pairs."""
        visual = self.encode_samples(images)
        inputs = self.build_inputs(prompts, visual, targets)
        with self.cross_attending(visual):
            return self.llm(**inputs, use_cache=False)

    @torch.no_grad()
    def score_choices(
        self,
        images: Sequence[SampleImages] | None,
        prompts: list[str],
        choices: list[str],
        visual: Sequence[SampleVisual] | None = None,
    ) -> torch.Tensor:
        """Log-probability of each choice as the answer, (B, C), in one forward pass.

        Single-token choices (the usual "Yes"/"No") are read off the next-token distribution of the
        prompt; multi-token choices are scored by expanding the batch to B×C prompt+choice rows."""
        if visual is None:
            visual = self.encode_samples(images or [])
        choice_ids = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in choices]
        start = clock(self.device)
        if all(len(ids) == 1 for ids in choice_ids):
            inputs, counts = self._llm_inputs(prompts, visual)
            with self.cross_attending(visual):
                logits = self.llm(**inputs, use_cache=False).logits[:, -1].float()
            self.last_call = CallStats(tuple(counts), clock(self.device) - start)
            logprobs = F.log_softmax(logits, dim=-1)
            return logprobs[:, [ids[0] for ids in choice_ids]]
        expanded_prompts = [p for p in prompts for _ in choices]
        expanded_visual = [v for v in visual for _ in choices]
        expanded_targets = [c for _ in prompts for c in choices]
        inputs, counts = self._llm_inputs(expanded_prompts, expanded_visual, expanded_targets)
        labels = inputs.pop("labels")
        with self.cross_attending(expanded_visual):
            logits = self.llm(**inputs, use_cache=False).logits.float()
        self.last_call = CallStats(tuple(counts[:: len(choices)]), clock(self.device) - start)
        # token t is predicted at position t-1; drop the EOS that build_inputs appends to targets
        logprobs = F.log_softmax(logits[:, :-1], dim=-1)
        target = labels[:, 1:]
        valid = target != IGNORE_INDEX
        picked = logprobs.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1) * valid
        last = valid.long().cumsum(-1) == valid.long().sum(-1, keepdim=True)  # the EOS position
        total = (picked * ~(last & valid)).sum(-1)
        return total.view(len(prompts), len(choices))

    def _llm_inputs(
        self, prompts: list[str], visual: Sequence[SampleVisual], targets: list[str] | None = None
    ) -> tuple[dict[str, torch.Tensor], list[int]]:
        """`build_inputs` (FastV-pruned under prune-attn:R@L) and each row's visual tokens the LLM sees."""
        if self.compression is not None and self.compression.spec.llm_op is not None:
            return self.compression.llm_inputs(self, prompts, visual, targets)
        counts = [sum(v.shape[0] for v in images_of(sample)) for sample in visual]
        return self.build_inputs(prompts, visual, targets), counts

    # ---- generation --------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        images: Sequence[SampleImages] | None,
        prompts: list[str],
        max_new_tokens: int = 32,
        stop: tuple[str, ...] = (),
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        use_cache: bool = True,
        visual: Sequence[SampleVisual] | None = None,
    ) -> list[str]:
        """Greedy or sampled generation for a left-padded batch; stops at EOS or any stop string."""
        if visual is None:
            visual = self.encode_samples(images or [])
        start = clock(self.device)
        inputs, counts = self._llm_inputs(prompts, visual)
        embeds, mask, positions = inputs["inputs_embeds"], inputs["attention_mask"], inputs["position_ids"]
        cache_arg = _cache_argument(self.llm)
        with self.cross_attending(visual):
            out = self.llm(
                inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=use_cache
            )
            self.last_call = CallStats(tuple(counts), clock(self.device) - start)
            past = getattr(out, cache_arg) if use_cache else None

            def step(new_embed: torch.Tensor, new_position: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
                nonlocal past, embeds, positions
                if use_cache:
                    out = self.llm(
                        inputs_embeds=new_embed,
                        attention_mask=mask,
                        position_ids=new_position,
                        use_cache=True,
                        **{cache_arg: past},
                    )
                    past = getattr(out, cache_arg)
                else:  # full recompute over the whole sequence so far
                    embeds = torch.cat([embeds, new_embed], dim=1)
                    positions = torch.cat([positions, new_position], dim=1)
                    out = self.llm(
                        inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False
                    )
                return out.logits[:, -1]

            return self._decode(
                out.logits[:, -1],
                mask,
                positions[:, -1:],
                step,
                max_new_tokens,
                stop,
                do_sample,
                temperature,
                top_p,
                seed,
            )

    def _decode(
        self,
        logits: torch.Tensor,
        mask: torch.Tensor,
        last_position: torch.Tensor,
        step: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
        max_new_tokens: int,
        stop: tuple[str, ...],
        do_sample: bool,
        temperature: float,
        top_p: float,
        seed: int | None,
    ) -> list[str]:
        """The token loop shared by `generate` and `generate_from`.

        logits (B, V): the first answer token's distribution; mask (B, L) the attention mask so far;
        last_position (B, 1) each row's last position id; `step(embed (B, 1, D), position (B, 1),
        mask (B, L + 1))` feeds one token per row and returns the next distribution."""
        generator = None
        if do_sample:
            generator = torch.Generator(device=logits.device)
            generator.manual_seed(0 if seed is None else seed)
        batch = logits.shape[0]
        eos = self.tokenizer.eos_token_id
        produced: list[list[int]] = [[] for _ in range(batch)]
        done = torch.zeros(batch, dtype=torch.bool, device=logits.device)
        embed_tokens = self.llm.get_input_embeddings()
        for index in range(max_new_tokens):
            next_token = _pick(logits.float(), do_sample, temperature, top_p, generator)
            next_token = torch.where(done, torch.full_like(next_token, eos), next_token)
            for i in range(batch):
                if not done[i]:
                    produced[i].append(int(next_token[i]))
            done |= next_token == eos
            if stop:
                for i in range(batch):
                    if not done[i] and any(s in self.tokenizer.decode(produced[i]) for s in stop):
                        done[i] = True
            if bool(done.all()) or index == max_new_tokens - 1:
                break
            last_position = last_position + 1
            mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=1)
            logits = step(embed_tokens(next_token).unsqueeze(1), last_position, mask)
        return [
            _truncate(self.tokenizer.decode([t for t in ids if t != eos], skip_special_tokens=True), stop)
            for ids in produced
        ]

    # ---- prefix sharing (PrefixSharing, interface.py; the KV logic is in modeling/prefix.py) ----
    def split_prompt(self, prompt: str) -> tuple[str, str] | None:
        """(prefix through the last image placeholder, suffix), or None when this prompt or model
        cannot share its prefix (FastV inside the LLM, a non-plain KV cache, no clean token boundary)."""
        if self.prefix_decline_reason() is not None:
            return None
        return split_at_last_image(self.tokenizer, prompt)

    def prefix_decline_reason(self) -> str | None:
        """Why no prompt of this model can share its prefix now (None: prompts can)."""
        if self._plain_cache is None:
            self._plain_cache = plain_dynamic_cache(self.llm)
        if not self._plain_cache:
            return f"{type(self.llm).__name__} uses a cache other than a full-attention DynamicCache (sliding window?)"
        return decline_reason(self)

    @torch.no_grad()
    def prefill(self, prefixes: list[str], visual: Sequence[SampleVisual]) -> list[PrefixState]:
        """One `PrefixState` per prefix (`visual[i]`: prefix i's image(s)); `last_call` times it."""
        start = clock(self.device)
        states = prefill_states(self, prefixes, visual, _cache_argument(self.llm))
        self.last_call = CallStats(tuple(s.llm_visual_tokens for s in states), clock(self.device) - start)
        return states

    def count_tokens(self, texts: list[str]) -> list[int]:
        """LLM text tokens of each text (a placeholder counts as one token): the runner's work count."""
        return [len(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]

    @torch.no_grad()
    def score_choices_from(
        self, states: Sequence[PrefixState], suffixes: list[str], choices: list[str]
    ) -> torch.Tensor:
        """`score_choices` of prompts prefix_i + suffixes[i], continuing from `states[i]`: (B, C)."""
        choice_ids = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in choices]
        suffix_ids = [self.tokenizer(s, add_special_tokens=False)["input_ids"] for s in suffixes]
        start = clock(self.device)
        cache_arg = _cache_argument(self.llm)
        if all(len(ids) == 1 for ids in choice_ids):
            batch = SuffixBatch.build(self, states, suffix_ids)
            with self.cross_attending(batch.visual or []):
                logits = self.llm(
                    **batch.llm_kwargs(cache_arg), use_cache=True, **logits_kwargs(self.llm, 1)
                ).logits
            self.last_call = CallStats(tuple(s.llm_visual_tokens for s in states), clock(self.device) - start)
            logprobs = F.log_softmax(logits[:, -1].float(), dim=-1)
            return logprobs[:, [ids[0] for ids in choice_ids]]
        rows = [ids + c for ids in suffix_ids for c in choice_ids]
        expanded = [s for s in states for _ in choices]
        batch = SuffixBatch.build(self, expanded, rows)
        keep = max(len(c) for c in choice_ids) + 1
        with self.cross_attending(batch.visual or []):
            logits = self.llm(
                **batch.llm_kwargs(cache_arg), use_cache=True, **logits_kwargs(self.llm, keep)
            ).logits
        self.last_call = CallStats(tuple(s.llm_visual_tokens for s in states), clock(self.device) - start)
        total = choice_logprobs(logits[:, -keep:], [c for _ in suffix_ids for c in choice_ids])
        return total.view(len(suffixes), len(choices))

    @torch.no_grad()
    def generate_from(
        self,
        states: Sequence[PrefixState],
        suffixes: list[str],
        max_new_tokens: int = 32,
        stop: tuple[str, ...] = (),
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> list[str]:
        """`generate` of prompts prefix_i + suffixes[i], continuing from `states[i]` (KV cache on)."""
        suffix_ids = [self.tokenizer(s, add_special_tokens=False)["input_ids"] for s in suffixes]
        start = clock(self.device)
        cache_arg = _cache_argument(self.llm)
        batch = SuffixBatch.build(self, states, suffix_ids)
        with self.cross_attending(batch.visual or []):
            out = self.llm(**batch.llm_kwargs(cache_arg), use_cache=True, **logits_kwargs(self.llm, 1))
            self.last_call = CallStats(tuple(s.llm_visual_tokens for s in states), clock(self.device) - start)
            past = getattr(out, cache_arg)

            def step(new_embed: torch.Tensor, new_position: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
                nonlocal past
                out = self.llm(
                    inputs_embeds=new_embed,
                    attention_mask=mask,
                    position_ids=new_position,
                    use_cache=True,
                    **{cache_arg: past},
                    **logits_kwargs(self.llm, 1),
                )
                past = getattr(out, cache_arg)
                return out.logits[:, -1]

            return self._decode(
                out.logits[:, -1],
                batch.attention_mask,
                batch.position_ids[:, -1:],
                step,
                max_new_tokens,
                stop,
                do_sample,
                temperature,
                top_p,
                seed,
            )

    # ---- summary -----------------------------------------------------------------------------
    def parameter_counts(self) -> dict[str, int]:
        counts = {
            "vision": count_parameters(self.vision),
            "projector": count_parameters(self.projector),
            "llm": count_parameters(self.llm),
        }
        if len(self.cross_attention):
            counts["cross_attention"] = count_parameters(self.cross_attention)
        counts["total"] = sum(counts.values())
        return counts

    # description (EvalModel); the text lives in vlmbench.modeling.summary
    def resolution_summary(self) -> dict[str, Any]:
        from vlmbench.modeling.summary import strategy_summary

        return strategy_summary(self)

    def visual_tokens_reference(
        self, width: int = REFERENCE_IMAGE[0], height: int = REFERENCE_IMAGE[1]
    ) -> int:
        if self.compression is not None:
            width, height = spec_size(width, height, self.compression.spec)
        return self.visual_tokens_for(self.resolution.plan(width, height))

    def inspect_plan(self, width: int, height: int) -> dict[str, Any]:
        from vlmbench.modeling.summary import vlm_inspect_plan

        return vlm_inspect_plan(self, width, height)

    def summary(self, name: str, preset: str | None = None) -> dict[str, Any]:
        from vlmbench.modeling.summary import vlm_summary

        return vlm_summary(self, name, preset)

    # ---- persistence -------------------------------------------------------------------------
    def save(self, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
        """config.json + model.safetensors + llm/ (transformers config) + tokenizer/.

        `dtype` (e.g. torch.bfloat16) stores floating-point weights in that type to halve the file;
        the model itself is left untouched. `load` casts them back to float32 unless told otherwise."""
        from safetensors.torch import save_file, save_model

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        payload = {"vlmbench_version": __version__, **self.config.to_dict()}
        (directory / CONFIG_FILE).write_text(json.dumps(payload, indent=2) + "\n")
        self.llm.config.save_pretrained(directory / LLM_CONFIG_DIR)
        self.tokenizer.save_pretrained(str(directory / TOKENIZER_DIR))
        if dtype is None:
            save_model(self, str(directory / WEIGHTS_FILE))
        else:
            save_file(_cast_state_dict(self, dtype), str(directory / WEIGHTS_FILE))
        return directory

    @classmethod
    def load(
        cls, directory: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
    ) -> VLM:
        """Load a directory written by `save` (weights via safetensors only)."""
        from safetensors.torch import load_model
        from transformers import AutoConfig, AutoModelForCausalLM

        directory = Path(directory)
        check_checkpoint_dir(directory)
        data = json.loads((directory / CONFIG_FILE).read_text())
        data.pop("vlmbench_version", None)
        config = VLMConfig.from_dict(data, source=str(directory / CONFIG_FILE))
        tokenizer = load_tokenizer(directory / TOKENIZER_DIR)
        llm_config = AutoConfig.from_pretrained(str(directory / LLM_CONFIG_DIR), local_files_only=True)
        llm = AutoModelForCausalLM.from_config(llm_config)
        model = cls(config, tokenizer, llm=llm, load_pretrained=False)
        load_model(model, str(directory / WEIGHTS_FILE), strict=True)  # copied into the float32 params
        model.to(device=device, dtype=dtype)
        return model.eval()


# ---- helpers ---------------------------------------------------------------------------------
def check_checkpoint_dir(directory: Path) -> None:
    """`UserError` unless ``directory`` holds every file `VLM.save` writes (nothing is read)."""
    missing = [
        name
        for name in (CONFIG_FILE, WEIGHTS_FILE, LLM_CONFIG_DIR, TOKENIZER_DIR)
        if not (directory / name).exists()
    ]
    if missing:
        raise UserError(
            f"{directory} is not a vlmbench checkpoint (missing {', '.join(missing)}); "
            "a checkpoint is what `VLM.save` / `vlmbench train` writes"
        )


def build_llm(config: VLMConfig, tokenizer: Any, load_pretrained: bool = True) -> nn.Module:
    """A causal LM from its local path (`llm.pretrained`) or built from the config sizes."""
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    cfg = config.llm
    if cfg.pretrained and load_pretrained:
        path = Path(cfg.pretrained)
        if not path.exists():
            raise UserError(
                f"llm.pretrained {path} does not exist: point it at a local transformers model directory"
            )
        llm = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, use_safetensors=True)
        if len(tokenizer) > llm.get_input_embeddings().weight.shape[0]:
            llm.resize_token_embeddings(len(tokenizer))
        return llm
    vocab = cfg.vocab_size or len(tokenizer)
    common = {
        "vocab_size": vocab,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "max_position_embeddings": cfg.max_position_embeddings,
        "rope_theta": cfg.rope_theta,
        "tie_word_embeddings": True,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    hf_config = LlamaConfig(**common) if cfg.arch == "llama" else Qwen2Config(**common)
    return AutoModelForCausalLM.from_config(hf_config)


def _cast_state_dict(module: nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The module's tensors with floating-point ones cast to `dtype`; tensors that share storage
    (tied embeddings) are stored once, under their first name, as `safetensors.torch.save_model` does."""
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int, tuple[int, ...]]] = set()
    for name, tensor in module.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key in seen:
            continue
        seen.add(key)
        value = tensor.detach()
        out[name] = (value.to(dtype) if value.is_floating_point() else value).contiguous().cpu()
    return out


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _decoder_layers(llm: nn.Module) -> nn.ModuleList:
    base = getattr(llm, "model", None)
    layers = getattr(base, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise UserError(
            f"cross-attention needs an LLM with `model.layers` (Llama/Qwen2-like); {type(llm).__name__} has none"
        )
    return layers


def _cache_argument(llm: nn.Module) -> str:
    """transformers 5 renamed `past_key_values` to `cache` (argument and output field)."""
    import inspect

    return "cache" if "cache" in inspect.signature(llm.forward).parameters else "past_key_values"


def _as_list(sample: SampleImages) -> list[PreparedImage]:
    return [sample] if isinstance(sample, PreparedImage) else list(sample)


def _regroup(items: list[torch.Tensor], counts: list[int]) -> list[torch.Tensor]:
    """Concatenate consecutive per-tile token blocks into one (M, D) tensor per image."""
    out, start = [], 0
    for count in counts:
        out.append(torch.cat(items[start : start + count]))
        start += count
    return out


def _pick(
    logits: torch.Tensor, do_sample: bool, temperature: float, top_p: float, generator: torch.Generator | None
) -> torch.Tensor:
    if not do_sample:
        return logits.argmax(-1)
    probs = F.softmax(logits / max(temperature, 1e-5), dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(-1, descending=True)
        keep = sorted_probs.cumsum(-1) - sorted_probs < top_p
        sorted_probs = sorted_probs * keep
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        probs = probs / probs.sum(-1, keepdim=True)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _truncate(text: str, stop: tuple[str, ...]) -> str:
    cut = len(text)
    for s in stop:
        index = text.find(s)
        if index != -1:
            cut = min(cut, index)
    return text[:cut].strip()


__all__ = ["VLM", "PreparedImage", "SampleImages", "GatedCrossAttention", "build_llm", "count_parameters"]
