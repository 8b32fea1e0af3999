"""POPE samples/s: vlmbench on a transformers LLaVA (`hf:<dir>`) vs lmms-eval's `llava_hf` model.

Both sides evaluate the same tiny LLaVA (a random `llava-1.5-style` preset at `--image-size` px,
default 128 → 256 visual tokens per image, exported with `vlmbench export --format llava`) on the
same synthetic POPE questions (18 per image):

- vlmbench: `vlmbench run --model hf:<dir> --tasks pope` in POPE's default mode (choices) and in
  generate mode (features cached per image, questions grouped by image, one prefill of each image
  prefix shared by its questions, left-padded batches), and both again with `--prefix-sharing off`;
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
Besides the model-time samples/s (model loading excluded on both sides), each side's whole-process
wall time (interpreter start, imports, model and data loading included) is printed and compared.

    python benchmarks/bench_vs_lmms_eval.py [--images 10] [--image-size 128] [--batch-size 8] [--threads 1]
        [--device cpu] [--repeats 1] [--lmms-python /tmp/lmms-venv/bin/python]
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


def build_tiny_llava(out: Path, seed: int, image_size: int) -> tuple[Path, bool]:
    """A random llava-1.5-style VLM at `image_size` px (LLM weights scaled so answers vary) exported as
    transformers LLaVA; (image_size / 8)² visual tokens per image. It takes the demo checkpoint's
    tokenizer when there is one: "Yes" / "No" are then one token each, as in LLaVA's own tokenizer, so
    choices mode reads them off one position. Returns the directory and whether they are one token."""
    import torch

    from vlmbench.modeling.config import VLMConfig
    from vlmbench.modeling.hf_export import export_llava
    from vlmbench.modeling.presets import build_random, demo_checkpoint, load_preset
    from vlmbench.modeling.tokenizer import load_tokenizer

    config = load_preset("llava-1.5-style").to_dict()
    config["vision"]["image_size"] = config["resolution"]["size"] = image_size
    demo = demo_checkpoint("llava-1.5-style")
    tokenizer = load_tokenizer(demo / "tokenizer") if demo is not None else None
    model = build_random(VLMConfig.from_dict(config, source="bench"), seed=seed, tokenizer=tokenizer).eval()
    single = all(len(model.tokenizer(c, add_special_tokens=False)["input_ids"]) == 1 for c in ("Yes", "No"))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim >= 2 and not name.startswith("vision."):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.15)
    return export_llava(model, out), single


def run_vlmbench(
    label: str, model_dir: Path, out: Path, args: argparse.Namespace, mode: str | None, env: dict[str, str], sharing: str = "on"
) -> dict:
    """One `vlmbench run` process (mode None: the task's default); its samples/s and whole-process wall."""
    cmd = [sys.executable, "-m", "vlmbench", "run", "--model", f"hf:{model_dir}", "--tasks", "pope",
           "--synthetic-n", str(args.images), "--batch-size", str(args.batch_size), "--device", args.device,
           "--prefix-sharing", sharing, "--output-dir", str(out), "--run-name", label, "--no-report"]
    if mode is not None:
        cmd += ["--answer-mode", mode]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    process_s = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"vlmbench {label} failed:\n{proc.stderr[-2000:]}")
    results = json.loads((out / label / "results.json").read_text())
    pope = results["tasks"]["pope"]
    rows = [json.loads(line) for line in (out / label / "samples" / "pope.jsonl").read_text().splitlines()]
    ran = mode or str(pope.get("answer_mode", "default"))
    return {
        "label": f"vlmbench {ran}{' (default)' if mode is None else ''}, sharing {sharing}",
        "samples_per_s": pope["throughput"]["samples_per_s"],
        "wall_s": pope["throughput"]["wall_s"],
        "end_to_end_s": process_s,
        "sharing": pope.get("prefix_sharing"),
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


def fastest(runs: list[dict]) -> dict:
    """The round with the most samples/s; every round's answers must be the same (greedy, same inputs)."""
    if any(r["answers"] != runs[0]["answers"] for r in runs):
        raise SystemExit(f"{runs[0]['label']}: answers differ between rounds")
    best = max(runs, key=lambda r: r["samples_per_s"])
    return {**best, "rounds": [round(r["samples_per_s"], 2) for r in runs]}


def sharing_line(row: dict) -> str:
    """Prefill work per question from results.json's prefix_sharing record (tokens run through the LLM)."""
    record = row.get("sharing") or {}
    if record.get("path") != "shared":
        return f"{row['label']}: path {record.get('path', 'unknown')} ({record.get('reason') or 'no reason recorded'})"
    return (f"{row['label']}: prefill tokens/question {record.get('prefill_tokens_per_question')} "
            f"(limit {record.get('limit_tokens_per_question')}, unshared {record.get('unshared_tokens_per_question')}), "
            f"{record.get('prefix_prefills')} prefix prefills for {record.get('questions_shared')} questions")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10, help="synthetic POPE images (18 questions each)")
    parser.add_argument("--image-size", type=int, default=128,
                        help="side of the exported LLaVA's input in px; (size/8)^2 visual tokens per image")
    parser.add_argument("--batch-size", type=int, default=8, help="vlmbench batch size (llava_hf supports only 1)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for every side")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lmms-python", help="Python of a venv with lmms-eval: run its CLI as a subprocess")
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds of every side; each side's fastest round is reported (a shared machine's noise)")
    args = parser.parse_args()
    if args.image_size < 8 or args.image_size % 8:
        raise SystemExit(f"--image-size {args.image_size}: give a multiple of the patch size 8, e.g. 128")

    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir, single_token = build_tiny_llava(root / "tiny-llava-hf", args.seed, args.image_size)
        cache = root / "cache"
        env = {**os.environ, "VLMBENCH_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)}
        runs = root / "runs"
        configs = {"default": (None, "on"), "generate": ("generate", "on"), "choices": ("choices", "on"),
                   "generate-off": ("generate", "off"), "choices-off": ("choices", "off")}  # fmt: skip
        found: dict[str, list[dict]] = {name: [] for name in configs}
        samples = pope_requests(cache, args.images)
        lmms_runs: list[dict] = []
        for repeat in range(args.repeats):  # rounds of every side, so a busy spell hits all of them
            for name, (mode, sharing) in configs.items():
                found[name].append(run_vlmbench(f"{name}-{repeat}", model_dir, runs, args, mode, env, sharing))
            if args.lmms_python:
                (root / f"lmms-{repeat}").mkdir()
                lmms_runs.append(run_lmms_eval_cli(args.lmms_python, model_dir, samples, root / f"lmms-{repeat}", args))
        default, generate, choices, generate_off, choices_off = (fastest(found[name]) for name in configs)
        rows = [default, generate, choices, generate_off, choices_off]
        lmms = fastest(lmms_runs) if lmms_runs else run_lmms_eval(model_dir, samples, args.device)
        reference = run_reference_loop(model_dir, samples, args.device)

    tokens = (args.image_size // 8) ** 2
    print(f"tiny LLaVA (llava-1.5-style export, {args.image_size} px, {tokens} visual tokens/image), {len(samples)} "
          f"synthetic POPE questions on {args.images} images, device {args.device}, {args.threads} thread(s), "
          f"vlmbench batch {args.batch_size}; Yes/No {'one token each' if single_token else 'several tokens'}")
    print(f"{'side':<46} {'samples/s':>10} {'model s':>8} {'process s':>10} {'x lmms-eval':>12}")
    base = lmms["samples_per_s"] if lmms else None
    for r in [*rows, *([lmms] if lmms else []), reference]:
        ratio = f"{r['samples_per_s'] / base:>12.2f}" if base else f"{'n/a':>12}"
        process = f"{r['end_to_end_s']:>10.2f}" if "end_to_end_s" in r else f"{'n/a':>10}"
        print(f"{r['label']:<46} {r['samples_per_s']:>10.2f} {r['wall_s']:>8.2f} {process} {ratio}")
    print("(samples/s and model s: answering only, model loading excluded; process s: the whole process)")
    if args.repeats > 1:
        print(f"fastest of {args.repeats} rounds; samples/s per round: "
              + "; ".join(f"{r['label']}: {r['rounds']}" for r in [*rows, *([lmms] if lmms and "rounds" in lmms else [])]))
    for r in (default, generate):
        print(sharing_line(r))
    print(f"prefix sharing on / off, samples/s: generate {generate['samples_per_s'] / generate_off['samples_per_s']:.2f}x, "
          f"choices {choices['samples_per_s'] / choices_off['samples_per_s']:.2f}x")
    if lmms is None:
        print("lmms-eval: UNAVAILABLE (not importable here; `pip install lmms-eval` would replace this environment's "
              "torch with another build). No lmms-eval figure is reported or estimated.")
        print(f"vlmbench generate vs the reference loop: {generate['samples_per_s'] / reference['samples_per_s']:.2f}x")
    else:
        common = len(generate["answers"].keys() & lmms["answers"].keys())
        print(f"vlmbench default mode ({default['label']}) / lmms-eval samples/s: "
              f"{default['samples_per_s'] / lmms['samples_per_s']:.2f}x")
        print(f"vlmbench generate / lmms-eval samples/s: {generate['samples_per_s'] / lmms['samples_per_s']:.2f}x")
        if "end_to_end_s" in lmms:
            print(f"whole process, model loading included: lmms-eval CLI {lmms['end_to_end_s']:.2f} s, vlmbench default "
                  f"{default['end_to_end_s']:.2f} s ({lmms['end_to_end_s'] / default['end_to_end_s']:.2f}x), vlmbench "
                  f"generate {generate['end_to_end_s']:.2f} s ({lmms['end_to_end_s'] / generate['end_to_end_s']:.2f}x)")
        print(f"answer agreement, vlmbench generate vs lmms-eval: {agreement(generate, lmms):.3f} "
              f"({common} common questions)")
    print(f"answer agreement, vlmbench generate vs reference loop: {agreement(generate, reference):.3f}   "
          f"choices vs generate: {agreement(choices, generate):.3f}   sharing on vs off: generate "
          f"{agreement(generate, generate_off):.3f}, choices {agreement(choices, choices_off):.3f}")


if __name__ == "__main__":
    main()
