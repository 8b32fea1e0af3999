"""`OpenAIClientModel`: an `EvalModel` that answers through an OpenAI-compatible Chat Completions endpoint.

``--model openai:<base_url>[#<model id>]`` evaluates whatever serves that API — vLLM, SGLang, TGI,
llama.cpp, a hosted API or `vlmbench serve`. The runner drives it like any model; behind the calls:

- images are sent as base64 PNG data URLs (lossless, so the server sees the runner's pixels); the
  server does its own preprocessing, so the client knows no visual-token counts (reported as 0);
- the requests of one runner batch go out concurrently, at most ``--concurrency`` at a time, on one
  persistent event loop; 429, 5xx, timeouts and connection errors are retried with exponential backoff
  and full jitter (a ``Retry-After`` header is honoured, capped); after the last retry the sample fails
  with the reason, is counted in ``errors`` and the run goes on;
- every successful response is stored in a `ResponseCache` first, so a resumed or repeated run sends
  nothing twice (cache hits are counted in results.json, ``model.remote``);
- choices mode asks for ``logprobs``/``top_logprobs`` of the first answer token and reads each
  choice's log-probability off them; a choice outside the top-k gets -inf (the decision is still exact
  when any choice is in the top-k, since a missing one is below all of them). A server that returns no
  logprobs gets a short generation instead, matched to the choices; results.json records which path.

The API key comes from ``$VLMBENCH_API_KEY``, else ``$OPENAI_API_KEY``. It is sent only in the
``Authorization`` header and never logged, cached or written. Retry and timeout settings come from
``$VLMBENCH_OPENAI_TIMEOUT_S`` (per request, default 120), ``$VLMBENCH_OPENAI_MAX_RETRIES`` (default 5)
and ``$VLMBENCH_OPENAI_BACKOFF_S`` (first backoff, default 0.5).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import logging
import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from vlmbench.errors import UserError
from vlmbench.modeling.interface import IMAGE_MARKER, REFERENCE_IMAGE
from vlmbench.modeling.response_cache import ResponseCache, request_key

log = logging.getLogger(__name__)

OPENAI_PREFIX = "openai:"
API_KEY_ENVS = ("VLMBENCH_API_KEY", "OPENAI_API_KEY")
RETRY_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))
MAX_STOP_SENT = 4  # OpenAI's limit on `stop`; longer lists are also applied on the client
FALLBACK_CHOICE_TOKENS = 8  # generation length when a server returns no logprobs in choices mode


# ---- the MODEL argument ------------------------------------------------------------------------
@dataclass(frozen=True)
class Endpoint:
    """``openai:<base_url>[#model]`` parsed: the base URL (ending in /v1 usually) and the model id."""

    base_url: str
    model_id: str | None

    @property
    def shown(self) -> str:
        return self.base_url + (f"#{self.model_id}" if self.model_id else "")


def parse_endpoint(spec: str) -> Endpoint:
    """Parse ``openai:http(s)://host[:port]/path[#model]``; a malformed one is a `UserError`."""
    text = spec[len(OPENAI_PREFIX) :] if spec.startswith(OPENAI_PREFIX) else spec
    url, _, model_id = text.partition("#")
    hint = "give openai:http://HOST:PORT/v1 (optionally #MODEL_ID), e.g. openai:http://127.0.0.1:8000/v1"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UserError(f"--model {OPENAI_PREFIX}{url}: not a valid URL ({exc}); {hint}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"--model {OPENAI_PREFIX}{url}: needs an http:// or https:// URL with a host; {hint}")
    if parts.username or parts.password:
        raise UserError(
            f"--model {OPENAI_PREFIX}: do not put credentials in the URL; set {API_KEY_ENVS[0]} (or {API_KEY_ENVS[1]})"
        )
    if parts.query:
        raise UserError(f"--model {OPENAI_PREFIX}{url}: the base URL takes no query string; {hint}")
    netloc = parts.hostname if port is None else f"{parts.hostname}:{port}"
    if ":" in parts.hostname:  # an IPv6 literal
        netloc = f"[{parts.hostname}]" + (f":{port}" if port is not None else "")
    base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    return Endpoint(base, model_id.strip() or None)


def api_key_from_env() -> str | None:
    """The API key: ``$VLMBENCH_API_KEY``, else ``$OPENAI_API_KEY``, else None."""
    for name in API_KEY_ENVS:
        value = os.environ.get(name)
        if value:
            return value
    return None


@dataclass(frozen=True)
class ClientSettings:
    """How the client talks to the endpoint (none of it changes an answer)."""

    concurrency: int = 8
    timeout_s: float = 120.0
    max_retries: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    top_logprobs: int = 20

    @classmethod
    def from_env(cls, concurrency: int = 8) -> ClientSettings:
        """The defaults, overridden by ``$VLMBENCH_OPENAI_TIMEOUT_S``, ``..._MAX_RETRIES``, ``..._BACKOFF_S``."""
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise UserError(f"--concurrency {concurrency} must be a positive integer")
        return cls(
            concurrency=concurrency,
            timeout_s=_env_number("VLMBENCH_OPENAI_TIMEOUT_S", cls.timeout_s, float, minimum=0.001),
            max_retries=_env_number("VLMBENCH_OPENAI_MAX_RETRIES", cls.max_retries, int, minimum=0),
            backoff_s=_env_number("VLMBENCH_OPENAI_BACKOFF_S", cls.backoff_s, float, minimum=0.0),
        )


def _env_number(name: str, default: Any, kind: type, minimum: float) -> Any:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < minimum:
        raise UserError(f"${name}={raw!r} is not a {kind.__name__} >= {minimum}; unset it or fix the value")
    return value


def discover_model_id(endpoint: Endpoint, api_key: str | None, timeout_s: float = 10.0, transport: Any = None) -> str:
    """The model id to use: checked against ``GET /models``, or the only one listed there.

    An unreachable server, a refused key or an answer that is not a model list is a one-line
    `UserError` — before any data is read or generated."""
    import httpx

    url = f"{endpoint.base_url}/models"
    try:
        with httpx.Client(timeout=timeout_s, transport=transport) as http:
            response = http.get(url, headers=_headers(api_key))
    except httpx.HTTPError as exc:
        raise UserError(
            f"--model {OPENAI_PREFIX}{endpoint.base_url}: cannot reach the server ({type(exc).__name__}); "
            "start it (e.g. `vlmbench serve --model PRESET`) or fix the URL"
        ) from None
    if response.status_code in (401, 403):
        raise UserError(
            f"--model {OPENAI_PREFIX}{endpoint.base_url}: the server refused the request ({response.status_code}); "
            f"set {API_KEY_ENVS[0]} (or {API_KEY_ENVS[1]}) to its API key"
        )
    try:
        listed = [str(m["id"]) for m in response.json()["data"]] if response.status_code == 200 else None
    except (ValueError, KeyError, TypeError):
        listed = None
    if listed is None:
        raise UserError(
            f"--model {OPENAI_PREFIX}{endpoint.base_url}: GET {url} answered {response.status_code} without a model "
            "list; is this the OpenAI-compatible base URL (usually ending in /v1)?"
        )
    if endpoint.model_id is not None:
        if endpoint.model_id not in listed:
            raise UserError(
                f"--model {endpoint.shown}: the server has no model {endpoint.model_id!r}; it lists: "
                f"{', '.join(listed[:20]) or 'none'}"
            )
        return endpoint.model_id
    if len(listed) != 1:
        raise UserError(
            f"--model {OPENAI_PREFIX}{endpoint.base_url}: the server lists {len(listed)} models "
            f"({', '.join(listed[:20]) or 'none'}); pick one with #MODEL_ID after the URL"
        )
    return listed[0]


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


# ---- what the runner caches per image ------------------------------------------------------------
@dataclass(frozen=True)
class RemotePlan:
    tile_sizes: list[tuple[int, int]]


@dataclass(frozen=True)
class RemoteImage:
    """One image as sent: its PNG data URL and the SHA-256 of the PNG bytes (what cache keys hold)."""

    data_url: str
    sha256: str
    plan: RemotePlan

    @property
    def shape(self) -> tuple[int]:
        """Visual tokens are the server's business: 0 here (results.json says the count is unknown)."""
        return (0,)


def build_messages(question: str, images: Sequence[RemoteImage]) -> list[dict[str, Any]]:
    """One user message: the images (data URLs) interleaved at the question's `<image>` markers when
    it has one per image, else all images first, then the text (what in-process prompts do)."""
    pieces = question.split(IMAGE_MARKER)
    content: list[dict[str, Any]] = []
    if images and len(pieces) == len(images) + 1:
        for index, text in enumerate(pieces):
            if text:
                content.append({"type": "text", "text": text})
            if index < len(images):
                content.append({"type": "image_url", "image_url": {"url": images[index].data_url}})
    else:
        content = [{"type": "image_url", "image_url": {"url": image.data_url}} for image in images]
        content.append({"type": "text", "text": question})
    return [{"role": "user", "content": content}]


class RequestFailed(RuntimeError):
    """A request that failed for good (after its retries, or a 4xx that retrying cannot fix)."""


@dataclass
class ClientStats:
    """What results.json's ``model.remote`` reports about the traffic."""

    http_requests: int = 0
    responses: int = 0
    cache_hits: int = 0
    retries: int = 0
    failed: int = 0
    choices_via: dict[str, int] = field(default_factory=lambda: {"logprobs": 0, "generate": 0})


class OpenAIClientModel:
    """`EvalModel` over an OpenAI-compatible endpoint (see the module docstring)."""

    def __init__(
        self,
        endpoint: Endpoint,
        model_id: str,
        api_key: str | None = None,
        settings: ClientSettings | None = None,
        cache: ResponseCache | None = None,
        transport: Any = None,
    ) -> None:
        self.endpoint = endpoint
        self.model_id = model_id
        self.settings = settings or ClientSettings()
        self.cache = cache
        self.stats = ClientStats()
        self._api_key = api_key
        self._transport = transport
        self._loop = asyncio.new_event_loop()
        self._http: Any = None
        # this process's answers and failures by key: the runner re-asks a failed batch one sample at a
        # time, and those re-asks must neither hit the endpoint again nor count as cache hits
        self._answered: dict[str, dict[str, Any]] = {}
        self._failed: dict[str, str] = {}

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIClientModel({self.endpoint.base_url!r}, model_id={self.model_id!r})"

    # ---- EvalModel: images and prompts --------------------------------------------------------
    @property
    def device(self) -> Any:
        import torch

        return torch.device("cpu")

    def prepare_image(self, image: Any) -> RemoteImage:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG")
        data = buffer.getvalue()
        return RemoteImage(
            "data:image/png;base64," + base64.b64encode(data).decode("ascii"),
            hashlib.sha256(data).hexdigest(),
            RemotePlan([tuple(image.size)]),
        )

    def encode(self, images: list[Any]) -> list[Any]:
        return list(images)

    def format_prompt(self, question: str, n_images: int = 1) -> str:
        """The question itself: the server applies its model's chat template."""
        return question

    # ---- EvalModel: answers -------------------------------------------------------------------
    def generate(
        self,
        images: Sequence[Any] | None,
        prompts: list[str],
        max_new_tokens: int = 32,
        stop: tuple[str, ...] = (),
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        use_cache: bool = True,
        visual: Sequence[Any] | None = None,
    ) -> list[str]:
        sampling: dict[str, Any] = {"max_tokens": max_new_tokens, "temperature": 0.0}
        if do_sample:
            sampling.update(temperature=temperature, top_p=top_p, **({"seed": seed} if seed is not None else {}))
        if stop:
            sampling["stop"] = list(stop[:MAX_STOP_SENT])
        bodies = [self._body(p, v, sampling) for p, v in zip(prompts, self._visual(images, visual, prompts), strict=True)]
        outcomes = self._send_all(bodies)
        return [_cut(_message_text(o), stop) for o in self._raise_failures(outcomes)]

    def score_choices(
        self,
        images: Sequence[Any] | None,
        prompts: list[str],
        choices: list[str],
        visual: Sequence[Any] | None = None,
    ) -> Any:
        import torch

        sampling = {"max_tokens": 1, "temperature": 0.0, "logprobs": True, "top_logprobs": self.settings.top_logprobs}
        visuals = self._visual(images, visual, prompts)
        bodies = [self._body(p, v, sampling) for p, v in zip(prompts, visuals, strict=True)]
        outcomes = self._raise_failures(self._send_all(bodies))
        rows: list[list[float] | None] = [_choice_row(o, choices) for o in outcomes]
        missing = [i for i, row in enumerate(rows) if row is None]
        if missing:  # no logprobs (or no choice in the top-k): generate and match the answer to a choice
            fallback = {"max_tokens": max(FALLBACK_CHOICE_TOKENS, 1), "temperature": 0.0}
            texts = self._raise_failures(self._send_all([self._body(prompts[i], visuals[i], fallback) for i in missing]))
            for i, outcome in zip(missing, texts, strict=True):
                rows[i] = _match_choice(_message_text(outcome), choices)
        self.stats.choices_via["logprobs"] += len(rows) - len(missing)
        self.stats.choices_via["generate"] += len(missing)
        return torch.tensor(rows, dtype=torch.float32)

    # ---- EvalModel: description ---------------------------------------------------------------
    def parameter_counts(self) -> dict[str, int]:
        return {}

    def resolution_summary(self) -> dict[str, Any]:
        return {"name": "remote", "note": "image preprocessing is done by the server; PNG sent losslessly"}

    def visual_tokens_reference(self, width: int = REFERENCE_IMAGE[0], height: int = REFERENCE_IMAGE[1]) -> int:
        return 0

    def inspect_plan(self, width: int, height: int) -> dict[str, Any]:
        raise UserError(
            f"{OPENAI_PREFIX}{self.endpoint.base_url}: the resolution plan is the server's; inspect the served model instead"
        )

    def summary(self, name: str, preset: str | None = None) -> dict[str, Any]:
        return {
            "name": name,
            "preset": None,
            "vision_encoder": None,
            "projector": None,
            "resolution": self.resolution_summary(),
            "llm": self.model_id,
            "params": {},
            "visual_tokens_reference": None,
            "remote": {
                "endpoint": self.endpoint.base_url,
                "model_id": self.model_id,
                "architecture_source": "the server's GET /models (model id only); nothing else is known",
                "http_requests": self.stats.http_requests,
                "responses_received": self.stats.responses,
                "response_cache": {"hits": self.stats.cache_hits, "path": str(self.cache.path) if self.cache else None},
                "retries": self.stats.retries,
                "failed_requests": self.stats.failed,
                "choices_via": dict(self.stats.choices_via),
            },
        }

    # ---- requests -----------------------------------------------------------------------------
    def _visual(self, images: Sequence[Any] | None, visual: Sequence[Any] | None, prompts: list[str]) -> list[list[RemoteImage]]:
        given = visual if visual is not None else images if images is not None else [[] for _ in prompts]
        return [list(v) if isinstance(v, (list, tuple)) else [v] for v in given]

    def _body(self, prompt: str, images: list[RemoteImage], sampling: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """(cache key, request body); the key has image hashes where the body has data URLs."""
        body = {"model": self.model_id, "messages": build_messages(prompt, images), **sampling}
        hashed = {"model": self.model_id, "messages": build_messages(prompt, [_hash_only(i) for i in images]), **sampling}
        return request_key({"endpoint": self.endpoint.base_url, **hashed}), body

    def _send_all(self, bodies: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any] | RequestFailed]:
        return self._loop.run_until_complete(self._gather(bodies))

    async def _gather(self, bodies: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any] | RequestFailed]:
        import httpx

        if self._http is None:
            limits = httpx.Limits(max_connections=self.settings.concurrency, max_keepalive_connections=self.settings.concurrency)
            self._http = httpx.AsyncClient(timeout=self.settings.timeout_s, limits=limits, transport=self._transport)
        gate = asyncio.Semaphore(self.settings.concurrency)
        return list(await asyncio.gather(*(self._one(gate, key, body) for key, body in bodies)))

    async def _one(self, gate: asyncio.Semaphore, key: str, body: dict[str, Any]) -> dict[str, Any] | RequestFailed:
        if key in self._answered:
            return self._answered[key]
        if key in self._failed:
            return RequestFailed(self._failed.pop(key))
        cached = self.cache.get(key) if self.cache is not None else None
        if cached is not None:
            self.stats.cache_hits += 1
            self._answered[key] = cached
            return cached
        async with gate:
            try:
                answer = await self._post_with_retries(body)
            except RequestFailed as exc:
                self.stats.failed += 1
                self._failed[key] = str(exc)
                return exc
        if self.cache is not None:
            self.cache.put(key, answer)
        self._answered[key] = answer
        return answer

    async def _post_with_retries(self, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        url = f"{self.endpoint.base_url}/chat/completions"
        attempts = self.settings.max_retries + 1
        reason = ""
        for attempt in range(attempts):
            if attempt:
                self.stats.retries += 1
            retry_after: float | None = None
            self.stats.http_requests += 1
            try:
                response = await self._http.post(url, json=body, headers=_headers(self._api_key))
            except httpx.TimeoutException:
                reason = f"timed out after {self.settings.timeout_s:g} s"
            except httpx.TransportError as exc:
                reason = f"connection failed ({type(exc).__name__})"
            else:
                if response.status_code == 200:
                    answer = _json_object(response)
                    if answer is not None and isinstance(answer.get("choices"), list) and answer["choices"]:
                        self.stats.responses += 1
                        return answer
                    raise RequestFailed(f"{url} answered 200 without a chat completion")
                reason = f"HTTP {response.status_code}: {_error_message(response)}"
                if response.status_code not in RETRY_STATUS:
                    raise RequestFailed(f"{url} refused the request ({reason})")
                retry_after = _retry_after(response)
            if attempt + 1 < attempts:
                await asyncio.sleep(self._backoff(attempt, retry_after))
        raise RequestFailed(f"{url} failed after {attempts} attempts; last: {reason}")

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)]; a Retry-After (capped) is a floor."""
        ceiling = min(self.settings.max_backoff_s, self.settings.backoff_s * 2**attempt)
        delay = random.uniform(0.0, ceiling)  # noqa: S311 - jitter, not security
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.settings.max_backoff_s))
        return delay

    def _raise_failures(self, outcomes: list[dict[str, Any] | RequestFailed]) -> list[dict[str, Any]]:
        failures = [o for o in outcomes if isinstance(o, RequestFailed)]
        if not failures:
            return outcomes  # type: ignore[return-value]
        if len(outcomes) > 1:  # the runner then re-asks each sample alone and records each one's reason
            raise RequestFailed(f"{len(failures)} of {len(outcomes)} requests failed; first: {failures[0]}")
        raise failures[0]


# ---- reading responses ---------------------------------------------------------------------------
def _hash_only(image: RemoteImage) -> RemoteImage:
    return RemoteImage(f"sha256:{image.sha256}", image.sha256, image.plan)


def _json_object(response: Any) -> dict[str, Any] | None:
    try:
        value = response.json()
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _error_message(response: Any) -> str:
    body = _json_object(response) or {}
    error = body.get("error")
    text = error.get("message") if isinstance(error, dict) else error if isinstance(error, str) else response.text
    return " ".join(str(text or "").split())[:300]


def _retry_after(response: Any) -> float | None:
    try:
        value = float(response.headers.get("retry-after", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _message_text(answer: dict[str, Any]) -> str:
    try:
        content = answer["choices"][0]["message"].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise RequestFailed("the response has no choices[0].message") from None
    return content if isinstance(content, str) else ""


def _cut(text: str, stop: tuple[str, ...]) -> str:
    for marker in stop:
        if marker and marker in text:
            text = text[: text.index(marker)]
    return text


def _choice_row(answer: dict[str, Any], choices: list[str]) -> list[float] | None:
    """Each choice's log-probability from the first token's top_logprobs; None when none is there."""
    try:
        first = answer["choices"][0]["logprobs"]["content"][0]
        listed = [(str(t["token"]), float(t["logprob"])) for t in first.get("top_logprobs") or []]
        listed.append((str(first["token"]), float(first["logprob"])))
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    row = []
    for choice in choices:
        exact = [lp for token, lp in listed if token == choice]
        loose = [lp for token, lp in listed if token.strip() == choice.strip()]
        found = exact or loose
        row.append(max(found) if found else -math.inf)
    return row if any(math.isfinite(v) for v in row) else None


def _match_choice(text: str, choices: list[str]) -> list[float]:
    """0 for the choice the generated answer starts with (longest match, case-insensitive), -inf for
    the others; an answer that names no choice is a failure of that sample."""
    answer = text.strip().lower()
    best = max((c for c in choices if c.strip() and answer.startswith(c.strip().lower())), key=len, default=None)
    if best is None:
        raise RequestFailed(
            f"the server returned no usable logprobs and its answer {text[:60]!r} names none of the choices "
            f"{', '.join(choices)}; run with --answer-mode generate"
        )
    return [0.0 if c == best else -math.inf for c in choices]


def load_openai_model(spec: str, concurrency: int = 8) -> Any:
    """The `LoadedModel` for ``openai:<base_url>[#model]`` (asks the server for its model list)."""
    from vlmbench.modeling.loaded import LoadedModel
    from vlmbench.modeling.response_cache import default_cache_path

    endpoint = parse_endpoint(spec)
    settings = ClientSettings.from_env(concurrency)
    quiet = logging.getLogger("httpx")  # one INFO line per request otherwise (URLs only, never headers)
    if quiet.level == logging.NOTSET:
        quiet.setLevel(logging.WARNING)
    api_key = api_key_from_env()
    model_id = discover_model_id(endpoint, api_key)
    path = default_cache_path()
    cache = ResponseCache(path) if path is not None else None
    model = OpenAIClientModel(endpoint, model_id, api_key=api_key, settings=settings, cache=cache)
    return LoadedModel(model, f"openai:{model_id}", None, None, True)


__all__ = [
    "API_KEY_ENVS", "OPENAI_PREFIX", "ClientSettings", "Endpoint", "OpenAIClientModel", "RemoteImage",
    "RequestFailed", "api_key_from_env", "build_messages", "discover_model_id", "load_openai_model", "parse_endpoint",
]
