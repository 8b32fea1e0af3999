"""The stage loop: build the model, then run each recipe stage with its own trainable components,
data mixture, optimiser and schedule, checkpointing as it goes.

Stage kinds (what the loss is):
- `lm_pretrain`: next-token loss of the LLM alone on the text of the training conversations.
- `vision_contrastive`: the ViT against a text encoder (the LLM's mean-pooled token embeddings or a
  small transformer), CLIP softmax or SigLIP sigmoid loss; the heads are discarded afterwards.
- `vision_tagging`: the ViT's patch features against the categories whose boxes cover each patch
  (per-patch multi-label BCE through a linear head that is discarded afterwards; see `region_tags`).
- `align` / `sft`: next-token loss on the assistant tokens of (multi-turn) LLaVA conversations, the
  visual tokens spliced in at `<image>` (or fed to the cross-attention layers, Flamingo style).
- `dpo`: DPO of the policy against a frozen copy of the model taken at the start of the stage,
  optionally through LoRA adapters on the LLM's attention projections, merged at the end.

Determinism: weights are seeded from the recipe seed, every stage reseeds torch at its start, and the
batch of step s is a pure function of (seed, stage, s). A checkpoint holds everything else (weights,
optimiser, RNG, step), so a resumed stage ends bit-identical to an uninterrupted one.
Distributed: under torchrun (WORLD_SIZE > 1) the stage objective is wrapped in DDP (gloo on CPU,
nccl on GPU) and each rank takes its share of every global batch; rank 0 writes files.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlmbench.errors import UserError
from vlmbench.modeling.config import VLMConfig
from vlmbench.training import checkpoint as ckpt
from vlmbench.training.data import (
    Conversation,
    MixtureSampler,
    Preference,
    caption_of,
    conversation_segments,
    corpus_texts,
    load_dataset,
    load_image,
    merge_by_image,
    prepare_data,
    text_only_segments,
    tokenize_segments,
)
from vlmbench.training.lora import apply_lora, merge_lora
from vlmbench.training.losses import clip_loss, dpo_loss, sequence_logprobs, siglip_loss
from vlmbench.training.recipe import Recipe, StageConfig
from vlmbench.training.region_tags import (
    RegionLabels,
    RegionTagHead,
    load_region_labels,
    patch_labels,
    tile_view,
)

log = logging.getLogger(__name__)

LOG_FILE = "train_log.jsonl"
DONE_FILE = "done.json"
STAGE_WEIGHTS = "model.safetensors"
SUMMARY_FILE = "train_summary.json"


class TrainingInterrupted(Exception):
    """Raised by the `stop_after` hook: the run stops as if killed (no checkpoint is written for it)."""


@dataclass
class TrainControl:
    """How to run a recipe (not what to train): resume, device, and a step budget for this call."""

    resume: bool = False
    device: str | None = None
    stop_after: int | None = None  # optimizer steps in this invocation, then TrainingInterrupted
    steps_done: int = field(default=0, init=False)

    def tick(self) -> None:
        self.steps_done += 1
        if self.stop_after is not None and self.steps_done >= self.stop_after:
            raise TrainingInterrupted(f"stopped after {self.steps_done} steps (stop_after)")


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


# ---- entry point -----------------------------------------------------------------------------


def train(recipe: Recipe, control: TrainControl | None = None) -> Path:
    """Run every stage of `recipe` and save the final VLM to `recipe.output_dir`; returns that path."""
    control = control or TrainControl()
    dist_info = _init_distributed(control.device)
    work = Path(recipe.work_dir)
    if dist_info.main:
        _prepare_work_dir(work, recipe, control.resume)
    _barrier(dist_info)
    if dist_info.main:
        dirs = prepare_data(recipe.data, Path(recipe.data_dir))
    _barrier(dist_info)
    dirs = prepare_data(recipe.data, Path(recipe.data_dir))  # all present now: only resolves paths
    datasets = {name: load_dataset(spec, dirs[name]) for name, spec in recipe.data.items()}
    tokenizer = _tokenizer(recipe, datasets, work, dist_info)
    model = _build_model(recipe, tokenizer).to(dist_info.device)
    tag_sets = sorted({name for s in recipe.stages if s.kind == "vision_tagging" for name in s.data})
    regions = load_region_labels([dirs[name] for name in tag_sets]) if tag_sets else None
    stage_times: list[dict[str, Any]] = []
    reuse = control.resume
    for index, stage in enumerate(recipe.stages):
        stage_dir = work / "stages" / f"{index:02d}-{stage.name}"
        fingerprint = recipe.fingerprint(upto=index)
        done = stage_dir / DONE_FILE
        if reuse and done.exists() and json.loads(done.read_text()).get("fingerprint") == fingerprint:
            from safetensors.torch import load_model

            load_model(model, str(stage_dir / STAGE_WEIGHTS), strict=True)
            stage_times.append(json.loads(done.read_text()))
            log.info("stage %s already done: loaded its weights", stage.name)
            continue
        if dist_info.main and done.exists():  # stale: an earlier run of a different recipe prefix
            done.unlink()
        _barrier(dist_info)
        stage_control = control if reuse else TrainControl(False, control.device, control.stop_after)
        stage_control.steps_done = control.steps_done
        result = run_stage(
            recipe, index, stage, model, tokenizer, datasets, stage_dir, stage_control, dist_info, fingerprint,
            regions,
        )
        control.steps_done = stage_control.steps_done
        reuse = False  # later stages start from these new weights: nothing after this is reusable
        stage_times.append(result)
    out = Path(recipe.output_dir)
    if dist_info.main:
        _save_final(recipe, model, out, work, stage_times)
    _barrier(dist_info)
    return out


# ---- stage -----------------------------------------------------------------------------------


def run_stage(
    recipe: Recipe,
    index: int,
    stage: StageConfig,
    model: nn.Module,
    tokenizer: Any,
    datasets: dict[str, list[Any]],
    stage_dir: Path,
    control: TrainControl,
    dist_info: DistInfo,
    fingerprint: str,
    regions: RegionLabels | None = None,
) -> dict[str, Any]:
    """Train one stage in place on `model`; writes the stage's weights and `done.json`.
    `regions` holds the box annotations that `vision_tagging` stages read."""
    stage_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(recipe.seed * 1009 + index)
    set_trainable(model, stage.train)
    reference = None
    if stage.kind == "dpo":
        reference = clone_model(model).eval()
        if stage.lora_rank:
            for p in model.llm.parameters():
                p.requires_grad_(False)
            apply_lora(model.llm, stage.lora_rank, stage.lora_alpha)
    heads: nn.Module | None = None
    if stage.kind == "vision_contrastive":
        heads = ContrastiveHeads(model, stage, len(tokenizer)).to(dist_info.device)
    elif stage.kind == "vision_tagging":
        if regions is None:
            raise UserError(f"stage {stage.name}: vision_tagging needs box annotations (scene data sets)")
        heads = RegionTagHead(model.vision.out_dim, len(regions.categories)).to(dist_info.device)
    objective = StageObjective(stage, model, heads)
    params = [p for p in objective.parameters() if p.requires_grad]
    if not params:
        raise UserError(f"stage {stage.name}: no trainable parameters")
    optimizer = torch.optim.AdamW(param_groups(objective, stage), lr=stage.lr, betas=stage.betas)
    start, elapsed = 0, 0.0
    latest = ckpt.latest_checkpoint(stage_dir) if control.resume else None
    if (
        latest is not None
        and json.loads((latest / ckpt.STATE_FILE).read_text()).get("fingerprint") != fingerprint
    ):
        log.info(
            "stage %s: %s belongs to another recipe version; starting the stage over", stage.name, latest
        )
        latest = None
    if latest is not None:
        state = ckpt.load_checkpoint(latest, objective, optimizer)
        start, elapsed = int(state["step"]), float(state.get("elapsed_s", 0.0))
        log.info("stage %s: resuming at step %d from %s", stage.name, start, latest)
    elif dist_info.main:
        for old in stage_dir.glob("checkpoint-*"):
            shutil.rmtree(old, ignore_errors=True)
        (stage_dir / ckpt.LATEST_FILE).unlink(missing_ok=True)
    if dist_info.main:
        _truncate_log(stage_dir / LOG_FILE, start)
    runner: nn.Module = objective
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [dist_info.device.index] if dist_info.device.type == "cuda" else None
        runner = DistributedDataParallel(objective, device_ids=device_ids, find_unused_parameters=True)
    if stage.batch_size % dist_info.world:
        raise UserError(
            f"stage {stage.name}: batch_size {stage.batch_size} is not divisible by {dist_info.world} ranks"
        )
    distinct = (lambda item: item.image) if stage.kind in ("vision_contrastive", "vision_tagging") else None
    stage_data = {name: datasets[name] for name in stage.data}
    if stage.kind == "lm_pretrain":
        stage_data = {name: merge_by_image(data) for name, data in stage_data.items()}
    sampler = MixtureSampler(stage_data, stage.data, recipe.seed, index, distinct_key=distinct)
    autocast = _autocast(recipe, dist_info)
    collate = Collator(stage, model, tokenizer, regions, seed=recipe.seed * 1009 + index)
    objective.train()
    loss_value = float("nan")
    log.info(
        "stage %s (%s): steps %d..%d, train %s", stage.name, stage.kind, start, stage.steps, list(stage.train)
    )
    for step in range(start, stage.steps):
        t0 = time.perf_counter()
        lr = lr_at(stage, step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        items = sampler.batch(step, stage.batch_size)[dist_info.rank :: dist_info.world]
        batch = collate(items, step)
        if reference is not None:
            with torch.no_grad(), autocast:
                batch.reference = dpo_logprobs(reference, batch)
        with autocast:
            loss, stats = runner(batch)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, stage.grad_clip) if stage.grad_clip else None
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        elapsed += dt
        loss_value = float(loss.detach())
        if dist_info.main and ((step + 1) % stage.log_every == 0 or step == start or step + 1 == stage.steps):
            row = {
                "step": step + 1,
                "loss": round(loss_value, 5),
                "lr": lr,
                "tokens_per_s": round(batch.tokens * dist_info.world / max(dt, 1e-9), 1),
                "elapsed_s": round(elapsed, 2),
                **({"grad_norm": round(float(grad_norm), 4)} if grad_norm is not None else {}),
                **{k: round(float(v), 5) for k, v in stats.items()},
            }
            with open(stage_dir / LOG_FILE, "a") as handle:
                handle.write(json.dumps(row) + "\n")
            log.info(
                "stage %s step %d/%d loss %.4f lr %.2e", stage.name, step + 1, stage.steps, loss_value, lr
            )
        if stage.checkpoint_every and (step + 1) % stage.checkpoint_every == 0 and step + 1 < stage.steps:
            if dist_info.main:
                ckpt.save_checkpoint(
                    stage_dir,
                    step + 1,
                    objective,
                    optimizer,
                    {
                        "fingerprint": fingerprint,
                        "stage": stage.name,
                        "elapsed_s": elapsed,
                        "scheduler": {"step": step + 1, "lr": lr},
                    },
                )
            _barrier(dist_info)
        control.tick()
    if stage.lora_rank:
        merge_lora(model.llm)
    result = {
        "stage": stage.name,
        "kind": stage.kind,
        "steps": stage.steps,
        "wall_s": round(elapsed, 1),
        "final_loss": round(loss_value, 5),
        "fingerprint": fingerprint,
    }
    if dist_info.main:
        from safetensors.torch import save_model

        save_model(model, str(stage_dir / STAGE_WEIGHTS))
        (stage_dir / DONE_FILE).write_text(json.dumps(result) + "\n")
        for old in stage_dir.glob("checkpoint-*"):
            shutil.rmtree(old, ignore_errors=True)
        (stage_dir / ckpt.LATEST_FILE).unlink(missing_ok=True)
    _barrier(dist_info)
    return result


def param_groups(objective: nn.Module, stage: StageConfig) -> list[dict[str, Any]]:
    """AdamW groups: per component (its `lr_scale`), weight decay on matrices only."""
    buckets: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for name, p in objective.named_parameters():
        if not p.requires_grad:
            continue
        parts = name.split(".")
        component = parts[1] if parts[0] == "model" else "heads"
        scale = stage.lr_scale.get(component, 1.0)
        buckets.setdefault((scale, p.ndim >= 2), []).append(p)
    return [
        {"params": ps, "lr_scale": scale, "weight_decay": stage.weight_decay if decay else 0.0}
        for (scale, decay), ps in sorted(buckets.items(), key=lambda kv: (kv[0][0], kv[0][1]))
    ]


def lr_at(stage: StageConfig, step: int) -> float:
    """Linear warmup over `warmup_steps`, then cosine decay to `min_lr_ratio`·lr (or constant)."""
    if step < stage.warmup_steps:
        return stage.lr * (step + 1) / stage.warmup_steps
    if not stage.cosine:
        return stage.lr
    span = max(1, stage.steps - stage.warmup_steps)
    progress = min(1.0, (step - stage.warmup_steps) / span)
    floor = stage.lr * stage.min_lr_ratio
    return floor + (stage.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def set_trainable(model: nn.Module, components: tuple[str, ...]) -> None:
    """requires_grad True exactly for the named components (vision, projector, llm, cross_attention)."""
    for p in model.parameters():
        p.requires_grad_(False)
    for name in components:
        for p in getattr(model, name).parameters():
            p.requires_grad_(True)


# ---- batches ---------------------------------------------------------------------------------


@dataclass
class Batch:
    """A collated batch. `rows` are (ids, labels) per example; for dpo `rows` are the chosen then the
    rejected answers (2B rows, images repeated) and `reference` the frozen model's log-probs."""

    kind: str
    images: list[Any]
    rows: list[tuple[list[int], list[int]]]
    tokens: int
    reference: torch.Tensor | None = None
    patch_labels: list[torch.Tensor] | None = None  # vision_tagging: (patches, labels) per encoder input


class Collator:
    """Items of a stage's data → a `Batch` (image preparation and tokenisation)."""

    def __init__(
        self,
        stage: StageConfig,
        model: nn.Module,
        tokenizer: Any,
        regions: RegionLabels | None = None,
        seed: int = 0,
    ) -> None:
        self.stage = stage
        self.model = model
        self.tokenizer = tokenizer
        self.regions = regions
        self.seed = seed

    def __call__(self, items: list[Conversation | Preference], step: int = 0) -> Batch:
        kind = self.stage.kind
        tok = self.tokenizer
        if kind == "vision_tagging":
            return self._tagging(items, step)
        if kind == "lm_pretrain":
            rows = [
                tokenize_segments(tok, text_only_segments(tok, c, self.stage.lm_targets), self.stage.max_text_tokens)
                for c in items
            ]
            return Batch(kind, [], rows, sum(len(r[0]) for r in rows))
        if kind == "vision_contrastive" and self.stage.image_view == "tile":
            images = [self._single_tile(load_image(item.image)) for item in items]
        else:
            images = [self.model.prepare_image(load_image(item.image)) for item in items]
        visual_tokens = sum(self.model.visual_tokens_for(p.plan) for p in images)
        if kind == "vision_contrastive":
            rows = []
            for c in items:
                ids = tok(caption_of(c), add_special_tokens=False)["input_ids"][: self.stage.max_text_tokens]
                rows.append((ids, ids))
            return Batch(kind, images, rows, sum(len(r[0]) for r in rows) + visual_tokens)
        if kind == "dpo":
            chosen = [self._pair_row(p.prompt, p.chosen) for p in items]
            rejected = [self._pair_row(p.prompt, p.rejected) for p in items]
            rows = chosen + rejected
            return Batch(kind, images, rows, sum(len(r[0]) for r in rows) + 2 * visual_tokens)
        rows = [tokenize_segments(tok, conversation_segments(tok, c.turns)) for c in items]
        return Batch(kind, images, rows, sum(len(r[0]) for r in rows) + visual_tokens)

    def _tagging(self, items: list[Any], step: int) -> Batch:
        """Views and per-patch labels; the crops are a pure function of (seed, step) like the batches."""
        import numpy as np

        from vlmbench.modeling.resolution import to_pixel_tensor
        from vlmbench.modeling.vlm import PreparedImage

        assert self.regions is not None
        rng = np.random.default_rng([self.seed, step])
        cfg = self.model.vision.config
        patch = self.model.config.vision.patch_size
        num_labels = len(self.regions.categories)
        images, labels = [], []
        for item in items:
            image = load_image(item.image)
            boxes = self.regions.of(item.image)
            if self.model.config.vision.kind == "native_vit":
                prepared = self.model.prepare_image(image)  # the image at its smart-resized size
                (pixels,) = prepared.pixels
                grid = (pixels.shape[1] // patch, pixels.shape[2] // patch)
                scale = (pixels.shape[2] / image.width, pixels.shape[1] / image.height)
                images.append(prepared)
                labels.append(patch_labels(boxes, (0, 0, image.width, image.height), scale, grid, patch, num_labels))
            else:
                size = self.model.config.vision.image_size
                view, lab = tile_view(image, boxes, size, patch, num_labels, rng, self.stage.crop_p)
                images.append(PreparedImage(to_pixel_tensor([view], cfg.image_mean, cfg.image_std), None))
                labels.append(lab)
        tokens = sum(int(lab.shape[0]) for lab in labels)
        return Batch("vision_tagging", images, [], tokens, patch_labels=labels)

    def _single_tile(self, image: Any) -> Any:
        """The whole image squeezed into one ViT-size tile (cheap contrastive pre-training)."""
        from vlmbench.modeling.resolution import to_pixel_tensor
        from vlmbench.modeling.vlm import PreparedImage

        size = self.model.config.vision.image_size
        cfg = self.model.vision.config
        tile = image.resize((size, size), resample=3)  # bicubic
        plan = self.model.resolution.plan(size, size)
        return PreparedImage(to_pixel_tensor([tile], cfg.image_mean, cfg.image_std), plan)

    def _pair_row(self, prompt: str, answer: str) -> tuple[list[int], list[int]]:
        return tokenize_segments(self.tokenizer, conversation_segments(self.tokenizer, [(prompt, answer)]))


# ---- objectives ------------------------------------------------------------------------------


class ContrastiveHeads(nn.Module):
    """Projection heads (and optionally a small text encoder) for image–text contrastive training."""

    def __init__(self, model: nn.Module, stage: StageConfig, vocab_size: int) -> None:
        super().__init__()
        d_vis = model.vision.out_dim
        dim = stage.embed_dim
        self.text_encoder_kind = stage.text_encoder
        self.image_proj = nn.Sequential(nn.LayerNorm(d_vis), nn.Linear(d_vis, dim))
        if stage.text_encoder == "small":
            width = 64
            self.text_embed = nn.Embedding(vocab_size, width)
            self.text_pos = nn.Parameter(torch.randn(stage.max_text_tokens, width) * 0.02)
            self.text_layer = nn.TransformerEncoderLayer(width, 4, 4 * width, dropout=0.0, batch_first=True)
            d_text = width
        else:
            d_text = model.llm.config.hidden_size
        self.text_proj = nn.Sequential(nn.LayerNorm(d_text), nn.Linear(d_text, dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.logit_bias = nn.Parameter(torch.tensor(-10.0))  # SigLIP only

    def encode_text(self, model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # ids, mask (B, L) → (B, E)
        if self.text_encoder_kind == "small":
            x = self.text_embed(ids) + self.text_pos[: ids.shape[1]]
            x = self.text_layer(x, src_key_padding_mask=~mask.bool())
        else:
            x = model.llm.get_input_embeddings()(ids)
        m = mask.unsqueeze(-1).to(x.dtype)
        pooled = (x * m).sum(1) / m.sum(1).clamp(min=1)
        return self.text_proj(pooled)


class StageObjective(nn.Module):
    """The model (plus a stage's auxiliary heads) with the stage's loss as `forward(batch)`.
    It is the unit that DDP wraps and that checkpoints save."""

    def __init__(self, stage: StageConfig, model: nn.Module, heads: nn.Module | None = None) -> None:
        super().__init__()
        self.stage = stage
        self.model = model
        self.heads = heads

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        kind = self.stage.kind
        if kind == "lm_pretrain":
            return self._lm(batch), {}
        if kind == "vision_contrastive":
            return self._contrastive(batch)
        if kind == "vision_tagging":
            return self._tagging(batch)
        if kind == "dpo":
            logprobs = conversation_logprobs(self.model, batch.images + batch.images, batch.rows)
            half = len(batch.images)
            if batch.reference is None:
                raise ValueError("dpo batches need the reference model's log-probs")
            ref = batch.reference.to(logprobs.device)
            loss, accuracy = dpo_loss(
                logprobs[:half], logprobs[half:], ref[:half], ref[half:], self.stage.beta
            )
            stats = {"reward_accuracy": accuracy.detach()}
            if self.stage.nll_weight:
                # RPO (Pang et al. 2024): DPO plus the chosen answers' per-token NLL, which keeps the
                # policy from lowering the likelihood of both answers until its generations degenerate
                tokens = torch.tensor(
                    [sum(1 for t in labels[1:] if t != -100) for _, labels in batch.rows[:half]],
                    dtype=logprobs.dtype,
                    device=logprobs.device,
                ).clamp(min=1)
                nll = -(logprobs[:half] / tokens).mean()
                loss = loss + self.stage.nll_weight * nll
                stats["chosen_nll"] = nll.detach()
            return loss, stats
        logits, labels = conversation_logits(self.model, batch.images, batch.rows)
        return _lm_loss(logits, labels), {}

    def _lm(self, batch: Batch) -> torch.Tensor:
        llm = self.model.llm
        device = llm.get_input_embeddings().weight.device
        length = max(len(ids) for ids, _ in batch.rows)
        pad = self.model.tokenizer.pad_token_id
        ids = torch.full((len(batch.rows), length), pad, dtype=torch.long, device=device)
        labels = torch.full_like(ids, -100)
        mask = torch.zeros_like(ids)
        for i, (row, lab) in enumerate(batch.rows):
            ids[i, : len(row)] = torch.tensor(row, device=device)
            labels[i, : len(lab)] = torch.tensor(lab, device=device)
            mask[i, : len(row)] = 1
        logits = llm(input_ids=ids, attention_mask=mask, use_cache=False).logits
        return _lm_loss(logits, labels)

    def _contrastive(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        assert self.heads is not None
        pooled = pooled_image_features(self.model, batch.images)  # (B, D_vis)
        image_emb = self.heads.image_proj(pooled)
        device = image_emb.device
        length = max(len(ids) for ids, _ in batch.rows)
        ids = torch.zeros((len(batch.rows), length), dtype=torch.long, device=device)
        mask = torch.zeros_like(ids)
        for i, (row, _) in enumerate(batch.rows):
            ids[i, : len(row)] = torch.tensor(row, device=device)
            mask[i, : len(row)] = 1
        text_emb = self.heads.encode_text(self.model, ids, mask)
        if self.stage.loss == "siglip":
            loss = siglip_loss(image_emb, text_emb, self.heads.logit_scale, self.heads.logit_bias)
        else:
            loss = clip_loss(image_emb, text_emb, self.heads.logit_scale)
        with torch.no_grad():
            sims = F.normalize(image_emb.float(), dim=-1) @ F.normalize(text_emb.float(), dim=-1).T
            accuracy = (sims.argmax(-1) == torch.arange(sims.shape[0], device=device)).float().mean()
        return loss, {"retrieval_accuracy": accuracy}


    def _tagging(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        assert self.heads is not None and batch.patch_labels is not None
        device = next(self.model.vision.parameters()).device
        if self.model.config.vision.kind == "native_vit":
            # one image per call: packing them would attend over a dense (ΣN)² block-diagonal mask on CPU
            feats = [self.model.vision([image.pixels[0].to(device)])[0] for image in batch.images]
        else:
            feats = list(self.model.vision(torch.cat([image.pixels for image in batch.images]).to(device)))
        logits = self.heads(torch.cat(feats)).float()
        target = torch.cat(batch.patch_labels).to(device)
        # positives are rare (most patches are background): weight them up so the head cannot win by
        # predicting "nothing" everywhere
        pos_weight = torch.full((target.shape[1],), self.stage.pos_weight, device=device)
        loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight)
        with torch.no_grad():
            hits = (logits > 0) == target.bool()
            recall = (hits & target.bool()).sum() / target.sum().clamp(min=1)
        return loss, {"patch_accuracy": hits.float().mean(), "patch_recall": recall}


def _lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over positions with a label (labels aligned with inputs)."""
    return F.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
    )


def pooled_image_features(model: nn.Module, images: list[Any]) -> torch.Tensor:
    """Mean of the ViT's patch features over all tiles of each image: (B, D_vis)."""
    device = next(model.vision.parameters()).device
    if model.config.vision.kind == "native_vit":
        flat = [t.to(device) for image in images for t in image.pixels]
        feats = model.vision(flat)
        counts = [len(image.pixels) for image in images]
        out, start = [], 0
        for count in counts:
            out.append(torch.cat(feats[start : start + count]).mean(0))
            start += count
        return torch.stack(out)
    tiles = torch.cat([image.pixels for image in images]).to(device)
    feats = model.vision(tiles).mean(1)  # (T, D)
    out, start = [], 0
    for image in images:
        count = image.pixels.shape[0]
        out.append(feats[start : start + count].mean(0))
        start += count
    return torch.stack(out)


def conversation_logits(
    model: nn.Module, images: list[Any], rows: list[tuple[list[int], list[int]]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """LLM logits (B, L, V) and aligned labels (B, L) for tokenised conversations with one image each.

    Inline models get the visual tokens in place of `<image>` (labels -100 there); cross-attention
    models keep the placeholder token and receive the visual tokens through their gated layers.
    Left padding and position ids as in `VLM.build_inputs`."""
    if model.config.vision.kind == "native_vit":
        # one image at a time: packing them would attend over a dense (ΣN)² block-diagonal mask on CPU
        visual = [model.encode([image])[0] for image in images]
    else:
        visual = model.encode(images)
    embed = model.llm.get_input_embeddings()
    device = embed.weight.device
    inline = not model.config.cross_attention_every
    seqs, labs = [], []
    for index, (ids, labels) in enumerate(rows):
        ids_t = torch.tensor(ids, device=device)
        lab_t = torch.tensor(labels, device=device)
        text = embed(ids_t)
        if inline:
            where = (ids_t == model.image_token_id).nonzero().flatten()
            if where.numel() != 1:
                raise ValueError(
                    f"row {index} must hold exactly one image placeholder, found {where.numel()}"
                )
            cut = int(where[0])
            vis = visual[index].to(text.dtype)
            text = torch.cat([text[:cut], vis, text[cut + 1 :]])
            lab_t = torch.cat([lab_t[:cut], lab_t.new_full((vis.shape[0],), -100), lab_t[cut + 1 :]])
        seqs.append(text)
        labs.append(lab_t)
    length = max(s.shape[0] for s in seqs)
    batch = len(seqs)
    embeds = seqs[0].new_zeros(batch, length, seqs[0].shape[1])
    mask = torch.zeros(batch, length, dtype=torch.long, device=device)
    labels_out = torch.full((batch, length), -100, dtype=torch.long, device=device)
    for i, (seq, lab) in enumerate(zip(seqs, labs, strict=True)):
        embeds[i, length - seq.shape[0] :] = seq
        mask[i, length - seq.shape[0] :] = 1
        labels_out[i, length - seq.shape[0] :] = lab
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    model._set_visual_context(visual)
    try:
        logits = model.llm(
            inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, use_cache=False
        ).logits
    finally:
        model._visual_context = None
    return logits, labels_out


def conversation_logprobs(
    model: nn.Module, images: list[Any], rows: list[tuple[list[int], list[int]]]
) -> torch.Tensor:
    """Summed log-probability of each row's target tokens: (B,)."""
    logits, labels = conversation_logits(model, images, rows)
    return sequence_logprobs(logits, labels)


def dpo_logprobs(model: nn.Module, batch: Batch) -> torch.Tensor:
    return conversation_logprobs(model, batch.images + batch.images, batch.rows).detach()


# ---- setup helpers ---------------------------------------------------------------------------


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


def _build_model(recipe: Recipe, tokenizer: Any) -> nn.Module:
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


def _tokenizer(recipe: Recipe, datasets: dict[str, list[Any]], work: Path, dist_info: DistInfo) -> Any:
    """Load the recipe's tokenizer path, or train one on the corpus sets (saved in the work dir, and
    reloaded from there on resume so a resumed run uses the very same vocabulary)."""
    from vlmbench.modeling.tokenizer import load_tokenizer, train_tokenizer

    spec = recipe.tokenizer
    if spec.path:
        return load_tokenizer(spec.path)
    saved = work / "tokenizer"
    if dist_info.main and not (saved / "tokenizer.json").exists():
        texts = corpus_texts([datasets[name] for name in spec.corpus], spec.split_digits)
        tokenizer = train_tokenizer(texts, vocab_size=spec.vocab_size, min_frequency=spec.min_frequency)
        tokenizer.save_pretrained(str(saved))
    _barrier(dist_info)
    return load_tokenizer(saved)


def _prepare_work_dir(work: Path, recipe: Recipe, resume: bool) -> None:
    """A fresh run clears the work dir. --resume keeps it: finished stages whose recipe prefix
    (model, seed, tokenizer, data, stages so far) is unchanged are reused, the rest rerun; a work dir
    whose tokenizer/data/model differ from the recipe's is refused."""
    marker = work / "fingerprint.json"
    base = recipe.fingerprint(upto=-1)  # everything but the stages
    if resume and marker.exists():
        found = json.loads(marker.read_text()).get("base")
        if found != base:
            raise UserError(
                f"{work} holds a run with another model, seed, tokenizer or data (fingerprint {found} != {base}); "
                "run without --resume to start over"
            )
        return
    if work.exists():
        for name in ("stages", "tokenizer"):
            shutil.rmtree(work / name, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"base": base, "fingerprint": recipe.fingerprint()}) + "\n")


def _save_final(
    recipe: Recipe, model: nn.Module, out: Path, work: Path, stages: list[dict[str, Any]]
) -> None:
    dtype = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[recipe.save_dtype]
    model.save(out, dtype=dtype)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    for index, stage in enumerate(recipe.stages):
        source = work / "stages" / f"{index:02d}-{stage.name}" / LOG_FILE
        if source.exists():
            shutil.copyfile(source, logs / f"{index:02d}-{stage.name}.jsonl")
    summary = {
        "recipe": recipe.name,
        "recipe_file": recipe.source,
        "fingerprint": recipe.fingerprint(),
        "seed": recipe.seed,
        "save_dtype": recipe.save_dtype,
        "stages": stages,
        "train_wall_s": round(sum(s.get("wall_s", 0.0) for s in stages), 1),
        "params": model.parameter_counts(),
    }
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=1) + "\n")
    if Path(recipe.source).exists():
        shutil.copyfile(recipe.source, out / "recipe.yaml")


def _truncate_log(path: Path, step: int) -> None:
    """Keep only the log rows up to `step` (a resumed stage rewrites what came after)."""
    if not path.exists():
        return
    if step == 0:
        path.unlink()
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept))


def _autocast(recipe: Recipe, dist_info: DistInfo) -> Any:
    use_bf16 = recipe.precision == "bf16" or (recipe.precision == "auto" and dist_info.device.type == "cuda")
    if not use_bf16:
        return nullcontext()
    return torch.autocast(device_type=dist_info.device.type, dtype=torch.bfloat16)


def _init_distributed(device: str | None) -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() if device is None else device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but CUDA is not available")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if cuda else "gloo")
        rank = dist.get_rank()
    else:
        rank = 0
    if cuda:
        torch.cuda.set_device(local_rank)
        return DistInfo(rank, world, torch.device("cuda", local_rank))
    return DistInfo(rank, world, torch.device("cpu"))


def _barrier(dist_info: DistInfo) -> None:
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.barrier()


__all__ = [
    "Batch",
    "Collator",
    "ContrastiveHeads",
    "StageObjective",
    "TrainControl",
    "TrainingInterrupted",
    "conversation_logits",
    "conversation_logprobs",
    "lr_at",
    "pooled_image_features",
    "run_stage",
    "set_trainable",
    "train",
]
