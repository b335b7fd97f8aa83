"""A training step with charrnn's output layer and loss against the straightforward ones.

    python -m benchmarks.tokenloss [--rounds 3] [--steps 60]

charrnn's: the end shift added to the output layer's bias, the features flattened so that
the bias is added inside the matrix product, the blocked cross-entropy of
``charrnn.tokenloss``. The straightforward: F.linear on (B, T, H), the shift added to
the logits' <eos> column, F.cross_entropy on a float32 copy of the logits (the step before
2026-12-06). Whole training steps at the shapes the defaults train, both forms one after the
other in one process, each round in turn; milliseconds per step over steps 20 to --steps of
each run, the median over the rounds, and their ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.defaults import SHAKESPEARE, WIKI
from benchmarks.machine import describe
from benchmarks.smalltexts import build
from charrnn.config import DataConfig, Level, ModelConfig, TokenizerConfig, TrainConfig, Unit
from charrnn.job import Job
from charrnn.model import RNNLM
from charrnn.tokenizers import PAD
from charrnn.training import loop
from charrnn.training.run import train

WARMUP = 20  # steps not timed: the allocator and the kernels' first calls


def shapes(folder: Path) -> list[tuple[str, Path, DataConfig, int]]:
    """(name, corpus, data config, width): the shapes the defaults train, where the text is."""
    cjk = build(folder, ["cjk-synth-80k"]).get("cjk-synth-80k")
    rows = [
        ("tinyshakespeare, bpe 1x384 (150 s)", SHAKESPEARE, Level.bpe, Unit.auto, 384),
        ("tinyshakespeare, char 1x704 (15 min)", SHAKESPEARE, Level.char, Unit.auto, 704),
        ("WikiText-2 valid, word 1x512 (14 min)", WIKI, Level.word, Unit.line, 512),
        ("cjk-synth-80k, char 1x192 (60 s)", cjk, Level.char, Unit.auto, 192),
    ]
    return [
        (name, path, DataConfig(TokenizerConfig(level=level), unit=unit), hidden)
        for name, path, level, unit, hidden in rows
        if path is not None and path.exists()
    ]


@contextlib.contextmanager
def straightforward() -> Iterator[None]:
    """The output layer and loss as they were: no fold, no blocks."""

    def token_logits(model: RNNLM, h: torch.Tensor) -> torch.Tensor:
        return model.calibrated(model.head(h))  # in training: the <eos> column shifted in place

    def cross_entropy_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), targets, ignore_index=PAD, reduction="sum")

    saved = RNNLM.token_logits, loop.cross_entropy_sum
    RNNLM.token_logits, loop.cross_entropy_sum = token_logits, cross_entropy_sum
    try:
        yield
    finally:
        RNNLM.token_logits, loop.cross_entropy_sum = saved


def ms_per_step(corpus: Path, data: DataConfig, hidden: int, steps: int) -> float:
    """A run of ``steps`` steps; the mean milliseconds of its steps after WARMUP."""
    times: list[float] = []
    step = loop.Trainer.step

    def timed(trainer: loop.Trainer) -> torch.Tensor | None:
        t0 = time.perf_counter()
        out = step(trainer)
        times.append(time.perf_counter() - t0)
        return out

    config = TrainConfig(
        max_steps=steps, time_budget=None, stop_fit=0, sample_every=0, device="cpu", evals=1
    )
    job = Job(model=ModelConfig(hidden=hidden), train=config, data=data)
    loop.Trainer.step = timed  # type: ignore[method-assign]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            train(corpus, job, root=Path(tmp))
    finally:
        loop.Trainer.step = step  # type: ignore[method-assign]
    return 1000 * statistics.mean(times[WARMUP:])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.tokenloss", description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args(argv)
    for k, v in describe(torch.device("cpu")).items():
        print(f"- {k}: {v}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        rows = shapes(Path(tmp))
        ours: dict[str, list[float]] = {name: [] for name, *_ in rows}
        theirs: dict[str, list[float]] = {name: [] for name, *_ in rows}
        for r in range(args.rounds):
            for name, corpus, data, hidden in rows:
                ours[name].append(ms_per_step(corpus, data, hidden, args.steps))
                with straightforward():
                    theirs[name].append(ms_per_step(corpus, data, hidden, args.steps))
                print(f"round {r + 1}: {name}: {ours[name][-1]:.1f} / {theirs[name][-1]:.1f} ms")
    print("\n| shape | charrnn ms/step | straightforward ms/step | speed-up |")
    print("| --- | ---: | ---: | ---: |")
    for name in ours:
        a, b = statistics.median(ours[name]), statistics.median(theirs[name])
        print(f"| {name} | {a:.1f} | {b:.1f} | {b / a:.2f} |")


if __name__ == "__main__":
    main()
