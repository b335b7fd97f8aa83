"""charrnn's CPU dropout (masks from random bytes) against F.dropout, forward and backward,
interleaved in one process, on the shapes a training step drops.

    python -m benchmarks.dropout [--threads 2] [--rounds 20]

Shapes: a 1x256 character run's embedding (32 x 64 x 128) and layer output (32 x 64 x 256)
and its hidden-to-hidden weights (1024 x 256); the 15-minute run's weights (2816 x 704) and
output (32 x 64 x 704). Prints ms per call and the ratio to F.dropout.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from charrnn.model.dropout import dropout

SHAPES = [(32, 64, 128), (32, 64, 256), (1024, 256), (2816, 704), (32, 64, 704)]


def seconds(fn, x: torch.Tensor, rounds: int) -> float:
    """Best of ``rounds`` blocks of 10 forward-and-backward calls, per call."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(10):
            y = fn(x)
            y.backward(torch.ones_like(y))
        best = min(best, (time.perf_counter() - t0) / 10)
    return best


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.dropout", description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--p", type=float, default=0.3)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}, p {args.p}; ms per call (forward and backward)")
    for shape in SHAPES:
        x = torch.randn(*shape, requires_grad=True)
        ref = seconds(lambda t: F.dropout(t, args.p, True), x, args.rounds)
        ours = seconds(lambda t: dropout(t, args.p), x, args.rounds)
        times = f"F.dropout {ref * 1e3:7.2f}  charrnn {ours * 1e3:7.2f}"
        print(f"{shape!s:<16} {times}  {ours / ref:.2f} x")


if __name__ == "__main__":
    main()
