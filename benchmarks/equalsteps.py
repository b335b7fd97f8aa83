"""Settings compared at equal optimizer steps on the CPU, two runs at a time on one thread each.

    python -m benchmarks.equalsteps --corpus TEXT --steps N [--level char] [--unit auto]
        [--seeds 1337,1] [--workers 2] [--base "hidden=192"] CANDIDATE ...

A candidate is a space-separated list of settings, each a ModelConfig or TrainConfig field
(``dropout=0.25 weight_drop=0.3 average=7 row_decay=0.8 weight_decay=0.5``), added to
``--base``; "" is the base itself. Every run trains ``--steps`` steps with the schedule over
them, no time budget, no stop fit, and is scored by its kept model on the whole validation
split. Where a machine is shared, a figure of one run never depends on its speed: this is
the way to compare settings there. The cost per step of a setting is a separate question
(``--rates``: tokens/s of each candidate, measured interleaved in one process).

Prints one JSON line per run and writes benchmarks/out/equalsteps-<stamp>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"


def parse(candidate: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """'a=1 b=x' -> (model settings, training settings), values as the field types want."""
    from charrnn.config import Cell, ModelConfig, TrainConfig

    model_fields = {f.name: f for f in fields(ModelConfig)}
    train_fields = {f.name: f for f in fields(TrainConfig)}
    model: dict[str, Any] = {}
    train: dict[str, Any] = {}
    for item in candidate.split():
        key, _, raw = item.partition("=")
        value: Any = raw
        if key == "cell":
            value = Cell(raw)
        elif raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        else:
            try:
                value = int(raw)
            except ValueError:
                try:
                    value = float(raw)
                except ValueError:
                    value = raw
        if key in model_fields:
            if model_fields[key].type in ("bool", bool, "bool | None"):
                value = bool(value)
            model[key] = value
        elif key in train_fields:
            train[key] = value
        else:
            raise SystemExit(f"unknown setting {key!r}")
    return model, train


class StopAt:
    """Callbacks that end a run after ``step`` steps (0: never), its schedule unchanged."""

    def __init__(self, step: int):
        self.step, self.done = step, 0

    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: None

    def on_step(self, stats: Any) -> None:
        self.done = stats.step

    def stop_requested(self) -> bool:
        return bool(self.step) and self.done >= self.step


def data_config(level: str, unit: str) -> Any:
    from charrnn.config import DataConfig, Level, TokenizerConfig, Unit

    tok = TokenizerConfig(level=Level(level))
    return DataConfig(tok, unit=Unit(unit)) if unit != "auto" else DataConfig(tok)


def encode_once(corpus: Path, data: Any, val_fraction: float) -> Any:
    """(dataset, split) of ``corpus`` encoded into the cache as its runs encode it (subword
    pieces learned without the held-out tail): once, then every run reads it."""
    from charrnn.config import Holdout
    from charrnn.data import prepare, resolve_data

    return prepare(corpus, resolve_data(corpus, data, None, (val_fraction, Holdout.tail)))


def step_job(settings: str, steps: int, seed: int, data: Any, val_fraction: float = 0.1) -> Any:
    """The Job of a run of ``steps`` steps with these settings (``parse``): no time budget, no
    stop fit, no samples, on the CPU."""
    from charrnn.config import ModelConfig, TrainConfig
    from charrnn.job import Job

    model, training = parse(settings)
    config = TrainConfig(
        max_steps=steps,
        time_budget=None,
        stop_fit=0,
        sample_every=0,
        device="cpu",
        seed=seed,
        val_fraction=val_fraction,
        **training,
    )
    return Job(model=ModelConfig(**model), train=config, data=data)


def run_one(args: dict[str, Any]) -> dict[str, Any]:
    """One run in this (worker) process, on one thread."""
    import torch

    torch.set_num_threads(1)
    from charrnn.checkpoint import read_meta
    from charrnn.training.run import train

    settings = f"{args['base']} {args['candidate']}"
    data = data_config(args["level"], args["unit"])
    job = step_job(settings, args["steps"], args["seed"], data, args["val_fraction"])
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CHARRNN_CACHE"] = args["cache"]
        result = train(args["corpus"], job, root=Path(tmp), callbacks=StopAt(args["stop_at"]))
        metrics = [json.loads(line) for line in (result.run / "metrics.jsonl").open()]
        loop = read_meta(result.run / "last.safetensors")["loop"]
    evals = [(m["step"], round(m["val_loss"], 4)) for m in metrics if "val_loss" in m]
    losses = [m["loss"] for m in metrics if "loss" in m][-5:]
    if result.val is None:  # stopped early: the best periodic evaluation (a sample of the split)
        best = min(evals, key=lambda e: e[1])
        return {
            "candidate": args["candidate"],
            "steps": result.steps,
            "best_step": best[0],
            "val_sampled": best[1],
            "train": round(sum(losses) / max(1, len(losses)), 4),
            "evals": evals,
        }
    return {
        "candidate": args["candidate"],
        "corpus": Path(args["corpus"]).name,
        "seed": args["seed"],
        "steps": result.steps,
        "best_step": result.best_step,
        "late": result.best_step >= 0.75 * result.steps,
        "val": round(result.val.loss, 4),
        "val_nats_per_char": round(result.val.bpc * math.log(2), 4),
        "train": round(sum(losses) / max(1, len(losses)), 4),
        "evals": evals,
        "seconds": round(time.monotonic() - t0, 1),
        # what the rules decided from the pressure (a setting given overrides its rule)
        "pressure": loop.get("pressure"),
        "decided": {k: loop.get(k) for k in ("weight_drop", "dropout", "row_decay")},
    }


def rates(args: argparse.Namespace, blocks: int = 10, block: int = 10) -> None:
    """Seconds per step of each candidate against the first, one process, one thread, in
    interleaved blocks of ``block`` steps: a machine whose load changes slows all alike."""
    import torch

    from benchmarks.speed import make_trainer
    from charrnn.config import ModelConfig, TrainConfig
    from charrnn.data import prepare

    torch.set_num_threads(1)
    ds, _ = prepare(args.corpus, data_config(args.level, args.unit))
    trainers, seconds = [], []
    for candidate in args.candidates:
        model, training = parse(f"{args.base} {candidate}")
        config = TrainConfig(device="cpu", lr=1e-2, max_steps=10**6, time_budget=None, **training)
        torch.manual_seed(0)
        folder = Path(tempfile.mkdtemp())
        t = make_trainer(ds, ModelConfig(**model), config, folder, torch.device("cpu"))
        for _ in range(3):
            t.step()
        trainers.append(t)
        seconds.append(0.0)
    for _ in range(blocks):
        for i, t in enumerate(trainers):
            t0 = time.perf_counter()
            for _ in range(block):
                t.step()
            seconds[i] += time.perf_counter() - t0
    for candidate, s in zip(args.candidates, seconds):
        per_step = s / (blocks * block)
        print(f"{candidate or '(base)':60s} {per_step * 1e3:8.1f} ms/step  {s / seconds[0]:.3f} x")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.equalsteps", description=__doc__)
    p.add_argument("candidates", nargs="+")
    p.add_argument("--corpus", type=Path, required=True)
    p.add_argument("--steps", type=int, default=0)
    p.add_argument("--rates", action="store_true", help="seconds per step, interleaved")
    p.add_argument("--level", default="char")
    p.add_argument("--unit", default="auto")
    p.add_argument("--base", default="", help="settings every candidate starts from")
    p.add_argument("--seeds", default="1337")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--stop-at", type=int, default=0, help="end runs here, schedule unchanged")
    p.add_argument("--tag", default="")
    args = p.parse_args(argv)
    for c in [args.base, *args.candidates]:
        parse(c)  # fail before any run
    if args.rates:
        return rates(args)
    if args.steps < 1:
        p.error("--steps is needed (or --rates)")
    os.environ["OMP_NUM_THREADS"] = "1"
    cache = tempfile.mkdtemp(prefix="equalsteps-cache-")
    jobs = [
        {
            "candidate": c,
            "base": args.base,
            "corpus": str(args.corpus),
            "steps": args.steps,
            "level": args.level,
            "unit": args.unit,
            "seed": int(seed),
            "val_fraction": args.val_fraction,
            "cache": cache,
            "stop_at": args.stop_at,
        }
        for seed in args.seeds.split(",")
        for c in args.candidates
    ]
    os.environ["CHARRNN_CACHE"] = cache
    encode_once(args.corpus, data_config(args.level, args.unit), args.val_fraction)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"equalsteps-{args.tag}{time.strftime('%Y%m%d-%H%M%S')}.json"
    rows: list[dict[str, Any]] = []
    with ProcessPoolExecutor(args.workers) as pool:
        for row in pool.map(run_one, jobs):
            rows.append(row)
            print(json.dumps(row), flush=True)
            path.write_text(json.dumps({"base": args.base, "rows": rows}, indent=1))
    path.write_text(json.dumps({"base": args.base, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
