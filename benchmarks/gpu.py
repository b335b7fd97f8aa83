"""Issue 30's GPU table in one short run: each figure next to its bare reference, same run.

    python -m benchmarks.gpu [--budget 300] [--only train,sample,tokens,score] [--smoke]
                             [--steps 20] [--rounds 3] [--corpus FILE] [--out DIR]

    train    lstm, gru 2x512, B64 T128, fp32 and bf16: the bare step; Trainer.step; the
             fixed-buffer step (training/static.py) eager and captured as a CUDA graph
    sample   lstm 2x512, 1 and 64 streams, 400 tokens: the bare loop; the per-token sampler;
             blocks of 32 on the device (blocks.py) eager and captured; same tokens checked
    tokens   the same seeded sample on the GPU (blocks) and on the CPU (per token): where
             they part, if they do
    score    lstm 2x512, 2,000 lines (speed.scoring) against one bare forward

Rounds alternate charrnn and the reference; each figure is the best of its rounds. Every
figure is written to the JSON as soon as it is measured (``$OUT`` or benchmarks/out), and a
part is skipped when the time left (``--budget`` seconds) is short, so a cut run keeps what
it measured. ``--smoke``: tiny shapes on any device (the CUDA graphs only on CUDA).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from benchmarks import machine, speed
from benchmarks.__main__ import SHARED_CORPUS, synthetic_corpus
from benchmarks.machine import Clock
from benchmarks.reference import CHARS, BareLM, BareTrainer, sample_tokens_per_s
from charrnn.blocks import BlockSampler
from charrnn.config import Cell, ModelConfig, SampleConfig, Stop, TrainConfig
from charrnn.data import prepare
from charrnn.generate import Sampler, generator
from charrnn.tokenizers import SOS
from charrnn.training.static import StaticStep

Rate = tuple[float, float]  # (per wall second, per CPU second)


class Report:
    """The figures so far, written out after each one."""

    def __init__(self, path: Path, started: float, budget: float):
        self.path, self.started, self.budget = path, started, budget
        self.data: dict[str, Any] = {"figures": [], "notes": []}

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.started)

    def add(self, figure: str, unit: str, rates: dict[str, list[Rate]], ref: str) -> None:
        best = {k: max(r[0] for r in v) for k, v in rates.items() if v}
        ratios = {k: v / best[ref] for k, v in best.items() if k != ref}
        row = {"figure": figure, "unit": unit, "best": best, "ratio_to_" + ref: ratios}
        self.data["figures"].append({**row, "rounds": rates})
        self.write()
        print(json.dumps(row), flush=True)

    def note(self, text: str) -> None:
        self.data["notes"].append(text)
        self.write()
        print(text, flush=True)

    def write(self) -> None:
        self.path.write_text(json.dumps(self.data, indent=1), encoding="utf-8")


def timed(device: torch.device, work: Callable[[], int]) -> Rate:
    """Units per second of ``work`` (which returns how many units it did)."""
    clock = Clock(device)
    units = work()
    wall, cpu = clock.seconds()
    return units / wall, units / max(cpu, 1e-9)


# -- training -----------------------------------------------------------------------------


def training(rep: Report, corpus: Path, shape: speed.Shape, dev: torch.device, cell: str,
             precision: str, steps: int, rounds: int, work: Path) -> None:  # fmt: skip
    ds, _ = prepare(corpus, CHARS)
    bare = BareTrainer(
        BareLM(cell, ds.tokenizer.vocab_size, shape.embed, shape.hidden, shape.layers),
        shape.batch,
        shape.seq_len,
        dev,
        precision,
    )
    model = ModelConfig(
        cell=Cell(cell), layers=shape.layers, hidden=shape.hidden, embed=shape.embed
    )
    config = TrainConfig(
        seq_len=shape.seq_len, batch_size=shape.batch, device=dev.type, precision=precision
    )
    tag = f"{cell}-{precision}"
    trainer = speed.make_trainer(ds, model, config, work / f"t-{tag}", dev)
    eager = StaticStep(speed.make_trainer(ds, model, config, work / f"e-{tag}", dev))
    loops: dict[str, Callable[[], object]] = {
        "bare": bare.step,
        "Trainer.step": trainer.step,
        "static eager": eager.step,
    }
    if dev.type == "cuda":
        graphed = StaticStep(speed.make_trainer(ds, model, config, work / f"g-{tag}", dev))
        graphed.capture(warmup=3)
        loops["static graphed"] = graphed.step
    tokens = shape.batch * shape.seq_len
    rates: dict[str, list[Rate]] = {k: [] for k in loops}
    for fn in loops.values():  # kernels, optimizer state and caches set up before timing
        for _ in range(3):
            fn()
    for _ in range(rounds):
        for name, fn in loops.items():
            rates[name].append(timed(dev, lambda fn=fn: [fn() for _ in range(steps)] and steps))
    rates = {k: [(r[0] * tokens, r[1] * tokens) for r in v] for k, v in rates.items()}
    what = f"train {shape.label(cell)} B{shape.batch} T{shape.seq_len} {precision}"
    rep.add(what, "tok/s", rates, "bare")


# -- sampling -----------------------------------------------------------------------------


def sampling(rep: Report, corpus: Path, shape: speed.Shape, dev: torch.device, streams: int,
             tokens: int, rounds: int) -> None:  # fmt: skip
    model, bare, tokenizer = speed._models(corpus, shape)
    model = model.to(dev)
    cfg = SampleConfig(temperature=1.0, stop=Stop.none, max_tokens=tokens, seed=0)
    ways: dict[str, Sampler | BlockSampler] = {
        "per token": Sampler(model, tokenizer, blocks=False),
        "blocks eager": BlockSampler(model),
    }
    if dev.type == "cuda":
        ways["blocks graphed"] = BlockSampler(model, graph=True)
    drawn: dict[str, list] = {}

    def draw(way: Sampler | BlockSampler) -> list:
        gen, info = generator(0), {}
        if isinstance(way, Sampler):
            return list(way.iter_tokens(streams, cfg, [SOS], info, gen=gen))
        return list(way.iter_tokens(streams, cfg, [SOS], info, gen))

    rates: dict[str, list[Rate]] = {"bare": [], **{k: [] for k in ways}}
    sample_tokens_per_s(bare, streams, 5, dev)
    for name, way in ways.items():
        drawn[name] = draw(way)  # warm-up, and the tokens compared below
    for _ in range(rounds):
        rates["bare"].append(sample_tokens_per_s(bare, streams, tokens, dev))
        for name, way in ways.items():
            rates[name].append(
                timed(dev, lambda way=way: sum(len(p) for p, _ in draw(way)))  # type: ignore[misc]
            )
    rep.add(f"sample {shape.label('lstm')}, {streams} streams", "tok/s", rates, "bare")
    for name, steps in drawn.items():
        same = steps == drawn["per token"]
        rep.note(f"sample {streams} streams: {name} draws the per-token tokens: {same}")


def cpu_and_gpu_tokens(rep: Report, corpus: Path, shape: speed.Shape, dev: torch.device,
                       tokens: int) -> None:  # fmt: skip
    """Where a seeded one-stream sample on the device parts from the same one on the CPU."""
    model, _, tokenizer = speed._models(corpus, shape)
    cfg = SampleConfig(temperature=1.0, stop=Stop.none, max_tokens=tokens, seed=0)
    cpu = Sampler(model, tokenizer, blocks=False).sample(1, cfg)[0].tokens
    on_dev = Sampler(model.to(dev), tokenizer).sample(1, cfg)[0].tokens
    parted = next((i for i, (a, b) in enumerate(zip(cpu, on_dev)) if a != b), None)
    rep.note(f"CPU vs {dev.type} tokens, 1 stream, {tokens}: first difference at {parted}")


# -- scoring ------------------------------------------------------------------------------


def scoring(rep: Report, corpus: Path, shape: speed.Shape, dev: torch.device, lines: int,
            rounds: int) -> None:  # fmt: skip
    row = speed.scoring(corpus, shape, dev, lines, rounds)
    rates = {"bare forward": row.ref_rounds, "score": row.ours_rounds}
    rep.add(row.figure + f", {lines} lines", row.unit, rates, "bare forward")


# -- the run ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n")[0])
    p.add_argument("--budget", type=float, default=300.0, help="seconds for the whole run")
    p.add_argument("--corpus", type=Path, default=None, help="default: tinyshakespeare")
    p.add_argument("--out", type=Path, default=None, help="default: $OUT or benchmarks/out")
    p.add_argument("--smoke", action="store_true", help="tiny shapes, one round")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--only", default="", help="parts whose names start so (train lstm, ...)")
    p.add_argument("--steps", type=int, default=20, help="training steps per round")
    p.add_argument("--rounds", type=int, default=3, help="rounds per figure")
    args = p.parse_args(argv)
    started, dev = time.monotonic(), torch.device(args.device)
    out = args.out or Path(os.environ.get("OUT") or Path(__file__).parent / "out")
    out.mkdir(parents=True, exist_ok=True)
    rep = Report(out / f"gpu-{time.strftime('%Y%m%d-%H%M%S')}.json", started, args.budget)
    shape = speed.Shape()
    steps, rounds, tokens, lines = args.steps, args.rounds, 400, 2000
    if args.smoke:
        shape = replace(shape, hidden=32, embed=16, batch=4, seq_len=16)
        steps, rounds, tokens, lines = 3, 1, 20, 50
    with tempfile.TemporaryDirectory(prefix="charrnn-gpu-") as tmp:
        work = Path(tmp)
        os.environ["CHARRNN_CACHE"] = str(work / "cache")
        shared = SHARED_CORPUS if SHARED_CORPUS.exists() else None
        corpus = args.corpus or shared or synthetic_corpus(work)
        rep.data["machine"] = {**machine.describe(dev), "corpus": corpus.name}
        precisions = ["fp32", "bf16"] if dev.type == "cuda" else ["fp32"]
        parts: list[tuple[str, float, Callable[[], None]]] = [
            (f"train {c} {pr}", 40, lambda c=c, pr=pr: training(
                rep, corpus, shape, dev, c, pr, steps, rounds, work))
            for pr in precisions for c in ("lstm", "gru")
        ]  # fmt: skip
        parts += [
            (f"sample {n}", 30, lambda n=n: sampling(rep, corpus, shape, dev, n, tokens, rounds))
            for n in (1, 64)
        ]
        parts.append(("tokens", 20, lambda: cpu_and_gpu_tokens(rep, corpus, shape, dev, tokens)))
        parts.append(("score", 30, lambda: scoring(rep, corpus, shape, dev, lines, rounds)))
        only = [w.strip() for w in args.only.split(",") if w.strip()]
        for name, needs, run in parts:
            if only and not any(name.startswith(w) for w in only):
                continue
            if rep.left() < needs:
                rep.note(f"skipped {name}: {rep.left():.0f} s left")
                continue
            t0 = time.monotonic()
            run()
            rep.note(f"{name}: {time.monotonic() - t0:.1f} s")
    rep.note(f"done in {time.monotonic() - started:.0f} s; figures in {rep.path}")


if __name__ == "__main__":
    main()
