"""The stage loop: build the model, then run each recipe stage with its own trainable components,
data mixture, optimiser and schedule, checkpointing as it goes. Batches come from `collate`, losses
from `objectives`, the model from `model_io`, the run's files are laid out by `workdir`.

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
Distributed: under torchrun (WORLD_SIZE > 1) the stage objective is wrapped in DDP, the process group
set up by `vlmbench.distributed` as for evaluation (gloo on CPU, nccl on GPU, a timeout on every
collective), and each rank takes its share of every global batch; rank 0 writes files.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlmbench.distributed import DistContext, init_distributed
from vlmbench.errors import UserError
from vlmbench.training import checkpoint as ckpt
from vlmbench.training.collate import Collator
from vlmbench.training.data import MixtureSampler, load_dataset, merge_by_image, prepare_data
from vlmbench.training.location_alignment import location_head
from vlmbench.training.lora import apply_lora, merge_lora
from vlmbench.training.model_io import build_model, build_tokenizer, clone_model, location_levels
from vlmbench.training.objectives import ContrastiveHeads, StageObjective, WordAlignmentHead, dpo_logprobs
from vlmbench.training.plateau import PlateauWatch, logged_probes
from vlmbench.training.probe import ExistenceProbe
from vlmbench.training.recipe import SCENE_GENERATORS, Recipe, StageConfig
from vlmbench.training.region_tags import (
    RegionLabels,
    RegionTagHead,
    category_name_tokens,
    load_region_labels,
)
from vlmbench.training.workdir import (
    DONE_FILE,
    LOG_FILE,
    PROBED_DIR,
    STAGE_WEIGHTS,
    prepare_work_dir,
    save_final,
    stage_dir,
    truncate_log,
)

log = logging.getLogger(__name__)


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



# ---- entry point -----------------------------------------------------------------------------


def train(recipe: Recipe, control: TrainControl | None = None) -> Path:
    """Run every stage of `recipe` and save the final VLM to `recipe.output_dir`; returns that path."""
    control = control or TrainControl()
    ctx = init_distributed(control.device)
    work = Path(recipe.work_dir)
    if ctx.is_main:
        prepare_work_dir(work, recipe, control.resume)
    ctx.barrier()
    if ctx.is_main:
        dirs = prepare_data(recipe.data, Path(recipe.data_dir))
    ctx.barrier()
    dirs = prepare_data(recipe.data, Path(recipe.data_dir))  # all present now: only resolves paths
    datasets = {name: load_dataset(spec, dirs[name]) for name, spec in recipe.data.items()}
    tokenizer = build_tokenizer(recipe, datasets, work, ctx)
    model = build_model(recipe, tokenizer).to(ctx.device)
    labels = StageLabels(recipe, dirs)
    stage_times: list[dict[str, Any]] = []
    reuse = control.resume
    for index, stage in enumerate(recipe.stages):
        directory = stage_dir(work, index, stage)
        fingerprint = recipe.fingerprint(upto=index)
        done = directory / DONE_FILE
        if reuse and done.exists() and json.loads(done.read_text()).get("fingerprint") == fingerprint:
            from safetensors.torch import load_model

            load_model(model, str(directory / STAGE_WEIGHTS), strict=True)
            stage_times.append(json.loads(done.read_text()))
            log.info("stage %s already done: loaded its weights", stage.name)
            continue
        if ctx.is_main and done.exists():  # stale: an earlier run of a different recipe prefix
            done.unlink()
        ctx.barrier()
        stage_control = control if reuse else TrainControl(False, control.device, control.stop_after)
        stage_control.steps_done = control.steps_done
        result = run_stage(
            recipe, index, stage, model, tokenizer, datasets, directory, stage_control, ctx, fingerprint,
            labels.of(stage),
        )
        control.steps_done = stage_control.steps_done
        reuse = False  # later stages start from these new weights: nothing after this is reusable
        stage_times.append(result)
    out = Path(recipe.output_dir)
    if ctx.is_main:
        save_final(recipe, model, out, work, stage_times)
    ctx.barrier()
    return out


class StageLabels:
    """The box annotations a stage reads, loaded once per distinct set of data sets: a
    `vision_tagging` stage tags scene objects and (document sets) characters; a `word_alignment` stage
    aligns scene categories only (characters have no category name to align to)."""

    def __init__(self, recipe: Recipe, dirs: dict[str, Path]) -> None:
        self.recipe = recipe
        self.dirs = dirs
        self._loaded: dict[tuple[str, ...], RegionLabels] = {}

    def of(self, stage: StageConfig) -> RegionLabels | None:
        if stage.kind == "vision_tagging":
            kinds: tuple[str, ...] = (*SCENE_GENERATORS, "documents")
        elif stage.word_alignment:
            kinds = SCENE_GENERATORS
        else:
            return None
        names = tuple(sorted(n for n in stage.data if self.recipe.data[n].generator in kinds))
        if not names:
            return None
        if names not in self._loaded:
            self._loaded[names] = load_region_labels([self.dirs[n] for n in names])
        return self._loaded[names]


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
    ctx: DistContext,
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
        heads = ContrastiveHeads(model, stage, len(tokenizer)).to(ctx.device)
    elif stage.kind == "vision_tagging":
        if regions is None:
            raise UserError(f"stage {stage.name}: vision_tagging needs box annotations (scene data sets)")
        heads = RegionTagHead(model.vision.out_dim, len(regions.categories)).to(ctx.device)
    elif stage.word_alignment:
        if regions is None:
            raise UserError(f"stage {stage.name}: word_alignment needs box annotations (scene data sets)")
        heads = WordAlignmentHead(category_name_tokens(tokenizer, regions.categories)).to(ctx.device)
    locator = None
    if stage.location_alignment:
        locator = location_head(model, tokenizer, max(location_levels(recipe))).to(ctx.device)  # the finest grid
    objective = StageObjective(stage, model, heads, locator)
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
    elif ctx.is_main:
        for old in stage_dir.glob("checkpoint-*"):
            shutil.rmtree(old, ignore_errors=True)
        (stage_dir / ckpt.LATEST_FILE).unlink(missing_ok=True)
        shutil.rmtree(stage_dir / PROBED_DIR, ignore_errors=True)  # another run's curve
    if ctx.is_main:
        truncate_log(stage_dir / LOG_FILE, start)
    runner: nn.Module = objective
    if ctx.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        runner = DistributedDataParallel(objective, device_ids=device_ids, find_unused_parameters=True)
    if stage.batch_size % ctx.world_size:
        raise UserError(
            f"stage {stage.name}: batch_size {stage.batch_size} is not divisible by {ctx.world_size} ranks"
        )
    distinct = (lambda item: item.image) if stage.kind in ("vision_contrastive", "vision_tagging") else None
    stage_data = {name: datasets[name] for name in stage.data}
    if stage.kind == "lm_pretrain":
        stage_data = {name: merge_by_image(data) for name, data in stage_data.items()}
    sampler = MixtureSampler(stage_data, stage.data, recipe.seed, index, distinct_key=distinct)
    autocast = _autocast(recipe, ctx)
    collate = Collator(stage, model, tokenizer, regions, seed=recipe.seed * 1009 + index)
    probe = ExistenceProbe(Path(recipe.data_dir), stage.probe_images) if stage.probe_every and ctx.is_main else None
    objective.train()
    loss_value = float("nan")
    last_probe: dict[str, float] = {}  # the latest probe figures, for done.json
    plateau = PlateauWatch(stage.plateau_patience, stage.plateau_min_delta) if stage.plateau_patience else None
    stopped_at: int | None = None
    if plateau is not None and plateau.replay(logged_probes(stage_dir / LOG_FILE)) and start:
        stopped_at = start  # a resume of a stage that had already stopped on its plateau
    log.info(
        "stage %s (%s): steps %d..%d, train %s", stage.name, stage.kind, start, stage.steps, list(stage.train)
    )
    for step in range(start, stage.steps):
        if stopped_at is not None:
            break
        t0 = time.perf_counter()
        lr = lr_at(stage, step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        items = sampler.batch(step, stage.batch_size)[ctx.rank :: ctx.world_size]
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
        probed: dict[str, float] = {}
        if probe is not None and ((step + 1) % stage.probe_every == 0 or step + 1 == stage.steps):
            with autocast:
                probed = last_probe = {k: round(v, 4) for k, v in probe(model).items()}
            if stage.keep_probed:
                from safetensors.torch import save_model

                (stage_dir / PROBED_DIR).mkdir(exist_ok=True)
                save_model(model, str(stage_dir / PROBED_DIR / f"step-{step + 1}.safetensors"))
        stop_here = plateau is not None and probed and plateau.update(probed["probe_accuracy"])
        if plateau is not None and not ctx.all_ok(not stop_here):  # rank 0 probes; every rank stops with it
            stopped_at = step + 1
            log.info("stage %s: probe accuracy on a plateau (best %.4f); stopping at step %d", stage.name, plateau.best, step + 1)
        if ctx.is_main and ((step + 1) % stage.log_every == 0 or step == start or step + 1 == stage.steps or probed):
            row = {
                "step": step + 1,
                "loss": round(loss_value, 5),
                "lr": lr,
                "tokens_per_s": round(batch.tokens * ctx.world_size / max(dt, 1e-9), 1),
                "elapsed_s": round(elapsed, 2),
                **({"grad_norm": round(float(grad_norm), 4)} if grad_norm is not None else {}),
                **{k: round(float(v), 5) for k, v in stats.items()},
                **probed,
            }
            with open(stage_dir / LOG_FILE, "a") as handle:
                handle.write(json.dumps(row) + "\n")
            log.info(
                "stage %s step %d/%d loss %.4f lr %.2e", stage.name, step + 1, stage.steps, loss_value, lr
            )
        if stage.checkpoint_every and (step + 1) % stage.checkpoint_every == 0 and step + 1 < stage.steps:
            if ctx.is_main:
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
            ctx.barrier()
        control.tick()
    if stage.lora_rank:
        merge_lora(model.llm)
    result = {
        "stage": stage.name,
        "kind": stage.kind,
        "steps": stage.steps if stopped_at is None else stopped_at,
        **({"stopped_on_plateau": True} if stopped_at is not None else {}),
        "wall_s": round(elapsed, 1),
        "final_loss": round(loss_value, 5),
        **last_probe,
        "fingerprint": fingerprint,
    }
    if ctx.is_main:
        from safetensors.torch import save_model

        save_model(model, str(stage_dir / STAGE_WEIGHTS))
        (stage_dir / DONE_FILE).write_text(json.dumps(result) + "\n")
        for old in stage_dir.glob("checkpoint-*"):
            shutil.rmtree(old, ignore_errors=True)
        (stage_dir / ckpt.LATEST_FILE).unlink(missing_ok=True)
    ctx.barrier()
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


def _autocast(recipe: Recipe, ctx: DistContext) -> Any:
    use_bf16 = recipe.precision == "bf16" or (recipe.precision == "auto" and ctx.device.type == "cuda")
    if not use_bf16:
        return nullcontext()
    return torch.autocast(device_type=ctx.device.type, dtype=torch.bfloat16)


__all__ = [
    "TrainControl",
    "TrainingInterrupted",
    "lr_at",
    "param_groups",
    "run_stage",
    "set_trainable",
    "train",
]
