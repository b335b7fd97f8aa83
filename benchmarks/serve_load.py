"""`charrnn serve` under load: N concurrent streaming clients on 127.0.0.1, against one alone.

    python -m benchmarks.serve_load                    # a quick run trained here, 32 clients
    python -m benchmarks.serve_load --run NAME --clients 32 --requests 256 --max-tokens 100

The server is `python -m charrnn serve` in a process of its own (one torch thread). Every
request streams --max-tokens tokens (--stop none, so all are as long). The reference is the
same requests sent by one client at a time, measured in the same run:

    requests/s, tokens/s     over the whole load (first request sent to last [DONE])
    time to first token      from sending a request to its first token event, p50 and p99
    ratios                   load / alone: tokens/s (what batching-by-turns gains or loses),
                             and p50 time to first token (what waiting for a turn costs)
    the library alone        Model.samples in this process, 1 sample and --clients samples
                             as one batch (tokens/s): what the HTTP path costs a lone stream,
                             and what drawing concurrent requests as one batch could gain

Results go to benchmarks/out/serve_load.json, with the machine named.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
SHAKESPEARE = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"


@dataclass
class Load:
    """What a load run saw."""

    clients: int
    requests: int
    seconds: float = 0.0
    tokens: int = 0
    errors: list[str] = field(default_factory=list)
    first_token: list[float] = field(default_factory=list)  # seconds, one per request

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.first_token)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    def summary(self) -> dict[str, float | int]:
        return {
            "clients": self.clients,
            "requests": self.requests,
            "errors": len(self.errors),
            "requests_per_s": self.requests_per_s,
            "tokens_per_s": self.tokens_per_s,
            "ttft_p50_ms": 1000 * self.percentile(0.5),
            "ttft_p99_ms": 1000 * self.percentile(0.99),
        }


async def _one(http: httpx.AsyncClient, body: dict, load: Load) -> None:
    """One streamed completion: its time to first token, its tokens, [DONE] or an error."""
    sent = time.perf_counter()
    first, done = None, False
    try:
        async with http.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
            if r.status_code != 200:
                load.errors.append(f"HTTP {r.status_code}: {(await r.aread())[:200]!r}")
                return
            async for line in r.aiter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: "):
                    event = json.loads(line[6:])
                    if "error" in event:
                        load.errors.append(event["error"]["message"])
                    elif event["choices"] and event["choices"][0]["finish_reason"] is None:
                        first = first or time.perf_counter()
                        load.tokens += 1
    except httpx.HTTPError as e:
        load.errors.append(f"{type(e).__name__}: {e}")
        return
    if not done:
        load.errors.append("the stream ended without [DONE]")
    if first is not None:
        load.first_token.append(first - sent)


async def _load(url: str, clients: int, requests: int, body: dict) -> Load:
    load = Load(clients, requests)
    todo = iter(range(requests))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=600) as http:

        async def client() -> None:
            for _ in todo:  # the clients share one count of requests
                await _one(http, body, load)

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        load.seconds = time.perf_counter() - start
    return load


def run_load(url: str, clients: int, requests: int, body: dict) -> Load:
    """``requests`` streamed completions of ``body``, sent by ``clients`` clients at once."""
    return asyncio.run(_load(url, clients, requests, body))


# -- the benchmark ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _quick_run(folder: Path) -> tuple[str, Path]:
    """A char-level LSTM 1x256 trained for a few steps: the size matters here, not the text."""
    import charrnn

    corpus = SHAKESPEARE if SHAKESPEARE.exists() else folder / "text.txt"
    if not SHAKESPEARE.exists():
        corpus.write_text("The quick brown fox jumps over the lazy dog.\n" * 2000)
    checkpoints = folder / "checkpoints"
    charrnn.train(
        corpus,
        run="serve-load",
        checkpoints=checkpoints,
        hidden=256,
        layers=1,
        max_steps=20,
        level="char",
        device="cpu",
    )
    return "serve-load", checkpoints


def _serve(run: str, checkpoints: Path, port: int, slots: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    args = [
        "serve",
        "-c",
        run,
        "--checkpoints",
        str(checkpoints),
        "--port",
        str(port),
        "--slots",
        str(slots),
        "--max-tokens",
        "100000",
    ]
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", *args], env=env)
    deadline = time.monotonic() + 120
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health").raise_for_status()
            return proc
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not start") from None
            time.sleep(0.2)


def main(argv: list[str] | None = None) -> None:

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="run name or folder (default: a quick run trained here)")
    p.add_argument("--checkpoints", type=Path, default=ROOT / "checkpoints")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--requests", type=int, default=256)
    p.add_argument("--alone", type=int, default=16, help="requests of the one-client reference")
    p.add_argument("--max-tokens", type=int, default=100)
    p.add_argument("--slots", type=int, default=64)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        run, checkpoints = (a.run, a.checkpoints) if a.run else _quick_run(Path(tmp))
        port = _free_port()
        server = _serve(run, checkpoints, port, a.slots)
        try:
            url = f"http://127.0.0.1:{port}"
            body = {"prompt": "ROMEO:", "max_tokens": a.max_tokens, "stop_rule": "none"}
            run_load(url, 1, 2, body)  # warm up
            alone = run_load(url, 1, a.alone, body)
            loaded = run_load(url, a.clients, a.requests, body)
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(30)
        library = library_rates(run, checkpoints, a.clients, a.max_tokens)
    report(alone, loaded, library, a)


def library_rates(run: str, checkpoints: Path, clients: int, tokens: int) -> dict[int, float]:
    """Tokens/s of Model.samples in this process (one torch thread), best of 3, for 1 sample
    and for ``clients`` samples drawn as one batch."""
    import torch

    import charrnn

    torch.set_num_threads(1)
    model = charrnn.load(run, checkpoints)
    rates = {}
    for n in (1, clients):
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            model.samples(n, "ROMEO:", max_tokens=tokens, stop="none", seed=1)
            best = min(best, time.perf_counter() - start)
        rates[n] = n * tokens / best
    return rates


def report(alone: Load, loaded: Load, library: dict[int, float], a: argparse.Namespace) -> None:
    from benchmarks.machine import cpu_model, load_average

    result = {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "load": load_average()},
        "max_tokens": a.max_tokens,
        "alone": alone.summary(),
        "load": loaded.summary(),
        "ratios": {
            "tokens_per_s": loaded.tokens_per_s / alone.tokens_per_s,
            "ttft_p50": loaded.percentile(0.5) / alone.percentile(0.5),
        },
        "library_tokens_per_s": {str(n): rate for n, rate in library.items()},
        "errors": (alone.errors + loaded.errors)[:10],
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "serve_load.json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    print(f"{m['cpu']}, {m['cores']} cores, load {m['load']}; {a.max_tokens} tokens a request")
    print(
        f"{'':8} {'clients':>7} {'requests':>8} {'errors':>6} {'req/s':>8} {'tok/s':>8} "
        f"{'ttft p50':>9} {'ttft p99':>9}"
    )
    for name, s in (("alone", result["alone"]), ("load", result["load"])):
        print(
            f"{name:8} {s['clients']:7} {s['requests']:8} {s['errors']:6} "
            f"{s['requests_per_s']:8.2f} {s['tokens_per_s']:8.0f} "
            f"{s['ttft_p50_ms']:7.1f}ms {s['ttft_p99_ms']:7.1f}ms"
        )
    r = result["ratios"]
    print(f"load/alone: tokens/s x{r['tokens_per_s']:.2f}, ttft p50 x{r['ttft_p50']:.1f}")
    one, many = library[1], library[a.clients]
    print(
        f"the library alone: 1 sample {one:,.0f} tokens/s, {a.clients} as one batch "
        f"{many:,.0f} tokens/s (x{many / one:.1f}); "
        f"the server alone: x{alone.tokens_per_s / one:.2f} of 1 sample's rate"
    )


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
