"""Writes synthetic run directories (results.json + samples/*.jsonl + thumbnails) for report tests.

Predictions are deterministic: which samples a run gets right is fixed by a seeded permutation
shared by all runs, so a run at 50% accuracy is right on a subset of the samples a run at 80%
gets right (like a real regression), and ``flips`` turns exactly that many right answers wrong.
Metrics are computed with the real scorers, so the files look exactly like the runner's.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlmbench.metrics import SCORERS, score_task

XSS = '</script><script>window.__xss=1</script><img src=x onerror="window.__xss=2">'

_SPLITS = ("random", "popular", "adversarial")
_CONVENTIONS = {
    "pope": "Official POPE parsing; unknown answers are wrong and not yes.",
    "docvqa": "ANLS with threshold 0.5, max over reference answers.",
    "chair": "CHAIR over the 80 COCO categories; lower is better.",
    "ocr": "Exact match after whitespace normalisation; CER clipped to 1.",
}


@dataclass(frozen=True)
class RunSpec:
    """What a fake run looks like. ``quality`` is the share of right answers per task."""

    name: str
    model_name: str = "tiny-vlm"
    projector: str = "mlp"
    resolution: str = "dynamic_tiles"
    tokens: float = 256.0
    params_total: int = 12_500_000
    samples_per_s: float = 40.0
    tasks: tuple[str, ...] = ("pope", "docvqa", "chair", "ocr")
    quality: dict[str, float] = field(default_factory=dict)
    flips: dict[str, int] = field(default_factory=dict)
    n: dict[str, int] = field(default_factory=dict)
    fingerprint_suffix: str = ""
    synthetic: bool = True
    thumbnails: int = 6
    # Realism knobs for size tests: questions asked per image (default: 12 images per task, cycled),
    # thumbnail side in pixels (0: a tiny flat 48x36 picture) and text appended to every prompt.
    questions_per_image: dict[str, float] = field(default_factory=dict)
    thumbnail_px: int = 0
    prompt_suffix: str = ""
    xss: bool = False
    created: str = "2025-01-15T10:00:00+00:00"


_DEFAULT_N = {"pope": 400, "docvqa": 40, "chair": 30, "ocr": 40}
_DEFAULT_Q = {"pope": 0.8, "docvqa": 0.7, "chair": 0.7, "ocr": 0.6}


def _right_mask(n: int, quality: float, flips: int, task: str) -> np.ndarray:
    """Which samples are right: the first round(quality*n) of a fixed permutation, minus ``flips``."""
    order = np.random.default_rng(int(hashlib.sha1(task.encode()).hexdigest()[:8], 16)).permutation(n)
    k = int(round(quality * n))
    right = np.zeros(n, dtype=bool)
    right[order[:k]] = True
    right[order[max(0, k - flips) : k]] = False
    return right


def _pope(n: int, right: np.ndarray, xss: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows, extra = [], []
    for i in range(n):
        gt = "yes" if (i // 3) % 2 == 0 else "no"
        answer = gt if right[i] else ("no" if gt == "yes" else "yes")
        prediction = "Yes, there is one." if answer == "yes" else "No, there is not."
        if not right[i] and i % 97 == 5:
            prediction = ""  # parses to unknown
        if xss and i == 1:
            prediction = "No. " + XSS
        rows.append(
            {
                "question_id": f"pope-{i:04d}",
                "prediction": prediction,
                "answer": gt,
                "category": _SPLITS[i % 3],
            }
        )
        yes_lp = -0.1 if answer == "yes" else -2.3
        extra.append(
            {
                "prompt": f"Is there a {['dog', 'cat', 'car', 'chair'][i % 4]} in the image? Answer yes or no.",
                "references": [gt],
                "category": _SPLITS[i % 3],
                "choice_logprobs": {"Yes": yes_lp, "No": round(-2.4 - yes_lp, 3)},
            }
        )
    return rows, extra


def _docvqa(n: int, right: np.ndarray, xss: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows, extra = [], []
    for i in range(n):
        answer = f"invoice {1000 + i}"
        prediction = answer if right[i] else (f"invoice {1000 + i}7" if i % 2 else "receipt")
        if xss and i == 0:
            prediction = XSS
        rows.append(
            {"question_id": f"doc-{i:03d}", "prediction": prediction, "answers": [answer, answer.upper()]}
        )
        extra.append(
            {"prompt": "What is the invoice number? <b>bold?</b>", "references": [answer, answer.upper()]}
        )
    return rows, extra


_SCENES = (["dog", "cat"], ["person", "bicycle"], ["car", "truck"], ["chair", "dining table"])
_CAPTIONS = (
    "A dog lying next to a cat.",
    "A person riding a bicycle.",
    "A car parked behind a truck.",
    "A chair next to a dining table.",
)
_HALLUCINATED = (
    " There is also a car.",
    " A dog runs beside them.",
    " A bird sits on a bench.",
    " A cat sleeps on the chair.",
)


def _chair(n: int, right: np.ndarray, xss: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows, extra = [], []
    for i in range(n):
        k = i % len(_SCENES)
        caption = _CAPTIONS[k] + ("" if right[i] else _HALLUCINATED[k])
        rows.append({"question_id": f"chair-{i:03d}", "prediction": caption, "gt_objects": _SCENES[k]})
        extra.append(
            {
                "prompt": "Describe this image in detail.",
                "references": list(_SCENES[k]),
                "gt_objects": _SCENES[k],
            }
        )
    return rows, extra


def _ocr(n: int, right: np.ndarray, xss: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows, extra = [], []
    for i in range(n):
        word = f"WORD{i:02d}"
        rows.append(
            {
                "question_id": f"ocr-{i:03d}",
                "prediction": word if right[i] else word.replace("O", "0"),
                "answers": [word],
            }
        )
        extra.append({"prompt": "Read the text in the image.", "references": [word]})
    return rows, extra


_BUILDERS = {"pope": _pope, "docvqa": _docvqa, "chair": _chair, "ocr": _ocr}


def _thumbnail(run_dir: Path, key: str, px: int = 0) -> str:
    """The thumbnail for ``key``: the same bytes in every run directory, like the runner's."""
    from PIL import Image

    name = hashlib.sha1(key.encode()).hexdigest()[:16] + ".png"
    target = run_dir / "thumbnails" / name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha1(key.encode()).digest()
        if px:  # blocky noise: compresses like the runner's 96 px scene thumbnails (about 2 KB)
            rng = np.random.default_rng(int.from_bytes(digest[:4], "big"))
            cells = rng.integers(0, 256, (px // 5, px // 5, 3), dtype=np.uint8)
            image = Image.fromarray(cells).resize((px, px), Image.NEAREST)
        else:
            image = Image.new("RGB", (48, 36), (digest[0], digest[1], digest[2]))
            image.paste((255 - digest[0], 200, digest[3]), (8, 8, 30, 26))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        target.write_bytes(buffer.getvalue())
    return f"thumbnails/{name}"


def write_run(root: Path, spec: RunSpec) -> Path:
    """Write ``root/<spec.name>/`` (results.json, samples/, thumbnails/) and return that directory."""
    run_dir = root / spec.name
    (run_dir / "samples").mkdir(parents=True, exist_ok=True)
    tasks: dict[str, Any] = {}
    for task in spec.tasks:
        n = spec.n.get(task, _DEFAULT_N[task])
        right = _right_mask(n, spec.quality.get(task, _DEFAULT_Q[task]), spec.flips.get(task, 0), task)
        rows, extra = _BUILDERS[task](n, right, spec.xss)
        scored = score_task(task, rows, seed=0, n_resamples=200)
        lines = []
        for i, (row, more, fields) in enumerate(zip(rows, extra, scored["per_sample"], strict=True)):
            fields = {k: v for k, v in fields.items() if k != "question_id"}
            score, correct = SCORERS[task].outcome(fields)
            error = "simulated: CUDA out of memory" if task == "docvqa" and i == n - 1 else None
            per_image = spec.questions_per_image.get(task)
            key = f"{task}-image-{int(i // per_image) if per_image else i % 12}"
            if spec.prompt_suffix:
                more = {**more, "prompt": more["prompt"] + spec.prompt_suffix}
            lines.append(
                {
                    "question_id": row["question_id"],
                    "image_key": key,
                    "thumbnail": _thumbnail(run_dir, key, spec.thumbnail_px) if i < spec.thumbnails else None,
                    "prediction": row["prediction"],
                    "score": score,
                    "correct": correct,
                    "error": error,
                    **more,
                    **fields,
                }
            )
        with open(run_dir / "samples" / f"{task}.jsonl", "w", encoding="utf-8") as handle:
            for line in lines:
                handle.write(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n")
        metric, higher = SCORERS[task].headline()
        tasks[task] = {
            "metrics": scored["metrics"],
            "ci95": scored["ci95"],
            "n": n,
            "errors": sum(1 for line in lines if line["error"]),
            "headline": {"metric": metric, "higher_is_better": higher},
            "data": {
                "source": f"synthetic:{task}" if spec.synthetic else f"hf:lmms-lab/{task}",
                "fingerprint": f"fp-{task}-v1{spec.fingerprint_suffix}",
                "synthetic": spec.synthetic,
            },
            "conventions": _CONVENTIONS[task],
        }
    results = {
        "vlmbench_version": "0.1.0",
        "run_name": spec.name,
        "created": spec.created,
        "model": {
            "name": spec.model_name + (" " + XSS if spec.xss else ""),
            "preset": "internvl-style",
            "vision_encoder": "vit/siglip 64px p8 d64x2",
            "projector": spec.projector,
            "resolution": {
                "name": spec.resolution,
                "tile_size": 64,
                "min_tiles": 1,
                "max_tiles": 6,
                "thumbnail": True,
            },
            "llm": "llama d128x2",
            "params": {
                "vision": 4_000_000,
                "projector": 500_000,
                "llm": spec.params_total - 4_500_000,
                "total": spec.params_total,
            },
            "visual_tokens_per_image": {
                "mean": spec.tokens,
                "min": int(spec.tokens // 2),
                "max": int(spec.tokens * 2),
            },
            "trained": False,
        },
        "tasks": tasks,
        "throughput": {
            "samples_per_s": spec.samples_per_s,
            "visual_tokens_per_s": round(spec.samples_per_s * spec.tokens, 1),
            "wall_s": 12.5,
            "peak_memory_mb": 812.0,
        },
        "config": {"seed": 0, "tasks": list(spec.tasks)},
        "environment": {"python": "3.11", "device": "cpu"},
    }
    (run_dir / "results.json").write_text(
        json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return run_dir
