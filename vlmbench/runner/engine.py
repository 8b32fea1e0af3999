"""Inference over one rank's batches of one task: images → visual tokens (cached) → answers.

Every image is encoded on its own (its tiles as one encoder batch), so its visual tokens are the
same bits whichever batch or rank first meets it; the LLM then runs on whole pre-formed batches
(see `plan.py`). A multi-image sample's images are encoded and cached one by one (a cache key per
image) and reach the model as a list, one per `<image>` of its prompt. A sample that fails —
unreadable image, size outside the strategy's limits, an exception in the model — is recorded with
its error and the rest of the batch goes on. The model is used only through `EvalModel`.

Prefix sharing (`--prefix-sharing on`, the default): for a model implementing `PrefixSharing`
(interface.py) each prompt is split into its image prefix and question suffix; every distinct prefix
of a batch is prefilled once — each on its own, so a state's bits never depend on which other
prefixes missed the LRU on this rank — and kept in a byte-bounded LRU (`prefix_cache.py`); the
batch's questions are then answered in one `*_from` call. A sample whose model or prompt declines
takes the unshared path; `SharingStats` records which path ran and why.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from vlmbench.modeling.compression.apply import call_stats
from vlmbench.modeling.interface import EvalModel, PrefixSharing, protocol_mismatches
from vlmbench.runner.logs import PredictionLog
from vlmbench.runner.plan import Batch
from vlmbench.runner.prefix_cache import PrefixCache, SharingStats, prefix_digest
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


@dataclass
class Sharing:
    """Prefix sharing for one pass on one rank: on or off, its LRU and what it counted."""

    enabled: bool
    cache: PrefixCache
    stats: SharingStats = field(default_factory=SharingStats)
    batch_keys: set[str] = field(default_factory=set)  # the prefixes the current batch used

    def end_batch(self) -> None:
        """Keep only the states the finished batch used (its image groups may go on into the next)."""
        self.cache.retain(self.batch_keys)
        self.batch_keys = set()

    @classmethod
    def off(cls) -> Sharing:
        return cls(enabled=False, cache=PrefixCache(0))

    def model_reason(self, model: EvalModel) -> str | None:
        """Why no prompt of `model` can share its prefix in this pass (None: prompts may)."""
        if not self.enabled:
            return "--prefix-sharing off"
        if not isinstance(model, PrefixSharing) or protocol_mismatches(model, PrefixSharing):
            return f"{type(model).__name__} does not implement PrefixSharing"
        explain = getattr(model, "prefix_decline_reason", None)
        return explain() if callable(explain) else None

    def record(self) -> dict[str, Any]:
        """The counts as plain data (gathered across ranks; `prefix_cache.sharing_record` merges them)."""
        return {
            **asdict(self.stats),
            "cache_bytes_peak": self.cache.peak_bytes,
            "cache_evictions": self.cache.evictions,
        }


def run_batches(
    model: EvalModel,
    samples: dict[str, Any],
    batches: Sequence[Batch],
    done: set[str],
    settings: AnswerSettings,
    out: PredictionLog,
    cache: FeatureCache,
    on_progress: Callable[[int], None] = lambda n: None,
    sharing: Sharing | None = None,
) -> ShardStats:
    """Answer every not-yet-done sample of `batches`, appending one log batch per batch.

    A batch that a resume finds partly answered is run whole again and only its missing samples are
    logged: the numerics of a row can depend on its batch companions (padding, BLAS blocking on several
    threads), so answering a subset would not reproduce the uninterrupted run bit for bit."""
    sharing = sharing or Sharing.off()

    def answer(members: list[Any], todo: list[Any]) -> list[dict[str, Any]]:
        records = _answer_batch(model, members, settings, cache, sharing)
        sharing.end_batch()
        return records

    return drive_batches(samples, batches, done, out, answer, on_progress)


def drive_batches(
    samples: Mapping[str, Any],
    batches: Sequence[Batch],
    done: set[str],
    out: PredictionLog,
    answer: Callable[[list[Any], list[Any]], list[dict[str, Any]]],
    on_progress: Callable[[int], None] = lambda n: None,
) -> ShardStats:
    """The loop every pass shares: per batch with anything left to answer, `answer(members, todo)`
    (the batch's samples, and those not yet logged) gives records; the ones not yet logged are appended
    as one log batch and counted (visual tokens from the records' own `visual_tokens`)."""
    stats = ShardStats()
    for batch in batches:
        todo = [samples[qid] for qid in batch.question_ids if qid not in done]
        if not todo:
            continue
        start = time.perf_counter()
        members = [samples[qid] for qid in batch.question_ids]
        records = [r for r in answer(members, todo) if r["question_id"] not in done]
        out.append_batch(records)
        stats.seconds += time.perf_counter() - start
        stats.samples += len(records)
        stats.errors += sum(1 for r in records if r["error"])
        stats.visual_tokens += sum(int(r.get("visual_tokens", 0)) for r in records)
        on_progress(len(records))
    return stats


def visual_for(model: EvalModel, sample: Any, cache: FeatureCache) -> tuple[Any, dict[str, Any]]:
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


def _image_visual(
    model: EvalModel, sample: Any, index: int, cache: FeatureCache
) -> tuple[Any, dict[str, Any]]:
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
    model: EvalModel,
    todo: list[Any],
    settings: AnswerSettings,
    cache: FeatureCache,
    sharing: Sharing,
) -> list[dict[str, Any]]:
    records: dict[str, dict[str, Any]] = {}
    ready: list[tuple[Any, Any, dict[str, Any]]] = []
    with torch.inference_mode():
        for sample in todo:
            base = {"question_id": sample.question_id, "prediction": "", "error": None}
            if sample.meta.get("error"):
                records[sample.question_id] = {
                    **base,
                    "error": f"{MALFORMED_ERROR_PREFIX}{sample.meta['error']}",
                }
                continue
            try:
                visual, info = visual_for(model, sample, cache)
            except Exception as exc:  # noqa: BLE001 - recorded per sample, the run goes on
                records[sample.question_id] = {**base, "error": describe_error(exc)}
                continue
            ready.append((sample, visual, info))
        if ready:
            try:
                answers = _infer(model, ready, settings, sharing)
            except Exception as exc:  # noqa: BLE001 - isolate the failing sample(s)
                log.debug("batch failed (%s); retrying its samples one by one", exc)
                answers = []
                for item in ready:
                    try:
                        answers.extend(_infer(model, [item], settings, sharing))
                    except Exception as inner:  # noqa: BLE001
                        answers.append({"prediction": "", "error": describe_error(inner)})
            for (sample, _, info), answer in zip(ready, answers, strict=True):
                records[sample.question_id] = {
                    "question_id": sample.question_id,
                    "error": None,
                    **info,
                    **answer,
                }
    return [records[s.question_id] for s in todo]


def _infer(
    model: EvalModel, items: list[tuple[Any, Any, dict[str, Any]]], settings: AnswerSettings, sharing: Sharing
) -> list[dict[str, Any]]:
    """Answers of `items`, in order: the shared path for the prompts whose prefix the model shares,
    the unshared one for the rest. Counted only once the whole call succeeded (a failed batch is
    retried sample by sample and counted then)."""
    prompts = [model.format_prompt(sample.prompt, n_images=len(sample.image_keys)) for sample, _, _ in items]
    reason = sharing.model_reason(model)
    splits = [None] * len(items) if reason else [model.split_prompt(p) for p in prompts]  # type: ignore[attr-defined]
    shared = [i for i, split in enumerate(splits) if split is not None]
    unshared = [i for i, split in enumerate(splits) if split is None]
    out: list[dict[str, Any] | None] = [None] * len(items)
    if unshared:
        answers = _infer_unshared(
            model, [prompts[i] for i in unshared], [items[i][1] for i in unshared], settings
        )
        for i, answer in zip(unshared, answers, strict=True):
            out[i] = answer
    counts: dict[str, int] = {}
    if shared:
        answers, counts = _infer_shared(
            model, [items[i] for i in shared], [splits[i] for i in shared], settings, sharing
        )
        for i, answer in zip(shared, answers, strict=True):
            out[i] = answer
    if unshared:
        sharing.stats.fell_back(
            reason or "the model declined the prompt (split_prompt returned None)", len(unshared)
        )
    stats = sharing.stats
    stats.shared += len(shared)
    stats.used_prefix_tokens += counts.get("used_prefix_tokens", 0)
    if stats.suffix_tokens is not None and shared:
        stats.suffix_tokens = (
            None if counts.get("suffix_tokens") is None else stats.suffix_tokens + counts["suffix_tokens"]
        )
    return [answer for answer in out if answer is not None]


def _infer_unshared(
    model: EvalModel, prompts: list[str], visual: list[Any], settings: AnswerSettings
) -> list[dict[str, Any]]:
    if settings.mode == "choices":
        logprobs = model.score_choices(None, prompts, list(settings.choices), visual=visual)
        return _choice_answers(logprobs, settings, call_stats(model, len(prompts)))
    texts = model.generate(
        None, prompts, max_new_tokens=settings.max_new_tokens, stop=settings.stop, visual=visual
    )
    return [
        {"prediction": text, **stats}
        for text, stats in zip(texts, call_stats(model, len(texts)), strict=True)
    ]


def _infer_shared(
    model: Any,
    items: list[tuple[Any, Any, dict[str, Any]]],
    splits: list[Any],
    settings: AnswerSettings,
    sharing: Sharing,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Answers from prefix states: each distinct prefix of the batch from the LRU or prefilled on its
    own, then one `*_from` call for all rows. Also returns the work counted for these rows."""
    keys = [
        prefix_digest(sample.image_keys, prefix)
        for (sample, _, _), (prefix, _) in zip(items, splits, strict=True)
    ]
    states: dict[str, Any] = {}
    prefix_s = 0.0
    for key, (_, visual, _), (prefix, _) in zip(keys, items, splits, strict=True):
        if key in states:
            continue
        state = sharing.cache.get(key)
        if state is None:
            state = model.prefill([prefix], [visual])[0]
            prefix_s += sum(row.get("prefill_s", 0.0) for row in call_stats(model, 1))
            sharing.stats.prefix_prefills += 1
            sharing.stats.prefix_tokens += int(state.tokens)
            sharing.cache.put(key, state)
            sharing.stats.state_bytes_max = max(sharing.stats.state_bytes_max, int(state.nbytes))
        sharing.stats.distinct[key] = int(state.tokens)
        sharing.batch_keys.add(key)
        states[key] = state
    rows = [states[key] for key in keys]
    suffixes = [suffix for _, suffix in splits]
    if settings.mode == "choices":
        logprobs = model.score_choices_from(rows, suffixes, list(settings.choices))
        answers = _choice_answers(logprobs, settings, call_stats(model, len(rows)))
    else:
        texts = model.generate_from(
            rows, suffixes, max_new_tokens=settings.max_new_tokens, stop=settings.stop
        )
        answers = [
            {"prediction": t, **stats} for t, stats in zip(texts, call_stats(model, len(texts)), strict=True)
        ]
    for answer in answers:  # the prefixes' prefill time, shared equally like the batch's own
        if "prefill_s" in answer:
            answer["prefill_s"] = round(answer["prefill_s"] + prefix_s / len(answers), 6)
    count = getattr(model, "count_tokens", None)
    counted = {
        "used_prefix_tokens": sum(int(state.tokens) for state in rows),
        "suffix_tokens": sum(count(suffixes)) if callable(count) else None,
    }
    return answers, counted


def _choice_answers(
    logprobs: torch.Tensor, settings: AnswerSettings, stats: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    out = []
    for row, extra in zip(logprobs.tolist(), stats, strict=True):
        best = max(range(len(row)), key=lambda i: row[i])
        probs = {c: (lp if math.isfinite(lp) else -1e9) for c, lp in zip(settings.choices, row, strict=True)}
        out.append({"prediction": settings.choices[best], "choice_logprobs": probs, **extra})
    return out


def describe_error(exc: Exception) -> str:
    """A failed sample's `error` field: the exception's type and message, at most 500 characters."""
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]


def probe_batch_size(
    model: EvalModel,
    samples: Sequence[Any],
    settings: AnswerSettings,
    limit: int = 256,
    sharing: Sharing | None = None,
) -> int:
    """The largest power-of-two batch (≤ limit) whose inference fits in accelerator memory.

    Runs the task's own first sample, repeated, at doubling batch sizes until the device reports
    out-of-memory. Only meaningful on CUDA, where OOM is a catchable error; the caller picks a fixed
    size on CPU, where exhausting memory kills the process instead. With prefix sharing the batch
    runs on the shared path from a prefilled state, while a reservation as large as what the run may
    hold besides — the full prefix LRU and one state per row of the batch — is allocated."""
    usable = next((s for s in samples if not s.meta.get("error")), None)
    if usable is None:
        return 1
    try:
        visual, info = visual_for(model, usable, FeatureCache(0))
    except Exception:  # noqa: BLE001 - an unreadable first sample: fall back to the smallest batch
        return 1
    sharing = sharing or Sharing.off()
    probe = Sharing(enabled=sharing.enabled, cache=PrefixCache(sharing.cache.capacity_bytes))
    best, size = 1, 1
    while size <= limit:
        reserve = None
        try:
            state_bytes = probe.stats.state_bytes_max  # known once a size has run on the shared path
            if state_bytes and model.device.type == "cuda":
                reserve = torch.empty(
                    probe.cache.capacity_bytes + size * state_bytes, dtype=torch.uint8, device=model.device
                )
            _infer(model, [(usable, visual, info)] * size, settings, probe)
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            del reserve
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        best, size = size, size * 2
    return best
