"""Branch training step time: unpacked branches (`branches: true`) vs packed (`pack_branches: true`).

One batch shaped like internvl-style's branch stages (models/internvl-style.yaml, RANDOM weights:
step time does not depend on training): `--images` synthetic scenes (the existence generator's,
dynamic tiles + thumbnail) with `--min-questions`..`--max-questions` existence questions each, one
branch per question. Both modes get the same collated rows; each timed step is the stage objective's
forward and backward (collation excluded, identical for both), the modes alternating so that they
share any drift of the machine, the median of `--repeats` steps after one warm-up step each. Printed
side by side: step time, the ratio, the tokens the LLM runs per step (real ones, the prefix counted
once per packed sequence) and the positions it computes (padding included), and the two losses,
which must agree (packing changes the layout, not the loss).

    python benchmarks/bench_packing.py [--images 8] [--min-questions 8] [--max-questions 16]
        [--max-branches 16,8] [--scale 1] [--repeats 5] [--threads 1] [--device cpu|cuda] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

SUFFIX = "\nAnswer the question using a single word or phrase."


def scenes(directory: Path, images: int, low: int, high: int, seed: int, scale: float = 1.0) -> list[Any]:
    """Existence conversations with `low`..`high` questions per scene: the generator's own (as many
    present as absent categories), topped up with absent categories answered "No"; `scale` resizes
    the scene images in place (more dynamic tiles per image)."""
    from PIL import Image

    from vlmbench.data.synth.scenes.questions import exists_question
    from vlmbench.data.synth.scenes.vocabulary import CATEGORIES
    from vlmbench.training.data import Conversation, load_dataset, prepare_data
    from vlmbench.training.recipe import DataSpec

    spec = DataSpec("existence", n=images, seed=1005, answer_suffix=SUFFIX, capitalize_yes_no=True)
    data = load_dataset(spec, prepare_data({"existence": spec}, directory)["existence"])
    if scale != 1.0:
        for conversation in data:
            with Image.open(conversation.image) as image:
                size = (round(image.width * scale), round(image.height * scale))
                resized = image.convert("RGB").resize(size, Image.Resampling.BICUBIC)
            resized.save(conversation.image)
    rng = np.random.default_rng(seed)
    out = []
    for conversation in data:
        want = int(rng.integers(low, high + 1))
        turns = list(conversation.turns[:want])
        asked = {question for question, _ in turns}
        for category in rng.permutation(len(CATEGORIES)):
            if len(turns) >= want:
                break
            question = exists_question(CATEGORIES[int(category)]) + SUFFIX
            if question not in asked and f"<image>\n{question}" not in asked:
                turns.append((question, "No"))
                asked.add(question)
        out.append(Conversation(conversation.image, tuple(turns)))
    return out


class Positions:
    """Counts the LLM forwards and the positions they compute (B × L of each call)."""

    def __init__(self, llm: torch.nn.Module) -> None:
        self.calls = 0
        self.positions = 0
        self.handle = llm.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        embeds = kwargs["inputs_embeds"]
        self.calls += 1
        self.positions += int(embeds.shape[0] * embeds.shape[1])

    def take(self) -> tuple[int, int]:
        out = (self.calls, self.positions)
        self.calls = self.positions = 0
        return out


def step(objective: torch.nn.Module, batch: Any, device: torch.device) -> tuple[float, float]:
    """(seconds, loss) of one forward + backward."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    loss, _ = objective(batch)
    loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    objective.zero_grad(set_to_none=True)
    return seconds, float(loss.detach())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--images", type=int, default=8, help="scenes per batch (internvl-style's batch_size)"
    )
    parser.add_argument("--min-questions", type=int, default=8)
    parser.add_argument("--max-questions", type=int, default=16)
    parser.add_argument(
        "--max-branches", default="16,8", help="comma-separated max_branches, one packed column each"
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="resize the scenes by this factor (more tiles per image)"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from vlmbench.modeling.presets import build_random, load_preset
    from vlmbench.training.collate import Collator
    from vlmbench.training.objectives import StageObjective
    from vlmbench.training.recipe import StageConfig

    device = torch.device(args.device)
    model = build_random(load_preset("internvl-style"), seed=args.seed).to(device).train()
    plain = StageConfig(
        name="see",
        kind="sft",
        train=("vision", "projector", "llm"),
        data={"existence": 1.0},
        steps=1,
        batch_size=args.images,
        lr=1e-3,
        branches=True,
    )
    modes = {"branches": plain}
    for value in (int(v) for v in args.max_branches.split(",")):
        modes[f"packed/{value}"] = replace(plain, pack_branches=True, max_branches=value)
    with tempfile.TemporaryDirectory() as tmp:
        items = scenes(Path(tmp), args.images, args.min_questions, args.max_questions, args.seed, args.scale)
        batches = {name: Collator(stage, model, model.tokenizer)(items) for name, stage in modes.items()}
    objectives = {name: StageObjective(stage, model) for name, stage in modes.items()}
    counter = Positions(model.llm)
    figures: dict[str, dict[str, Any]] = {}
    times: dict[str, list[float]] = {name: [] for name in modes}
    for name, batch in batches.items():  # warm-up, and the per-step counts
        _, loss = step(objectives[name], batch, device)
        calls, positions = counter.take()
        # Batch.tokens counts each <image> placeholder besides the visual tokens that replace it
        placeholders = len(batch.packs) if batch.packs is not None else len(batch.rows)
        figures[name] = {
            "step_ms": 0.0,
            "tokens": batch.tokens - placeholders,
            "llm_positions": positions,
            "llm_calls": calls,
            "loss": loss,
        }
    for _ in range(args.repeats):
        for name in modes:
            seconds, _ = step(objectives[name], batches[name], device)
            times[name].append(seconds)
    counter.handle.remove()
    for name in modes:
        figures[name]["step_ms"] = 1000 * statistics.median(times[name])
    questions = [len(c.turns) for c in items]
    visual = [
        model.visual_tokens_for(image.plan)
        for image in {id(i): i for i in batches["branches"].images}.values()
    ]
    print(
        f"internvl-style (random weights), {device.type}, {args.threads} thread(s): {len(items)} scenes, "
        f"{sum(questions)} questions ({min(questions)}-{max(questions)} per scene), "
        f"{min(visual)}-{max(visual)} visual tokens per image; median of {args.repeats} steps (forward + backward)"
    )
    base = figures["branches"]
    print(
        f"{'':24}"
        + "".join(f"{name:>13}" for name in modes)
        + "".join(f"{'ratio ' + n[7:]:>11}" for n in modes if n != "branches")
    )
    rows = (
        ("step time (ms)", "step_ms", "{:.1f}"),
        ("LLM tokens per step", "tokens", "{:d}"),
        ("LLM positions (padded)", "llm_positions", "{:d}"),
        ("LLM forwards per step", "llm_calls", "{:d}"),
        ("loss", "loss", "{:.6f}"),
    )
    for label, key, fmt in rows:
        cells = "".join(f"{fmt.format(figures[name][key]):>13}" for name in modes)
        ratios = "".join(f"{figures[name][key] / base[key]:>11.3f}" for name in modes if name != "branches")
        print(f"{label:24}{cells}{ratios}")
    for name in modes:
        if name != "branches":
            print(
                f"{name}: speed-up {base['step_ms'] / figures[name]['step_ms']:.2f}x, "
                f"|loss difference| {abs(base['loss'] - figures[name]['loss']):.1e}"
            )
    if args.json:
        payload = {"questions": questions, "visual_tokens": visual, "scale": args.scale, **figures}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
