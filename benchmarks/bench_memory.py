"""Peak memory of `vlmbench run` on a small and a 10x larger synthetic POPE set, side by side.

Each size runs as its own `vlmbench run` process (report included, as a user runs it); its peak
resident memory is the process's max RSS as the kernel reports it to the parent (`os.wait4`), the
same figure results.json records as ``throughput.peak_memory_mb`` on CPU. The synthetic sets are
generated before the timed runs, so generating them is not counted. A flat-memory runner keeps the
ratio large/small near 1 (the target is below 1.1): memory that grows with the number of questions
shows up as the ratio. ``--baseline REV`` measures the tree of git revision REV the same way (exported
with ``git archive``; the checkout is untouched) and prints both side by side.

    python benchmarks/bench_memory.py [--model internvl-style] [--small 30] [--large 300] [--baseline HEAD]
        [-- EXTRA RUN FLAGS]

``--small``/``--large`` are POPE images (18 questions each: 30 → 540 questions, 300 → 5,400).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def generate(task: str, images: int, env: dict[str, str], tree: Path) -> None:
    """Generate the synthetic set in its own process (as a run would on first use), outside the measurement."""
    code = (
        "import sys; from pathlib import Path; from vlmbench.data.loaders import ensure_synthetic, default_cache_dir; "
        "from vlmbench.tasks.registry import load_task; c = load_task(sys.argv[1]).config; "
        "ensure_synthetic(c.name, default_cache_dir(), c.synthetic_seed, int(sys.argv[2]))"
    )
    subprocess.run(
        [sys.executable, "-c", code, task, str(images)], env=env, cwd=tree, check=True, capture_output=True
    )


def measure(args: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, str]:
    """Run one command; return (peak RSS in MiB, wall seconds, stderr tail)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        err.seek(0)
        tail = err.read().decode(errors="replace")[-2000:]
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed (exit {proc.returncode}):\n{tail}")
    return usage.ru_maxrss / 1024, wall, tail  # Linux reports KiB


def export_tree(rev: str, into: Path) -> Path:
    """The files of git revision ``rev`` under ``into`` (``git archive``: the checkout is untouched)."""
    archive = into / "tree.tar"
    with open(archive, "wb") as handle:
        subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", rev], stdout=handle, check=True)
    root = into / "tree"
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    return root


def measure_tree(
    tree: Path, opts: argparse.Namespace, out: Path, env: dict[str, str]
) -> list[dict[str, Any]]:
    """Both sizes on the code in ``tree`` (its own folder first on the path)."""
    env = {
        **env,
        "PYTHONPATH": str(tree),
        "VLMBENCH_CACHE": str(out / f"cache-{tree.name}"),
    }  # per tree: its own generator
    rows = []
    for label, size in (("small", opts.small), ("large", opts.large)):
        generate(opts.task, size, env, tree)
        name = f"{tree.name}-{label}"
        cmd = [
            sys.executable, "-m", "vlmbench", "run", "--model", opts.model, "--tasks", opts.task,
            "--synthetic-n", str(size), "--device", opts.device, "--output-dir", str(out / "runs"),
            "--run-name", name, *opts.extra,
        ]  # fmt: skip
        peak, wall, _ = measure(cmd, env, tree)
        results = json.loads((out / "runs" / name / "results.json").read_text())
        task = results["tasks"][opts.task]
        rows.append(
            {
                "label": label,
                "questions": task["n"],
                "peak_mb": peak,
                "recorded_mb": results["throughput"].get("peak_memory_mb"),
                "wall_s": wall,
                "samples_bytes": (out / "runs" / name / "samples" / f"{opts.task}.jsonl").stat().st_size,
            }
        )
    return rows


def print_rows(title: str, rows: list[dict[str, Any]]) -> float:
    """The table of one tree; returns its ratio large/small."""
    print(title)
    print(
        f"{'run':<6} {'questions':>9} {'peak RSS MB':>12} {'results.json MB':>16} {'wall s':>8} {'samples.jsonl MB':>17}"
    )
    for r in rows:
        print(
            f"{r['label']:<6} {r['questions']:>9} {r['peak_mb']:>12.1f} {r['recorded_mb'] or 0:>16.1f} "
            f"{r['wall_s']:>8.1f} {r['samples_bytes'] / 2**20:>17.2f}"
        )
    small, large = rows
    ratio = large["peak_mb"] / small["peak_mb"]
    per_question = (
        (large["peak_mb"] - small["peak_mb"]) / max(1, large["questions"] - small["questions"]) * 1024
    )
    print(
        f"questions x{large['questions'] / small['questions']:.1f} -> peak RSS x{ratio:.3f} "
        f"({per_question:.1f} KiB per extra question; target < 1.1x)"
    )
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="internvl-style")
    parser.add_argument("--task", default="pope")
    parser.add_argument(
        "--small", type=int, default=30, help="synthetic set size of the small run (POPE: images)"
    )
    parser.add_argument("--large", type=int, default=300, help="synthetic set size of the large run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("extra", nargs="*", help="further `vlmbench run` flags (after --)")
    parser.add_argument(
        "--baseline", metavar="REV", help="also measure the tree of this git revision (e.g. HEAD)"
    )
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        env = {**os.environ, "VLMBENCH_CACHE": str(out / "cache"), "HF_HUB_OFFLINE": "1"}
        now = measure_tree(REPO, opts, out, env)
        before = measure_tree(export_tree(opts.baseline, out), opts, out, env) if opts.baseline else None
    print(
        f"model {opts.model}, task {opts.task}, device {opts.device}, extra flags: {' '.join(opts.extra) or '-'}"
    )
    ratio_now = print_rows("this checkout:", now)
    if before:
        ratio_then = print_rows(f"{opts.baseline}:", before)
        print(f"peak RSS large run: {before[1]['peak_mb']:.1f} MB at {opts.baseline} vs {now[1]['peak_mb']:.1f} MB now; "
              f"growth ratio {ratio_then:.3f} -> {ratio_now:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
