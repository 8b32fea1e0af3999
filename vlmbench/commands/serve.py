"""`vlmbench serve`: a vlmbench model (preset, checkpoint, hf:) behind an OpenAI-compatible API.

Every argument, and whether the port can be bound, is checked before the model is loaded; a bad one is
exit 2 with one line. The server binds loopback unless ``--host`` says otherwise; binding another
address without ``--api-key`` is allowed but warned about. The key given with ``--api-key`` (or
``$VLMBENCH_SERVE_API_KEY``, which keeps it out of the process list) is never logged.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import socket

from vlmbench.errors import UserError

log = logging.getLogger("vlmbench.serve")

SERVE_KEY_ENV = "VLMBENCH_SERVE_API_KEY"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="serve a model behind an OpenAI-compatible API (/v1/chat/completions)")
    p.add_argument("--model", required=True, help="preset name, checkpoint directory or hf:<path> (not openai:)")
    p.add_argument("--checkpoint", help="a vlmbench checkpoint directory to load instead of the preset's demo weights")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 picks a free one)")
    p.add_argument("--api-key", help=f"require Authorization: Bearer KEY (or set ${SERVE_KEY_ENV})")
    p.add_argument("--max-batch-size", type=int, default=8, help="requests answered in one model call (default 8)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a batch waits to fill (default 5 ms)")
    p.add_argument("--max-body-mb", type=float, default=32.0, help="largest request body accepted (default 32 MB)")
    p.add_argument("--max-image-pixels", type=int, default=40_000_000, help="largest image accepted, W*H (default 40M)")
    p.add_argument("--max-new-tokens", type=int, default=1024, help="largest max_tokens accepted (default 1024)")
    p.add_argument("--max-prompt-tokens", type=int, default=8192, help="longest prompt accepted, text tokens (default 8192)")
    p.add_argument("--feature-cache", type=int, default=256, help="images whose visual tokens are kept (default 256)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    p.add_argument("--dtype", help="float32 | bfloat16 | float16 (default: the checkpoint's)")
    p.add_argument("--seed", type=int, default=0, help="seed for random weights (a preset without a checkpoint)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from vlmbench.modeling.resolve import OPENAI_PREFIX, check_model_spec, load_model
    from vlmbench.runner.options import torch_dtype
    from vlmbench.serving.app import ServeSettings, create_app
    from vlmbench.serving.batching import ModelWorker

    if args.model.startswith(OPENAI_PREFIX):
        raise UserError(f"--model {args.model}: serve a local model (preset, checkpoint or hf:), not an endpoint")
    _check_args(args)
    check_model_spec(args.model, args.checkpoint)
    dtype = torch_dtype(args.dtype)
    listener = _bind(args.host, args.port)  # held from now on: nobody can take the port while the model loads
    api_key = args.api_key or os.environ.get(SERVE_KEY_ENV) or None
    if not _is_loopback(args.host) and api_key is None:
        log.warning("serving on %s without --api-key: anyone who can reach this address can use the model", args.host)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    loaded = load_model(args.model, device=device, dtype=dtype, seed=args.seed, checkpoint=args.checkpoint)
    worker = ModelWorker(loaded.model, args.max_batch_size, args.max_wait_ms, args.feature_cache, args.max_prompt_tokens)
    settings = ServeSettings(
        model_id=loaded.name, api_key=api_key, max_body_bytes=int(args.max_body_mb * 2**20),
        max_image_pixels=args.max_image_pixels, max_new_tokens=args.max_new_tokens,
    )
    app = create_app(worker, settings)
    host, port = listener.getsockname()[:2]
    print(f"vlmbench serve: model {loaded.name} at http://{_url_host(host)}:{port}/v1 "
          f"(batch <= {args.max_batch_size}, wait {args.max_wait_ms:g} ms{', API key required' if api_key else ''})",
          flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=10))
    try:
        server.run(sockets=[listener])
    finally:
        worker.close()
    return 0


def _check_args(args: argparse.Namespace) -> None:
    from vlmbench.arguments import check_seed

    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port} is not a TCP port; use 0 to 65535 (0 picks a free one)")
    for flag, value in (("--max-batch-size", args.max_batch_size), ("--max-image-pixels", args.max_image_pixels),
                        ("--max-new-tokens", args.max_new_tokens), ("--max-prompt-tokens", args.max_prompt_tokens)):
        if value < 1:
            raise UserError(f"{flag} {value} must be a positive integer")
    if args.feature_cache < 0:
        raise UserError(f"--feature-cache {args.feature_cache} must be 0 (off) or more")
    if not (args.max_wait_ms >= 0 and args.max_wait_ms <= 10_000):
        raise UserError(f"--max-wait-ms {args.max_wait_ms} must be between 0 and 10000")
    if not (args.max_body_mb > 0 and args.max_body_mb <= 4096):
        raise UserError(f"--max-body-mb {args.max_body_mb} must be above 0 and at most 4096")
    if args.api_key is not None and not args.api_key.strip():
        raise UserError("--api-key is empty; give a key or leave the flag out")
    check_seed(args.seed)


def _bind(host: str, port: int) -> socket.socket:
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(2048)
    except OSError as exc:
        raise UserError(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc}); pick another port") from None
    return listener


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
