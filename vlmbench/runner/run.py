"""`vlmbench run`: evaluate one model on several tasks — batched, sharded, resumable.

Flow per task: every rank loads the samples (rank 0 first, so a synthetic set is generated once),
forms the same global batches, answers its own share into its own log, then rank 0 gathers the
logs, scores, and writes `samples/<task>.jsonl`; finally `results.json`. The HTML report is rendered
by the caller (`vlmbench.commands.run`) from the finished run directory.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import platform
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from vlmbench import __version__
from vlmbench.distributed import DistContext, init_distributed, shutdown
from vlmbench.errors import UserError
from vlmbench.modeling.interface import EvalModel
from vlmbench.resources import checkout_root
from vlmbench.runner import state
from vlmbench.runner.engine import AnswerSettings, FeatureCache, run_batches
from vlmbench.runner.logs import PredictionLog, log_path, read_logs
from vlmbench.runner.plan import batches_for_rank, image_size_of, make_batches
from vlmbench.runner.results import (
    headline_record,
    score_records,
    scorer_record,
    write_results,
    write_samples,
    write_thumbnails,
)

log = logging.getLogger("vlmbench.run")

CPU_AUTO_BATCH = 8  # on CPU memory is rarely the limit and larger batches stop paying off


@dataclass
class RunOptions:
    model: str
    tasks: list[str]
    checkpoint: str | None = None
    data_dir: str | None = None
    limit: int | None = None
    batch_size: str = "8"
    output_dir: str = "runs"
    run_name: str | None = None
    resume: bool = False
    seed: int = 0
    device: str | None = None
    dtype: str | None = None
    answer_mode: str | None = None  # force "generate" (or "choices") for every task
    feature_cache: bool = True
    dist_timeout_s: float = 1800.0
    synthetic_n: int | None = None
    attn_implementation: str | None = None  # hf: models only (sdpa | eager | flash_attention_2)
    extra: dict[str, Any] = field(default_factory=dict)


def run_evaluation(opts: RunOptions) -> Path:
    """Run the evaluation; returns the run directory (on every rank)."""
    ctx = init_distributed(opts.device, opts.dist_timeout_s)
    try:
        return _run(opts, ctx)
    finally:
        shutdown(ctx)


def _run(opts: RunOptions, ctx: DistContext) -> Path:
    from vlmbench.modeling.resolve import load_model
    from vlmbench.tasks.registry import load_task

    if not opts.tasks:
        raise UserError("--tasks is empty: give a comma-separated list, e.g. --tasks pope,docvqa (see `vlmbench tasks`)")
    adapters = {name: load_task(name) for name in opts.tasks}
    for adapter in adapters.values():
        headline_record(adapter)  # an unknown scorer or primary_metric fails before any inference
    data_dirs = _data_dirs(opts)
    dtype = _dtype(opts.dtype)

    # Data: rank 0 first (it may generate the synthetic sets), then the others read them.
    loaded_data: dict[str, tuple[list[Any], Any]] = {}
    for turn in (True, False):
        if ctx.is_main == turn:
            for name, adapter in adapters.items():
                loaded_data[name] = adapter.load(data_dirs.get(name), limit=opts.limit, synthetic_n=opts.synthetic_n)
        if turn:
            ctx.barrier()

    torch.manual_seed(opts.seed)
    loaded = load_model(
        opts.model, device=str(ctx.device), dtype=dtype, seed=opts.seed, checkpoint=opts.checkpoint,
        attn_implementation=opts.attn_implementation,
    )
    model = loaded.model
    if ctx.is_main:
        log.info(
            "model %s: %s", opts.model, f"checkpoint {loaded.checkpoint}" if loaded.checkpoint else "RANDOM weights (untrained)"
        )
        for name, (samples, info) in loaded_data.items():
            log.info("task %s: %d samples from %s%s", name, len(samples), info.source, " (SYNTHETIC)" if info.synthetic else "")

    manifest = {
        "model_identity": _model_identity(opts, loaded),
        "task_fingerprints": {name: _fingerprint(a.config.to_dict()) for name, a in adapters.items()},
        "data_fingerprints": {name: info.fingerprint for name, (_, info) in loaded_data.items()},
    }
    run_dir = ctx.broadcast(_open_run_dir(opts, manifest) if ctx.is_main else None)
    if isinstance(run_dir, UserError):
        raise run_dir
    run_dir = Path(run_dir)
    fixed_batch = _batch_size(opts.batch_size, ctx)

    task_results: dict[str, Any] = {}
    totals = {"samples": 0, "visual_tokens": 0, "errors": 0, "wall_s": 0.0}
    cache_stats = {"hits": 0, "misses": 0}
    for name, adapter in adapters.items():
        samples, info = loaded_data[name]
        settings = _settings(adapter.config, opts.answer_mode)
        batch_size = fixed_batch or _probe(ctx, model, samples, settings)
        batches = make_batches(samples, batch_size, _shape_key(model))
        mine = batches_for_rank(batches, ctx.rank, ctx.world_size)
        done = set(read_logs(run_dir, name)) if opts.resume else set()
        by_id = {s.question_id: s for s in samples}
        cache = FeatureCache(256 if opts.feature_cache else 0)
        start = time.perf_counter()
        progress = _progress(ctx, name, sum(len([q for q in b.question_ids if q not in done]) for b in mine))
        failure: Exception | None = None
        try:
            with PredictionLog(log_path(run_dir, name, ctx.rank)) as out:
                stats = run_batches(model, by_id, mine, done, settings, out, cache, on_progress=progress.update)
        except Exception as exc:  # noqa: BLE001 - reported to every rank below, then re-raised
            failure = exc
            stats = None
        finally:
            progress.close()
        if not ctx.all_ok(failure is None):
            if failure is not None:
                raise failure
            raise UserError(f"another rank failed while evaluating {name}; the run is resumable with --resume")
        gathered = _gather(ctx, asdict(stats) | {"hits": cache.hits, "misses": cache.misses})
        wall = time.perf_counter() - start
        if ctx.is_main:
            task_results[name] = _finish_task(run_dir, adapter, samples, info, opts, gathered, wall)
            for part in gathered:
                totals["samples"] += part["samples"]
                totals["visual_tokens"] += part["visual_tokens"]
                cache_stats["hits"] += part["hits"]
                cache_stats["misses"] += part["misses"]
            totals["wall_s"] += wall
        ctx.barrier()

    if ctx.is_main:
        results = _results_document(opts, ctx, loaded, run_dir, task_results, totals, cache_stats, adapters)
        write_results(run_dir, results)
        manifest_now = state.read_manifest(run_dir) or {}
        state.write_manifest(run_dir, {**manifest_now, "status": "finished", "finished": _now()})
        _print_table(results)
    ctx.barrier()
    return run_dir


# ---- pieces -----------------------------------------------------------------------------------
def _data_dirs(opts: RunOptions) -> dict[str, Path]:
    if not opts.data_dir:
        return {}
    root = Path(opts.data_dir)
    if not root.exists():
        raise UserError(f"--data-dir {root} does not exist")
    if len(opts.tasks) == 1:
        return {opts.tasks[0]: root}
    return {name: root / name for name in opts.tasks if (root / name).exists()}


def _dtype(name: str | None) -> torch.dtype | None:
    if name is None:
        return None
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise UserError(f"--dtype {name} is unknown; use one of {', '.join(table)}")
    return table[name]


def _settings(config: Any, forced: str | None) -> AnswerSettings:
    mode = forced or config.answer_mode
    if mode == "choices" and not config.choices:
        mode = "generate"  # a generation task has no choices to score
    return AnswerSettings(mode=mode, choices=tuple(config.choices), max_new_tokens=config.max_new_tokens, stop=tuple(config.stop))


def _shape_key(model: EvalModel):
    """Group samples by image count, visual tokens of the (first) image and prompt length."""

    def key(sample: Any) -> tuple[int, ...]:
        tokens = 0
        size = image_size_of(sample)
        if size is not None:
            try:
                tokens = model.visual_tokens_reference(*size)
            except Exception:  # noqa: BLE001 - reported when the sample is run
                tokens = 0
        return (len(sample.image_keys), tokens, len(sample.prompt) // 16)

    return key


def _batch_size(value: str, ctx: DistContext) -> int | None:
    """A fixed batch size, or None when it must be probed per task (`auto` on CUDA)."""
    if value == "auto":
        return None if ctx.device.type == "cuda" else CPU_AUTO_BATCH
    try:
        size = int(value)
    except ValueError:
        raise UserError(f"--batch-size {value} is not a positive integer or 'auto'") from None
    if size < 1:
        raise UserError(f"--batch-size {value} must be at least 1")
    return size


def _probe(ctx: DistContext, model: EvalModel, samples: list[Any], settings: AnswerSettings) -> int:
    """`--batch-size auto` on CUDA: rank 0 probes, every rank uses its answer (batches must agree)."""
    from vlmbench.runner.engine import probe_batch_size

    size = probe_batch_size(model, samples, settings) if ctx.is_main else None
    size = ctx.broadcast(size)
    if ctx.is_main:
        log.info("--batch-size auto: %d", size)
    return int(size)


def _open_run_dir(opts: RunOptions, manifest: dict[str, Any]) -> Path | UserError:
    """Create (or, with --resume, validate and reopen) the run directory; errors are returned so that
    rank 0 can broadcast them and every rank exits the same way."""
    try:
        output = Path(opts.output_dir)
        output.mkdir(parents=True, exist_ok=True)
        if opts.resume:
            run_dir = output / opts.run_name if opts.run_name else state.find_resumable(output)
            old = state.read_manifest(run_dir)
            if old is None:
                raise UserError(f"--resume: {run_dir} holds no run.json; drop --resume to start a new run")
            state.check_resume(old, manifest, run_dir)
            log.info("resuming %s", run_dir)
            state.write_manifest(run_dir, {**old, "status": "running", "resumed": _now()})
            return run_dir
        name = opts.run_name or state.new_run_name(opts.model)
        run_dir = output / name
        if run_dir.exists() and any(run_dir.iterdir()):
            raise UserError(f"run directory {run_dir} already exists; choose another --run-name or add --resume")
        state.write_manifest(run_dir, {**manifest, "status": "running", "started": _now(), "run_name": name})
        return run_dir
    except UserError as exc:
        return exc


def _progress(ctx: DistContext, task: str, total: int):
    from tqdm import tqdm

    suffix = f" (rank 0 of {ctx.world_size})" if ctx.active else ""
    return tqdm(total=total, desc=f"{task}{suffix}", unit="q", disable=not ctx.is_main, file=sys.stderr, dynamic_ncols=True)


def _gather(ctx: DistContext, payload: dict[str, Any]) -> list[dict[str, Any]]:
    if not ctx.active:
        return [payload]
    import torch.distributed as dist

    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, payload)
    return out


def _finish_task(
    run_dir: Path, adapter: Any, samples: list[Any], info: Any, opts: RunOptions, gathered: list[dict], wall: float
) -> dict[str, Any]:
    records = read_logs(run_dir, adapter.config.name)
    missing = [s.question_id for s in samples if s.question_id not in records]
    if missing:
        raise UserError(
            f"{len(missing)} samples of {adapter.config.name} have no prediction (e.g. {missing[:3]}); "
            "a rank stopped early: rerun with --resume"
        )
    scored, rows = score_records(adapter, samples, records, opts.seed)
    write_thumbnails(run_dir, samples, rows)
    write_samples(run_dir, adapter.config.name, rows)
    unique_tokens = {  # per image, also for multi-image samples (their row holds each image's count)
        key: count
        for r in rows
        if r.get("visual_tokens") is not None
        for key, count in zip(r.get("image_keys") or [r["image_key"]], r.get("visual_tokens_each") or [r["visual_tokens"]], strict=True)
    }
    tokens = list(unique_tokens.values())
    computed = sum(part["samples"] for part in gathered)
    return {
        "metrics": scored["metrics"],
        "ci95": scored["ci95"],
        "n": len(samples),
        "errors": sum(1 for r in rows if r["error"]),
        "answer_mode": _settings(adapter.config, opts.answer_mode).mode,
        "data": {"source": info.source, "fingerprint": info.fingerprint, "synthetic": bool(info.synthetic), **_meta(info)},
        **scorer_record(adapter, scored["metrics"]),
        "visual_tokens_per_image": _spread(tokens),
        "throughput": {"samples_computed": computed, "wall_s": round(wall, 3), "samples_per_s": round(computed / wall, 3) if wall else None},
    }


def _meta(info: Any) -> dict[str, Any]:
    meta = getattr(info, "meta", None) or {}
    keep = ("generator", "generator_version", "seed")
    return {k: meta[k] for k in keep if k in meta}


def _spread(values: list[int]) -> dict[str, float] | None:
    if not values:
        return None
    return {"mean": round(sum(values) / len(values), 2), "min": min(values), "max": max(values)}


def _results_document(
    opts: RunOptions, ctx: DistContext, loaded: Any, run_dir: Path, task_results: dict, totals: dict,
    cache_stats: dict, adapters: dict,
) -> dict[str, Any]:
    from vlmbench.modeling.summary import model_summary

    model_info = model_summary(loaded.model, loaded.name, loaded.preset)
    all_tokens = [t for r in task_results.values() if r["visual_tokens_per_image"] for t in (r["visual_tokens_per_image"]["mean"],)]
    per_image = [r["visual_tokens_per_image"] for r in task_results.values() if r["visual_tokens_per_image"]]
    model_info["visual_tokens_per_image"] = (
        {"mean": round(sum(all_tokens) / len(all_tokens), 2), "min": min(p["min"] for p in per_image), "max": max(p["max"] for p in per_image)}
        if per_image else None
    )
    model_info["trained"] = loaded.trained
    model_info["checkpoint"] = loaded.checkpoint
    wall = totals["wall_s"]
    peak = (
        torch.cuda.max_memory_allocated(ctx.device) / 2**20
        if ctx.device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {
        "vlmbench_version": __version__,
        "run_name": run_dir.name,
        "created": _now(),
        "synthetic": any(r["data"]["synthetic"] for r in task_results.values()),
        "model": model_info,
        "tasks": task_results,
        "throughput": {
            "samples_per_s": round(totals["samples"] / wall, 3) if wall else None,
            "visual_tokens_per_s": round(totals["visual_tokens"] / wall, 1) if wall else None,
            "wall_s": round(wall, 3),
            "samples_computed": totals["samples"],
            "peak_memory_mb": round(peak, 1),
            "peak_memory_scope": "rank 0 process, " + ("CUDA allocated" if ctx.device.type == "cuda" else "CPU max RSS"),
            "feature_cache": cache_stats,
            "world_size": ctx.world_size,
        },
        "config": {
            **{k: v for k, v in asdict(opts).items() if k != "extra"},
            "tasks": {name: adapters[name].config.to_dict() for name in task_results},
        },
        "environment": _environment(ctx),
    }


def _environment(ctx: DistContext) -> dict[str, Any]:
    import transformers

    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else platform.processor() or "cpu",
        "world_size": ctx.world_size,
        "backend": ("nccl" if ctx.device.type == "cuda" else "gloo") if ctx.active else None,
        "git_commit": _git_commit(),
    }
    return env


def _git_commit() -> str | None:
    """HEAD of the vlmbench checkout the code runs from; None for an installed wheel or no git.

    Only the checkout's own ``.git`` counts: a wheel installed into a venv that happens to sit
    inside some other repository must not report that repository's commit.
    """
    root = checkout_root()
    if root is None or not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def _model_identity(opts: RunOptions, loaded: Any) -> dict[str, Any]:
    identity: dict[str, Any] = {"model": opts.model, "checkpoint": loaded.checkpoint, "trained": loaded.trained}
    if loaded.checkpoint:
        weights = Path(loaded.checkpoint) / "model.safetensors"
        if weights.exists():
            identity["weights_sha256"] = _file_hash(weights)
    else:
        identity["seed"] = opts.seed
    return identity


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fingerprint(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _print_table(results: dict[str, Any]) -> None:
    print(f"\nrun {results['run_name']}  model {results['model']['name']}"
          + ("" if results["model"]["trained"] else "  [RANDOM WEIGHTS]"))
    print(f"{'task':<10} {'metric':<20} {'value':>7} {'95% CI':>17} {'n':>6} {'errors':>6}  data")
    for task, r in results["tasks"].items():
        metric = r["headline"]["metric"]
        value = _lookup(r["metrics"], metric)
        ci = r["ci95"].get(metric)
        ci_text = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "-"
        data = "SYNTHETIC" if r["data"]["synthetic"] else r["data"]["source"]
        print(f"{task:<10} {metric:<20} {value:>7.3f} {ci_text:>17} {r['n']:>6} {r['errors']:>6}  {data}")
    t = results["throughput"]
    print(f"throughput: {t['samples_per_s']} samples/s, {t['visual_tokens_per_s']} visual tokens/s, wall {t['wall_s']} s")


def _lookup(metrics: dict[str, Any], dotted: str) -> float:
    value: Any = metrics
    for part in dotted.split("."):
        value = value[part]
    return float(value)
