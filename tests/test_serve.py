"""`vlmbench serve` and the `openai:` client end to end on loopback, with a tiny preset.

The server runs in a uvicorn thread of this process (the model is loaded once for the module); `vlmbench
run` runs in-process through `cli.main`, except the run that is killed mid-way, which is a subprocess.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from tests.helpers import make_image
from vlmbench.cli import main
from vlmbench.commands.serve import _bind
from vlmbench.modeling.resolve import load_model
from vlmbench.serving.app import ServeSettings, create_app
from vlmbench.serving.batching import ModelWorker

PRESET = "llava-1.5-style"
KEY = "sk-test-H2-SECRET-4f9a"


class ServerThread:
    """A uvicorn server for `app` on 127.0.0.1 (a free port, or `port`), in a daemon thread."""

    def __init__(self, app: Any, port: int = 0) -> None:
        self.socket = _bind("127.0.0.1", port)
        self.port = self.socket.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="error", timeout_graceful_shutdown=6))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        self.socket.close()


class StopAfter:
    """ASGI wrapper: once `n` chat completions have been answered, the server shuts down; requests
    that reach it meanwhile get 503 (what an overloaded or stopping server says) without reaching the model."""

    def __init__(self, app: Any, n: int) -> None:
        self.app, self.n, self.answered, self.server = app, n, 0, None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("path") == "/v1/chat/completions" and self.answered >= self.n:
            await send({"type": "http.response.start", "status": 503, "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": b'{"error": {"message": "stopping"}}'})
            return
        async def counting_send(message: dict) -> None:
            await send(message)
            if message["type"] == "http.response.body" and scope.get("path") == "/v1/chat/completions":
                self.answered += 1
                if self.answered >= self.n and self.server is not None:
                    self.server.should_exit = True

        await self.app(scope, receive, counting_send)


@pytest.fixture(scope="module")
def model() -> Any:
    return load_model(PRESET).model


@pytest.fixture(scope="module")
def worker(model: Any) -> ModelWorker:
    w = ModelWorker(model, max_batch_size=4, max_wait_ms=2.0)
    yield w
    w.close()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VLMBENCH_RESPONSE_CACHE", str(tmp_path / "responses.sqlite"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for name in ("VLMBENCH_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run(model: str, name: str, *extra: str) -> int:
    return main(["run", "--model", model, "--tasks", "pope", "--limit", "10", "--batch-size", "4",
                 "--output-dir", "runs", "--run-name", name, "--no-report", *extra])


def _samples(root: Path, name: str) -> dict[str, dict[str, Any]]:
    lines = (root / "runs" / name / "samples" / "pope.jsonl").read_text().splitlines()
    return {row["question_id"]: row for row in map(json.loads, lines)}


def _data_url(width: int = 64, height: int = 48) -> str:
    buffer = io.BytesIO()
    make_image(width, height).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _message(url: str, text: str = "Is there a dog in the image?") -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}]}]


@pytest.mark.parametrize("mode", ["choices", "generate"])
def test_served_run_gives_the_in_process_predictions(env: Path, worker: ModelWorker, mode: str) -> None:
    with ServerThread(create_app(worker, ServeSettings(PRESET))) as server:
        assert _run(f"openai:{server.url}", "remote", "--answer-mode", mode, "--concurrency", "4") == 0
    assert _run(PRESET, "local", "--answer-mode", mode) == 0
    remote, local = _samples(env, "remote"), _samples(env, "local")
    assert remote.keys() == local.keys() and len(remote) == 10
    assert all(r["error"] is None for r in remote.values())
    assert [remote[q]["prediction"] for q in local] == [local[q]["prediction"] for q in local]
    results = json.loads((env / "runs" / "remote" / "results.json").read_text())
    remote_info = results["model"]["remote"]
    assert remote_info["model_id"] == PRESET and results["tasks"]["pope"]["answer_mode"] == mode
    if mode == "choices":  # read off top_logprobs: the in-process log-probabilities themselves
        assert remote_info["choices_via"] == {"logprobs": 10, "generate": 0}
        for q, row in local.items():
            for choice, value in row["choice_logprobs"].items():
                assert remote[q]["choice_logprobs"][choice] == pytest.approx(value, abs=1e-4)


def test_kill_server_mid_run_then_resume_sends_nothing_twice(env: Path, worker: ModelWorker) -> None:
    stopper = StopAfter(create_app(worker, ServeSettings(PRESET)), n=6)
    first = ServerThread(stopper)
    stopper.server = first.server
    served_before = worker.stats.completions
    child_env = {**os.environ, "VLMBENCH_OPENAI_MAX_RETRIES": "1000", "VLMBENCH_OPENAI_BACKOFF_S": "0.05"}
    with first:
        command = [sys.executable, "-m", "vlmbench", "run", "--model", f"openai:{first.url}", "--tasks", "pope",
                   "--limit", "10", "--batch-size", "4", "--concurrency", "4", "--output-dir", "runs",
                   "--run-name", "killed", "--no-report"]
        child = subprocess.Popen(command, cwd=env, env=child_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            first.thread.join(timeout=120)  # the server stops itself after 6 answers
            assert not first.thread.is_alive()
            time.sleep(0.5)  # the run is now retrying against a dead port
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
    served_first = worker.stats.completions - served_before
    logged = sum(len(p.read_text().splitlines()) for p in (env / "runs" / "killed" / "logs").glob("pope.rank*.jsonl"))
    assert 0 < logged < 10 and served_first >= 6

    with ServerThread(create_app(worker, ServeSettings(PRESET)), port=first.port) as second:
        assert second.url == first.url
        assert _run(f"openai:{second.url}", "killed", "--resume") == 0
    served_total = worker.stats.completions - served_before
    rows = [json.loads(line) for line in (env / "runs" / "killed" / "samples" / "pope.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and len({r["question_id"] for r in rows}) == 10 and not any(r["error"] for r in rows)
    assert served_total == 10  # every sample answered by a server exactly once over both lifetimes
    remote = json.loads((env / "runs" / "killed" / "results.json").read_text())["model"]["remote"]
    assert remote["response_cache"]["hits"] == served_first - logged  # answered, cached, but not yet logged
    assert remote["http_requests"] == 10 - served_first


def test_api_key_is_required_and_never_written(env: Path, worker: ModelWorker, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture) -> None:
    with ServerThread(create_app(worker, ServeSettings(PRESET, api_key=KEY))) as server:
        assert httpx.get(f"{server.url}/models").status_code == 401
        wrong = httpx.get(f"{server.url}/models", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"
        assert httpx.get(f"http://127.0.0.1:{server.port}/health").status_code == 200
        assert _run(f"openai:{server.url}", "nokey") == 2
        assert "refused" in capsys.readouterr().err and not (env / "runs" / "nokey").exists()
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        assert _run(f"openai:{server.url}", "keyed") == 0
    written = [p for p in env.rglob("*") if p.is_file()]
    assert any(p.name == "results.json" for p in written) and any(p.suffix == ".sqlite" for p in written)
    for path in written:
        assert KEY.encode() not in path.read_bytes(), path
    assert KEY not in capsys.readouterr().err


def test_unreachable_or_malformed_endpoint_is_exit_2_before_any_work(env: Path, capsys: pytest.CaptureFixture) -> None:
    free = _bind("127.0.0.1", 0)
    port = free.getsockname()[1]
    free.close()
    assert _run(f"openai:http://127.0.0.1:{port}/v1", "dead") == 2
    err = capsys.readouterr().err
    assert "cannot reach the server" in err and len(err.strip().splitlines()) == 1
    assert _run("openai:ftp://host/v1", "bad") == 2
    assert "http:// or https://" in capsys.readouterr().err
    assert not (env / "runs" / "dead").exists()


def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(worker: ModelWorker) -> None:
    settings = ServeSettings(PRESET, max_body_bytes=200_000, max_image_pixels=10_000, max_new_tokens=64)
    url = _data_url()
    with ServerThread(create_app(worker, settings)) as server:
        post = f"{server.url}/chat/completions"

        def send(body: Any, status: int, code: str | None = None) -> None:
            response = httpx.post(post, content=body if isinstance(body, bytes) else json.dumps(body).encode(), timeout=60)
            assert response.status_code == status, response.text
            error = response.json()["error"]
            assert set(error) == {"message", "type", "param", "code"} and error["message"]
            if code:
                assert error["code"] == code

        send(b"{not json", 400, "invalid_json")
        send({"model": PRESET}, 400)  # no messages
        send({"model": "gpt-17", "messages": _message(url)}, 404, "model_not_found")
        send({"model": PRESET, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": ""}}]}]}, 400)
        send({"model": PRESET, "messages": _message("data:image/png;base64,@@@")}, 400, "invalid_image")
        send({"model": PRESET, "messages": _message("data:image/png;base64," + base64.b64encode(b"not an image").decode())},
             400, "invalid_image")
        send({"model": PRESET, "messages": _message("https://example.com/cat.png")}, 400, "image_url_not_supported")
        send({"model": PRESET, "messages": _message(_data_url(200, 200))}, 400, "image_too_large")  # 40000 px > cap
        send({"model": PRESET, "messages": _message(url), "max_tokens": 65}, 400, "context_length_exceeded")
        send({"model": PRESET, "messages": _message(url, "word " * 9000)}, 400, "context_length_exceeded")
        send(json.dumps({"model": PRESET, "messages": _message(url, "x" * 300_000)}).encode(), 413, "request_too_large")
        ok = httpx.post(post, json={"model": PRESET, "messages": _message(url), "max_tokens": 4, "temperature": 0}, timeout=60)
        assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["role"] == "assistant"


def test_streaming_logprobs_and_dynamic_batching(worker: ModelWorker) -> None:
    url = _data_url()
    # the evaluation-style suffix: asked without it, the demo model may answer with EOS first (an empty
    # answer), and the first token must be a real one to compare with its logprobs entry
    question = "Is there a dog in the image?\nAnswer the question using a single word or phrase."
    body = {"model": PRESET, "messages": _message(url, question), "max_tokens": 3, "temperature": 0}
    with ServerThread(create_app(worker, ServeSettings(PRESET))) as server:
        post = f"{server.url}/chat/completions"
        plain = httpx.post(post, json=body, timeout=60).json()["choices"][0]["message"]["content"]
        with httpx.stream("POST", post, json={**body, "stream": True}, timeout=60) as response:
            events = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == plain
        assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
        scored = httpx.post(post, json={**body, "max_tokens": 1, "logprobs": True, "top_logprobs": 5}, timeout=60).json()
        first = scored["choices"][0]["logprobs"]["content"][0]
        tops = [t["logprob"] for t in first["top_logprobs"]]
        assert len(tops) == 5 and tops == sorted(tops, reverse=True) and first["token"] == plain[: len(first["token"])]
        assert first["logprob"] == pytest.approx(tops[0])  # greedy: the answer is the most likely token
        batches_before, jobs_before = worker.stats.batches, worker.stats.batched_jobs
        questions = [f"Is there a {w} in the image?" for w in ("cat", "car", "cup", "tree", "bird", "boat", "kite", "bus")]

        async def burst() -> list[str]:
            import asyncio

            async with httpx.AsyncClient(timeout=60) as http:
                replies = await asyncio.gather(*(http.post(post, json={**body, "messages": _message(url, q)}) for q in questions))
            return [r.json()["choices"][0]["message"]["content"] for r in replies]

        import asyncio

        together = asyncio.run(burst())
        batched = (worker.stats.batched_jobs - jobs_before) / (worker.stats.batches - batches_before)
        assert batched > 1  # concurrent requests shared model calls
        alone = [httpx.post(post, json={**body, "messages": _message(url, q)}, timeout=60).json()["choices"][0]["message"]["content"]
                 for q in questions[:2]]
        assert together[:2] == alone


def test_messages_become_the_in_process_question() -> None:
    from vlmbench.serving.protocol import BadRequest, ChatCompletionRequest, parse_user_turn

    def parse(content: Any, role: str = "user") -> tuple[str, list[str]]:
        return parse_user_turn(ChatCompletionRequest.model_validate({"model": PRESET, "messages": [{"role": role, "content": content}]}))

    image = {"type": "image_url", "image_url": {"url": "data:a"}}
    assert parse([image, {"type": "text", "text": "Is it red?"}]) == ("Is it red?", ["data:a"])  # images first: no marker
    assert parse([{"type": "text", "text": "left "}, image, {"type": "text", "text": " right"}, image]) == (
        "left <image> right<image>", ["data:a", "data:a"])
    assert parse("plain text") == ("plain text", [])
    with pytest.raises(BadRequest, match="single-turn"):
        parse("hi", role="system")
    with pytest.raises(BadRequest, match="image_url parts"):
        parse([{"type": "text", "text": "a <image> b"}])


def test_bad_command_lines_are_exit_2(env: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["serve", "--model", PRESET, "--port", "70000"]) == 2
    assert "--port 70000" in capsys.readouterr().err
    assert main(["serve", "--model", PRESET, "--max-batch-size", "0"]) == 2
    assert main(["run", "--model", PRESET, "--tasks", "pope", "--concurrency", "0"]) == 2
    assert "--concurrency 0" in capsys.readouterr().err and not (env / "runs").exists()
