"""The OpenAI Chat Completions request and response shapes `vlmbench serve` speaks (pydantic models).

Only what the server implements is declared; unknown request fields are ignored, as OpenAI-compatible
servers commonly do. `parse_user_turn` turns the messages into a vlmbench question (``<image>`` at each
image's place, or no marker when every image comes before the text, the in-process layout) and the
list of image URLs, refusing what the server cannot answer with a `BadRequest`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from vlmbench.modeling.interface import IMAGE_MARKER


class BadRequest(Exception):
    """A request the server refuses: becomes an OpenAI-style error body with this status."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None, status: int = 400,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.message, self.param, self.code, self.status, self.kind = message, param, code, status, kind

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.kind, self.param, self.code)


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """``{"error": {"message", "type", "param", "code"}}``, OpenAI's error layout."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class ImageURL(BaseModel):
    url: str


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageURL | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[ContentPart] | None = None


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    stop: str | list[str] | None = None
    stream: bool = False
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0)
    n: int = Field(default=1, ge=1, le=1)

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> list[str] | None:
        if value is None:
            return None
        stops = [value] if isinstance(value, str) else value
        return [s for s in stops if s]

    def new_tokens(self, default: int) -> int:
        return self.max_completion_tokens or self.max_tokens or default


def parse_user_turn(request: ChatCompletionRequest) -> tuple[str, list[str]]:
    """(question, image URLs) of a single-turn request: one user message (a system message is refused
    rather than dropped, so nothing the caller sent is silently ignored)."""
    if len(request.messages) != 1 or request.messages[0].role != "user":
        roles = ", ".join(m.role for m in request.messages)
        raise BadRequest(
            f"vlmbench serve answers single-turn requests: exactly one user message (got: {roles})", param="messages"
        )
    content = request.messages[0].content
    if content is None:
        raise BadRequest("the user message has no content", param="messages[0].content")
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    urls: list[str] = []
    layout: list[str] = []  # "t"/"i" per part, to see whether every image precedes the text
    for index, part in enumerate(content):
        if part.type == "text":
            if part.text is None:
                raise BadRequest("a text part has no 'text'", param=f"messages[0].content[{index}].text")
            texts.append(part.text)
            layout.append("t")
        else:
            if part.image_url is None or not part.image_url.url:
                raise BadRequest("an image_url part has no url", param=f"messages[0].content[{index}].image_url")
            urls.append(part.image_url.url)
            texts.append(IMAGE_MARKER)
            layout.append("i")
    text = "".join(t for t in texts if t != IMAGE_MARKER)
    if IMAGE_MARKER in text:
        raise BadRequest(f"the text contains {IMAGE_MARKER!r}; send images as image_url parts", param="messages")
    images_first = "t" not in "".join(layout)[: layout.count("i")]
    question = text if images_first else "".join(texts)
    return question, urls


__all__ = ["BadRequest", "ChatCompletionRequest", "error_body", "parse_user_turn"]
