"""POPE throughput of the runner: generation vs choice scoring vs choice scoring + feature cache vs
+ prefix sharing (the default), and 1 vs 2 processes (torchrun, gloo on CPU / nccl on GPU).

Prints samples/s per configuration and ratios to the generation baseline. Every configuration
evaluates the same synthetic POPE set with the same model, so the answers must agree where the
modes are meant to agree (choices with and without cache; 1 vs 2 processes).

    python benchmarks/bench_runner.py [--model internvl-style] [--images 10] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ports import free_port


def run(label: str, args: list[str], out: Path, nproc: int, env: dict[str, str]) -> dict:
    launcher = [sys.executable, "-m", "vlmbench"]
    if nproc > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-port", str(free_port()), "-m", "vlmbench"]
    cmd = [*launcher, *args, "--output-dir", str(out), "--run-name", label, "--no-report"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed:\n{proc.stderr[-2000:]}")
    results = json.loads((out / label / "results.json").read_text())
    rows = [json.loads(line) for line in (out / label / "samples" / "pope.jsonl").read_text().splitlines()]
    pope = results["tasks"]["pope"]
    return {
        "label": label,
        "samples_per_s": pope["throughput"]["samples_per_s"],
        "wall_s": pope["throughput"]["wall_s"],
        "f1": pope["metrics"]["f1_mean_of_splits"],
        "answers": {r["question_id"]: r["prediction"] for r in rows},
        "cache": results["throughput"]["feature_cache"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="internvl-style")
    parser.add_argument("--images", type=int, default=10, help="synthetic POPE images (18 questions each)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", default="8")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        env = {**os.environ, "VLMBENCH_CACHE": str(out / "cache"), "HF_HUB_OFFLINE": "1"}
        threads = str(max(1, (os.cpu_count() or 2)))
        base = ["run", "--model", args.model, "--tasks", "pope", "--synthetic-n", str(args.images),
                "--batch-size", args.batch_size, "--device", args.device]
        one = {**env, "OMP_NUM_THREADS": threads}
        two = {**env, "OMP_NUM_THREADS": str(max(1, int(threads) // 2))}
        plain = ["--no-feature-cache", "--prefix-sharing", "off"]
        rows = [
            run("generate", [*base, "--answer-mode", "generate", *plain], out, 1, one),
            run("choices", [*base, "--answer-mode", "choices", *plain], out, 1, one),
            run("choices+cache", [*base, "--answer-mode", "choices", "--prefix-sharing", "off"], out, 1, one),
            run("choices+cache+prefix", [*base, "--answer-mode", "choices"], out, 1, one),
            run("generate+cache+prefix", [*base, "--answer-mode", "generate"], out, 1, one),
            run("choices+all-2proc", [*base, "--answer-mode", "choices"], out, 2, two),
        ]
    baseline = rows[0]["samples_per_s"]
    print(f"model {args.model}, {args.images * 18} POPE questions, device {args.device}, {threads} CPU threads in all")
    print(f"{'configuration':<22} {'samples/s':>10} {'x generate':>11} {'wall s':>8} {'F1':>7}")
    for r in rows:
        print(f"{r['label']:<22} {r['samples_per_s']:>10.2f} {r['samples_per_s'] / baseline:>11.2f} {r['wall_s']:>8.2f} {r['f1']:>7.3f}")
    same = lambda a, b: sum(a["answers"][k] == b["answers"][k] for k in a["answers"]) / len(a["answers"])  # noqa: E731
    agreement = " ".join(f"{r['label']} {same(r, rows[0]):.3f}" for r in rows[1:])
    print(f"agreement with generation: {agreement}")
    print(f"2 proc vs 1 proc: {same(rows[5], rows[3]):.3f}   prefix sharing vs off (choices): {same(rows[3], rows[2]):.3f}")
    print(f"feature cache (1 proc, sharing off): {rows[2]['cache']}")


if __name__ == "__main__":
    main()
