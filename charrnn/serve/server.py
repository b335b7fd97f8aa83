"""The app on uvicorn: in the foreground for `charrnn serve` (Ctrl-C stops it), or in a thread
for tests and the load benchmark."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from charrnn.serve.worker import Worker

GRACE = 2.0  # seconds open streams get to finish after Ctrl-C


class _Server(uvicorn.Server):
    """uvicorn's server, which on Ctrl-C first ends the app's open streams (each gets an
    error event and [DONE]), so that it stops at once rather than cancelling them."""

    def __init__(self, config: uvicorn.Config, worker: Worker):
        super().__init__(config)
        self.worker = worker

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # never uvicorn's forced exit on a second Ctrl-C: it skips the app's own shutdown, and
        # with the streams ended here the graceful one takes at most GRACE seconds anyway
        self.worker.close()
        self.should_exit = True

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Ctrl-C and SIGTERM stop the server (twice: at once); unlike uvicorn's own, the
        signals are not raised again afterwards, which would end in a traceback."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)


def make_server(app: Starlette, host: str = "127.0.0.1", port: int = 8000) -> uvicorn.Server:
    """The server of an app made by ``create_app``."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=GRACE,
    )
    return _Server(config, app.state.served.worker)


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on host:port, made before the server starts so that a port in use
    is one clear error (OSError) rather than uvicorn's log and exit."""
    # proto TCP, as asyncio sets TCP_NODELAY only on such sockets (else each event of a
    # stream can wait ~40 ms on a delayed ACK)
    tcp = socket.IPPROTO_TCP
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=tcp, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


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
        server.handle_exit(signal.SIGINT, None)
        thread.join(GRACE + 10)
