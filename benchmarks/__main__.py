"""``python -m benchmarks [--quick] [--device cpu|cuda] [--only train,sample,score]``

Prints a table of charrnn's figures, each next to its bare PyTorch reference and the ratio,
with the machine it ran on, and writes it to benchmarks/out/ (latest.md, and a dated copy
with a JSON twin). Figures are the best of their rounds; see benchmarks/speed.py for what is
measured and how.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from benchmarks import machine, speed

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
SHARED_CORPUS = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"
PARTS = ("train", "sample", "score")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small shapes, one round: a smoke run")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--only", default=",".join(PARTS), help="comma-separated: train,sample,score")
    p.add_argument("--corpus", type=Path, default=None, help="default: tinyshakespeare")
    p.add_argument("--rounds", type=int, default=None, help="rounds per figure (default 3)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    return p.parse_args(argv)


def synthetic_corpus(folder: Path) -> Path:
    """Lines of made-up words, when the shared corpus is not beside the repository."""
    g = torch.Generator().manual_seed(0)
    letters = "etaoinshrdlucmfwypvbgkjqxz"
    words = [
        "".join(letters[int(i)] for i in torch.randint(0, 26, (int(n),), generator=g))
        for n in torch.randint(1, 9, (2000,), generator=g)
    ]
    lines = []
    for n in torch.randint(4, 14, (20000,), generator=g).tolist():
        idx = torch.randint(0, len(words), (n,), generator=g).tolist()
        lines.append(" ".join(words[i] for i in idx).capitalize() + ".")
    path = folder / "synthetic.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run(args: argparse.Namespace, work: Path) -> tuple[dict[str, str], list[speed.Row]]:
    device = torch.device(args.device)
    corpus = args.corpus or (SHARED_CORPUS if SHARED_CORPUS.exists() else synthetic_corpus(work))
    quick, parts = args.quick, set(args.only.split(","))
    rounds = args.rounds or (1 if quick else 3)
    shape = speed.Shape(hidden=128, embed=32, batch=16, seq_len=32) if quick else speed.Shape()
    info = machine.describe(device)
    info["corpus"] = corpus.name
    rows: list[speed.Row] = []
    if "train" in parts:
        precisions = ["fp32", "bf16"] if device.type == "cuda" else ["fp32"]
        for precision in precisions:
            for cell in ("rnn", "gru", "lstm"):
                _say(f"training {cell} {precision}")
                rows.append(
                    speed.training(
                        cell,
                        shape,
                        corpus,
                        work / "checkpoints",
                        device,
                        1 if quick else 2,
                        precision,
                    )
                )
    if "sample" in parts:
        tokens = 40 if quick else 400
        for streams in (1, 64):
            _say(f"sampling, {streams} streams")
            rows += speed.sampling(corpus, shape, device, streams, tokens, rounds)
    if "score" in parts:
        _say("scoring")
        rows.append(speed.scoring(corpus, shape, device, 200 if quick else 2000, rounds))
    info["load average at end"] = machine.load_average()
    return info, rows


def _say(what: str) -> None:
    print(f"... {what}", file=sys.stderr, flush=True)


def table(info: dict[str, str], rows: list[speed.Row], quick: bool) -> str:
    lines = [f"charrnn benchmarks{' (--quick)' if quick else ''}, {time.strftime('%Y-%m-%d')}", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += [
        "",
        "Best of each figure's rounds; ratio = charrnn / reference. CPU-time columns: tokens",
        "(or FLOPs) per second of this process's CPU time, steady on a shared machine.",
        "",
        "| figure | charrnn | bare reference | ratio | charrnn, CPU time | reference, CPU time "
        "| ratio, CPU time | goal (ratio) | note |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]

    def num(x: float) -> str:
        return f"{x:,.1f}" if x < 100 else f"{x:,.0f}"

    for r in rows:
        cells = [
            f"{r.figure} ({r.unit})",
            num(r.best(r.ours_rounds, 0)),
            num(r.best(r.ref_rounds, 0)),
            f"{r.ratio(0):.2f}",
            num(r.best(r.ours_rounds, 1)),
            num(r.best(r.ref_rounds, 1)),
            f"{r.ratio(1):.2f}",
            r.goal,
            r.note,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="charrnn-bench-") as tmp:
        work = Path(tmp)
        os.environ["CHARRNN_CACHE"] = str(work / "cache")  # leave the user's cache alone
        info, rows = run(args, work)
    text = table(info, rows, args.quick)
    print(text)
    OUT.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (OUT / "latest.md").write_text(text, encoding="utf-8")
    (OUT / f"{stamp}.md").write_text(text, encoding="utf-8")
    payload = {"info": info, "quick": args.quick, "rows": [asdict(r) for r in rows]}
    (OUT / f"{stamp}.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
