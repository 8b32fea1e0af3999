"""POPE samples/s: vlmbench on a transformers LLaVA (`hf:<dir>`) vs lmms-eval's `llava_hf` model.

Both sides evaluate the same tiny LLaVA (a random `llava-1.5-style` preset exported with
`vlmbench export --format llava`) on the same synthetic POPE questions:

- vlmbench: `vlmbench run --model hf:<dir> --tasks pope` in generate mode and in choices mode
  (features cached per image, left-padded batches);
- lmms-eval: `lmms_eval.models.simple.llava_hf.LlavaHf.generate_until` on the same images and
  prompts — only when lmms-eval is importable. It is not installed in vlmbench's environment: its
  dependencies pull another torch build (see docs/hf-models.md), so this side is then reported as
  unavailable, never estimated;
- reference loop: what `llava_hf` does per request, written with plain transformers (processor →
  `generate`, batch 1, no feature cache). It is labelled as such and is not lmms-eval.

With `--lmms-python PY` (a Python of a separate venv holding lmms-eval ≥ 0.7 and vlmbench, e.g.
/tmp/lmmsvenv/bin/python), lmms-eval's own CLI runs instead, as a subprocess: `python -m lmms_eval --model
llava_hf --tasks vlmbench_pope_local --include_path <tmp> --batch_size 1 --log_samples` on a local task
(YAML + parquet of the same questions and prompts, written here; nothing is downloaded). Its samples/s
count the time spent in `LlavaHf.generate_until` (model loading excluded, as on vlmbench's side); the
CLI's end-to-end wall is printed too. Answers are read from its per-sample log.

Answers are compared across sides (they must agree: same model, same prompt, greedy decoding).

    python benchmarks/bench_vs_lmms_eval.py [--images 5] [--batch-size 8] [--threads 1] [--device cpu]
        [--lmms-python /tmp/lmmsvenv/bin/python]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

POPE_MAX_NEW_TOKENS = 8
POPE_STOP = ("\n",)


def build_tiny_llava(out: Path, seed: int) -> Path:
    """A random llava-1.5-style VLM (LLM weights scaled so answers vary) exported as transformers LLaVA."""
    import torch

    from vlmbench.modeling.hf_export import export_llava
    from vlmbench.modeling.presets import build_random, load_preset

    model = build_random(load_preset("llava-1.5-style"), seed=seed).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim >= 2 and not name.startswith("vision."):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.15)
    return export_llava(model, out)


def run_vlmbench(label: str, model_dir: Path, out: Path, args: argparse.Namespace, mode: str, env: dict[str, str]) -> dict:
    cmd = [sys.executable, "-m", "vlmbench", "run", "--model", f"hf:{model_dir}", "--tasks", "pope",
           "--synthetic-n", str(args.images), "--batch-size", str(args.batch_size), "--device", args.device,
           "--answer-mode", mode, "--output-dir", str(out), "--run-name", label, "--no-report"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"vlmbench {label} failed:\n{proc.stderr[-2000:]}")
    pope = json.loads((out / label / "results.json").read_text())["tasks"]["pope"]
    rows = [json.loads(line) for line in (out / label / "samples" / "pope.jsonl").read_text().splitlines()]
    return {
        "label": f"vlmbench {mode}",
        "samples_per_s": pope["throughput"]["samples_per_s"],
        "wall_s": pope["throughput"]["wall_s"],
        "answers": {r["question_id"]: r["prediction"] for r in rows},
    }


def pope_requests(cache: Path, images: int) -> list:
    """The synthetic POPE samples vlmbench evaluates (same generator, same cache)."""
    os.environ["VLMBENCH_CACHE"] = str(cache)
    from vlmbench.tasks.registry import load_task

    samples, _ = load_task("pope").load(None, synthetic_n=images)
    return samples


def run_reference_loop(model_dir: Path, samples: list, device: str) -> dict:
    """llava_hf's per-request path in plain transformers: chat template, processor, generate, batch 1."""
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from vlmbench.modeling.hf import _truncate

    processor = AutoProcessor.from_pretrained(str(model_dir), local_files_only=True)
    model = LlavaForConditionalGeneration.from_pretrained(str(model_dir), local_files_only=True, use_safetensors=True)
    model.to(device).eval()
    answers = {}
    start = time.perf_counter()
    for sample in samples:
        messages = [{"role": "user", "content": f"<image>\n{sample.prompt}"}]
        prompt = processor.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        inputs = processor(images=[sample.load_image()], text=[prompt], return_tensors="pt").to(device)
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=POPE_MAX_NEW_TOKENS, do_sample=False)
        text = processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        answers[sample.question_id] = _truncate(text, POPE_STOP)
    wall = time.perf_counter() - start
    return {"label": "reference loop (llava_hf path, batch 1)", "samples_per_s": len(samples) / wall, "wall_s": wall, "answers": answers}


def run_lmms_eval(model_dir: Path, samples: list, device: str) -> dict | None:
    """lmms-eval's own llava_hf model on the same requests, when lmms-eval is importable."""
    if importlib.util.find_spec("lmms_eval") is None:
        return None
    from lmms_eval.models.simple.llava_hf import LlavaHf

    from vlmbench.modeling.hf import _truncate

    model = LlavaHf(pretrained=str(model_dir), device=device, dtype="float32", batch_size=1)
    model.task_dict = {"pope": {"test": [{"image": s.load_image()} for s in samples]}}

    def to_visual(doc: dict) -> list:
        return [doc["image"]]

    requests = [
        SimpleNamespace(args=(s.prompt, {"max_new_tokens": POPE_MAX_NEW_TOKENS, "until": list(POPE_STOP)}, to_visual, i, "pope", "test"))
        for i, s in enumerate(samples)
    ]
    start = time.perf_counter()
    texts = model.generate_until(requests)
    wall = time.perf_counter() - start
    answers = {s.question_id: _truncate(t, POPE_STOP) for s, t in zip(samples, texts, strict=True)}
    return {"label": "lmms-eval llava_hf", "samples_per_s": len(samples) / wall, "wall_s": wall, "answers": answers}


# Runs lmms-eval's own CLI (`python -m lmms_eval ...`), timing LlavaHf.generate_until (the model's work).
LMMS_RUNNER = """import importlib, json, sys, time
from lmms_eval.__main__ import cli_evaluate

spent, depth = [], [0]


def timed(original):
    def generate_until(self, requests):
        depth[0] += 1
        start = time.perf_counter()
        try:
            return original(self, requests)
        finally:
            depth[0] -= 1
            if depth[0] == 0:
                spent.append((time.perf_counter() - start, len(requests)))
    return generate_until


# --model llava_hf resolves to the chat model (a subclass of the simple one) unless --force_simple.
for name in ("lmms_eval.models.simple.llava_hf", "lmms_eval.models.chat.llava_hf"):
    try:
        cls = importlib.import_module(name).LlavaHf
    except ImportError:
        continue
    if "generate_until" in vars(cls):
        cls.generate_until = timed(vars(cls)["generate_until"])
timing_path = sys.argv.pop(1)
sys.argv[0] = "lmms_eval"
try:
    cli_evaluate()
finally:
    with open(timing_path, "w") as f:
        json.dump({"wall_s": sum(w for w, _ in spent), "requests": sum(n for _, n in spent)}, f)
"""


def run_lmms_eval_cli(lmms_python: str, model_dir: Path, samples: list, root: Path, args: argparse.Namespace) -> dict:
    """lmms-eval's CLI (`llava_hf`, batch 1) in another venv on a local task holding the same questions."""
    from vlmbench.interop.lmms import write_lmms_eval_task
    from vlmbench.modeling.hf import _truncate

    task_dir = root / "lmms_task"
    write_lmms_eval_task(samples, task_dir, name="vlmbench_pope_local", max_new_tokens=POPE_MAX_NEW_TOKENS, until=POPE_STOP)
    (root / "lmms_runner.py").write_text(LMMS_RUNNER)
    timing, out = root / "lmms_timing.json", root / "lmms_out"
    cmd = [lmms_python, str(root / "lmms_runner.py"), str(timing), "--model", "llava_hf",
           "--model_args", f"pretrained={model_dir},dtype=float32,device_map={args.device}", "--tasks", "vlmbench_pope_local",
           "--include_path", str(task_dir), "--batch_size", "1", "--device", args.device,
           "--log_samples", "--output_path", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(root / "hf_datasets"), "OMP_NUM_THREADS": str(args.threads)}
    env.pop("VLMBENCH_CACHE", None)
    print("lmms-eval command:", " ".join(cmd[:1] + ["-m", "lmms_eval"] + cmd[3:]), file=sys.stderr)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    end_to_end = time.perf_counter() - start
    if proc.returncode != 0 or not timing.exists():
        raise SystemExit(f"lmms-eval failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    logs = sorted(out.rglob("*samples_vlmbench_pope_local*.jsonl"))
    if not logs:
        files = [str(f.relative_to(out)) for f in out.rglob("*")]
        raise SystemExit(f"lmms-eval wrote no per-sample log under {out} ({files}):\n{proc.stderr[-4000:]}")
    answers = {}
    for line in logs[-1].read_text().splitlines():
        row = json.loads(line)
        if os.environ.get("BENCH_DEBUG"):
            print("lmms-eval sample log row:", {k: row[k] for k in row if k != "doc"}, file=sys.stderr)
        response = row["filtered_resps"] if "filtered_resps" in row else row["resps"]
        while isinstance(response, list):
            response = response[0]
        qid = row["doc"]["question_id"] if "doc" in row else samples[int(row["doc_id"])].question_id
        answers[qid] = _truncate(response, POPE_STOP)
    wall = json.loads(timing.read_text())["wall_s"]
    if not wall:
        raise SystemExit("lmms-eval ran, but LlavaHf.generate_until was never timed")
    return {"label": "lmms-eval llava_hf (CLI, batch 1)", "samples_per_s": len(answers) / wall, "wall_s": wall,
            "end_to_end_s": end_to_end, "answers": answers}


def agreement(a: dict, b: dict) -> float:
    keys = a["answers"].keys() & b["answers"].keys()
    return sum(a["answers"][k] == b["answers"][k] for k in keys) / max(1, len(keys))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=5, help="synthetic POPE images (18 questions each)")
    parser.add_argument("--batch-size", type=int, default=8, help="vlmbench batch size (llava_hf supports only 1)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for every side")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lmms-python", help="Python of a venv with lmms-eval: run its CLI as a subprocess")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = build_tiny_llava(root / "tiny-llava-hf", args.seed)
        cache = root / "cache"
        env = {**os.environ, "VLMBENCH_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)}
        rows = [
            run_vlmbench("generate", model_dir, root / "runs", args, "generate", env),
            run_vlmbench("choices", model_dir, root / "runs", args, "choices", env),
        ]
        samples = pope_requests(cache, args.images)
        if args.lmms_python:
            lmms = run_lmms_eval_cli(args.lmms_python, model_dir, samples, root, args)
        else:
            lmms = run_lmms_eval(model_dir, samples, args.device)
        reference = run_reference_loop(model_dir, samples, args.device)

    print(f"tiny LLaVA (llava-1.5-style export), {len(samples)} synthetic POPE questions, device {args.device}, "
          f"{args.threads} thread(s)")
    print(f"{'side':<42} {'samples/s':>10} {'wall s':>8} {'x lmms-eval':>12}")
    base = lmms["samples_per_s"] if lmms else None
    for r in [*rows, *([lmms] if lmms else []), reference]:
        ratio = f"{r['samples_per_s'] / base:>12.2f}" if base else f"{'n/a':>12}"
        print(f"{r['label']:<42} {r['samples_per_s']:>10.2f} {r['wall_s']:>8.2f} {ratio}")
    if lmms is None:
        print("lmms-eval: UNAVAILABLE (not importable here; `pip install lmms-eval` would replace this environment's "
              "torch with another build). No lmms-eval figure is reported or estimated.")
        print(f"vlmbench generate vs the reference loop: {rows[0]['samples_per_s'] / reference['samples_per_s']:.2f}x")
    else:
        if "end_to_end_s" in lmms:
            print(f"lmms-eval CLI end to end (start-up, model and data loading included): {lmms['end_to_end_s']:.2f} s")
        common = len(rows[0]["answers"].keys() & lmms["answers"].keys())
        print(f"vlmbench generate / lmms-eval samples/s: {rows[0]['samples_per_s'] / lmms['samples_per_s']:.2f}x")
        print(f"answer agreement, vlmbench generate vs lmms-eval: {agreement(rows[0], lmms):.3f} "
              f"({common} common questions)")
    print(f"answer agreement, vlmbench generate vs reference loop: {agreement(rows[0], reference):.3f}   "
          f"choices vs generate: {agreement(rows[1], rows[0]):.3f}")


if __name__ == "__main__":
    main()
