"""The FastAPI application behind `vlmbench serve`: OpenAI-compatible Chat Completions over any `EvalModel`.

Routes: ``POST /v1/chat/completions`` (JSON or, with ``"stream": true``, server-sent events),
``GET /v1/models`` and ``GET /health``. Every refusal is a 4xx with OpenAI's error body
``{"error": {"message", "type", "param", "code"}}`` and the server keeps serving.

Requests are untrusted: the body is capped before it is parsed (`BodyLimit`, 413); images must be
``data:`` URLs (http(s) URLs are refused — the server fetches nothing, so it cannot be turned into a
proxy and works offline); an image's pixel count is read from its header and refused above the cap
before any pixel is decoded (decompression bombs); JSON, fields, the model id and token counts are
validated with a message naming the field. With an API key, every route but ``/health`` needs
``Authorization: Bearer <key>`` (401 otherwise; compared in constant time).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import json
import secrets
import time
import uuid
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from vlmbench.serving.batching import Completion, Job, ModelWorker
from vlmbench.serving.protocol import BadRequest, ChatCompletionRequest, error_body, parse_user_turn


@dataclass(frozen=True)
class ServeSettings:
    model_id: str
    api_key: str | None = None
    max_body_bytes: int = 32 * 2**20
    max_image_pixels: int = 40_000_000
    max_images: int = 16
    max_new_tokens: int = 1024
    default_max_tokens: int = 256
    max_top_logprobs: int = 20


class BodyLimit:
    """ASGI middleware: a request body above `limit` bytes gets 413 before the app reads any of it."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Any) -> None:
        payload = json.dumps(error_body(
            f"the request body is larger than this server's limit of {self.limit} bytes (--max-body-mb)",
            "invalid_request_error", code="request_too_large",
        )).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


def decode_image(url: str, index: int, max_pixels: int) -> tuple[Any, str]:
    """(RGB image, SHA-256 of its bytes) from a ``data:image/...;base64,`` URL; `BadRequest` otherwise."""
    from PIL import Image, UnidentifiedImageError

    param = f"messages[0].content[image {index}]"
    if url.startswith(("http://", "https://")):
        raise BadRequest(
            "image URLs are not fetched (the server makes no outgoing requests); send the image inline as "
            "data:image/png;base64,...", param=param, code="image_url_not_supported",
        )
    header, comma, payload = url.partition(",")
    if not url.startswith("data:") or not comma or not header.endswith(";base64"):
        raise BadRequest("an image must be a base64 data URL (data:image/png;base64,...)", param=param, code="invalid_image")
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("the image's base64 payload does not decode", param=param, code="invalid_image") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw))
            width, height = image.size  # from the header: nothing decoded yet
            if width * height > max_pixels:
                raise BadRequest(
                    f"the image is {width}x{height} = {width * height} pixels, above this server's limit of "
                    f"{max_pixels} (--max-image-pixels)", param=param, code="image_too_large",
                )
            image.load()
            rgb = image.convert("RGB")
    except BadRequest:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning,
            SyntaxError) as exc:
        raise BadRequest(f"the image cannot be decoded ({type(exc).__name__})", param=param, code="invalid_image") from None
    return rgb, hashlib.sha256(raw).hexdigest()


def create_app(worker: ModelWorker, settings: ServeSettings) -> Any:
    """The ASGI app (FastAPI wrapped in the body-size limit)."""
    app = FastAPI(title="vlmbench serve", docs_url=None, redoc_url=None, openapi_url=None)
    created = int(time.time())

    @app.exception_handler(BadRequest)
    async def _bad_request(_: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body(_validation_text(exc.errors()), "invalid_request_error"), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(str(exc.detail), "invalid_request_error"), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(error_body(f"internal error ({type(exc).__name__})", "server_error"), status_code=500)

    def authorize(request: Request) -> None:
        if settings.api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), settings.api_key.encode()):
            raise BadRequest("missing or wrong API key: send Authorization: Bearer <key>", status=401,
                             kind="authentication_error", code="invalid_api_key")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        stats = worker.stats
        return {
            "status": "ok", "model": settings.model_id, "completions": stats.completions, "failures": stats.failures,
            "batches": stats.batches,
            "mean_batch_size": round(stats.batched_jobs / stats.batches, 3) if stats.batches else None,
        }

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        authorize(request)
        return {"object": "list", "data": [{"id": settings.model_id, "object": "model", "created": created, "owned_by": "vlmbench"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        authorize(request)
        req = _parse_request(await request.body())
        if req.model != settings.model_id:
            raise BadRequest(f"model {req.model!r} is not served here; this server serves {settings.model_id!r}",
                             param="model", code="model_not_found", status=404)
        question, urls = parse_user_turn(req)
        if len(urls) > settings.max_images:
            raise BadRequest(f"{len(urls)} images, more than this server's limit of {settings.max_images}", param="messages")
        max_tokens = req.new_tokens(min(settings.default_max_tokens, settings.max_new_tokens))
        if max_tokens > settings.max_new_tokens:
            raise BadRequest(f"max_tokens {max_tokens} is above this server's limit of {settings.max_new_tokens}",
                             param="max_tokens", code="context_length_exceeded")
        top = _top_logprobs(req, settings, worker)
        decoded = [await run_in_threadpool(decode_image, url, i, settings.max_image_pixels) for i, url in enumerate(urls)]
        job = Job(question, [d[0] for d in decoded], [d[1] for d in decoded], max_tokens, tuple(req.stop or ()),
                  req.temperature, req.top_p, req.seed, top)
        completion: Completion = await asyncio.wrap_future(worker.submit(job))
        body = _response(completion, settings.model_id, top is not None)
        if not req.stream:
            return body
        return StreamingResponse(_stream(body), media_type="text/event-stream")

    return BodyLimit(app, settings.max_body_bytes)


def _parse_request(raw: bytes) -> ChatCompletionRequest:
    from pydantic import ValidationError

    try:
        document = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON ({exc})", code="invalid_json") from None
    if not isinstance(document, dict):
        raise BadRequest("the body must be a JSON object", code="invalid_json")
    try:
        return ChatCompletionRequest.model_validate(document)
    except ValidationError as exc:
        raise BadRequest(_validation_text(exc.errors()), param=_first_loc(exc.errors())) from None


def _validation_text(errors: Any) -> str:
    first = errors[0] if errors else {}
    where = _first_loc(errors) or "body"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"invalid request: {where}: {first.get('msg', 'invalid')}{more}"


def _first_loc(errors: Any) -> str | None:
    if not errors:
        return None
    return ".".join(str(p) for p in errors[0].get("loc", ()) if p != "body") or None


def _top_logprobs(req: ChatCompletionRequest, settings: ServeSettings, worker: ModelWorker) -> int | None:
    if not req.logprobs:
        if req.top_logprobs:
            raise BadRequest("top_logprobs needs logprobs: true", param="top_logprobs")
        return None
    if not worker.supports_logprobs:
        raise BadRequest("this model cannot report logprobs", param="logprobs", code="logprobs_not_supported")
    top = req.top_logprobs or 0
    if top > settings.max_top_logprobs:
        raise BadRequest(f"top_logprobs {top} is above this server's limit of {settings.max_top_logprobs}",
                         param="top_logprobs")
    return top


def _response(completion: Completion, model_id: str, with_logprobs: bool) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_id,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": completion.text},
            "logprobs": {"content": completion.logprobs} if with_logprobs else None,
            "finish_reason": completion.finish_reason,
        }],
        "usage": {
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "total_tokens": completion.prompt_tokens + completion.completion_tokens,
        },
    }


async def _stream(body: dict[str, Any]) -> AsyncIterator[str]:
    """The finished completion as ``chat.completion.chunk`` events: role, content, finish, [DONE].

    The model generates a whole answer in one call, so the content arrives as one chunk; the format
    is what streaming clients parse."""
    choice = body["choices"][0]
    base = {"id": body["id"], "object": "chat.completion.chunk", "created": body["created"], "model": body["model"]}
    deltas = [
        ({"role": "assistant", "content": ""}, None, None),
        ({"content": choice["message"]["content"]}, choice["logprobs"], None),
        ({}, None, choice["finish_reason"]),
    ]
    for delta, logprobs, finish in deltas:
        chunk = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]}
        yield f"data: {json.dumps(chunk)}\n\n"
    yield "data: [DONE]\n\n"


__all__ = ["BodyLimit", "ServeSettings", "create_app", "decode_image"]
