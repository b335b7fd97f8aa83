"""The app on uvicorn: in the foreground for `charrnn serve` (Ctrl-C stops it), or in a thread
for tests and the load benchmark."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.applications import Starlette

GRACE = 2.0  # seconds open streams get to finish after Ctrl-C


def make_server(app: Starlette, host: str = "127.0.0.1", port: int = 8000) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=GRACE,
    )
    return uvicorn.Server(config)


def bound_port(server: uvicorn.Server) -> int:
    """The port the server listens on (the one the system chose, for port 0)."""
    return int(server.servers[0].sockets[0].getsockname()[1])


@contextmanager
def running(app: Starlette, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """The app served from a thread while the block runs; its base URL."""
    server = make_server(app, host, port)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{bound_port(server)}"
    finally:
        server.should_exit = True
        thread.join(GRACE + 10)
