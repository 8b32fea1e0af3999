"""Start-up time of the listing commands and `--help`, and what each imports, side by side.

Each command runs ``--repeat`` times in a fresh interpreter; the median wall time is printed with the
number of modules it imported and which heavy libraries among them (torch, transformers, datasets,
...), next to a bare interpreter and a bare ``import torch`` for scale. With ``--baseline REV`` the
same commands also run on the tree of git revision REV (exported with ``git archive`` into a temporary
folder, the checkout untouched), and the ratio baseline / now is printed per command.

    python benchmarks/bench_startup.py [--repeat 5] [--baseline HEAD]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "datasets", "pandas", "pyarrow", "numpy", "PIL", "scipy", "sklearn")
COMMANDS: tuple[tuple[str, ...], ...] = (
    ("--help",),
    ("run", "--help"),
    ("models",),
    ("models", "--json"),
    ("tasks",),
    ("score", "--help"),
    ("train", "--help"),
)
# Runs one command through the CLI and reports what it imported (stdout is the command's; the report
# goes to the last line of stderr).
_PROBE = (
    "import contextlib, io, json, sys\n"
    "from vlmbench.cli import main\n"
    "try:\n"
    "    code = main(sys.argv[1:])\n"
    "except SystemExit as exc:\n"
    "    code = exc.code\n"
    "heavy = {heavy!r}\n"
    "print(json.dumps({{'code': code, 'modules': len(sys.modules), "
    "'heavy': [m for m in heavy if m in sys.modules]}}), file=sys.stderr)\n"
)


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 2):  # --help exits 0; `vlmbench` alone prints help and exits 2
        raise SystemExit(f"{' '.join(argv)} failed (exit {proc.returncode}):\n{proc.stderr[-1500:]}")
    return wall, proc.stderr


def measure(command: tuple[str, ...], tree: Path, repeat: int) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    walls = [timed([sys.executable, "-m", "vlmbench", *command], env, tree)[0] for _ in range(repeat)]
    _, stderr = timed([sys.executable, "-c", _PROBE.format(heavy=HEAVY), *command], env, tree)
    report = json.loads(stderr.strip().splitlines()[-1])
    return {"median_s": statistics.median(walls), "min_s": min(walls), **report}


def reference(code: str, repeat: int) -> float:
    walls = [timed([sys.executable, "-c", code], dict(os.environ), REPO)[0] for _ in range(repeat)]
    return statistics.median(walls)


def export_tree(rev: str, into: Path) -> Path:
    """The files of git revision ``rev`` under ``into`` (read-only use of the repository)."""
    archive = into / "tree.tar"
    with open(archive, "wb") as handle:
        subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", rev], stdout=handle, check=True)
    root = into / "tree"
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per command (the median is reported)")
    parser.add_argument(
        "--baseline", metavar="REV", help="also time the tree of this git revision, e.g. HEAD"
    )
    args = parser.parse_args()
    python_s = reference("pass", args.repeat)
    torch_s = reference("import torch", max(1, args.repeat // 2))
    now = {c: measure(c, REPO, args.repeat) for c in COMMANDS}
    before: dict[tuple[str, ...], dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.baseline:
            tree = export_tree(args.baseline, Path(tmp))
            before = {c: measure(c, tree, args.repeat) for c in COMMANDS}
    print(f"python {sys.version.split()[0]}, median of {args.repeat} runs; bare interpreter {python_s:.3f} s, "
          f"bare `import torch` {torch_s:.3f} s (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')})")  # fmt: skip
    head = f"{'vlmbench ...':<16} {'now s':>7} {'x python':>9} {'modules':>8}  heavy imports"
    if before:
        head += f"  | {args.baseline + ' s':>10} {'modules':>8} {'speed-up':>9}  heavy imports then"
    print(head)
    for command, r in now.items():
        line = (
            f"{' '.join(command):<16} {r['median_s']:>7.3f} {r['median_s'] / python_s:>9.1f} {r['modules']:>8}  "
            f"{','.join(r['heavy']) or '-':<13}"
        )
        if before:
            b = before[command]
            line += (
                f"  | {b['median_s']:>10.3f} {b['modules']:>8} {b['median_s'] / r['median_s']:>8.1f}x  "
                f"{','.join(b['heavy']) or '-'}"
            )
        print(line)
    torch_free = all(not ({"torch", "transformers"} & set(r["heavy"])) for r in now.values())
    print(f"listing and --help import torch/transformers: {'no' if torch_free else 'YES'}")


if __name__ == "__main__":
    main()
