"""`charrnn serve`: every endpoint through the ASGI test client, the same samples and scores as
the library and the command line, every bad request a 400, the fair queue, a real server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

import httpx
from starlette.testclient import TestClient
from typer.testing import CliRunner

import charrnn
from charrnn.cli import app as cli
from charrnn.serve.app import create_app
from charrnn.serve.requests import Limits
from charrnn.serve.server import running
from charrnn.serve.worker import Worker

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model(trained_run):
    return charrnn.load(trained_run)


@pytest.fixture(scope="module")
def client(model):
    limits = Limits(prompt_chars=200, max_tokens=300, n=4, body_bytes=4000, logprobs=5)
    with TestClient(create_app(model, limits)) as c:
        yield c


def events(client: TestClient, body: dict) -> list[dict | str]:
    """A streamed completion's events, each parsed ([DONE] as the string)."""
    with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    return [x[6:] if x == "data: [DONE]" else json.loads(x[6:]) for x in lines]


def cli_json(*args: object) -> list[dict]:
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


# -- the endpoints ---------------------------------------------------------------------------


def test_health_and_models_describe_the_run(client, model):
    assert client.get("/health").json() == {
        "status": "ok",
        "model": model.name,
        "active": 0,
        "waiting": 0,
    }
    (m,) = client.get("/v1/models").json()["data"]
    assert m["id"] == model.name and m["object"] == "model" and m["level"] == "char"
    assert m["parameters"] == model.n_parameters and m["val_loss"] > 0
    assert "halt" in m["stop_rules"]


SEEDED = [
    {"temperature": 0.8, "top_k": 8},
    {"temperature": 1.2, "top_p": 0.9, "min_p": 0.05, "repeat_penalty": 1.3},
    {"stop_rule": "length", "length": 12, "presence_penalty": 0.5, "frequency_penalty": 0.2},
    {"stop_rule": "none", "stop": ["at", "e "], "no_repeat_ngram": 3},
    {"stop_rule": "halt", "bias": {"e": -1.5}, "ban": ["q"]},
]


@pytest.mark.parametrize("options", SEEDED, ids=lambda o: "-".join(o))
def test_a_seeded_completion_is_model_samples(client, model, options):
    config = {k: v for k, v in options.items() if k not in ("stop_rule", "stop")}
    config["stop"] = options.get("stop_rule", "eos")
    if "stop" in options:
        config["stop_at"] = tuple(options["stop"])
    body = {"prompt": "The ", "seed": 11, "max_tokens": 60, "n": 3, **options}
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    got = r.json()
    want = model.samples(3, "The ", seed=11, max_tokens=60, **config)
    assert [c["text"] for c in got["choices"]] == [s.continuation for s in want]
    assert [c["index"] for c in got["choices"]] == [0, 1, 2]
    reasons = ["length" if s.cut or config["stop"] == "none" else "stop" for s in want]
    assert [c["finish_reason"] for c in got["choices"]] == reasons
    assert got["usage"]["completion_tokens"] == sum(len(s.tokens) for s in want)
    assert got["object"] == "text_completion" and got["model"] == model.name


def test_a_seeded_completion_is_charrnn_sample(client, trained_run):
    body = {"prompt": "A bird", "seed": 4, "max_tokens": 80, "temperature": 0.7, "top_k": 6}
    text = client.post("/v1/completions", json=body).json()["choices"][0]["text"]
    (want,) = cli_json(
        "sample",
        "-c",
        trained_run,
        "-p",
        "A bird",
        "--seed",
        4,
        "--max-tokens",
        80,
        "--temp",
        0.7,
        "--top-k",
        6,
        "--json",
    )
    assert "A bird" + text == want["text"]


def test_a_stream_is_one_event_per_token_then_done(client, model):
    body = {"prompt": "The ", "seed": 2, "max_tokens": 25, "stop_rule": "none", "n": 2}
    got = events(client, body)
    assert got[-1] == "[DONE]"
    chunks = got[:-1]
    tokens = [c for c in chunks if c["choices"][0]["finish_reason"] is None]
    assert len(tokens) == 2 * 25  # n samples of max_tokens tokens, one event each
    want = model.samples(2, "The ", seed=2, max_tokens=25, stop="none")
    for i in (0, 1):
        mine = [c["choices"][0] for c in chunks if c["choices"][0]["index"] == i]
        assert "".join(c["text"] for c in mine) == want[i].continuation
        assert [c["finish_reason"] for c in mine] == [None] * 25 + ["length"]
    assert len({c["id"] for c in chunks}) == 1


def test_a_stream_with_a_stop_string_ends_where_the_sample_does(client, model):
    body = {"prompt": "The", "seed": 9, "max_tokens": 200, "stop": [" "], "n": 2}
    chunks = events(client, body)[:-1]
    want = model.samples(2, "The", seed=9, max_tokens=200, stop_at=" ")
    for i in (0, 1):
        text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"][0]["index"] == i)
        assert text == want[i].continuation and " " not in text


def test_logprobs_are_the_models_own_with_the_likeliest_alternatives(client, model):
    body = {"prompt": "The ", "seed": 5, "max_tokens": 30, "stop_rule": "none", "logprobs": 3}
    choice = client.post("/v1/completions", json=body).json()["choices"][0]
    lp = choice["logprobs"]
    (want,) = model.samples(1, "The ", seed=5, max_tokens=30, stop="none")
    assert lp["tokens"] == [model.tokenizer.piece(t) for t in want.tokens]
    assert sum(lp["token_logprobs"]) == pytest.approx(want.log_prob, abs=1e-4)
    for token, value, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"]):
        assert len(top) == 3 and max(top.values()) >= value - 1e-6
        assert list(top.values()) == sorted(top.values(), reverse=True)
        assert token not in top or top[token] == pytest.approx(value)
    assert lp["text_offset"] == list(range(30))  # one character a token at char level
    streamed = events(client, body)[:-1]
    assert [c["choices"][0]["logprobs"]["token_logprobs"][0] for c in streamed[:-1]] == [
        pytest.approx(v) for v in lp["token_logprobs"]
    ]


def test_echo_and_usage_in_a_stream(client):
    body = {"prompt": "The ", "seed": 1, "max_tokens": 10, "echo": True}
    whole = client.post("/v1/completions", json=body).json()
    assert whole["choices"][0]["text"].startswith("The ")
    got = events(client, {**body, "stream_options": {"include_usage": True}})
    assert got[0]["choices"][0]["text"] == "The "
    assert "".join(c["choices"][0]["text"] for c in got[:-2]) == whole["choices"][0]["text"]
    assert got[-2]["choices"] == [] and got[-2]["usage"] == whole["usage"]


def test_score_is_charrnn_score(client, trained_run):
    sentences = ["The cat sat on the mat.", "A bird sang."]
    for stop in ("eos", "halt", "length"):
        body = {"input": sentences, "stop_rule": stop, "per_token": True}
        got = client.post("/v1/score", json=body).json()["data"]
        flags = ["--stop", stop, "--per-token", "--json"]
        want = cli_json("score", "-c", trained_run, *sentences, *flags)
        for g, w in zip(got, want):
            for key, value in w.items():
                assert g[key] == (pytest.approx(value) if isinstance(value, float) else value)
            assert "".join(c["text"] for c in g["heatmap"]) == g["text"]
    one = client.post("/v1/score", json={"input": "A bird sang."}).json()["data"]
    assert len(one) == 1 and "terms" not in one[0]


def test_next_is_model_next_tokens(client, model):
    got = client.post("/v1/next", json={"prompt": "The ca", "k": 5}).json()["data"]
    want = model.next_tokens("The ca", k=5)
    assert [g["id"] for g in got] == [w.id for w in want]
    assert [g["prob"] for g in got] == [pytest.approx(w.prob) for w in want]
    assert all(g["text"] == g["token"] or g["token"] == "<eos>" for g in got)


# -- bad requests ----------------------------------------------------------------------------

BAD = [
    ("/v1/completions", {"prompt": 3}, "prompt"),
    ("/v1/completions", {"prompt": ["a", "b"]}, "prompt"),
    ("/v1/completions", {"prompt": "x" * 201}, "prompt"),
    ("/v1/completions", {"max_tokens": 0}, "max_tokens"),
    ("/v1/completions", {"max_tokens": 301}, "max_tokens"),
    ("/v1/completions", {"max_tokens": "9"}, "max_tokens"),
    ("/v1/completions", {"temperature": -0.5}, "temperature"),
    ("/v1/completions", {"temperature": True}, "temperature"),
    ("/v1/completions", {"top_p": 1.5}, "top_p"),
    ("/v1/completions", {"top_k": 0}, "top_k"),
    ("/v1/completions", {"top_k": 10_000}, "top_k"),
    ("/v1/completions", {"min_p": 2}, "min_p"),
    ("/v1/completions", {"n": 0}, "n"),
    ("/v1/completions", {"n": 5}, "n"),
    ("/v1/completions", {"n": 1.5}, "n"),
    ("/v1/completions", {"stop": [""]}, "stop"),
    ("/v1/completions", {"stop": [1]}, "stop"),
    ("/v1/completions", {"seed": "x"}, "seed"),
    ("/v1/completions", {"logprobs": 6}, "logprobs"),
    ("/v1/completions", {"stream": "yes"}, "stream"),
    ("/v1/completions", {"stop_rule": "never"}, "stop_rule"),
    ("/v1/completions", {"length": 5}, "length"),
    ("/v1/completions", {"repeat_penalty": 0.5}, "repeat_penalty"),
    ("/v1/completions", {"presence_penalty": -1}, "presence_penalty"),
    ("/v1/completions", {"bias": {"e": "x"}}, "bias.e"),
    ("/v1/completions", {"bias": ["e"]}, "bias"),
    ("/v1/completions", {"ban": ["\u2603"]}, "ban"),
    ("/v1/completions", {"prompt": "\u2603\u2603"}, "prompt"),
    ("/v1/completions", {"stream_options": {"include_usage": 1}}, "stream_options.include_usage"),
    ("/v1/completions", {"temprature": 1}, "temprature"),
    ("/v1/score", {}, "input"),
    ("/v1/score", {"input": ["ok", " "]}, "input"),
    ("/v1/score", {"input": "x" * 201}, "input"),
    ("/v1/score", {"input": "ok", "stop_rule": "none"}, "stop_rule"),
    ("/v1/score", {"input": "ok", "per_token": "yes"}, "per_token"),
    ("/v1/next", {"prompt": "a", "k": 0}, "k"),
    ("/v1/next", {"prompt": "a", "k": 101}, "k"),
    ("/v1/next", {"prompt": 5}, "prompt"),
]


@pytest.mark.parametrize(("path", "body", "param"), BAD, ids=[f"{p[4:]}-{f}" for p, _, f in BAD])
def test_a_bad_request_is_a_400_naming_its_field(client, path, body, param):
    r = client.post(path, json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert error["message"] and "Traceback" not in r.text
    assert client.get("/health").json()["status"] == "ok"


@pytest.mark.parametrize(
    "content", [b"", b"{", b"[1, 2]", b"\xff\xfe", b'"text"', b"null"], ids=repr
)
def test_a_body_that_is_not_a_json_object_is_a_400(client, content):
    r = client.post("/v1/completions", content=content)
    assert r.status_code == 400 and r.json()["error"]["param"] is None


def test_limits_of_size_and_route(client):
    r = client.post("/v1/score", json={"input": "a" * 5000})
    assert r.status_code == 413 and "4,000 bytes" in r.json()["error"]["message"]
    assert client.get("/v1/nothing").status_code == 404
    r = client.get("/v1/completions")
    assert r.status_code == 405 and "error" in r.json()


# -- the fair queue ----------------------------------------------------------------------------


def _job(name: str, steps: int | None, log: list[str], closed: set[str]):
    def make():
        try:
            i = 0
            while steps is None or i < steps:
                log.append(f"{name}{i}")
                yield i
                i += 1
        finally:
            closed.add(name)

    return make


def test_the_model_thread_takes_a_step_of_each_request_in_turn():
    async def main():
        log: list[str] = []
        worker = Worker(slots=8)
        a = worker.submit(_job("a", 4, log, set()))
        b = worker.submit(_job("b", 2, log, set()))
        worker.start()
        try:
            assert await a.result() == [0, 1, 2, 3] and await b.result() == [0, 1]
        finally:
            worker.stop()
        return log

    assert asyncio.run(main()) == ["a0", "b0", "a1", "b1", "a2", "a3"]


def test_a_cancelled_request_frees_its_slot_for_the_next():
    async def main():
        log: list[str] = []
        closed: set[str] = set()
        worker = Worker(slots=1)
        endless = worker.submit(_job("a", None, log, closed))
        waiting = worker.submit(_job("b", 3, log, closed))
        worker.start()
        try:
            got = []
            async for step in endless:
                got.append(step)
                if len(got) == 3:
                    break  # the client went away
            assert await waiting.result() == [0, 1, 2]
            return got, closed, worker.counts()
        finally:
            worker.stop()

    got, closed, counts = asyncio.run(main())
    assert got == [0, 1, 2] and closed == {"a", "b"} and counts == {"active": 0, "waiting": 0}


# -- a real server ----------------------------------------------------------------------------


def test_a_client_that_disconnects_mid_stream_frees_its_slot(model):
    body = {"prompt": "The ", "max_tokens": 100_000, "stop_rule": "none", "stream": True}
    limits = Limits(max_tokens=100_000)
    with running(create_app(model, limits)) as url, httpx.Client(base_url=url) as http:
        with http.stream("POST", "/v1/completions", json=body) as r:
            lines = (line for line in r.iter_lines() if line)
            assert all(next(lines).startswith("data: {") for _ in range(5))
            assert http.get("/health").json()["active"] == 1
        deadline = time.monotonic() + 30
        while http.get("/health").json()["active"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert http.get("/health").json() == {
            "status": "ok",
            "model": model.name,
            "active": 0,
            "waiting": 0,
        }


def test_the_openai_client_reads_completions_and_streams(model):
    openai = pytest.importorskip("openai")
    want = model.samples(2, "The ", seed=3, max_tokens=40, temperature=0.9)
    with running(create_app(model)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        got = client.completions.create(
            model=model.name, prompt="The ", seed=3, max_tokens=40, temperature=0.9, n=2
        )
        assert [c.text for c in got.choices] == [s.continuation for s in want]
        stream = client.completions.create(
            model=model.name, prompt="The ", seed=3, max_tokens=40, temperature=0.9, stream=True
        )
        alone = model.samples(1, "The ", seed=3, max_tokens=40, temperature=0.9)[0]
        assert "".join(chunk.choices[0].text for chunk in stream) == alone.continuation
        assert [m.id for m in client.models.list()] == [model.name]


# -- the command ------------------------------------------------------------------------------


def test_serve_without_its_extra_says_what_to_install(trained_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "charrnn.serve.app", None)  # as if starlette were missing
    r = CliRunner().invoke(cli, ["serve", "-c", str(trained_run)])
    assert r.exit_code == 1
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install 'charrnn[serve]'" in lines[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_charrnn_serve_answers_then_stops_cleanly_on_ctrl_c(trained_run):
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "charrnn",
            "serve",
            "-c",
            str(trained_run),
            "--port",
            str(port),
            "--max-tokens",
            "1000000",
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health").json()
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        assert health["status"] == "ok"
        page = httpx.get(f"http://127.0.0.1:{port}/")
        assert page.status_code == 200 and "<textarea" in page.text
        body = {"max_tokens": 1_000_000, "stop_rule": "none", "stream": True}
        with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/completions", json=body) as r:
            lines = (line for line in r.iter_lines() if line)
            assert next(lines).startswith("data: {")
            proc.send_signal(signal.SIGINT)  # with a stream open: it ends, saying why
            rest = list(lines)
        assert rest[-1] == "data: [DONE]" and "the server is stopping" in rest[-2]
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and stderr.strip().endswith("stopped")
    assert f"on http://127.0.0.1:{port}" in stderr


def test_concurrent_streaming_clients_all_complete_without_error(model):
    from benchmarks.serve_load import run_load

    body = {"prompt": "The ", "max_tokens": 20, "stop_rule": "none"}
    with running(create_app(model, slots=3)) as url:  # fewer slots than clients: some wait
        load = run_load(url, clients=6, requests=12, body=body)
    assert load.errors == []
    assert load.tokens == 12 * 20 and len(load.first_token) == 12


def test_serve_on_a_port_in_use_is_one_line(trained_run):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = CliRunner().invoke(cli, ["serve", "-c", str(trained_run), "--port", str(port)])
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.exit_code == 1 and len(lines) == 1
    assert lines[0].startswith(f"error: cannot listen on 127.0.0.1:{port}")


def test_the_listening_socket_is_tcp_so_events_are_not_held_back():
    from charrnn.serve.server import listen

    # asyncio sets TCP_NODELAY only on sockets made with proto TCP; without it, a stream's
    # small events wait on delayed ACKs
    with listen("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP
