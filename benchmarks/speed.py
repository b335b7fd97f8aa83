"""charrnn's figures next to the bare references, measured side by side in one process.

    training    charrnn's whole loop (data from the memory-mapped corpus, stop targets, all
                heads, evaluation scheduling, metrics log, the CLI's progress bar) against
                BareTrainer; the two alternate in blocks of 10 steps, so a machine whose load
                changes slows both alike
    sampling    Sampler.sample (decoding and log-prob bookkeeping included) against
                word_language_model's generate loop, one stream and many
    scoring     score.score on the lines of a corpus against one bare forward pass over the
                same number of tokens laid out as (64, T), as FLOP rates

Each figure is the best of its rounds (other people's work on a shared machine only ever
slows a run down), and so is each reference, both by wall time and by this process's CPU
time: with one torch thread (``--threads 1``) the CPU-time figures hardly move with the load
of a shared machine, while the wall-time ones can swing by a quarter.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console

from benchmarks.machine import Clock
from benchmarks.reference import (
    CHARS,
    BareLM,
    BareTrainer,
    forward_seconds,
    sample_tokens_per_s,
)
from charrnn.cli.trainview import TrainView
from charrnn.config import Cell, ModelConfig, SampleConfig, Stop, TrainConfig
from charrnn.data import Dataset, prepare
from charrnn.generate import Sampler
from charrnn.job import Job
from charrnn.model import RNNLM
from charrnn.model.stepper import Stepper
from charrnn.score import score
from charrnn.tokenizers import Tokenizer
from charrnn.training.callbacks import Callbacks, StepStats
from charrnn.training.loop import Trainer
from charrnn.training.run import fit_model_config, train

GATES = {"rnn": 1, "gru": 3, "lstm": 4}


@dataclass(frozen=True)
class Shape:
    layers: int = 2
    hidden: int = 512
    embed: int = 128
    batch: int = 64
    seq_len: int = 128

    def label(self, cell: str) -> str:
        return f"{cell} {self.layers}x{self.hidden}"


@dataclass
class Row:
    """One figure: each round's rate (wall time, CPU time) for charrnn and its reference."""

    figure: str
    unit: str
    ours_rounds: list[tuple[float, float]]
    ref_rounds: list[tuple[float, float]]
    goal: str = ""
    note: str = ""

    def best(self, rounds: list[tuple[float, float]], clock: int) -> float:
        return max(r[clock] for r in rounds)

    def ratio(self, clock: int) -> float:
        return self.best(self.ours_rounds, clock) / self.best(self.ref_rounds, clock)

    @property
    def ours(self) -> float:
        return self.best(self.ours_rounds, 0)

    @property
    def reference(self) -> float:
        return self.best(self.ref_rounds, 0)


def forward_flops_per_token(cell: str, shape: Shape, vocab: int) -> float:
    """Multiply-adds x 2 of the recurrent layers and the token head, for one token."""
    g, h = GATES[cell], shape.hidden
    layers = sum(2 * g * h * ((shape.embed if i == 0 else h) + h) for i in range(shape.layers))
    return layers + 2 * h * vocab


# -- training -----------------------------------------------------------------------------


class _Interleaved(TrainView):
    """The CLI's own progress view; at every report after the first ten steps it runs a block
    of bare steps. The loop leaves callback time out of its tokens/s (wall time), so each of
    charrnn's windows and each bare block is timed on its own; CPU time is read at the end of
    one report and the start of the next."""

    def __init__(self, console: Console, bare: BareTrainer, block: int, tokens_per_step: int):
        super().__init__(console=console)
        self.bare, self.block, self.tokens = bare, block, tokens_per_step
        self.ours: list[tuple[float, float]] = []
        self.ref: list[tuple[float, float]] = []
        self.last, self.cpu_mark = 0, 0.0

    def on_step(self, s: StepStats) -> None:
        cpu = time.process_time() - self.cpu_mark
        super().on_step(s)
        if s.step % 10 == 0:
            if self.last and self.last % 10 == 0:  # a whole window of 10 steps
                self.ours.append((s.tokens_per_s, 10 * self.tokens / cpu))
            self.ref.append(self.bare.tokens_per_s(self.block))
        self.last, self.cpu_mark = s.step, time.process_time()


def training(
    cell: str,
    shape: Shape,
    corpus: Path,
    root: Path,
    device: torch.device,
    windows: int,
    precision: str = "fp32",
) -> Row:
    ds, _ = prepare(corpus, CHARS)
    vocab = ds.tokenizer.vocab_size
    bare = BareTrainer(
        BareLM(cell, vocab, shape.embed, shape.hidden, shape.layers),
        shape.batch,
        shape.seq_len,
        device,
        precision,
    )
    bare.step()  # optimizer state and kernels set up before any timing
    job = Job(
        data=CHARS,
        model=ModelConfig(
            cell=Cell(cell), layers=shape.layers, hidden=shape.hidden, embed=shape.embed
        ),
        train=TrainConfig(
            seq_len=shape.seq_len,
            batch_size=shape.batch,
            max_steps=10 * (windows + 1),
            time_budget=None,
            sample_every=0,
            evals=1,  # scheduled every step; the one evaluation falls after the last window
            val_fraction=0.02,  # the final evaluation reads the whole split: keep it short
            device=device.type,
            precision=precision,
        ),
    )
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    view = _Interleaved(console, bare, 10, shape.batch * shape.seq_len)
    with view.showing():
        train(corpus, job, root=root, callbacks=view)
    what = f"train {shape.label(cell)} B{shape.batch} T{shape.seq_len}"
    if precision != "fp32":
        what += f" {precision}"
    return Row(what, "tok/s", view.ours, view.ref, ">= 0.90")


def make_trainer(
    ds: Dataset, model: ModelConfig, config: TrainConfig, folder: Path, device: torch.device
) -> Trainer:
    """charrnn's training state on ``ds`` (its last 10% held out), without the loop around
    it: ``.step()`` is one optimizer step."""
    train_split, val = ds.split(0.1)
    net = RNNLM(fit_model_config(model, ds, train_split)).to(device)
    started = time.monotonic()
    return Trainer(net, ds, train_split, val, config, folder, Callbacks(), started, device)


# -- sampling -----------------------------------------------------------------------------


def _models(corpus: Path, shape: Shape, cell: str = "lstm") -> tuple[RNNLM, BareLM, Tokenizer]:
    ds, _ = prepare(corpus, CHARS)
    train_split, _ = ds.split(0.1)
    config = ModelConfig(
        cell=Cell(cell), layers=shape.layers, hidden=shape.hidden, embed=shape.embed
    )
    torch.manual_seed(0)
    model = RNNLM(fit_model_config(config, ds, train_split)).eval()
    vocab = ds.tokenizer.vocab_size
    return model, BareLM(cell, vocab, shape.embed, shape.hidden, shape.layers), ds.tokenizer


def sampling(
    corpus: Path, shape: Shape, device: torch.device, streams: int, tokens: int, rounds: int
) -> list[Row]:
    model, bare, tokenizer = _models(corpus, shape)
    model = model.to(device)
    cfg = SampleConfig(temperature=1.0, stop=Stop.none, max_tokens=tokens, seed=0)
    fast, straight = Sampler(model, tokenizer), Sampler(model, tokenizer, fast=False)
    # the other of per-token and block drawing (on the CPU: blocks; on CUDA: per token)
    other = Sampler(model, tokenizer, blocks=not fast.blocks)
    fast.sample(streams, SampleConfig(stop=Stop.none, max_tokens=5, seed=0))  # warm-up
    other.sample(streams, SampleConfig(stop=Stop.none, max_tokens=5, seed=0))
    sample_tokens_per_s(bare, streams, 5, device)
    ours, ref, slow, net, alt = [], [], [], [], []
    for _ in range(rounds):
        ours.append(_sample_rate(fast, streams, cfg, device))
        ref.append(sample_tokens_per_s(bare, streams, tokens, device))
        net.append(_step_rate(model, streams, tokens, device))
        alt.append(_sample_rate(other, streams, cfg, device))
        if streams == 1:
            slow.append(_sample_rate(straight, streams, cfg, device))
    what = f"sample {shape.label('lstm')}, {streams} stream{'s' if streams > 1 else ''}"
    goal = "> 4 (600 tok/s on the issue's CPU)" if streams == 1 else "(12,000 tok/s on the issue's)"
    rows = [Row(what, "tok/s", ours, ref, goal)]
    note = "Stepper and the token head alone: no draw, no bookkeeping; a bound on the sampler"
    rows.append(Row(what + ", step of the net alone", "tok/s", net, ref, "", note))
    how = "in blocks of 32 on the device" if other.blocks else "token by token"
    rows.append(Row(f"{what}, {how}", "tok/s", alt, ref, "", "charrnn.blocks, or not"))
    if slow:
        note = "model.features one token at a time"
        rows.append(Row(what + ", straightforward path", "tok/s", slow, ref, "", note))
    return rows


@torch.inference_mode()
def _step_rate(
    model: RNNLM, streams: int, tokens: int, device: torch.device
) -> tuple[float, float]:
    """Tokens/s of the one-step path alone: the recurrent step and the token logits."""
    step = Stepper(model)
    state = model.init_state(streams)
    tok = torch.full((streams,), 5, device=device)
    ids = torch.full((streams,), model.unknown_length, device=device)
    clock = Clock(device)
    for _ in range(tokens):
        h, state = step(tok, state, ids)
        step.token_logits(h)
    wall, cpu = clock.seconds()
    return streams * tokens / wall, streams * tokens / cpu


def _sample_rate(
    sampler: Sampler, streams: int, cfg: SampleConfig, device: torch.device
) -> tuple[float, float]:
    clock = Clock(device)
    samples = sampler.sample(streams, cfg)
    tokens = sum(len(s.tokens) for s in samples)
    wall, cpu = clock.seconds()
    return tokens / wall, tokens / cpu


def weights_bound(shape: Shape, vocab: int, copy_gbs: float) -> float:
    """Tokens/s if each token only had to read the recurrent and head weights once."""
    g, h = GATES["lstm"], shape.hidden
    params = sum(g * h * ((shape.embed if i == 0 else h) + h + 2) for i in range(shape.layers))
    params += h * vocab + vocab
    return copy_gbs * 1e9 / (4 * params)


# -- scoring ------------------------------------------------------------------------------


def scoring(corpus: Path, shape: Shape, device: torch.device, sentences: int, rounds: int) -> Row:
    model, bare, tokenizer = _models(corpus, shape)
    model = model.to(device)
    lines = [ln for ln in corpus.read_text(encoding="utf-8").splitlines() if ln.strip()]
    lines = lines[:sentences]
    n_tokens = sum(len(tokenizer.encode(ln)) + 1 for ln in lines)
    width = -(-n_tokens // 64)
    g = torch.Generator().manual_seed(0)
    block = torch.randint(4, model.config.vocab_size, (64, width), generator=g)  # (64, T)
    flops = forward_flops_per_token("lstm", shape, model.config.vocab_size)
    score(model, tokenizer, lines[:50])  # warm-up
    ours, ref = [], []
    for _ in range(rounds):
        clock = Clock(device)
        score(model, tokenizer, lines)
        ours.append(tuple(n_tokens * flops / t / 1e9 for t in clock.seconds()))
        ref.append(
            tuple(block.numel() * flops / t / 1e9 for t in forward_seconds(bare, block, device))
        )
    note = f"{len(lines)} lines, {n_tokens:,} tokens; reference: one (64, {width}) forward"
    what = f"score {shape.label('lstm')}, --stop eos"
    return Row(what, "GFLOP/s", ours, ref, ">= 0.70", note)
