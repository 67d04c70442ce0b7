"""Serve an ASGI app over real HTTP on loopback, for the tests that need a real socket
(browsers, third-party HTTP clients, the witness protocol between two instances)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn


def bound_socket() -> socket.socket:
    """A listening socket on 127.0.0.1 and a free port, bound before the server starts (no
    free-port race), so a test can name the port before it builds the app.

    IPPROTO_TCP explicitly, not 0: asyncio sets TCP_NODELAY on accepted connections only when
    the listening socket's proto is IPPROTO_TCP (see `bench/_common.serve`).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


@contextmanager
def serve_app(app: Any, sock: socket.socket | None = None) -> Iterator[str]:
    """uvicorn serving `app` in a daemon thread on `sock` (default: a new `bound_socket()`);
    yields the base URL `http://127.0.0.1:PORT`, stops the server and closes the socket."""
    if sock is None:
        sock = bound_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the uvicorn server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()
