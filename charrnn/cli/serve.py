"""`charrnn serve`: a run behind an HTTP API and a web page, until Ctrl-C."""

from __future__ import annotations

from typing import Annotated

import typer

from charrnn.api import load
from charrnn.checkpoint import DEFAULT_ROOT
from charrnn.cli.options import CheckpointOpt, CheckpointsDirOpt
from charrnn.cli.output import err, escape, fail, friendly

LIMITS = "Limits of one request"
MISSING = "charrnn serve needs starlette and uvicorn: pip install 'charrnn[serve]'"


@friendly
def serve_cmd(
    checkpoint: CheckpointOpt = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on; 0.0.0.0 opens it to the network.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    max_prompt_chars: Annotated[
        int,
        typer.Option(
            min=1,
            help="Characters of a prompt (or of all texts scored at once).",
            rich_help_panel=LIMITS,
        ),
    ] = 20_000,
    max_tokens: Annotated[
        int,
        typer.Option(
            min=1,
            max=1_000_000,
            help="Tokens of one sample; also the default max_tokens.",
            rich_help_panel=LIMITS,
        ),
    ] = 1000,
    max_n: Annotated[
        int, typer.Option(min=1, help="Samples of one completion (n).", rich_help_panel=LIMITS)
    ] = 16,
    max_body_bytes: Annotated[
        int, typer.Option(min=1, help="Size of a request body.", rich_help_panel=LIMITS)
    ] = 1_000_000,
    slots: Annotated[
        int,
        typer.Option(
            min=1,
            help="Requests drawn at once, a token of each in turn; the next ones wait in order.",
        ),
    ] = 64,
    checkpoints: CheckpointsDirOpt = DEFAULT_ROOT,
) -> None:
    """Serve a trained run over HTTP: an OpenAI-style API and a web page.

    /v1/completions (streamed as server-sent events), /v1/score, /v1/next, /v1/models,
    /health, and the page at /. Concurrent requests are drawn side by side, one token of
    each in turn. Ctrl-C stops.
    """
    try:
        from charrnn.serve.app import create_app
        from charrnn.serve.requests import Limits
        from charrnn.serve.server import listen, make_server
    except ImportError:
        fail(MISSING)
    model = load(checkpoint, checkpoints)
    limits = Limits(max_prompt_chars, max_tokens, max_n, max_body_bytes)
    server = make_server(create_app(model, limits, slots), host, port)
    try:
        sock = listen(host, port)
    except (OSError, OverflowError) as e:
        fail(f"cannot listen on {host}:{port}: {getattr(e, 'strerror', None) or e}")
    err.print(f"serving {escape(model.name)} on http://{host}:{port} (Ctrl-C stops)")
    with sock:
        server.run(sockets=[sock])
    err.print("stopped")
