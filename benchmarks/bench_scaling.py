"""1 vs 2 processes on this machine: POPE samples/s of `vlmbench run` and under `torchrun` (gloo on
CPU, nccl on GPU), the ratio, and whether both give the same answers.

The single process gets all CPU threads, each of the two gets half, so the comparison is for the same
machine, not for twice the hardware; a single process with half the threads is printed too, since on
a small or busy machine OpenMP oversubscription can make "all threads" the slower single process. samples/s is the runner's own (results.json, inference only);
the whole-process wall time, start-up and model loading included, is printed beside it.

    python benchmarks/bench_scaling.py [--model internvl-style] [--images 20] [--device cpu] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ports import free_port


def run(label: str, args: list[str], out: Path, nproc: int, env: dict[str, str]) -> dict[str, Any]:
    launcher = [sys.executable, "-m", "vlmbench"]
    if nproc > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
                    "--master-port", str(free_port()), "-m", "vlmbench"]  # fmt: skip
    start = time.perf_counter()
    cmd = [*launcher, *args, "--output-dir", str(out), "--run-name", label, "--no-report"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed:\n{proc.stderr[-2000:]}")
    results = json.loads((out / label / "results.json").read_text())
    rows = [json.loads(line) for line in (out / label / "samples" / "pope.jsonl").read_text().splitlines()]
    return {
        "label": label,
        "samples_per_s": results["throughput"]["samples_per_s"],
        "runner_wall_s": results["throughput"]["wall_s"],
        "process_wall_s": wall,
        "first_sample_s": (results.get("timing") or {}).get("first_sample_s"),
        "world_size": results["throughput"]["world_size"],
        "answers": {r["question_id"]: r["prediction"] for r in rows},
        "f1": results["tasks"]["pope"]["metrics"]["f1_mean_of_splits"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="internvl-style")
    parser.add_argument("--images", type=int, default=20, help="synthetic POPE images (18 questions each)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", default="8")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="CPU threads in all (default: cores)"
    )
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        env = {**os.environ, "VLMBENCH_CACHE": str(out / "cache"), "HF_HUB_OFFLINE": "1"}
        base = ["run", "--model", opts.model, "--tasks", "pope", "--synthetic-n", str(opts.images),
                "--batch-size", opts.batch_size, "--device", opts.device]  # fmt: skip
        # generate the synthetic set once, outside the measured runs
        run("warm-up", [*base, "--limit", "1"], out, 1, {**env, "OMP_NUM_THREADS": "1"})
        half = str(max(1, opts.threads // 2))
        one = run("1-process", base, out, 1, {**env, "OMP_NUM_THREADS": str(opts.threads)})
        one_half = run("1-proc-half", base, out, 1, {**env, "OMP_NUM_THREADS": half})
        two = run("2-processes", base, out, 2, {**env, "OMP_NUM_THREADS": half})
    same = sum(two["answers"][q] == a for q, a in one["answers"].items()) / len(one["answers"])
    best = max(one, one_half, key=lambda r: r["samples_per_s"])
    print(f"model {opts.model}, {len(one['answers'])} POPE questions, device {opts.device}, "
          f"{opts.threads} CPU threads in all ({os.cpu_count()} cores here)")  # fmt: skip
    print(f"{'run':<12} {'samples/s':>10} {'runner s':>9} {'process s':>10} {'first answer s':>15} {'F1':>7}")
    for r in (one, one_half, two):
        first = f"{r['first_sample_s']:.2f}" if r["first_sample_s"] is not None else "-"
        print(f"{r['label']:<12} {r['samples_per_s']:>10.2f} {r['runner_wall_s']:>9.2f} {r['process_wall_s']:>10.2f} "
              f"{first:>15} {r['f1']:>7.3f}")  # fmt: skip
    print(
        f"2 vs 1 process: samples/s x{two['samples_per_s'] / one['samples_per_s']:.2f} "
        f"(x{two['samples_per_s'] / best['samples_per_s']:.2f} against the faster single process, {best['label']}), "
        f"process wall x{one['process_wall_s'] / two['process_wall_s']:.2f} faster; identical answers {same:.3f}"
    )


if __name__ == "__main__":
    main()
