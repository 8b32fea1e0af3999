"""Prefix sharing on vs off inside vlmbench: POPE samples/s, answer agreement, prefill work vs its limit.

The model is llava-1.5-style with its fixed resolution raised so that one image becomes >= 256 visual
tokens (default 192 px / patch 8 = 576 tokens, LLaVA-1.5's own count), saved as a checkpoint with
RANDOM weights (speed and equality do not depend on training). Each configuration is one whole
`vlmbench run` process on the same synthetic POPE set (18 questions per image across its 3 splits);
samples/s is the runner's own (inference, model loading excluded). Printed side by side: samples/s
with sharing off and on, the ratio, the share of identical answers, and the LLM prefill tokens per
question — unshared (prefix + suffix every time), shared as measured, and the limit (one prefix
prefill per image plus each question's suffix).

    python benchmarks/bench_prefix.py [--images 12] [--image-size 192] [--modes choices,generate]
        [--device cpu|cuda] [--dtype bfloat16] [--batch-size 18] [--json figures.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


def build_checkpoint(directory: Path, image_size: int, seed: int) -> tuple[int, bool]:
    """Save the benchmark model; returns its visual tokens per image and whether "Yes"/"No" are one
    token each (so choices mode reads them off one position, as with LLaVA's own tokenizer)."""
    from vlmbench.modeling.config import VLMConfig
    from vlmbench.modeling.presets import build_random, demo_checkpoint, load_preset
    from vlmbench.modeling.tokenizer import load_tokenizer

    data = load_preset("llava-1.5-style").to_dict()
    data["vision"] = {**data["vision"], "image_size": image_size}
    data["resolution"] = {**data["resolution"], "size": image_size}
    data["llm"] = {**data["llm"], "max_position_embeddings": max(2048, 4 * (image_size // 8) ** 2)}
    demo = demo_checkpoint("llava-1.5-style")  # its trained tokenizer has one-token Yes / No
    tokenizer = load_tokenizer(demo / "tokenizer") if demo is not None else None
    model = build_random(VLMConfig.from_dict(data, source="bench_prefix"), seed=seed, tokenizer=tokenizer)
    model.save(directory)
    single = all(len(model.tokenizer(c, add_special_tokens=False)["input_ids"]) == 1 for c in ("Yes", "No"))
    return model.visual_tokens_reference(), single


def run(label: str, args: list[str], out: Path, env: dict[str, str]) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "vlmbench",
        *args,
        "--output-dir",
        str(out),
        "--run-name",
        label,
        "--no-report",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed:\n{proc.stderr[-3000:]}")
    results = json.loads((out / label / "results.json").read_text())
    rows = [json.loads(line) for line in (out / label / "samples" / "pope.jsonl").read_text().splitlines()]
    pope = results["tasks"]["pope"]
    return {
        "samples_per_s": pope["throughput"]["samples_per_s"],
        "wall_s": pope["throughput"]["wall_s"],
        "peak_memory_mb": results["throughput"]["peak_memory_mb"],
        "prefix_sharing": pope.get("prefix_sharing"),
        "answers": {r["question_id"]: r["prediction"] for r in rows},
        "logprobs": {r["question_id"]: r.get("choice_logprobs") for r in rows},
    }


def compare(mode: str, off: dict[str, Any], on: dict[str, Any]) -> dict[str, Any]:
    same = sum(on["answers"][q] == a for q, a in off["answers"].items()) / len(off["answers"])
    deltas = [
        abs(lp - on["logprobs"][q][c]) for q, row in off["logprobs"].items() if row for c, lp in row.items()
    ]
    shared = on["prefix_sharing"] or {}
    return {
        "mode": mode,
        "questions": len(off["answers"]),
        "off_samples_per_s": off["samples_per_s"],
        "on_samples_per_s": on["samples_per_s"],
        "ratio": round(on["samples_per_s"] / off["samples_per_s"], 2),
        "identical_answers": round(same, 4),
        "max_logprob_diff": max(deltas) if deltas else None,
        "path": shared.get("path"),
        "prefill_tokens_per_question": {
            "unshared": shared.get("unshared_tokens_per_question"),
            "shared": shared.get("prefill_tokens_per_question"),
            "limit": shared.get("limit_tokens_per_question"),
        },
        "prefix_prefills": shared.get("prefix_prefills"),
        "distinct_prefixes": shared.get("distinct_prefixes"),
        "cache_bytes_peak": shared.get("cache_bytes_peak"),
        "peak_memory_mb": {"off": off["peak_memory_mb"], "on": on["peak_memory_mb"]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=12, help="synthetic POPE images (18 questions each)")
    parser.add_argument(
        "--image-size", type=int, default=192, help="square input size; tokens = (size / 8) ** 2"
    )
    parser.add_argument(
        "--modes", default="choices,generate", help="answer modes to measure, comma-separated"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", help="e.g. bfloat16 (default: float32)")
    parser.add_argument(
        "--batch-size", default="18", help="the same for both settings (default 18: one image's questions)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    figures: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        tokens, single = build_checkpoint(out / "model", args.image_size, args.seed)
        env = {**os.environ, "VLMBENCH_CACHE": str(out / "cache"), "HF_HUB_OFFLINE": "1"}
        base = [
            "run",
            "--model",
            str(out / "model"),
            "--tasks",
            "pope",
            "--synthetic-n",
            str(args.images),
            "--batch-size",
            args.batch_size,
            "--device",
            args.device,
            "--seed",
            str(args.seed),
        ]
        if args.dtype:
            base += ["--dtype", args.dtype]
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            arm = [*base, "--answer-mode", mode]
            off = run(f"{mode}-off", [*arm, "--prefix-sharing", "off"], out, env)
            on = run(f"{mode}-on", [*arm, "--prefix-sharing", "on"], out, env)
            figures.append(compare(mode, off, on))
    print(
        f"llava-1.5-style at {args.image_size} px, RANDOM weights: {tokens} visual tokens per image; "
        f"{args.images} images x 18 POPE questions; device {args.device}, dtype {args.dtype or 'float32'}, "
        f"batch size {args.batch_size}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; "
        f"Yes/No are {'one token each' if single else 'several tokens (multi-token choice scoring)'}"
    )
    print(
        f"{'mode':<9} {'off q/s':>8} {'on q/s':>8} {'on/off':>7} {'same':>6}  "
        f"{'prefill tokens per question: unshared / shared / limit':<52} {'prefills':>8}"
    )
    for f in figures:
        t = f["prefill_tokens_per_question"]
        print(
            f"{f['mode']:<9} {f['off_samples_per_s']:>8.2f} {f['on_samples_per_s']:>8.2f} {f['ratio']:>6.2f}x "
            f"{f['identical_answers']:>6.3f}  {t['unshared']!s:>16} / {t['shared']!s:>8} / {t['limit']!s:<22} "
            f"{f['prefix_prefills']!s:>8}"
        )
        if f["max_logprob_diff"] is not None:
            print(f"{'':<9} max |choice log-prob difference| on vs off: {f['max_logprob_diff']:.2e}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "visual_tokens": tokens,
                    "single_token_choices": single,
                    "device": args.device,
                    "figures": figures,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
