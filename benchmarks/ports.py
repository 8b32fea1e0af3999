"""A free TCP port for the benchmarks that launch torchrun or a server (fixed ports collide on shared hosts).

The benchmark scripts run as `python benchmarks/<name>.py`, so this folder is on `sys.path`."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
