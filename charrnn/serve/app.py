"""The HTTP app: OpenAI-style completions, charrnn's score and next tokens, and the web page.

    POST /v1/completions   prompt -> samples (stream: server-sent events, one per token)
    POST /v1/score         sentences -> log P, perplexity, bits/char, per-token terms
    POST /v1/next          text -> the k likeliest next tokens
    GET  /v1/models        the run being served
    GET  /health           alive, and how many requests are drawing or waiting
    GET  /                 the page (static/ holds its script and style)

Handlers parse and check a request on the event loop, then hand the model's work to the
``Worker`` thread and await what it gives. A refused request is a 400 naming its field.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from charrnn.api import Model
from charrnn.errors import CharRNNError, ConfigError
from charrnn.serve import requests, views
from charrnn.serve.drawing import EndEvent, RecordingSampler, TokenEvent, draw
from charrnn.serve.requests import Completion, Limits, RequestError, as_request_error
from charrnn.serve.worker import Stopped, Ticket, Worker

PAGE = Path(__file__).resolve().parent / "page"
log = logging.getLogger("charrnn.serve")


class Served:
    """What the handlers share: the model, the caps, the model's thread."""

    def __init__(self, model: Model, limits: Limits, slots: int):
        self.model, self.limits, self.worker = model, limits, Worker(slots)
        self.created = int(time.time())
        self.model_json = views.model_json(model, self.created)


def create_app(model: Model, limits: Limits | None = None, slots: int = 64) -> Starlette:
    """The app serving ``model``; its model thread runs while the app's lifespan does."""
    served = Served(model, limits or Limits(), slots)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        served.worker.start()
        try:
            yield
        finally:
            served.worker.stop()

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/health", health),
            Route("/v1/models", models),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/score", score, methods=["POST"]),
            Route("/v1/next", next_tokens, methods=["POST"]),
            Mount("/static", StaticFiles(directory=PAGE), name="static"),
        ],
        exception_handlers={
            RequestError: _refused,
            HTTPException: _http_error,
            Exception: _failed,
        },
        lifespan=lifespan,
    )
    app.state.served = served
    return app


# -- the routes ----------------------------------------------------------------------------


async def index(request: Request) -> Response:
    return FileResponse(PAGE / "index.html")


async def health(request: Request) -> Response:
    served: Served = request.app.state.served
    return JSONResponse({"status": "ok", "model": served.model.name, **served.worker.counts()})


async def models(request: Request) -> Response:
    served: Served = request.app.state.served
    return _json({"object": "list", "data": [served.model_json]})


async def completions(request: Request) -> Response:
    served: Served = request.app.state.served
    req = requests.completion(await _body(request, served.limits), served.limits)
    sampler = RecordingSampler(served.model.module, served.model.tokenizer)
    try:  # what only this model refuses, refused before anything is drawn
        sampler.check(req.config)
        sampler.encode_prompt(req.prompt)
    except ConfigError as e:
        raise as_request_error(e) from None
    ticket = served.worker.submit(lambda: draw(sampler, req))
    meta = {
        "id": f"cmpl-{uuid.uuid4().hex[:24]}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": served.model.name,
    }
    if req.stream:
        return _EventStream(ticket, _events(ticket, req, meta))
    steps = await _collect(ticket, request)
    return _json(views.completion_body(meta, req, steps))


async def score(request: Request) -> Response:
    served: Served = request.app.state.served
    req = requests.score(await _body(request, served.limits), served.limits)
    model = served.model

    def job() -> Iterator[list[dict[str, Any]]]:
        scores = model.score(req.texts, req.stop)
        yield [views.score_json(model.tokenizer, s, req.per_token) for s in scores]

    (data,) = await _collect(served.worker.submit(job), request)
    for i, d in enumerate(data):
        d["index"] = i
    return _json({"object": "list", "model": model.name, "data": data})


async def next_tokens(request: Request) -> Response:
    served: Served = request.app.state.served
    req = requests.next_tokens(await _body(request, served.limits), served.limits)
    model = served.model

    def job() -> Iterator[list[dict[str, Any]]]:
        tokens = model.next_tokens(req.prompt, req.k, req.stop)
        yield views.next_json(model.tokenizer, req.prompt, tokens)

    (data,) = await _collect(served.worker.submit(job), request)
    return _json({"object": "list", "model": model.name, "prompt": req.prompt, "data": data})


# -- bodies in, answers out -----------------------------------------------------------------


async def _body(request: Request, limits: Limits) -> dict[str, Any]:
    """The request's JSON object, read no further than the cap on its size."""
    too_big = RequestError(f"the body is larger than {limits.body_bytes:,} bytes", status=413)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.body_bytes:
        raise too_big
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limits.body_bytes:
            raise too_big
    return requests.parse_json(bytes(body))


async def _collect(ticket: Ticket, request: Request) -> list[Any]:
    """Every step of a job; a client that goes away cancels it (its slot is freed)."""

    async def watch() -> None:
        while not await request.is_disconnected():
            await asyncio.sleep(0.25)
        ticket.cancel()

    watcher = asyncio.create_task(watch())
    try:
        steps = await ticket.result()
        if watcher.done():  # cut short: nobody reads the answer
            raise RequestError("the client went away", status=499)
        return steps
    except CharRNNError as e:
        raise _refusal(e) from None
    except Stopped as e:
        raise RequestError(str(e), status=503) from None
    finally:
        watcher.cancel()


def _refusal(e: CharRNNError) -> RequestError:
    return as_request_error(e) if isinstance(e, ConfigError) else RequestError(str(e))


async def _events(ticket: Ticket, req: Completion, meta: dict[str, Any]) -> AsyncIterator[str]:
    """A completion as server-sent events: one per token, one per sample's end, [DONE]."""
    offsets = [len(req.prompt) if req.echo else 0] * req.n
    if req.echo:
        for i in range(req.n):
            yield _sse(views.chunk(meta, i, req.prompt))
    ends: list[EndEvent] = []
    try:
        async for events in ticket:
            for e in events:
                if isinstance(e, EndEvent):
                    ends.append(e)
                    yield _sse(views.chunk(meta, e.index, e.text, finish_reason=e.finish_reason))
                    continue
                yield _sse(_token_chunk(meta, e, offsets[e.index], req.logprobs is not None))
                offsets[e.index] += len(e.text)
        if req.include_usage:
            yield _sse({**meta, "choices": [], "usage": views.usage(ends)})
    except CharRNNError as e:
        yield _sse(_refusal(e).body())
    except Stopped as e:
        yield _sse(RequestError(str(e), status=503).body())
    except Exception as e:  # the stream has begun: the error goes in it, the server goes on
        log.exception("a stream failed")
        yield _sse(RequestError(f"internal error: {type(e).__name__}", status=500).body())
    yield "data: [DONE]\n\n"


def _token_chunk(meta: dict[str, Any], e: TokenEvent, offset: int, logprobs: bool) -> dict:
    lp = views.token_logprobs(e, offset) if logprobs else None
    return views.chunk(meta, e.index, e.text, logprobs=lp)


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(views.finite(data), ensure_ascii=False)}\n\n"


class _EventStream(StreamingResponse):
    """Server-sent events whose job is cancelled however the response ends (a client that
    disconnects included), so that its slot is freed at once."""

    def __init__(self, ticket: Ticket, content: AsyncIterator[str]):
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self.ticket = ticket

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.ticket.cancel()


def _json(data: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(views.finite(data), status_code=status)


async def _refused(request: Request, e: Exception) -> Response:
    assert isinstance(e, RequestError)
    return _json(e.body(), e.status)


async def _http_error(request: Request, e: Exception) -> Response:
    assert isinstance(e, HTTPException)
    return _json(RequestError(str(e.detail), status=e.status_code).body(), e.status_code)


async def _failed(request: Request, e: Exception) -> Response:
    """A bug of ours: logged with its traceback here, one line for the client."""
    log.error("request failed", exc_info=e)
    return _json(RequestError(f"internal error: {type(e).__name__}", status=500).body(), 500)
