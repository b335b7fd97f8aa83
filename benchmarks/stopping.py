"""How a sample ends, measured: the figures docs/benchmarks.md quotes for the stopping rules.

    python -m benchmarks.stopping quality       # train 5 min on tinyshakespeare --unit paragraph
                                                # --split spread, then draw 500 samples per
                                                # rule at --temp 1 (--split tail: the tail)
    python -m benchmarks.stopping quality --run NAME      # measure a run already trained
    python -m benchmarks.stopping throughput    # tokens/s with and without the stop heads

quality: the Kolmogorov-Smirnov distance between sample lengths and the validation split's unit
lengths, per rule (written to the run's stopfit.json too); with ``--stop length --length 200``,
how many samples have exactly 200 tokens and how many end with a token that ends at least 1%
of the corpus's units. It also prints the KS distance between the training and validation
splits' own lengths: a model that learned the training lengths perfectly scores about that.

throughput: the training loop's own step (``train.Trainer.step``, so it follows changes to
the loop) for the same shape with ``ModelConfig.stop_heads`` on and off, in one process,
alternating blocks of 5 steps so that a shared machine's load falls on both alike; the ratio
of median step times, and the cost of the stop targets in the data pipeline per window.

Results go to benchmarks/out/stopping-*.json. Run from the repository root; the code measured
is the code beside this script.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.reference import CHARS  # noqa: E402
from charrnn.checkpoint import load_run  # noqa: E402
from charrnn.config import (  # noqa: E402  # noqa: E402
    Cell,
    Holdout,
    ModelConfig,
    SampleConfig,
    Stop,
    TrainConfig,
    Unit,
)
from charrnn.data import LengthPlan, StreamBatches, prepare  # noqa: E402
from charrnn.generate import Sampler  # noqa: E402
from charrnn.io import write_json_atomic  # noqa: E402
from charrnn.model import RNNLM  # noqa: E402
from charrnn.model.lengths import bucket_edges  # noqa: E402
from charrnn.stopfit import (  # noqa: E402
    draw_lengths,
    ks_distance,
    open_dataset,
    run_splits,
    summarize,
    write_stopfit,
)
from charrnn.tokenizers import EOS  # noqa: E402
from charrnn.training.callbacks import Callbacks  # noqa: E402
from charrnn.training.loop import Trainer  # noqa: E402
from charrnn.training.run import fit_model_config  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"
OUT = ROOT / "benchmarks" / "out"
# The model the acceptance run trains: small enough to see about an epoch in 5 CPU-minutes.
MODEL_ARGS = {"cell": "lstm", "layers": 1, "hidden": 256, "embed": 64}
TRAIN_ARGS = {"seq_len": 64, "batch_size": 32, "lr": 3e-3}


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, "
        f"load average {load:.1f} at start"
    )


# -- quality ------------------------------------------------------------------------------


def train_cli(args: argparse.Namespace) -> tuple[str, list[str]]:
    """Train the acceptance run with the command line itself; returns (run, command)."""
    name = args.run_name or time.strftime("stopping-%Y%m%d-%H%M%S")
    cmd = [
        "charrnn", "train", str(args.corpus), "--unit", "paragraph", "--level", "char",
        "--time-budget", args.time_budget, "--run", name, "--checkpoints", str(args.checkpoints),
        "--sample-every", "0", "--stop-fit", "0", "--seed", str(args.seed), "--split", args.split,
        "--cell", MODEL_ARGS["cell"], "--layers", str(MODEL_ARGS["layers"]),
        "--hidden", str(MODEL_ARGS["hidden"]), "--embed", str(MODEL_ARGS["embed"]),
        "--seq-len", str(TRAIN_ARGS["seq_len"]), "--batch-size", str(TRAIN_ARGS["batch_size"]),
        "--lr", str(TRAIN_ARGS["lr"]),
    ]  # fmt: skip
    # Idle OpenMP threads sleep instead of spinning: on a shared machine spinning threads
    # fight the other processes and make training several times slower.
    env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "PYTHONPATH": str(ROOT)}
    print("$", " ".join(cmd), flush=True)
    subprocess.run([sys.executable, "-m", "charrnn", *cmd[1:]], env=env, check=True)
    return name, cmd


def ending_tokens(ds: Any, share: float = 0.01) -> tuple[set[int], float]:
    """Tokens that end at least ``share`` of the corpus's units, and how many units they end."""
    tokens, starts = ds.tokens, ds.units[:, 0]
    eos_at = np.append(starts[1:] - 1, len(tokens) - 1)
    last = np.asarray(tokens[eos_at - 1], dtype=np.int64)
    last = last[np.asarray(tokens[eos_at]) == EOS]
    ids, counts = np.unique(last, return_counts=True)
    keep = counts / len(last) >= share
    return set(ids[keep].tolist()), float(counts[keep].sum() / len(last))


def quality(args: argparse.Namespace) -> dict[str, Any]:
    command = None
    name = args.run
    if name is None:
        name, command = train_cli(args)
    run = load_run(name, args.checkpoints)
    ds = open_dataset(run.info)
    train_split, val = run_splits(run.info, ds)
    val_len, train_len = val.unit_lengths(), train_split.unit_lengths()
    t0 = time.monotonic()
    lengths = draw_lengths(run.model, run.tokenizer, args.n, 1.0, args.seed)
    fit = summarize(lengths, val_len, 1.0)
    write_stopfit(run.folder, fit)
    draw_s = time.monotonic() - t0

    ends, ends_share = ending_tokens(ds)
    config = SampleConfig(temperature=1.0, stop=Stop.length, length=args.length, seed=args.seed)
    samples = Sampler(run.model, run.tokenizer).sample(args.n, config)
    exact = sum(len(s.tokens) == args.length and not s.cut for s in samples)
    ending = sum(bool(s.tokens) and s.tokens[-1] in ends for s in samples)
    return {
        "run": str(run.folder),
        "train_command": " ".join(command) if command else None,
        "val_loss": run.meta.get("val_loss"),
        "val_bpc": run.meta.get("val_bpc"),
        "stopfit": asdict(fit),
        "ks_to_train_lengths": {k: round(ks_distance(v, train_len), 4) for k, v in lengths.items()},
        "ks_train_vs_val_lengths": round(ks_distance(train_len, val_len), 4),
        "train_mean_length": round(float(train_len.mean()), 2),
        "draw_seconds": round(draw_s, 1),
        "length_mode": {
            "length": args.length,
            "n": args.n,
            "exact_length": exact,
            "ending_tokens": sorted(run.tokenizer.piece(t) for t in ends),
            "units_they_end": round(ends_share, 4),
            "ending_share": round(ending / args.n, 4),
            "examples": [s.text[-60:] for s in samples[:3]],
        },
    }


def print_quality(r: dict[str, Any]) -> None:
    f, lm = r["stopfit"], r["length_mode"]
    print(
        f"\nrun {r['run']}: val loss {r['val_loss']:.4f} nats/token, {r['val_bpc']:.3f} bits/char"
    )
    print(f"{f['n']} samples per rule at temperature {f['temperature']}:")
    print(f"  {'rule':<8} {'KS to val':>10} {'KS to train':>12} {'mean length':>12}")
    for rule, ks in f["ks"].items():
        to_train = r["ks_to_train_lengths"][rule]
        print(f"  {rule:<8} {ks:>10.3f} {to_train:>12.3f} {f['mean_length'][rule]:>12.1f}")
    print(
        f"  val units: mean length {f['val_mean_length']:.1f}; train units: mean length "
        f"{r['train_mean_length']:.1f}; KS between the two splits "
        f"{r['ks_train_vs_val_lengths']:.3f}"
    )
    print(
        f"--stop length --length {lm['length']}: {lm['exact_length']}/{lm['n']} have exactly "
        f"{lm['length']} tokens; {lm['ending_share']:.1%} end with one of "
        f"{''.join(lm['ending_tokens'])!r} (the tokens that end >= 1% of units; together they "
        f"end {lm['units_they_end']:.1%} of the corpus's units)"
    )


# -- throughput ---------------------------------------------------------------------------


def _trainer(args: argparse.Namespace, heads: bool, root: Path) -> Trainer:
    """The training loop's own state for one setting, as ``train`` builds it."""
    ds, _ = prepare(args.corpus, replace(CHARS, unit=Unit.paragraph))
    split, val = ds.split(0.1)
    config = TrainConfig(**TRAIN_ARGS, time_budget=None, device="cpu", seed=args.seed)
    model_config = ModelConfig(
        cell=Cell(MODEL_ARGS["cell"]),
        layers=MODEL_ARGS["layers"],
        hidden=MODEL_ARGS["hidden"],
        embed=MODEL_ARGS["embed"],
        stop_heads=heads,
    )
    torch.manual_seed(args.seed)
    model = RNNLM(fit_model_config(model_config, ds, split))
    folder = root / ("heads" if heads else "plain")
    folder.mkdir(parents=True, exist_ok=True)
    cpu = torch.device("cpu")
    return Trainer(model, ds, split, val, config, folder, Callbacks(), time.monotonic(), cpu)


def data_cost(args: argparse.Namespace, windows: int = 200) -> dict[str, float]:
    """Seconds per window of the data pipeline, with and without the stop targets."""
    ds, _ = prepare(args.corpus, replace(CHARS, unit=Unit.paragraph))
    split, _ = ds.split(0.1)
    plan = LengthPlan(bucket_edges(2 * int(split.unit_lengths().max())), unknown=64)
    out = {}
    for label, p in (("plain", None), ("heads", plan)):
        b = StreamBatches(split, TRAIN_ARGS["batch_size"], TRAIN_ARGS["seq_len"], p)
        b.window(0)
        t0 = time.perf_counter()
        for k in range(windows):
            b.window(k % len(b))
        out[label] = (time.perf_counter() - t0) / windows
    return out


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    """Training steps with and without the stop heads, interleaved in blocks of a few steps
    in one process, so that the machine's load falls on both alike."""
    root = Path(args.checkpoints) / time.strftime("throughput-%Y%m%d-%H%M%S")
    trainers = {heads: _trainer(args, heads, root) for heads in (True, False)}
    for t in trainers.values():  # warm up
        for _ in range(3):
            t.step()
    block = 5
    seconds: dict[bool, list[float]] = {True: [], False: []}
    for i in range(args.rounds):
        for heads in (True, False) if i % 2 == 0 else (False, True):
            t0 = time.perf_counter()
            for _ in range(block):
                trainers[heads].step()
            seconds[heads].append((time.perf_counter() - t0) / block)
    tokens = TRAIN_ARGS["batch_size"] * TRAIN_ARGS["seq_len"]
    ratios = [p / h for h, p in zip(seconds[True], seconds[False])]
    cost = data_cost(args)
    return {
        "shape": {**MODEL_ARGS, **TRAIN_ARGS},
        "steps": block * args.rounds,
        "tokens_per_s": {
            "heads": round(tokens / statistics.median(seconds[True])),
            "plain": round(tokens / statistics.median(seconds[False])),
        },
        "ratio_median": round(statistics.median(ratios), 4),
        "ratio_quartiles": [round(float(q), 4) for q in np.percentile(ratios, [25, 75])],
        "data_seconds_per_window": {k: round(v, 6) for k, v in cost.items()},
    }


def print_throughput(r: dict[str, Any]) -> None:
    d, tps = r["data_seconds_per_window"], r["tokens_per_s"]
    q1, q3 = r["ratio_quartiles"]
    print(
        f"with the stop heads {tps['heads']:,} tokens/s, without {tps['plain']:,}: "
        f"{r['ratio_median']:.1%} of the throughput (median of {r['steps']} interleaved "
        f"steps each; quartiles {q1:.1%} .. {q3:.1%})"
    )
    print(
        f"data pipeline per window: {d['plain'] * 1e3:.2f} ms without, "
        f"{d['heads'] * 1e3:.2f} ms with the stop targets"
    )


# -- main ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["quality", "throughput"])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--checkpoints", type=Path, default=OUT / "checkpoints")
    parser.add_argument("--run", help="quality: measure this run instead of training one")
    parser.add_argument("--run-name", help="quality: the name of the run to train")
    parser.add_argument("--time-budget", default="5m", help="quality: training time")
    parser.add_argument(
        "--split",
        default="spread",
        choices=[h.value for h in Holdout],
        help="quality: --split to train with",
    )
    parser.add_argument("--n", type=int, default=500, help="quality: samples per rule")
    parser.add_argument("--length", type=int, default=200, help="quality: --length to check")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--rounds", type=int, default=16, help="throughput: blocks of 5 steps")
    args = parser.parse_args()
    if not args.corpus.is_file():
        sys.exit(f"corpus not found: {args.corpus}")
    OUT.mkdir(parents=True, exist_ok=True)
    header = {"machine": machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if args.what == "quality":
        result = {**header, **quality(args)}
        print_quality(result)
    else:
        result = {**header, **throughput(args)}
        print_throughput(result)
    path = OUT / f"stopping-{args.what}.json"
    write_json_atomic(path, result)
    print(f"written to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
