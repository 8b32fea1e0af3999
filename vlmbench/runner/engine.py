"""Inference over one rank's batches of one task: images → visual tokens (cached) → answers.

Every image is encoded on its own (its tiles as one encoder batch), so its visual tokens are the
same bits whichever batch or rank first meets it; the LLM then runs on whole pre-formed batches
(see `plan.py`). A multi-image sample's images are encoded and cached one by one (a cache key per
image) and reach the model as a list, one per `<image>` of its prompt. A sample that fails —
unreadable image, size outside the strategy's limits, an exception in the model — is recorded with
its error and the rest of the batch goes on. The model is used only through `EvalModel`.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from vlmbench.modeling.compression.apply import call_stats
from vlmbench.modeling.interface import EvalModel
from vlmbench.runner.logs import PredictionLog
from vlmbench.runner.plan import Batch
from vlmbench.tasks.base import MALFORMED_ERROR_PREFIX

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnswerSettings:
    mode: str  # "generate" | "choices"
    choices: tuple[str, ...]
    max_new_tokens: int
    stop: tuple[str, ...]


class FeatureCache:
    """LRU of visual tokens per image key: POPE asks 6 questions per image per split."""

    def __init__(self, capacity: int = 256) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, Any] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Any | None:
        if key in self._items:
            self._items.move_to_end(key)
            self.hits += 1
            return self._items[key]
        self.misses += 1
        return None

    def put(self, key: str, value: Any) -> None:
        if self.capacity <= 0:
            return
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)


@dataclass
class ShardStats:
    samples: int = 0
    errors: int = 0
    visual_tokens: int = 0
    seconds: float = 0.0


def run_batches(
    model: EvalModel,
    samples: dict[str, Any],
    batches: Sequence[Batch],
    done: set[str],
    settings: AnswerSettings,
    out: PredictionLog,
    cache: FeatureCache,
    on_progress: Callable[[int], None] = lambda n: None,
) -> ShardStats:
    """Answer every not-yet-done sample of `batches`, appending one log batch per batch."""
    stats = ShardStats()
    for batch in batches:
        todo = [samples[qid] for qid in batch.question_ids if qid not in done]
        if not todo:
            continue
        start = time.perf_counter()
        records = _answer_batch(model, todo, settings, cache, stats)
        out.append_batch(records)
        stats.seconds += time.perf_counter() - start
        stats.samples += len(records)
        stats.errors += sum(1 for r in records if r["error"])
        on_progress(len(records))
    return stats


def _visual_for(model: EvalModel, sample: Any, cache: FeatureCache) -> tuple[Any, dict[str, Any]]:
    """The sample's visual input — one image's visual tokens, or a list for a multi-image sample —
    and what the log records about its images (summed over images: tiles, visual tokens)."""
    parts = [_image_visual(model, sample, index, cache) for index in range(len(sample.image_keys))]
    if len(parts) == 1:
        return parts[0]
    info = {
        "image_size": parts[0][1]["image_size"],
        "image_sizes": [part["image_size"] for _, part in parts],
        "tiles": sum(part["tiles"] for _, part in parts),
        "visual_tokens": sum(part["visual_tokens"] for _, part in parts),
        "visual_tokens_each": [part["visual_tokens"] for _, part in parts],
    }
    return [visual for visual, _ in parts], info


def _image_visual(model: EvalModel, sample: Any, index: int, cache: FeatureCache) -> tuple[Any, dict[str, Any]]:
    """One image of a sample: encoded once, then served from the cache under its own key."""
    key = sample.image_keys[index]
    cached = cache.get(key)
    if cached is not None:
        return cached
    image = sample.images[index].load(sample.question_id)  # SampleError on unreadable images
    prepared = model.prepare_image(image)
    visual = model.encode([prepared])[0]
    info = {
        "image_size": list(image.size),
        "tiles": len(prepared.plan.tile_sizes),
        "visual_tokens": int(visual.shape[0]),
    }
    cache.put(key, (visual, info))
    return visual, info


def _answer_batch(
    model: EvalModel, todo: list[Any], settings: AnswerSettings, cache: FeatureCache, stats: ShardStats
) -> list[dict[str, Any]]:
    records: dict[str, dict[str, Any]] = {}
    ready: list[tuple[Any, Any, dict[str, Any]]] = []
    with torch.inference_mode():
        for sample in todo:
            base = {"question_id": sample.question_id, "prediction": "", "error": None}
            if sample.meta.get("error"):
                records[sample.question_id] = {**base, "error": f"{MALFORMED_ERROR_PREFIX}{sample.meta['error']}"}
                continue
            try:
                visual, info = _visual_for(model, sample, cache)
            except Exception as exc:  # noqa: BLE001 - recorded per sample, the run goes on
                records[sample.question_id] = {**base, "error": _describe(exc)}
                continue
            stats.visual_tokens += info["visual_tokens"]
            ready.append((sample, visual, info))
        if ready:
            try:
                answers = _infer(model, ready, settings)
            except Exception as exc:  # noqa: BLE001 - isolate the failing sample(s)
                log.debug("batch failed (%s); retrying its samples one by one", exc)
                answers = []
                for item in ready:
                    try:
                        answers.extend(_infer(model, [item], settings))
                    except Exception as inner:  # noqa: BLE001
                        answers.append({"prediction": "", "error": _describe(inner)})
            for (sample, _, info), answer in zip(ready, answers, strict=True):
                records[sample.question_id] = {
                    "question_id": sample.question_id,
                    "error": None,
                    **info,
                    **answer,
                }
    return [records[s.question_id] for s in todo]


def _infer(model: EvalModel, items: list[tuple[Any, Any, dict[str, Any]]], settings: AnswerSettings) -> list[dict[str, Any]]:
    prompts = [model.format_prompt(sample.prompt, n_images=len(sample.image_keys)) for sample, _, _ in items]
    visual = [v for _, v, _ in items]
    if settings.mode == "choices":
        logprobs = model.score_choices(None, prompts, list(settings.choices), visual=visual)
        out = []
        for row, stats in zip(logprobs.tolist(), call_stats(model, len(prompts)), strict=True):
            best = max(range(len(row)), key=lambda i: row[i])
            probs = {c: (lp if math.isfinite(lp) else -1e9) for c, lp in zip(settings.choices, row, strict=True)}
            out.append({"prediction": settings.choices[best], "choice_logprobs": probs, **stats})
        return out
    texts = model.generate(
        None, prompts, max_new_tokens=settings.max_new_tokens, stop=settings.stop, visual=visual
    )
    return [{"prediction": text, **stats} for text, stats in zip(texts, call_stats(model, len(texts)), strict=True)]


def _describe(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]


def probe_batch_size(model: EvalModel, samples: Sequence[Any], settings: AnswerSettings, limit: int = 256) -> int:
    """The largest power-of-two batch (≤ limit) whose inference fits in accelerator memory.

    Runs the task's own first sample, repeated, at doubling batch sizes until the device reports
    out-of-memory. Only meaningful on CUDA, where OOM is a catchable error; the caller picks a fixed
    size on CPU, where exhausting memory kills the process instead."""
    usable = next((s for s in samples if not s.meta.get("error")), None)
    if usable is None:
        return 1
    try:
        visual, info = _visual_for(model, usable, FeatureCache(0))
    except Exception:  # noqa: BLE001 - an unreadable first sample: fall back to the smallest batch
        return 1
    best, size = 1, 1
    while size <= limit:
        try:
            _infer(model, [(usable, visual, info)] * size, settings)
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        best, size = size, size * 2
    return best
