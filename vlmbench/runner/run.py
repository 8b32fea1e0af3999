"""`vlmbench run`: evaluate one model on several tasks — batched, sharded, resumable.

Flow per task: every rank loads the samples (rank 0 first, so a synthetic set is generated once),
forms the same global batches, answers its own share into its own log, then rank 0 gathers the
logs, scores, and writes `samples/<task>.jsonl`; finally `results.json`. The HTML report is rendered
by the caller (`vlmbench.commands.run`) from the finished run directory.

Rank 0 locks the run directory (`runner/lock.py`) for the whole job. A `--resume` is locked and
checked against the recorded manifest (`runner/state.py`) before any data or model is loaded, and
its weights and data fingerprints right after loading, before any prediction is made.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import platform
import resource
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from vlmbench import __version__
from vlmbench.distributed import DistContext, init_distributed, shutdown
from vlmbench.errors import UserError
from vlmbench.mitigation.passes import MitigatedAnswerer, cell_text, finish_mitigation, mitigation_pass
from vlmbench.mitigation.spec import check_tasks, parse_mitigation
from vlmbench.modeling.compression.apply import apply_visual_tokens, compression_record, parse_spec
from vlmbench.modeling.interface import EvalModel
from vlmbench.report.paired import visual_gain
from vlmbench.resources import checkout_root
from vlmbench.runner import state
from vlmbench.runner.controls import control_samples, pass_name
from vlmbench.runner.diagnostics import degenerate_warnings
from vlmbench.runner.engine import AnswerSettings, FeatureCache, Sharing, run_batches
from vlmbench.runner.lock import RunLock
from vlmbench.runner.logs import PredictionLog, log_path, read_logs
from vlmbench.runner.options import RunOptions, parse_batch_size, torch_dtype
from vlmbench.runner.plan import batches_for_rank, image_size_of, make_batches, make_image_batches
from vlmbench.runner.prefix_cache import PrefixCache, sharing_record
from vlmbench.runner.results import (
    headline_record,
    score_records,
    scorer_record,
    write_results,
    write_samples,
    write_thumbnails,
)
from vlmbench.runner.timing import FirstAnswerClock

log = logging.getLogger("vlmbench.run")

CPU_AUTO_BATCH = 8  # on CPU memory is rarely the limit and larger batches stop paying off


__all__ = ["RunOptions", "run_evaluation"]


def run_evaluation(opts: RunOptions) -> Path:
    """Run the evaluation; returns the run directory (on every rank).

    The options (`RunOptions.validate`), the task names and the model argument are checked before a
    process group is set up, any data is read or generated, any model loaded or a run directory made."""
    opts.validate()
    ctx = init_distributed(opts.device, opts.dist_timeout_s)
    held = contextlib.ExitStack()  # rank 0's lock of the run directory, released however the run ends
    try:
        return _run(opts, ctx, held)
    finally:
        held.close()
        shutdown(ctx)


def _run(opts: RunOptions, ctx: DistContext, held: contextlib.ExitStack) -> Path:
    from vlmbench.modeling.resolve import check_model_spec, load_model
    from vlmbench.tasks.registry import load_task

    clock = FirstAnswerClock(announce=ctx.is_main)  # time to the first answered sample (runner/timing.py)

    adapters = {name: load_task(name) for name in opts.tasks}
    for adapter in adapters.values():
        headline_record(adapter)  # an unknown scorer or primary_metric fails before any inference
    mitigation = parse_mitigation(opts.mitigation)
    check_tasks(mitigation, adapters)  # a mitigation a task cannot take fails before any inference
    check_model_spec(opts.model, opts.checkpoint)  # an unknown model fails before any data is generated
    data_dirs = opts.task_data_dirs()
    dtype = torch_dtype(opts.dtype)
    fixed_batch = _batch_size(opts.batch_size, ctx)
    recorded = {
        "settings": _prediction_settings(opts, ctx, adapters, dtype, fixed_batch),
        "task_fingerprints": {name: _fingerprint(a.config.to_dict()) for name, a in adapters.items()},
    }
    # Before any data or model is loaded: the run directory (with --resume: locked and checked).
    claimed = _agree(ctx, _claim_run_dir(opts, recorded, held) if ctx.is_main else None)

    # Data: rank 0 first (it may generate the synthetic sets), then the others read them.
    loaded_data: dict[str, tuple[list[Any], Any]] = {}
    for turn in (True, False):
        if ctx.is_main == turn:
            for name, adapter in adapters.items():
                loaded_data[name] = adapter.load(data_dirs.get(name), limit=opts.limit, synthetic_n=opts.synthetic_n)
        if turn:
            ctx.barrier()

    # Control samples: formed from the loaded data on every rank alike (a task too small for `shuffled`
    # is refused here, before the model is loaded).
    control_sets = {
        name: {c: control_samples(name, samples, c, opts.seed) for c in opts.controls}
        for name, (samples, _) in loaded_data.items()
    }

    torch.manual_seed(opts.seed)
    loaded = load_model(
        opts.model, device=str(ctx.device), dtype=dtype, seed=opts.seed, checkpoint=opts.checkpoint,
        attn_implementation=opts.attn_implementation, concurrency=opts.concurrency,
    )
    model = loaded.model
    apply_visual_tokens(model, opts.visual_tokens, opts.seed)  # a spec the model cannot take: UserError, before any prediction
    if ctx.is_main:
        log.info(
            "model %s: %s",
            opts.model,
            f"checkpoint {loaded.checkpoint}"
            if loaded.checkpoint
            else ("weights held by the server" if loaded.trained else "RANDOM weights (untrained)"),
        )
        for name, (samples, info) in loaded_data.items():
            log.info("task %s: %d samples from %s%s", name, len(samples), info.source, " (SYNTHETIC)" if info.synthetic else "")

    opened = None
    if ctx.is_main:
        manifest = {
            **recorded,
            "model_identity": _model_identity(opts, loaded),
            "data_fingerprints": {name: info.fingerprint for name, (_, info) in loaded_data.items()},
        }
        opened = _open_run_dir(opts, claimed, manifest, held)
    run_dir = _agree(ctx, opened)

    task_results: dict[str, Any] = {}
    totals = {"samples": 0, "visual_tokens": 0, "errors": 0, "wall_s": 0.0}
    cache_stats = {"hits": 0, "misses": 0}
    for name, adapter in adapters.items():
        samples, info = loaded_data[name]
        settings = _settings(adapter.config, opts.answer_mode)
        batch_size = fixed_batch or _probe(ctx, model, samples, settings, run_dir, name, _sharing(opts))
        for control in (None, *opts.controls):
            passed = samples if control is None else control_sets[name][control]
            gathered, wall = _evaluate_pass(ctx, model, opts, run_dir, pass_name(name, control), passed, settings, batch_size, clock=clock)
            if ctx.is_main:
                if control is None:
                    task_results[name], real_rows = _finish_task(run_dir, adapter, samples, info, opts, gathered, wall)
                    task_results[name]["warnings"] = degenerate_warnings(adapter.scorer, task_results[name], real_rows)
                else:
                    task_results[name].setdefault("controls", {})[control] = _finish_control(
                        run_dir, adapter, passed, task_results[name], real_rows, opts, control, gathered, wall
                    )
                for part in gathered:
                    totals["samples"] += part["samples"]
                    totals["visual_tokens"] += part["visual_tokens"]
                    cache_stats["hits"] += part["hits"]
                    cache_stats["misses"] += part["misses"]
                totals["wall_s"] += wall
            ctx.barrier()
        if mitigation is not None:  # the mitigated pass, paired with the plain one (vlmbench/mitigation/)
            answerer = MitigatedAnswerer(mitigation, opts.seed, adapter.scorer, read_logs(run_dir, name))
            gathered, wall = _evaluate_pass(ctx, model, opts, run_dir, mitigation_pass(name), samples, settings, batch_size, answerer, clock=clock)
            if ctx.is_main:
                task_results[name]["mitigation"] = finish_mitigation(
                    run_dir, adapter, samples, task_results[name], real_rows, mitigation, settings, opts.seed, gathered, wall
                )
                totals["samples"] += sum(part["samples"] for part in gathered)
                totals["visual_tokens"] += sum(part["visual_tokens"] for part in gathered)
                totals["wall_s"] += wall
            ctx.barrier()

    if ctx.is_main:
        results = _results_document(opts, ctx, loaded, run_dir, task_results, totals, cache_stats, adapters)
        results["timing"] = clock.record()
        write_results(run_dir, results)
        manifest_now = state.read_manifest(run_dir) or {}
        state.write_manifest(run_dir, {**manifest_now, "status": "finished", "finished": _now()})
        _print_table(results)
    ctx.barrier()
    return run_dir


# ---- pieces -----------------------------------------------------------------------------------
def _evaluate_pass(
    ctx: DistContext, model: EvalModel, opts: RunOptions, run_dir: Path, name: str, samples: list[Any],
    settings: AnswerSettings, batch_size: int, answer: Any = None, clock: FirstAnswerClock | None = None,
) -> tuple[list[dict[str, Any]], float]:
    """Answer one pass (a task, or a task under a control) into its per-rank log: every rank forms the
    same batches and answers its own; returns every rank's counts and the wall time."""
    sharing = _sharing(opts)
    if sharing.model_reason(model) is None:  # whole image groups per batch: one prefix prefill serves each group
        batches = make_image_batches(samples, batch_size, _shape_key(model, with_prompt=False))
    else:
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
            # `answer`: another pass's batch answerer (the mitigated pass); else the engine's, looked up now
            extra = {"sharing": sharing} if answer is None else {}
            stats = (answer or run_batches)(model, by_id, mine, done, settings, out, cache, on_progress=clock.wrap(progress.update) if clock else progress.update, **extra)
    except Exception as exc:  # noqa: BLE001 - reported to every rank below, then re-raised
        failure = exc
        stats = None
    finally:
        progress.close()
    if not ctx.all_ok(failure is None):
        if failure is not None:
            raise failure
        raise UserError(f"another rank failed while evaluating {name}; the run is resumable with --resume")
    gathered = _gather(ctx, asdict(stats) | {"hits": cache.hits, "misses": cache.misses, "prefix_sharing": sharing.record()})
    return gathered, time.perf_counter() - start


def _sharing(opts: RunOptions) -> Sharing:
    """A pass's prefix sharing (`--prefix-sharing`): on or off, with an empty LRU."""
    return Sharing(enabled=opts.prefix_sharing, cache=PrefixCache(opts.prefix_cache_mb << 20))


def _settings(config: Any, forced: str | None) -> AnswerSettings:
    mode = forced or config.answer_mode
    if mode == "choices" and not config.choices:
        mode = "generate"  # a generation task has no choices to score
    return AnswerSettings(mode=mode, choices=tuple(config.choices), max_new_tokens=config.max_new_tokens, stop=tuple(config.stop))


def _shape_key(model: EvalModel, with_prompt: bool = True):
    """Group samples by image count, visual tokens of the (first) image and prompt length (not with
    prefix sharing, whose batches keep an image's questions together whatever their length)."""

    def key(sample: Any) -> tuple[int, ...]:
        tokens = 0
        size = image_size_of(sample)
        if size is not None:
            try:
                tokens = model.visual_tokens_reference(*size)
            except Exception:  # noqa: BLE001 - reported when the sample is run
                tokens = 0
        return (len(sample.image_keys), tokens, len(sample.prompt) // 16 if with_prompt else 0)

    return key


def _batch_size(value: str, ctx: DistContext) -> int | None:
    """A fixed batch size, or None when it must be probed per task (`auto` on CUDA)."""
    size = parse_batch_size(value)
    if size is None:  # auto
        return None if ctx.device.type == "cuda" else CPU_AUTO_BATCH
    return size


def _probe(
    ctx: DistContext, model: EvalModel, samples: list[Any], settings: AnswerSettings, run_dir: Path, task: str,
    sharing: Sharing | None = None,
) -> int:
    """`--batch-size auto` on CUDA: rank 0 probes, every rank uses its answer (batches must agree).

    The size is recorded in run.json (``auto_batch_size``) and a resumed run reuses it instead of
    probing again: free memory may differ by then, and another batch size would pad the remaining
    batches differently from the ones already logged."""
    from vlmbench.runner.engine import probe_batch_size

    size = None
    if ctx.is_main:
        manifest = state.read_manifest(run_dir) or {}
        recorded = (manifest.get("auto_batch_size") or {}).get(task)
        size = recorded if type(recorded) is int and recorded >= 1 else probe_batch_size(model, samples, settings, sharing=sharing)
        if size != recorded:
            chosen = {**(manifest.get("auto_batch_size") or {}), task: size}
            state.write_manifest(run_dir, {**manifest, "auto_batch_size": chosen})
        log.info("--batch-size auto: %d%s", size, " (recorded by the run being resumed)" if size == recorded else "")
    return int(ctx.broadcast(size))


def _prediction_settings(
    opts: RunOptions, ctx: DistContext, adapters: dict[str, Any], dtype: torch.dtype | None, fixed_batch: int | None
) -> dict[str, Any]:
    """Every setting besides the weights and the data that can change a prediction (what `--resume`
    compares before loading anything). The batch size is in: padding a batch changes the numerics."""
    answers = {name: _settings(a.config, opts.answer_mode) for name, a in adapters.items()}
    return {
        "model": _as_path_if_dir(opts.model),
        "checkpoint": _as_path_if_dir(opts.checkpoint) if opts.checkpoint else None,
        "answer_mode": {name: s.mode for name, s in answers.items()},
        "generation": {name: {"choices": list(s.choices), "max_new_tokens": s.max_new_tokens, "stop": list(s.stop)}
                       for name, s in answers.items()},
        "dtype": str(dtype).removeprefix("torch.") if dtype is not None else None,
        "device": ctx.device.type,
        "limit": opts.limit,
        "seed": opts.seed,
        "synthetic_n": opts.synthetic_n,
        "attn_implementation": opts.attn_implementation,
        "batch_size": fixed_batch if fixed_batch is not None else "auto",
        # recorded only when given, so that runs started before controls existed still resume
        **({"controls": list(opts.controls)} if opts.controls else {}),
        **({"visual_tokens": parse_spec(opts.visual_tokens).text} if parse_spec(opts.visual_tokens) else {}),
        # recorded only when on: a run started before prefix sharing existed ran unshared, i.e. "off"
        **({"prefix_sharing": "on"} if opts.prefix_sharing else {}),
        **({"mitigation": parse_mitigation(opts.mitigation).text} if parse_mitigation(opts.mitigation) else {}),
    }


def _as_path_if_dir(spec: str) -> str:
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.is_dir() else spec


def _agree(ctx: DistContext, value: Path | UserError | None) -> Path:
    """Rank 0's answer on every rank: its run directory, or the `UserError` every rank then raises."""
    value = ctx.broadcast(value)
    if isinstance(value, UserError):
        raise value
    return Path(value)


def _claim_run_dir(opts: RunOptions, recorded: dict[str, Any], held: contextlib.ExitStack) -> Path | UserError:
    """Rank 0, before any data or model is loaded: the run directory this command will write.

    With --resume it must hold a run.json; it is locked (another process writing it is refused) and
    its recorded settings, task configs and prediction logs are checked now, so a refusal costs
    nothing. A new run's directory must not exist yet; it is created (and locked) in `_open_run_dir`,
    so a command that fails while loading leaves nothing behind. Errors are returned so that rank 0
    can broadcast them and every rank exits the same way."""
    try:
        output = Path(opts.output_dir)
        if not opts.resume:
            run_dir = output / (opts.run_name or state.new_run_name(opts.model))
            _refuse_existing(run_dir)
            return run_dir
        run_dir = output / opts.run_name if opts.run_name else state.find_resumable(output)
        if not (run_dir / state.MANIFEST).is_file():
            raise UserError(f"--resume: {run_dir} holds no run.json; drop --resume to start a new run")
        held.enter_context(RunLock(run_dir))
        state.check_resume(state.read_manifest(run_dir) or {}, recorded, run_dir, state.BEFORE_LOADING)
        for task in opts.tasks:
            for control in (None, *opts.controls):  # a log line vlmbench did not write is refused here, not after inference
                read_logs(run_dir, pass_name(task, control))
            if opts.mitigation:
                read_logs(run_dir, mitigation_pass(task))
        return run_dir
    except UserError as exc:
        return exc


def _open_run_dir(
    opts: RunOptions, run_dir: Path, manifest: dict[str, Any], held: contextlib.ExitStack
) -> Path | UserError:
    """Rank 0, once data and model are loaded: create and lock a new run directory, or check a resumed
    one's weights and data fingerprints; then record the manifest with status "running"."""
    try:
        if opts.resume:
            old = state.read_manifest(run_dir) or {}
            state.check_resume(old, manifest, run_dir, state.AFTER_LOADING)
            log.info("resuming %s", run_dir)
            state.write_manifest(run_dir, {**old, "status": "running", "resumed": _now()})
            return run_dir
        _refuse_existing(run_dir)
        held.enter_context(RunLock(run_dir))
        if (run_dir / state.MANIFEST).exists():  # another process created it since the check above
            raise UserError(f"run directory {run_dir} was just created by another process; choose another --run-name")
        state.write_manifest(run_dir, {**manifest, "status": "running", "started": _now(), "run_name": run_dir.name})
        return run_dir
    except UserError as exc:
        return exc


def _refuse_existing(run_dir: Path) -> None:
    if run_dir.exists() and any(run_dir.iterdir()):
        raise UserError(f"run directory {run_dir} already exists; choose another --run-name or add --resume")


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


def _read_pass(run_dir: Path, name: str, samples: list[Any]) -> dict[str, dict[str, Any]]:
    records = read_logs(run_dir, name)
    missing = [s.question_id for s in samples if s.question_id not in records]
    if missing:
        raise UserError(
            f"{len(missing)} samples of {name} have no prediction (e.g. {missing[:3]}); "
            "a rank stopped early: rerun with --resume"
        )
    return records


def _finish_control(
    run_dir: Path, adapter: Any, samples: list[Any], real_result: dict[str, Any], real_rows: list[dict[str, Any]],
    opts: RunOptions, control: str, gathered: list[dict], wall: float,
) -> dict[str, Any]:
    """Score a control pass, write ``samples/<task>@<control>.jsonl`` and return results.json's
    ``tasks.<task>.controls.<control>`` entry, visual gains included."""
    name = pass_name(adapter.config.name, control)
    scored, rows = score_records(adapter, samples, _read_pass(run_dir, name, samples), opts.seed)
    for sample, row in zip(samples, rows, strict=True):
        row["control"] = control
        row["control_source_keys"] = sample.source_keys
    write_samples(run_dir, name, rows)
    computed = sum(part["samples"] for part in gathered)
    entry = {
        "metrics": scored["metrics"],
        "ci95": scored["ci95"],
        "n": len(samples),
        "errors": sum(1 for r in rows if r["error"]),
    }
    gain = visual_gain(adapter.config.name, real_result, {**scorer_record(adapter, scored["metrics"]), **entry},
                       real_rows, rows, seed=opts.seed)
    return {
        **entry,
        **gain,
        "throughput": {"samples_computed": computed, "wall_s": round(wall, 3)},
    }


def _finish_task(
    run_dir: Path, adapter: Any, samples: list[Any], info: Any, opts: RunOptions, gathered: list[dict], wall: float
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    records = _read_pass(run_dir, adapter.config.name, samples)
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
        "compression": compression_record(parse_spec(opts.visual_tokens).text, rows),
        "prefix_sharing": sharing_record([part["prefix_sharing"] for part in gathered], opts.prefix_sharing),
        "throughput": {"samples_computed": computed, "wall_s": round(wall, 3), "samples_per_s": round(computed / wall, 3) if wall else None},
    }, rows


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
    """Which weights the run evaluates: their directory and a fingerprint of its files, or the seed
    of random weights."""
    identity: dict[str, Any] = {"model": opts.model, "checkpoint": loaded.checkpoint, "trained": loaded.trained}
    if loaded.checkpoint:
        root = Path(loaded.checkpoint)
        identity["checkpoint"] = str(root.resolve())
        weights = sorted(root.glob("*.safetensors"))  # a vlmbench model.safetensors, or an hf: model's shards
        if len(weights) == 1:
            identity["weights_sha256"] = _file_hash(weights[0])
        elif weights:
            listing = "".join(f"{w.name} {_file_hash(w)}\n" for w in weights)
            identity["weights_sha256"] = hashlib.sha256(listing.encode()).hexdigest()
        if (root / "config.json").is_file():
            identity["config_sha256"] = _file_hash(root / "config.json")
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
    controls = list(dict.fromkeys(c for r in results["tasks"].values() for c in (r.get("controls") or {})))
    print(f"\nrun {results['run_name']}  model {results['model']['name']}"
          + ("" if results["model"]["trained"] else "  [RANDOM WEIGHTS]"))
    gain_heads = "".join(f" {'gain ' + c + ' [95% CI]':>32}" for c in controls)
    mitigated = any(r.get("mitigation") for r in results["tasks"].values())
    gain_heads += f" {'mitigated, diff [95% CI]':>34}" if mitigated else ""
    print(f"{'task':<10} {'metric':<20} {'value':>7} {'95% CI':>17} {'n':>6} {'errors':>6}{gain_heads}  data")
    notes: list[str] = []
    for task, r in results["tasks"].items():
        metric = r["headline"]["metric"]
        value = _lookup(r["metrics"], metric)
        ci = r["ci95"].get(metric)
        ci_text = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "-"
        data = "SYNTHETIC" if r["data"]["synthetic"] else r["data"]["source"]
        gains = "".join(f" {_gain_text(r, c, metric):>32}" for c in controls)
        gains += f" {cell_text(r, metric):>34}" if mitigated else ""
        print(f"{task:<10} {metric:<20} {value:>7.3f} {ci_text:>17} {r['n']:>6} {r['errors']:>6}{gains}  {data}")
        notes += [f"WARNING {task}: {w['message']}" for w in r.get("warnings") or []]
    for note in notes:
        print(note)
    t = results["throughput"]
    print(f"throughput: {t['samples_per_s']} samples/s, {t['visual_tokens_per_s']} visual tokens/s, wall {t['wall_s']} s")


def _gain_text(result: dict[str, Any], control: str, metric: str) -> str:
    """The headline's visual gain under ``control`` and its interval, e.g. ``+0.210 [+0.150, +0.270]``."""
    entry = (result.get("controls") or {}).get(control) or {}
    try:
        gain = _lookup(entry.get("visual_gain") or {}, metric)
        low, high = _lookup_pair(entry.get("visual_gain_ci95") or {}, metric)
    except (KeyError, TypeError, ValueError):
        return "-"
    return f"{gain:+.3f} [{low:+.3f}, {high:+.3f}]"


def _lookup_pair(nested: dict[str, Any], dotted: str) -> tuple[float, float]:
    value: Any = nested
    for part in dotted.split("."):
        value = value[part]
    return float(value[0]), float(value[1])


def _lookup(metrics: dict[str, Any], dotted: str) -> float:
    value: Any = metrics
    for part in dotted.split("."):
        value = value[part]
    return float(value)
