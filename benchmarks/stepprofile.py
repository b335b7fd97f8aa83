"""Where a training step's time goes: charrnn's step and the bare step, under torch.profiler.

    python -m benchmarks.stepprofile [--cell lstm] [--steps 10] [--device cuda] [--table]

For each loop, over ``--steps`` steps after 15 warm-up steps: the work the device ran (the
sum of its kernels' times), the host's time in PyTorch's operators and runtime calls, and the
number of kernel launches. On a GPU a loop whose host time exceeds its device time is bound
by the host: every host-side addition then costs its full time (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from benchmarks import speed
from benchmarks.__main__ import SHARED_CORPUS, synthetic_corpus
from benchmarks.machine import sync
from benchmarks.reference import CHARS, BareLM, BareTrainer
from charrnn.config import Cell, ModelConfig, TrainConfig
from charrnn.data import prepare


def profiled(step: Callable[[], object], steps: int, device: torch.device) -> profile:
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    sync(device)
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        sync(device)
    return prof


def summary(prof: profile) -> tuple[float, float, int]:
    """(device ms, host ms, kernel launches) of a profile, the totals its table prints: the
    device's time counted once, on the kernels themselves, not again on the operators."""
    events = prof.key_averages()
    device_us = sum(e.self_device_time_total for e in events if e.device_type == DeviceType.CUDA)
    host_us = sum(e.self_cpu_time_total for e in events)
    launches = sum(e.count for e in events if "LaunchKernel" in e.key)
    return device_us / 1e3, host_us / 1e3, launches


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.stepprofile", description=__doc__)
    p.add_argument("--cell", default="lstm", choices=["rnn", "gru", "lstm"])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--table", action="store_true", help="also print each loop's top operators")
    args = p.parse_args(argv)
    device, shape = torch.device(args.device), speed.Shape()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = SHARED_CORPUS if SHARED_CORPUS.exists() else synthetic_corpus(Path(tmp))
        ds, _ = prepare(corpus, CHARS)
        config = TrainConfig(seq_len=shape.seq_len, batch_size=shape.batch, device=device.type)
        model_config = ModelConfig(
            cell=Cell(args.cell), layers=shape.layers, hidden=shape.hidden, embed=shape.embed
        )
        ours = speed.make_trainer(ds, model_config, config, Path(tmp), device)
        vocab = ds.tokenizer.vocab_size
        bare = BareTrainer(
            BareLM(args.cell, vocab, shape.embed, shape.hidden, shape.layers),
            shape.batch,
            shape.seq_len,
            device,
        )
        for _ in range(15):
            ours.step()
            bare.step()
        profiled(bare.step, 1, device)  # the profiler's own first-use setup, untimed
        print(
            f"{args.cell} {shape.layers}x{shape.hidden} B{shape.batch} T{shape.seq_len}, "
            f"{args.steps} steps on {device}"
        )
        print(f"{'loop':8s} {'device ms':>10s} {'host ms':>10s} {'launches':>9s}")
        for name, step in (("charrnn", ours.step), ("bare", bare.step)):
            prof = profiled(step, args.steps, device)
            device_ms, host_ms, launches = summary(prof)
            print(f"{name:8s} {device_ms:10.1f} {host_ms:10.1f} {launches:9d}")
            if args.table:
                key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
                print(prof.key_averages().table(sort_by=key, row_limit=15))


if __name__ == "__main__":
    main()
