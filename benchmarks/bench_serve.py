"""Load test of `vlmbench serve`, and the cost of evaluating through it instead of in-process.

1. N concurrent requests (default 200, all in flight at once) against a served preset: every one must
   come back 200 with an answer (none lost); prints p50/p99 latency and requests/s.
2. Dynamic batching: the same M requests at concurrency 16 and at concurrency 1; the ratio of
   requests/s, and the server's mean batch size (from /health).
3. `vlmbench run --tasks pope` through the server (`openai:`, response cache off) vs in-process on the
   same model: the ratio of wall times, and whether the predictions agree.

    python benchmarks/bench_serve.py [--model llava-1.5-style] [--requests 200] [--limit 64]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from ports import free_port


def data_url(seed: int) -> str:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(96, 128, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def request_body(model: str, index: int, images: list[str], max_tokens: int) -> dict:
    objects = ("cat", "dog", "car", "cup", "tree", "bird", "boat", "kite", "bus", "chair")
    question = f"Is there a {objects[index % len(objects)]} in the image? ({index})"
    content = [{"type": "image_url", "image_url": {"url": images[index % len(images)]}}, {"type": "text", "text": question}]
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens, "temperature": 0}


async def fire(url: str, bodies: list[dict], concurrency: int) -> tuple[list[float], list[str], float]:
    """(latencies, answers, wall seconds) of `bodies` sent with at most `concurrency` in flight."""
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        async def one(body: dict) -> tuple[float, str]:
            async with gate:
                start = time.perf_counter()
                response = await http.post(f"{url}/chat/completions", json=body)
                response.raise_for_status()
                return time.perf_counter() - start, response.json()["choices"][0]["message"]["content"]

        start = time.perf_counter()
        done = await asyncio.gather(*(one(b) for b in bodies), return_exceptions=True)
        wall = time.perf_counter() - start
    failures = [d for d in done if isinstance(d, BaseException)]
    if failures:
        raise SystemExit(f"{len(failures)} of {len(bodies)} requests failed; first: {failures[0]!r}")
    return [d[0] for d in done], [d[1] for d in done], wall


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def start_server(model: str, port: int, env: dict[str, str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "vlmbench", "serve", "--model", model, "--port", str(port),
               "--max-batch-size", "16", "--max-wait-ms", "5"]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"server exited: {server.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("server did not come up within 120 s")


def evaluate(model: str, out: Path, name: str, limit: int, env: dict[str, str], extra: list[str]) -> tuple[float, dict]:
    command = [sys.executable, "-m", "vlmbench", "run", "--model", model, "--tasks", "pope", "--limit", str(limit),
               "--batch-size", "16", "--output-dir", str(out), "--run-name", name, "--no-report", *extra]
    start = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-2000:]}")
    results = json.loads((out / name / "results.json").read_text())
    rows = [json.loads(line) for line in (out / name / "samples" / "pope.jsonl").read_text().splitlines()]
    pass_wall = results["tasks"]["pope"]["throughput"]["wall_s"]
    return pass_wall, {"process_wall_s": round(wall, 2), "answers": {r["question_id"]: r["prediction"] for r in rows}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llava-1.5-style")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--batching-requests", type=int, default=48)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--limit", type=int, default=64, help="POPE samples for the in-process vs served run")
    args = parser.parse_args()

    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "VLMBENCH_RESPONSE_CACHE": "off"}
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    images = [data_url(seed) for seed in range(10)]
    server = start_server(args.model, port, env)
    try:
        asyncio.run(fire(url, [request_body(args.model, i, images, args.max_tokens) for i in range(4)], 4))  # warm-up

        bodies = [request_body(args.model, i, images, args.max_tokens) for i in range(args.requests)]
        latencies, answers, wall = asyncio.run(fire(url, bodies, args.requests))
        print(f"load: {len(answers)}/{args.requests} answered (none lost: {len(answers) == args.requests}), "
              f"p50 {percentile(latencies, 50) * 1000:.0f} ms, p99 {percentile(latencies, 99) * 1000:.0f} ms, "
              f"{len(answers) / wall:.1f} requests/s, wall {wall:.1f} s")

        probe = [request_body(args.model, 1000 + i, images, args.max_tokens) for i in range(args.batching_requests)]
        rates = {}
        for concurrency in (1, 16):
            before = httpx.get(f"http://127.0.0.1:{port}/health").json()
            _, got, took = asyncio.run(fire(url, probe, concurrency))
            after = httpx.get(f"http://127.0.0.1:{port}/health").json()
            batches = after["batches"] - before["batches"]
            rates[concurrency] = (len(got) / took, len(got) / batches if batches else None, got)
            print(f"concurrency {concurrency:>2}: {rates[concurrency][0]:.2f} requests/s, mean batch {rates[concurrency][1]:.2f}")
        same = rates[1][2] == rates[16][2]
        print(f"dynamic batching: concurrency 16 / concurrency 1 = {rates[16][0] / rates[1][0]:.2f}x requests/s "
              f"(answers identical: {same})")

        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            served, served_info = evaluate(f"openai:{url}", out, "served", args.limit, env, ["--concurrency", "16"])
            local, local_info = evaluate(args.model, out, "local", args.limit, env, [])
        agree = sum(served_info["answers"][q] == a for q, a in local_info["answers"].items())
        print(f"pope --limit {args.limit}: served {served:.2f} s vs in-process {local:.2f} s (task wall) = "
              f"{served / local:.2f}x overhead; process wall {served_info['process_wall_s']} s vs {local_info['process_wall_s']} s; "
              f"predictions agree on {agree}/{len(local_info['answers'])}")
        print("server:", json.dumps(httpx.get(f"http://127.0.0.1:{port}/health").json()))
    finally:
        server.terminate()
        server.wait(timeout=30)
    print("median latency check:", round(statistics.median(latencies) * 1000), "ms")


if __name__ == "__main__":
    main()
