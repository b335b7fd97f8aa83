"""Training settings compared at the steps a CPU run makes in its budget, on any device.

    python -m benchmarks.stepsweep --measure-rates        # on the CPU: tokens/s of each shape
    python -m benchmarks.stepsweep [--seeds 1337,1] [NAME ...]   # on a GPU: the candidates
    python -m benchmarks.stepsweep --device cpu --steps 2000 NAME ...    # a fixed step count

A 15-minute CPU run of one setting takes 15 minutes; a GPU makes the same optimizer steps in
seconds. Each candidate trains for the steps its shape makes on the CPU in its budget (the
rates in RATES, measured by ``--measure-rates``), with the learning-rate schedule over those
steps, fp32 without TF32, and is scored by the kept model's loss on the whole validation split
(the last 10% of tinyshakespeare, or ``--corpus``). The CPU run of the winner is the check:
``python -m benchmarks.defaults --only noflags``.

Writes benchmarks/out/stepsweep-<stamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.reference import CHARS
from benchmarks.speed import make_trainer
from charrnn.config import Cell, ModelConfig, TrainConfig
from charrnn.data import prepare
from charrnn.job import Job
from charrnn.training.run import train

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
SHAKESPEARE = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"
RATES = ROOT / "benchmarks" / "stepsweep_rates.json"
LONG, SHORT = 820, 135  # seconds of training in a 15-minute and a 150-second CPU run

# name: (model settings, training settings, seconds of CPU training)
CANDIDATES: dict[str, tuple[dict[str, Any], dict[str, Any], int]] = {
    "512": ({"hidden": 512}, {}, LONG),
    "512 lr 1e-2": ({"hidden": 512}, {"lr": 1e-2}, LONG),
    "512 lr 5e-3": ({"hidden": 512}, {"lr": 5e-3}, LONG),
    "512 decay to 0": ({"hidden": 512}, {"min_lr_ratio": 0.0}, LONG),
    "512 warmup 100": ({"hidden": 512}, {"warmup_steps": 100}, LONG),
    "512 B16": ({"hidden": 512}, {"batch_size": 16}, LONG),
    "512 B64": ({"hidden": 512}, {"batch_size": 64}, LONG),
    "512 T128": ({"hidden": 512}, {"seq_len": 128}, LONG),
    "512 dropout 0.1": ({"hidden": 512, "dropout": 0.1}, {}, LONG),
    "512 embed 256": ({"hidden": 512, "embed": 256}, {}, LONG),
    "640": ({"hidden": 640}, {}, LONG),
    "768": ({"hidden": 768}, {}, LONG),
    "2x384": ({"hidden": 384, "layers": 2}, {}, LONG),
    "gru 640": ({"hidden": 640, "cell": "gru"}, {}, LONG),
    "512 wd 0.1": ({"hidden": 512}, {"weight_decay": 0.1}, LONG),
    "512 wd 0.2": ({"hidden": 512}, {"weight_decay": 0.2}, LONG),
    "512 wd 0.3": ({"hidden": 512}, {"weight_decay": 0.3}, LONG),
    "512 wd 0.5": ({"hidden": 512}, {"weight_decay": 0.5}, LONG),
    "512 wd 0.1 lr 5e-3": ({"hidden": 512}, {"weight_decay": 0.1, "lr": 5e-3}, LONG),
    "512 wd 0.2 lr 1e-2": ({"hidden": 512}, {"weight_decay": 0.2, "lr": 1e-2}, LONG),
    "512 wd 0.1 to 0": ({"hidden": 512}, {"weight_decay": 0.1, "min_lr_ratio": 0.0}, LONG),
    "512 wd 0.15 to 0": ({"hidden": 512}, {"weight_decay": 0.15, "min_lr_ratio": 0.0}, LONG),
    "512 wd 0.2 to 0": ({"hidden": 512}, {"weight_decay": 0.2, "min_lr_ratio": 0.0}, LONG),
    "768 wd 0.1": ({"hidden": 768}, {"weight_decay": 0.1}, LONG),
    "256": ({"hidden": 256}, {}, SHORT),
    "256 decay to 0": ({"hidden": 256}, {"min_lr_ratio": 0.0}, SHORT),
    "256 wd 0.1": ({"hidden": 256}, {"weight_decay": 0.1}, SHORT),
    "256 wd 0.2": ({"hidden": 256}, {"weight_decay": 0.2}, SHORT),
    "256 wd 0.3": ({"hidden": 256}, {"weight_decay": 0.3}, SHORT),
    "256 wd 0.1 to 0": ({"hidden": 256}, {"weight_decay": 0.1, "min_lr_ratio": 0.0}, SHORT),
    "256 wd 0.2 to 0": ({"hidden": 256}, {"weight_decay": 0.2, "min_lr_ratio": 0.0}, SHORT),
    # what the stop heads cost the language model (docs/defaults.md): the defaults (weight
    # decay and floor as the 150 s rule chooses), none, and the length input's unknown rows
    # read times 10 as format 3 read them
    "256 light": ({"hidden": 256}, {"weight_decay": 0.1}, SHORT),
    "256 light no stop heads": ({"hidden": 256, "stop_heads": False}, {"weight_decay": 0.1}, SHORT),
    "256 light unknown x10": ({"hidden": 256, "unknown_scale": 10.0}, {"weight_decay": 0.1}, SHORT),
}
# Every candidate states its weight decay (0 unless named) and its learning rate's floor (0.1 x
# peak unless named): the defaults have changed since the sweep.
for _model, _train, _ in CANDIDATES.values():
    _train.setdefault("weight_decay", 0.0)
    _train.setdefault("min_lr_ratio", 0.1)
    _model.setdefault("cell", "lstm")


def configs(name: str) -> tuple[ModelConfig, dict[str, Any]]:
    model, training, _ = CANDIDATES[name]
    return ModelConfig(**{**model, "cell": Cell(model["cell"])}), training


def shape_key(name: str) -> str:
    """What the CPU's speed depends on: the cell, layers, widths, dropout, batch and BPTT."""
    m, t = configs(name)
    b, s = t.get("batch_size", TrainConfig.batch_size), t.get("seq_len", TrainConfig.seq_len)
    return f"{m.cell.value} {m.layers}x{m.hidden} e{m.embed} d{m.dropout} B{b} T{s}"


def measure_rates(corpus: Path, names: list[str]) -> dict[str, float]:
    """Tokens/s of a training step on this machine, after 5 warm-up steps, over 20 steps."""
    ds, _ = prepare(corpus, CHARS)
    rates: dict[str, float] = {}
    for name in names:
        key = shape_key(name)
        if key in rates:
            continue
        model_config, training = configs(name)
        config = TrainConfig(device="cpu", **training)
        torch.manual_seed(0)
        with tempfile.TemporaryDirectory() as tmp:
            trainer = make_trainer(ds, model_config, config, Path(tmp), torch.device("cpu"))
            for _ in range(5):
                trainer.step()
            t0 = time.perf_counter()
            for _ in range(20):
                trainer.step()
            rates[key] = 20 * config.batch_size * config.seq_len / (time.perf_counter() - t0)
        print(f"{key:40s} {rates[key]:9,.0f} tokens/s", flush=True)
    return rates


def run(
    name: str, seed: int, corpus: Path, device: str, rates: dict[str, float], steps: int = 0
) -> dict:
    model_config, training = configs(name)
    tokens_per_step = training.get("batch_size", 32) * training.get("seq_len", 64)
    steps = steps or int(rates[shape_key(name)] * CANDIDATES[name][2] / tokens_per_step)
    config = TrainConfig(
        max_steps=steps, time_budget=None, stop_fit=0, device=device, seed=seed, **training
    )
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CHARRNN_CACHE"] = str(Path(tmp) / "cache")
        result = train(corpus, Job(model=model_config, train=config, data=CHARS), root=Path(tmp))
    assert result.val is not None
    return {
        "name": name,
        "corpus": corpus.name,
        "seed": seed,
        "steps": steps,
        "val": result.val.loss,
        "train": result.train_loss,
        "seconds": time.monotonic() - t0,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.stepsweep", description=__doc__)
    p.add_argument("names", nargs="*", help="candidates (default: all)")
    p.add_argument("--measure-rates", action="store_true", help=f"write {RATES.name}")
    p.add_argument("--corpus", type=Path, default=SHAKESPEARE)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seeds", default="1337")
    p.add_argument("--steps", type=int, default=0, help="train every candidate this many steps")
    args = p.parse_args(argv)
    unknown = [n for n in args.names if n not in CANDIDATES]
    if unknown:
        p.error(f"unknown candidates {unknown}; known: {list(CANDIDATES)}")
    names = args.names or list(CANDIDATES)
    if args.measure_rates:
        rates = measure_rates(args.corpus, names)
        stamp = time.strftime("%Y-%m-%d")
        RATES.write_text(json.dumps({"measured": stamp, "tokens_per_s": rates}, indent=1) + "\n")
        return
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 as on the CPU
    torch.backends.cudnn.allow_tf32 = False
    rates = json.loads(RATES.read_text())["tokens_per_s"]
    rows = []
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"stepsweep-{time.strftime('%Y%m%d-%H%M%S')}.json"
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name in names:
            rows.append(run(name, seed, args.corpus, args.device, rates, args.steps))
            print(json.dumps(rows[-1]), flush=True)
            path.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
