"""The GPU check's steps and its one JSON of figures (run by benchmarks/gpu_check.sh; docs/gpu-check.md).

Every step runs in its own subprocess (``gpu_check.py --step NAME``) under a time box, so a step that
crashes, hangs or lacks a package records its error and the next one runs. A step prints one JSON
object as its last stdout line; the driver adds status, seconds and the output tail, and rewrites the
figures file after every step (a check cut short still leaves what it measured).

    python benchmarks/gpu_check.py --out figures.json [--budget-s 420] [--only a,b] [--cpu] [--dry-run]

``--cpu`` runs every step that can run without CUDA on the CPU with the same code (the CUDA-only ones
record ``skipped``), which is how the script is checked on a machine without a GPU. ``--dry-run`` runs
no step at all: it writes the JSON with each step's command and time box, to check the plumbing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ports import free_port

REPO = Path(__file__).resolve().parents[1]
RESERVE_S = 5.0  # kept back from the budget for writing the figures


@dataclass(frozen=True)
class Step:
    name: str
    timeout_s: int
    needs_cuda: bool
    what: str


STEPS: tuple[Step, ...] = (
    Step("environment", 30, False, "torch/CUDA versions, device, bf16 support, flash-attn import"),
    Step(
        "runner_bf16",
        60,
        False,
        "vlmbench run on POPE in bf16: generate and choices samples/s, first-answer time",
    ),
    Step(
        "bench_runner", 60, False, "benchmarks/bench_runner.py --device cuda (its 2-process row needs 2 GPUs)"
    ),
    Step("prefix_sharing", 70, False, "benchmarks/bench_prefix.py on/off in bf16 (576-token image prefix)"),
    Step("batch_size_auto", 45, True, "--batch-size auto: the probed size and its samples/s against batch 8"),
    Step(
        "flash_varlen_vit", 30, True, "native-resolution ViT: flash-attn varlen kernel vs SDPA, max abs diff"
    ),
    Step("hf_flash_attention_2", 60, True, "exported LLaVA via hf: with flash_attention_2 vs sdpa: answers"),
    Step("nccl_vs_gloo", 75, False, "1-GPU run (nccl smoke) vs 2-process gloo CPU run: same answers"),
    Step(
        "train_bf16", 50, False, "vlmbench train, tiny recipe, bf16 autocast on CUDA: steps, losses, seconds"
    ),
)


# ---- helpers shared by the steps -----------------------------------------------------------------


def _env(work: Path) -> dict[str, str]:
    return {
        **os.environ,
        "VLMBENCH_CACHE": str(work / "cache"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }


def _sh(cmd: list[str], work: Path, timeout: float | None = None, env: dict[str, str] | None = None) -> str:
    """Run a command; its stdout, or RuntimeError with the stderr tail."""
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=env or _env(work), timeout=timeout, cwd=REPO
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} ... exit {proc.returncode}: {proc.stderr[-1500:]}")
    return proc.stdout


def _device(cpu: bool) -> str:
    return "cpu" if cpu else "cuda"


def _vlmbench_run(
    work: Path, name: str, args: list[str], launcher: list[str] | None = None
) -> dict[str, Any]:
    """One `vlmbench run`; results.json's figures that the checks report, plus the answers."""
    launch = launcher or [sys.executable, "-m", "vlmbench"]
    _sh([*launch, "run", *args, "--output-dir", str(work / "runs"), "--run-name", name, "--no-report"], work)
    run_dir = work / "runs" / name
    results = json.loads((run_dir / "results.json").read_text())
    task = next(iter(results["tasks"]))
    rows = [json.loads(line) for line in (run_dir / "samples" / f"{task}.jsonl").read_text().splitlines()]
    entry = results["tasks"][task]
    manifest = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    return {
        "samples_per_s": entry["throughput"].get("samples_per_s"),
        "n": entry["n"],
        "errors": entry["errors"],
        "headline": entry.get("headline", {}).get("metric"),
        "metrics": entry["metrics"],
        "first_sample_s": (results.get("timing") or {}).get("first_sample_s"),
        "peak_memory_mb": results["throughput"].get("peak_memory_mb"),
        "auto_batch_size": (manifest.get("auto_batch_size") or {}).get(task),
        "answers": {r["question_id"]: r["prediction"] for r in rows},
        "logprobs": {r["question_id"]: r.get("choice_logprobs") for r in rows},
    }


def _agreement(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    same = sum(b["answers"].get(q) == p for q, p in a["answers"].items())
    deltas = [
        abs(lp - (b["logprobs"].get(q) or {}).get(c, float("nan")))
        for q, row in a["logprobs"].items()
        if row
        for c, lp in row.items()
    ]
    finite = [d for d in deltas if d == d]
    return {
        "identical_answers": round(same / max(1, len(a["answers"])), 4),
        "questions": len(a["answers"]),
        "max_logprob_diff": max(finite) if finite else None,
    }


def _slim(run: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in run.items() if k not in ("answers", "logprobs")}


def _pope(images: int, device: str, *extra: str) -> list[str]:
    return [
        "--model",
        "internvl-style",
        "--tasks",
        "pope",
        "--synthetic-n",
        str(images),
        "--device",
        device,
        *extra,
    ]


# ---- the steps ---------------------------------------------------------------------------------------
def step_environment(work: Path, cpu: bool) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "torch_cuda": torch.version.cuda,
    }
    if torch.cuda.is_available():
        info.update(
            device=torch.cuda.get_device_name(0),
            bf16_supported=torch.cuda.is_bf16_supported(),
            memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
        )
    try:
        import flash_attn

        info["flash_attn"] = flash_attn.__version__
    except Exception as exc:  # noqa: BLE001 - reported, the steps that need it then say skipped
        info["flash_attn"] = f"not importable: {type(exc).__name__}: {exc}"[:300]
    import transformers

    info["transformers"] = transformers.__version__
    return info


def step_runner_bf16(work: Path, cpu: bool) -> dict[str, Any]:
    dev, images = _device(cpu), 4 if cpu else 40
    out: dict[str, Any] = {"questions": images * 18, "dtype": "bfloat16"}
    for mode in ("generate", "choices"):
        run = _vlmbench_run(
            work, f"runner-{mode}", _pope(images, dev, "--dtype", "bfloat16", "--answer-mode", mode)
        )
        out[mode] = _slim(run)
    return out


def step_bench_runner(work: Path, cpu: bool) -> dict[str, Any]:
    args = ["--device", _device(cpu), "--images", "2" if cpu else "10"]
    text = _sh([sys.executable, "benchmarks/bench_runner.py", *args], work)
    return {"args": args, "stdout": text[-3000:]}


def step_prefix_sharing(work: Path, cpu: bool) -> dict[str, Any]:
    """bench_prefix.py with the flags it has now: a flag it lacks is reported and left out."""
    script = REPO / "benchmarks" / "bench_prefix.py"
    if not script.is_file():
        raise RuntimeError("benchmarks/bench_prefix.py is missing")
    usage = _sh([sys.executable, str(script), "--help"], work)
    wanted = {"--device": _device(cpu), "--dtype": "bfloat16", "--images": "2" if cpu else "24"}
    if cpu:
        wanted["--image-size"] = "64"
    args, missing = [], []
    for flag, value in wanted.items():
        (args.extend([flag, value]) if flag in usage else missing.append(flag))
    figures = work / "prefix.json"
    if "--json" in usage:
        args += ["--json", str(figures)]
    else:
        missing.append("--json")
    text = _sh([sys.executable, str(script), *args], work)
    return {
        "args": args,
        "missing_flags": missing,
        "figures": json.loads(figures.read_text()) if figures.is_file() else None,
        "stdout": text[-2000:],
    }


def step_batch_size_auto(work: Path, cpu: bool) -> dict[str, Any]:
    runs = {
        label: _vlmbench_run(
            work, f"bs-{label}", _pope(40, "cuda", "--dtype", "bfloat16", "--batch-size", size)
        )
        for label, size in (("fixed8", "8"), ("auto", "auto"))
    }
    return {
        "auto_batch_size": runs["auto"]["auto_batch_size"],
        "samples_per_s": {k: v["samples_per_s"] for k, v in runs.items()},
        "ratio_auto_vs_8": round(runs["auto"]["samples_per_s"] / runs["fixed8"]["samples_per_s"], 3),
        "agreement": _agreement(runs["fixed8"], runs["auto"]),
    }


def step_flash_varlen_vit(work: Path, cpu: bool) -> dict[str, Any]:
    import torch

    from vlmbench.modeling import vision
    from vlmbench.modeling.presets import load_preset

    if vision._flash_varlen() is None:
        raise RuntimeError(
            "flash_attn (flash_attn_varlen_func) is not importable: the varlen path cannot run"
        )
    cfg = load_preset("qwen2vl-style").vision
    torch.manual_seed(0)
    vit = vision.NativeViT(cfg).to("cuda", torch.bfloat16).eval()
    p = cfg.patch_size
    images = [
        torch.rand(3, p * r, p * c, device="cuda", dtype=torch.bfloat16) for r, c in ((4, 6), (8, 8), (2, 10))
    ]
    with torch.inference_mode():
        flash = vit(images)
        original = vision._flash_varlen
        vision._flash_varlen = lambda: None  # the SDPA block-diagonal path
        try:
            sdpa = vit(images)
        finally:
            vision._flash_varlen = original
        one_by_one = [vit([image])[0] for image in images]  # packing must not change an image's features
    diff = max(float((a.float() - b.float()).abs().max()) for a, b in zip(flash, sdpa, strict=True))
    packed = max(float((a.float() - b.float()).abs().max()) for a, b in zip(flash, one_by_one, strict=True))
    scale = max(float(a.float().abs().max()) for a in sdpa)
    return {"max_abs_diff_flash_vs_sdpa": diff, "max_abs_diff_packed_vs_single": packed, "max_abs_value": scale,
            "images": [list(i.shape[1:]) for i in images], "dtype": "bfloat16"}  # fmt: skip


def step_hf_flash_attention_2(work: Path, cpu: bool) -> dict[str, Any]:
    import importlib.util

    if importlib.util.find_spec("flash_attn") is None:
        raise RuntimeError("flash_attn is not installed: transformers' flash_attention_2 cannot run")
    exported = work / "llava-hf"
    if not exported.is_dir():
        _sh([sys.executable, "-m", "vlmbench", "export", "--checkpoint", str(REPO / "models/checkpoints/llava-1.5-style"),
             "--format", "llava", "--out", str(exported)], work)  # fmt: skip
    common = ["--model", f"hf:{exported}", "--tasks", "pope", "--synthetic-n", "10", "--device", "cuda",
              "--dtype", "bfloat16", "--answer-mode", "choices"]  # fmt: skip
    runs = {impl: _vlmbench_run(work, f"hf-{impl}", [*common, "--attn-implementation", impl])
            for impl in ("sdpa", "flash_attention_2")}  # fmt: skip
    return {
        "samples_per_s": {k: v["samples_per_s"] for k, v in runs.items()},
        "agreement": _agreement(runs["sdpa"], runs["flash_attention_2"]),
    }


def step_nccl_vs_gloo(work: Path, cpu: bool) -> dict[str, Any]:
    """The same POPE run three ways: 1 process on the GPU under torchrun, 2 gloo processes on the CPU,
    and 1 plain CPU process; plus an nccl collective smoke (with one GPU the runner forms no group)."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--master-port", str(free_port())]
    args = _pope(6, "cpu", "--answer-mode", "choices", "--dtype", "float32")
    runs = {
        "gloo_2proc_cpu": _vlmbench_run(
            work, "gloo2", args, [*torchrun, "--nproc-per-node", "2", "-m", "vlmbench"]
        )
    }
    out: dict[str, Any] = {}
    if cpu:
        runs["single_cpu"] = _vlmbench_run(work, "cpu1", args)
        out["agreement_single_vs_gloo"] = _agreement(runs["single_cpu"], runs["gloo_2proc_cpu"])
    else:
        gpu_args = _pope(6, "cuda", "--answer-mode", "choices", "--dtype", "float32")
        runs["cuda_1proc"] = _vlmbench_run(
            work, "cuda1", gpu_args, [*torchrun, "--nproc-per-node", "1", "-m", "vlmbench"]
        )
        out["agreement_cuda_vs_gloo"] = _agreement(runs["gloo_2proc_cpu"], runs["cuda_1proc"])
        smoke = (
            "import os, torch, torch.distributed as d; d.init_process_group('nccl'); "
            "t = torch.ones(4, device='cuda') * (d.get_rank() + 1); d.all_reduce(t); box = [{'ok': True}]; "
            "d.broadcast_object_list(box, src=0); print(t.sum().item(), box[0]['ok']); d.destroy_process_group()"
        )
        script = work / "nccl_smoke.py"
        script.write_text(smoke.replace("; ", "\n"))
        text = _sh([*torchrun, "--nproc-per-node", "1", str(script)], work)
        out["nccl_smoke"] = text.strip().splitlines()[-1]
    out["samples_per_s"] = {k: v["samples_per_s"] for k, v in runs.items()}
    return out


def step_train_bf16(work: Path, cpu: bool) -> dict[str, Any]:
    start = time.perf_counter()
    text = _sh(
        [sys.executable, "-m", "vlmbench", "train", "--recipe", str(REPO / "recipes/tiny-test.yaml"),
         "--device", _device(cpu), "--out", str(work / "train/final"), "--work-dir", str(work / "train/work"),
         "--data-dir", str(work / "train/data")],
        work,
    )  # fmt: skip
    logs = sorted((work / "train/work").rglob("*.jsonl"))
    losses: dict[str, list[float]] = {}
    for path in logs:
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and isinstance(row.get("loss"), (int, float)):
                losses.setdefault(path.relative_to(work / "train/work").as_posix(), []).append(
                    float(row["loss"])
                )
    finite = all(v == v and abs(v) != float("inf") for vs in losses.values() for v in vs)
    return {
        "seconds": round(time.perf_counter() - start, 2),
        "precision": "bf16 autocast (recipe precision auto)" if not cpu else "fp32 (CPU)",
        "losses": losses,
        "all_finite": finite,
        "checkpoint_written": (work / "train/final").is_dir(),
        "stdout": text[-1000:],
    }


STEP_FUNCTIONS: dict[str, Callable[[Path, bool], dict[str, Any]]] = {
    s.name: globals()[f"step_{s.name}"] for s in STEPS
}


# ---- the driver ------------------------------------------------------------------------------------
def run_step(step: Step, work: Path, cpu: bool, timeout: float) -> dict[str, Any]:
    """Run one step in a subprocess under ``timeout``; never raises."""
    start = time.perf_counter()
    record: dict[str, Any] = {"what": step.what, "timeout_s": round(timeout, 1)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--step", step.name, "--work", str(work)]
    if cpu:
        cmd.append("--cpu")
    # Its own session, so that a time-out ends the step's whole process tree (a `vlmbench run` or
    # torchrun it started must not go on holding the GPU while the next step runs).
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(work),
                            cwd=REPO, start_new_session=True)  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        record.update(status="timeout", error=f"exceeded {timeout:.1f} s", stderr_tail=(stderr or "")[-1500:])
    else:
        last = stdout.strip().splitlines()[-1] if stdout.strip() else ""
        try:
            payload = json.loads(last)
        except ValueError:
            payload = {"status": "error", "error": f"no JSON result (exit {proc.returncode})"}
        record.update(payload)
        if proc.returncode != 0 or payload.get("status") == "error":
            record.setdefault("status", "error")
            record["stderr_tail"] = stderr[-1500:]
    record["seconds"] = round(time.perf_counter() - start, 2)
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, help="the figures JSON (default $OUT/gpu_check.json, else ./gpu_check.json)"
    )
    parser.add_argument(
        "--budget-s", type=float, default=420.0, help="seconds for all steps together (default 420)"
    )
    parser.add_argument("--only", help="comma-separated step names (default: all)")
    parser.add_argument(
        "--cpu", action="store_true", help="run the steps on the CPU (CUDA-only steps: skipped)"
    )
    parser.add_argument("--dry-run", action="store_true", help="run no step; write the plan as the JSON")
    parser.add_argument(
        "--timeout-scale",
        type=float,
        default=1.0,
        help="multiply every step's time box (a slow CPU check: 5)",
    )
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.step:  # inside a step's subprocess
        try:
            payload = {"status": "ok", **STEP_FUNCTIONS[args.step](args.work, args.cpu)}
        except Exception as exc:  # noqa: BLE001 - the driver records it and goes on
            payload = {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:3000]}
        print(json.dumps(payload, default=str))
        return 0

    default_out = (
        Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else Path("gpu_check.json")
    )
    out = args.out or default_out
    out.parent.mkdir(parents=True, exist_ok=True)
    names = [n.strip() for n in args.only.split(",")] if args.only else [s.name for s in STEPS]
    unknown = sorted(set(names) - set(STEP_FUNCTIONS))
    if unknown:
        print(
            f"gpu_check: unknown step(s) {', '.join(unknown)}; steps: {', '.join(STEP_FUNCTIONS)}",
            file=sys.stderr,
        )
        return 2
    report: dict[str, Any] = {
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": "dry-run" if args.dry_run else ("cpu" if args.cpu else "cuda"),
        "budget_s": args.budget_s,
        "host": platform.node(),
        "steps": {},
    }
    deadline = time.monotonic() + args.budget_s
    with tempfile.TemporaryDirectory(prefix="vlmbench-gpu-check-") as tmp:
        work = Path(tmp)
        for step in (s for s in STEPS if s.name in names):
            left = deadline - time.monotonic() - RESERVE_S
            if args.dry_run:
                entry = {"status": "planned", "what": step.what, "timeout_s": step.timeout_s,
                         "command": f"{Path(__file__).name} --step {step.name}"}  # fmt: skip
            elif args.cpu and step.needs_cuda:
                entry = {"status": "skipped", "what": step.what, "reason": "needs CUDA (--cpu mode)"}
            elif left < 5:
                entry = {"status": "skipped", "what": step.what, "reason": "the overall budget is spent"}
            else:
                entry = run_step(step, work, args.cpu, min(step.timeout_s * args.timeout_scale, left))
            report["steps"][step.name] = entry
            print(f"gpu_check: {step.name:<22} {entry['status']:<8} {entry.get('seconds', 0):>6} s"
                  + (f"  {entry.get('error') or entry.get('reason')}" if entry["status"] not in ("ok", "planned") else ""),
                  file=sys.stderr, flush=True)  # fmt: skip
            report["elapsed_s"] = round(args.budget_s - (deadline - time.monotonic()), 1)
            out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    counts = {
        s: sum(1 for e in report["steps"].values() if e["status"] == s)
        for s in ("ok", "error", "timeout", "skipped", "planned")
    }
    report["summary"] = counts
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(
        f"gpu_check: wrote {out} ({', '.join(f'{k} {v}' for k, v in counts.items() if v)})", file=sys.stderr
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
