"""Dynamic batching for `vlmbench serve`: concurrent requests → one model worker thread → batched calls.

The HTTP side submits a `Job` and awaits its future; the worker thread (the only one that touches the
model, its tokenizer and the feature cache) takes the first waiting job, then keeps collecting until
it holds ``max_batch_size`` jobs or ``max_wait_ms`` has passed, and answers them in as few model calls
as it can: greedy jobs with the same generation settings share one `generate` call; a sampled job runs
alone, so that its seed gives the same answer however many requests arrive with it.

Images go through the runner's own path — `prepare_image`, `encode` one image at a time, the
`FeatureCache` keyed by the SHA-256 of the image bytes — so a served model sees what an in-process
run sees, and repeated images (POPE asks several questions per image) are encoded once.

Log-probabilities (`logprobs`/`top_logprobs`) are computed with `score_choices` over the model's
vocabulary: every token id whose decoded text tokenizes back to exactly that id is a candidate (so
each candidate is a single-token choice, the path in-process choice scoring takes for "Yes"/"No").
The first answer token's distribution is then the one in-process choices mode reads — the same
prompt, the same forward pass — so a client reading "Yes"/"No" off top_logprobs reproduces the
in-process decision.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from vlmbench.modeling.interface import EvalModel
from vlmbench.runner.engine import FeatureCache
from vlmbench.serving.protocol import BadRequest

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One chat completion to compute; `future` receives a `Completion` or an exception."""

    question: str
    images: list[Any]  # decoded RGB PIL images
    image_keys: list[str]  # SHA-256 of each image's bytes (feature-cache keys)
    max_tokens: int
    stop: tuple[str, ...] = ()
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    top_logprobs: int | None = None  # None: no logprobs asked; 0..k: logprobs with k alternatives
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)

    def group(self) -> tuple[Any, ...]:
        """Jobs with the same group can share one generate call (sampled jobs never share)."""
        if self.temperature > 0:
            return ("sampled", id(self))
        return ("greedy", self.max_tokens, self.stop)


@dataclass
class Completion:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    logprobs: list[dict[str, Any]] | None = None


@dataclass
class WorkerStats:
    completions: int = 0
    failures: int = 0
    batches: int = 0
    batched_jobs: int = 0


class TokenScorer:
    """Log-probabilities over the vocabulary through `EvalModel.score_choices` (see the module docstring)."""

    def __init__(self, model: EvalModel, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        candidates: list[tuple[int, str]] = []
        for token_id in range(len(tokenizer)):
            if token_id in special:
                continue
            text = tokenizer.decode([token_id])
            if text and tokenizer(text, add_special_tokens=False)["input_ids"] == [token_id]:
                candidates.append((token_id, text))
        self.ids = [i for i, _ in candidates]
        self.texts = [t for _, t in candidates]
        self.index = {token_id: n for n, token_id in enumerate(self.ids)}

    def logprobs(self, items: list[tuple[str, Any, str, int, int]]) -> list[list[dict[str, Any]]]:
        """OpenAI ``logprobs.content`` for each (prompt, visual, answer, top_k, max tokens) item: one
        entry per answer token, all positions of all items scored in one `score_choices` call."""
        rows_of: list[list[int | None]] = []
        prompts: list[str] = []
        visuals: list[Any] = []
        for prompt, visual, answer, _, limit in items:
            ids: list[int | None] = list(self.tokenizer(answer, add_special_tokens=False)["input_ids"][:limit]) if answer else []
            ids = ids or [None]  # an empty answer (EOS first): the first token's distribution anyway
            rows_of.append(ids)
            prompts.extend(prompt + self.tokenizer.decode([t for t in ids[:i] if t is not None]) for i in range(len(ids)))
            visuals.extend([visual] * len(ids))
        scores = self.model.score_choices(None, prompts, self.texts, visual=visuals).float()
        out, row = [], 0
        for (_, _, _, top_k, _), ids in zip(items, rows_of, strict=True):
            content = []
            for token_id in ids:
                content.append(self._position(scores[row], token_id, top_k))
                row += 1
            out.append(content)
        return out

    def _position(self, row: Any, token_id: int | None, top_k: int) -> dict[str, Any]:
        alternatives = []
        if top_k > 0:
            best = row.topk(min(top_k, len(self.texts)))
            alternatives = [self._entry(int(j), float(v)) for v, j in zip(best.values, best.indices, strict=True)]
        if token_id is None:
            top = int(row.argmax())
            return {**self._entry(top, float(row[top])), "top_logprobs": alternatives}
        n = self.index.get(token_id)
        text = self.tokenizer.decode([token_id])
        logprob = float(row[n]) if n is not None and math.isfinite(float(row[n])) else -9999.0
        return {"token": text, "logprob": logprob, "bytes": list(text.encode()), "top_logprobs": alternatives}

    def _entry(self, n: int, value: float) -> dict[str, Any]:
        text = self.texts[n]
        return {"token": text, "logprob": value if math.isfinite(value) else -9999.0, "bytes": list(text.encode())}


class ModelWorker:
    """The one thread that runs the model; `submit` from any thread, `close` to stop it."""

    def __init__(
        self, model: EvalModel, max_batch_size: int = 8, max_wait_ms: float = 5.0, feature_cache: int = 256,
        max_prompt_tokens: int = 8192,
    ) -> None:
        self.model = model
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_prompt_tokens = max_prompt_tokens
        self.cache = FeatureCache(feature_cache)
        self.stats = WorkerStats()
        self.tokenizer = getattr(model, "tokenizer", None)
        self._scorer: TokenScorer | None = None
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name="vlmbench-model-worker", daemon=True)
        self._thread.start()

    @property
    def supports_logprobs(self) -> bool:
        return self.tokenizer is not None and callable(getattr(self.tokenizer, "decode", None))

    def submit(self, job: Job) -> concurrent.futures.Future:
        self._queue.put(job)
        return job.future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    # ---- the worker thread -------------------------------------------------------------------
    def _serve(self) -> None:
        import torch

        with torch.inference_mode():
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batch = [first]
                deadline = time.monotonic() + self.max_wait_s
                stop = False
                while len(batch) < self.max_batch_size:
                    remaining = deadline - time.monotonic()
                    try:
                        job = self._queue.get(timeout=max(remaining, 0.0)) if remaining > 0 else self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if job is None:
                        stop = True
                        break
                    batch.append(job)
                self._run(batch)
                if stop:
                    return

    def _run(self, batch: list[Job]) -> None:
        ready: list[tuple[Job, str, Any]] = []
        for job in batch:
            try:
                ready.append((job, *self._prepare(job)))
            except Exception as exc:  # noqa: BLE001 - the job's own error; the others go on
                self._fail(job, exc)
        groups: dict[tuple[Any, ...], list[tuple[Job, str, Any]]] = {}
        for item in ready:
            groups.setdefault(item[0].group(), []).append(item)
        for items in groups.values():
            self.stats.batches += 1
            self.stats.batched_jobs += len(items)
            try:
                texts = self._generate(items)
            except Exception:  # noqa: BLE001 - isolate the failing job(s), like the runner does
                texts = None
            answered: list[tuple[Job, str, Any, str]] = []
            for index, (job, prompt, visual) in enumerate(items):
                try:
                    text = texts[index] if texts is not None else self._generate([(job, prompt, visual)])[0]
                    answered.append((job, prompt, visual, text))
                except Exception as exc:  # noqa: BLE001
                    self._fail(job, exc)
            self._finish(answered)

    def _finish(self, answered: list[tuple[Job, str, Any, str]]) -> None:
        """Resolve each answered job with its completion; the logprobs of all of them in one call."""
        wanted = [a for a in answered if a[0].top_logprobs is not None]
        logprobs: dict[int, list[dict[str, Any]]] = {}
        if wanted:
            if self._scorer is None:
                self._scorer = TokenScorer(self.model, self.tokenizer)
            items = [(prompt, visual, text, job.top_logprobs or 0, job.max_tokens) for job, prompt, visual, text in wanted]
            try:
                logprobs = {id(a[0]): lp for a, lp in zip(wanted, self._scorer.logprobs(items), strict=True)}
            except Exception as exc:  # noqa: BLE001 - those jobs fail; the others are answered
                for job, *_ in wanted:
                    self._fail(job, exc)
        for job, prompt, _, text in answered:
            if job.future.done():
                continue
            job.future.set_result(self._completion(job, prompt, text, logprobs.get(id(job))))
            self.stats.completions += 1

    def _fail(self, job: Job, exc: Exception) -> None:
        self.stats.failures += 1
        if not job.future.done():
            job.future.set_exception(exc)

    def _prepare(self, job: Job) -> tuple[str, Any]:
        prompt = self.model.format_prompt(job.question, n_images=len(job.images))
        if self.tokenizer is not None:
            count = len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
            if count > self.max_prompt_tokens:
                raise BadRequest(
                    f"the prompt is {count} text tokens, more than this server's limit of {self.max_prompt_tokens}",
                    param="messages", code="context_length_exceeded",
                )
        visuals = []
        for image, key in zip(job.images, job.image_keys, strict=True):
            cached = self.cache.get(key)
            if cached is None:
                cached = self.model.encode([self.model.prepare_image(image)])[0]
                self.cache.put(key, cached)
            visuals.append(cached)
        visual = visuals[0] if len(visuals) == 1 else visuals
        return prompt, visual

    def _generate(self, items: list[tuple[Job, str, Any]]) -> list[str]:
        job = items[0][0]
        return self.model.generate(
            None, [prompt for _, prompt, _ in items], max_new_tokens=job.max_tokens, stop=job.stop,
            do_sample=job.temperature > 0, temperature=job.temperature or 1.0, top_p=job.top_p, seed=job.seed,
            visual=[visual for _, _, visual in items],
        )

    def _completion(self, job: Job, prompt: str, text: str, logprobs: list[dict[str, Any]] | None) -> Completion:
        prompt_tokens = completion_tokens = 0
        if self.tokenizer is not None:
            prompt_tokens = len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
            completion_tokens = len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0
        finish = "length" if completion_tokens >= job.max_tokens else "stop"
        return Completion(text, finish, prompt_tokens, completion_tokens, logprobs)


__all__ = ["Completion", "Job", "ModelWorker", "TokenScorer", "WorkerStats"]
