"""A parallel-scan recurrent cell (minGRU, "Were RNNs all we needed?", Feng et al. 2024)
against charrnn's LSTM at equal wall time on the CPU, on tinyshakespeare's characters.

    python -m benchmarks.mingru [--seconds 150] [--only mingru]

minGRU's gate and candidate depend on the input alone, so a whole window trains as one
matrix product and an elementwise recurrence, instead of one small matrix product per
character; it is sampled one step at a time like any recurrent cell. Each
minGRU model here is blocks of ``x + minGRU(norm(x))`` and ``x + MLP(norm(x))`` (the paper's
language model, without its convolution), trained for the wall time given on random windows
of the first 90% of the text, with AdamW and a cosine schedule, and scored on the whole last
10% as one stream, the state carried across windows. The reference is ``charrnn train
--level char --time-budget S --val-fraction 0.1`` in the same run (the same split): its
figure is the kept model's over the whole held-out tail.

Writes benchmarks/out/mingru.md.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.defaults import CHAR, SHAKESPEARE, char_data, charrnn_run
from benchmarks.machine import describe

ROOT = Path(__file__).resolve().parents[1]


def g(x: Tensor) -> Tensor:
    """x + 0.5 for x >= 0, sigmoid(x) below: the paper's positive candidate state."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


class MinGRU(nn.Module):
    """h_t = (1 - z_t) h_{t-1} + z_t g(W x_t), z_t = sigmoid(U x_t): a recurrence linear in
    h, whose products run over a whole window at once."""

    def __init__(self, d: int):
        super().__init__()
        self.to_hz = nn.Linear(d, 2 * d, bias=False)

    def forward(self, x: Tensor, h0: Tensor | None) -> tuple[Tensor, Tensor]:
        hidden, gate = self.to_hz(x).chunk(2, dim=-1)  # (B, T, D) each
        z = torch.sigmoid(gate)
        keep, values = (1 - z).unbind(1), (z * g(hidden)).unbind(1)
        # The recurrence is elementwise: on the CPU a loop over the window costs a fraction
        # of the products above (the log-space scan, logcumsumexp, cost 15 times the loop)
        h = torch.zeros_like(values[0]) if h0 is None else h0[:, 0]
        out = []
        for a, b in zip(keep, values):
            h = a * h + b
            out.append(h)
        hs = torch.stack(out, dim=1)  # (B, T, D)
        return hs, hs[:, -1:]

    @torch.no_grad()
    def step(self, x: Tensor, h: Tensor) -> Tensor:
        """One step, as sampling takes it: (B, 1, D) -> the new (B, 1, D) state."""
        hidden, gate = self.to_hz(x).chunk(2, dim=-1)
        z = torch.sigmoid(gate)
        return (1 - z) * h + z * g(hidden)


class MinGRULM(nn.Module):
    def __init__(self, vocab: int, d: int, layers: int, mlp: int = 2):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.cells = nn.ModuleList(MinGRU(d) for _ in range(layers))
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(d, mlp * d), nn.GELU(), nn.Linear(mlp * d, d))
            for _ in range(layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(2 * layers + 1))
        self.head = nn.Linear(d, vocab)

    def forward(self, x: Tensor, states: list[Tensor] | None = None) -> tuple[Tensor, list]:
        h, new = self.embed(x), []  # (B, T, D)
        for i, (cell, mlp) in enumerate(zip(self.cells, self.mlps)):
            out, last = cell(self.norms[2 * i](h), states[i] if states else None)
            h = h + out
            h = h + mlp(self.norms[2 * i + 1](h))
            new.append(last.detach())
        return self.head(self.norms[-1](h)), new  # (B, T, V)


def train_mingru(
    d: int, layers: int, seconds: float, batch: int = 32, seq_len: int = 256, lr: float = 3e-3
) -> dict:
    torch.manual_seed(1337)
    train, val, vocab = char_data(SHAKESPEARE)
    model = MinGRULM(vocab, d, layers)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.99))
    t0, steps, warmup = time.monotonic(), 0, 50
    while (elapsed := time.monotonic() - t0) < seconds:
        p = elapsed / seconds  # the schedule follows the clock, as a time-budget run's does
        rate = lr * min(1.0, (steps + 1) / warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * p)))
        for g in opt.param_groups:
            g["lr"] = rate
        ix = torch.randint(len(train) - seq_len - 1, (batch,))
        x = torch.stack([train[i : i + seq_len] for i in ix])  # (B, T)
        y = torch.stack([train[i + 1 : i + seq_len + 1] for i in ix])
        logits, _ = model(x)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        steps += 1
    train_s = time.monotonic() - t0
    model.eval()
    with torch.no_grad():  # the whole tail as one stream, in windows, the state carried
        states, total = None, 0.0
        for i in range(0, len(val) - 1, 1024):
            x, y = val[i : i + 1024][None], val[i + 1 : i + 1025][None]
            x = x[:, : y.shape[1]]
            logits, states = model(x, states)
            total += float(F.cross_entropy(logits[0], y[0], reduction="sum"))
    params = sum(p.numel() for p in model.parameters())
    note = (
        f"minGRU {layers}x{d}, {params / 1e6:.2f}M parameters, {steps:,} steps of {batch}x{seq_len}"
    )
    tokens_s = steps * batch * seq_len / train_s
    return {
        "seconds": time.monotonic() - t0,
        "val": total / (len(val) - 1),
        "note": note,
        "tokens_s": tokens_s,
    }


SHAPES = [(256, 2), (384, 3), (512, 2)]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.mingru", description=__doc__)
    p.add_argument("--seconds", type=float, default=150.0)
    p.add_argument("--only", choices=("mingru", "lstm"), default=None)
    args = p.parse_args(argv)
    info, rows = describe(torch.device("cpu")), []
    if args.only != "mingru":
        budget = f"{args.seconds:g}s"
        run = charrnn_run(SHAKESPEARE, "--time-budget", budget, "--val-fraction", "0.1", *CHAR)
        rows.append((f"charrnn LSTM, {budget}", run))
        print(rows[-1], flush=True)
    if args.only != "lstm":
        for d, layers in SHAPES:  # the training part of the budget; charrnn's also tokenizes
            rows.append((f"minGRU {layers}x{d}", train_mingru(d, layers, 0.93 * args.seconds)))
            print(rows[-1], flush=True)
    lines = [f"minGRU against charrnn's LSTM, {time.strftime('%Y-%m-%d')}", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += ["", "| run | wall s | val nats/char | note |", "| --- | ---: | ---: | --- |"]
    lines += [f"| {n} | {r['seconds']:.0f} | {r['val']:.3f} | {r['note']} |" for n, r in rows]
    out = ROOT / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "mingru.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
