"""The `openai:` client against fake endpoints (httpx.MockTransport): retries, failures, cache, choices."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import make_image
from vlmbench.errors import UserError
from vlmbench.modeling.interface import EvalModel, protocol_mismatches
from vlmbench.modeling.openai_client import (
    ClientSettings,
    OpenAIClientModel,
    RequestFailed,
    build_messages,
    discover_model_id,
    parse_endpoint,
)
from vlmbench.modeling.response_cache import ResponseCache

FAST = ClientSettings(concurrency=4, timeout_s=5.0, max_retries=3, backoff_s=0.001, max_backoff_s=0.01)


def _answer(text: str, top: list[tuple[str, float]] | None = None) -> dict[str, Any]:
    logprobs = None
    if top is not None:
        logprobs = {"content": [{"token": top[0][0], "logprob": top[0][1], "top_logprobs": [{"token": t, "logprob": v} for t, v in top]}]}
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": logprobs}]}


class Fake:
    """A scripted endpoint: `script` gives the (status, body) of each successive call."""

    def __init__(self, script: list[tuple[int, Any]] | None = None, answer: Any = None) -> None:
        self.script = list(script or [])
        self.answer = answer or (lambda body: _answer("Yes"))
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[httpx.Headers] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        self.headers.append(request.headers)
        if self.script:
            status, payload = self.script.pop(0)
            if isinstance(payload, Exception):
                raise payload
            return httpx.Response(status, json=payload, headers={"retry-after": "0"} if status == 429 else None)
        return httpx.Response(200, json=self.answer(body))


def _client(fake: Fake, tmp_path: Path | None = None, settings: ClientSettings = FAST, key: str | None = None) -> OpenAIClientModel:
    cache = ResponseCache(tmp_path / "c.sqlite") if tmp_path is not None else None
    return OpenAIClientModel(parse_endpoint("openai:http://fake.test/v1"), "m", api_key=key, settings=settings,
                             cache=cache, transport=httpx.MockTransport(fake))


def _visual(client: OpenAIClientModel, seed: int = 0) -> Any:
    return client.encode([client.prepare_image(make_image(32, 24, seed=seed))])[0]


def test_the_client_conforms_to_eval_model() -> None:
    client = _client(Fake())
    assert isinstance(client, EvalModel) and protocol_mismatches(client) == []


@pytest.mark.parametrize("spec, fragment", [
    ("openai:ftp://host/v1", "http:// or https://"),
    ("openai:http:///v1", "with a host"),
    ("openai:http://user:pw@host/v1", "credentials"),
    ("openai:http://host:99999/v1", "not a valid URL"),
    ("openai:http://host/v1?x=1", "query"),
])
def test_malformed_endpoints_are_refused(spec: str, fragment: str) -> None:
    with pytest.raises(UserError, match=fragment):
        parse_endpoint(spec)


def test_endpoint_and_model_id_are_parsed_and_checked() -> None:
    endpoint = parse_endpoint("openai:http://127.0.0.1:8000/v1/#big-model")
    assert (endpoint.base_url, endpoint.model_id) == ("http://127.0.0.1:8000/v1", "big-model")
    listing = httpx.MockTransport(lambda r: httpx.Response(200, json={"data": [{"id": "a"}, {"id": "big-model"}]}))
    assert discover_model_id(endpoint, None, transport=listing) == "big-model"
    with pytest.raises(UserError, match="lists 2 models"):
        discover_model_id(parse_endpoint("openai:http://h/v1"), None, transport=listing)
    with pytest.raises(UserError, match="no model 'c'"):
        discover_model_id(parse_endpoint("openai:http://h/v1#c"), None, transport=listing)


def test_429_and_5xx_and_timeouts_are_retried_with_backoff() -> None:
    fake = Fake([(429, {"error": {"message": "slow down"}}), (503, {}), (200, None)])
    fake.script[2] = (500, {"error": "x"})
    fake.script.append((0, httpx.ReadTimeout("slow")))
    client = _client(fake, settings=ClientSettings(max_retries=4, backoff_s=0.001, max_backoff_s=0.01))
    assert client.generate(None, ["Is it red?"], visual=[_visual(client)]) == ["Yes"]
    assert len(fake.bodies) == 5 and client.stats.retries == 4 and client.stats.responses == 1


def test_a_request_fails_clearly_after_the_last_retry_and_4xx_is_not_retried() -> None:
    fake = Fake([(500, {"error": {"message": "boom"}})] * 4)
    client = _client(fake)
    with pytest.raises(RequestFailed, match=r"failed after 4 attempts; last: HTTP 500: boom"):
        client.generate(None, ["q"], visual=[_visual(client)])
    fake = Fake([(400, {"error": {"message": "bad image"}})])
    client = _client(fake)
    with pytest.raises(RequestFailed, match="refused the request .HTTP 400: bad image"):
        client.generate(None, ["q"], visual=[_visual(client)])
    assert len(fake.bodies) == 1


def test_a_failed_sample_in_a_batch_is_reasked_without_resending(tmp_path: Path) -> None:
    fake = Fake(answer=lambda body: _answer("No"))
    fake.script = [(200, _answer("Yes")), (400, {"error": {"message": "nope"}})]
    client = _client(fake, tmp_path, settings=ClientSettings(concurrency=1, max_retries=0, backoff_s=0.001))
    visual = [_visual(client, 0), _visual(client, 1)]
    with pytest.raises(RequestFailed, match="1 of 2 requests failed"):
        client.generate(None, ["a", "b"], visual=visual)
    # the runner then asks each sample alone: the good one from memory, the bad one's reason again
    assert client.generate(None, ["a"], visual=visual[:1]) == ["Yes"]
    with pytest.raises(RequestFailed, match="nope"):
        client.generate(None, ["b"], visual=visual[1:])
    assert len(fake.bodies) == 2 and client.stats.cache_hits == 0


def test_the_cache_means_a_repeated_run_sends_nothing(tmp_path: Path) -> None:
    fake = Fake()
    first = _client(fake, tmp_path, key="sk-secret-value")
    visual = [_visual(first, s) for s in range(3)]
    assert first.generate(None, ["q"] * 3, visual=visual, max_new_tokens=5) == ["Yes"] * 3
    assert len(fake.bodies) == 3 and fake.headers[0]["authorization"] == "Bearer sk-secret-value"
    again = _client(fake, tmp_path)
    assert again.generate(None, ["q"] * 3, visual=visual, max_new_tokens=5) == ["Yes"] * 3
    assert len(fake.bodies) == 3 and again.stats.cache_hits == 3 and again.stats.http_requests == 0
    again.generate(None, ["q"], visual=visual[:1], max_new_tokens=6)  # other sampling parameters: a new request
    assert len(fake.bodies) == 4
    assert b"sk-secret-value" not in (tmp_path / "c.sqlite").read_bytes()
    assert "sk-secret-value" not in repr(first) and "sk-secret-value" not in json.dumps(first.summary("x"))


def test_images_are_sent_as_data_urls_in_prompt_order() -> None:
    client = _client(Fake())
    a, b = _visual(client, 0), _visual(client, 1)
    content = build_messages("left <image> right <image> which?", [a, b])[0]["content"]
    assert [p["type"] for p in content] == ["text", "image_url", "text", "image_url", "text"]
    assert content[1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert [p["type"] for p in build_messages("Is it red?", [a])[0]["content"]] == ["image_url", "text"]


def test_choices_come_from_top_logprobs() -> None:
    fake = Fake(answer=lambda body: _answer("Yes", [("Yes", -0.2), (" No", -1.9), ("Maybe", -3.0)]))
    client = _client(fake)
    scores = client.score_choices(None, ["q"], ["Yes", "No", "Perhaps"], visual=[_visual(client)])
    assert scores[0, 0].item() == pytest.approx(-0.2) and scores[0, 1].item() == pytest.approx(-1.9)
    assert math.isinf(scores[0, 2].item())  # outside the top-k: below all of them
    assert fake.bodies[0]["logprobs"] is True and fake.bodies[0]["max_tokens"] == 1
    assert client.stats.choices_via == {"logprobs": 1, "generate": 0}


def test_choices_fall_back_to_generation_without_logprobs() -> None:
    fake = Fake(answer=lambda body: _answer("No, there is not." if body["max_tokens"] > 1 else "N"))
    client = _client(fake)
    scores = client.score_choices(None, ["q"], ["Yes", "No"], visual=[_visual(client)])
    assert scores.argmax().item() == 1 and client.stats.choices_via == {"logprobs": 0, "generate": 1}
    unmatched = _client(Fake(answer=lambda body: _answer("a giraffe")))
    with pytest.raises(RequestFailed, match="names none of the choices"):
        unmatched.score_choices(None, ["q"], ["Yes", "No"], visual=[_visual(unmatched)])


def test_bad_client_settings_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLMBENCH_OPENAI_MAX_RETRIES", "-1")
    with pytest.raises(UserError, match="VLMBENCH_OPENAI_MAX_RETRIES"):
        ClientSettings.from_env()
    monkeypatch.delenv("VLMBENCH_OPENAI_MAX_RETRIES")
    with pytest.raises(UserError, match="--concurrency 0"):
        ClientSettings.from_env(0)
