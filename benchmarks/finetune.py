"""Fine-tuning a trained model against training from scratch on a small text, at equal wall
time (issue 25).

    python -m benchmarks.finetune                  # the comparison (about 15 minutes, 2 cores)
    python -m benchmarks.finetune --only sweep     # the fine-tuning defaults (about 12 minutes)
    python -m benchmarks.finetune --only sweep --texts german-150k   # the sweep on another text
    python -m benchmarks.finetune --seconds 90 --base-seconds 300 --rounds 1

A base is trained once, on tinyshakespeare (the built-in corpus) at char level with
--time-budget BASE-SECONDS. The small texts it never saw:

    wiki-150k     the first 150 KB of WikiText-2's validation text: encyclopedia prose, with
                  digits, brackets and <unk> (26 symbols Shakespeare lacks)
    german-150k   the first 150 KB of the German man pages on this machine, rendered by groff
                  (umlauts, ß; left out where groff or the pages are missing)

Rows, each run in a fresh process on one thread with --time-budget SECONDS (the wall time of
the whole call: encoding, evaluations and the stop fit included), the two arms of a text one
after the other, which goes first alternating:

    scratch       charrnn train TEXT                  (the defaults)
    finetune      charrnn train TEXT --from base      (the defaults for fine-tuning)
    sweep         fine-tuning at other learning rates, warm-ups and new-symbol margins

The figure is the kept model's validation loss in nats per character over the whole
held-out tail (the last 10% of the text, the same characters for both arms). Writes
benchmarks/out/finetune.md (and .json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.defaults import german_prose, head_of
from benchmarks.machine import describe

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "corpora"
OUT = ROOT / "benchmarks" / "out"
SMALL = 150_000  # bytes of each small text

# (name, options): fine-tuning at other settings than its defaults (None: the default)
SWEEP: list[tuple[str, dict[str, Any]]] = [
    ("lr x1.0, warm-up 100", {"lr_scale": 1.0, "warmup_steps": 100}),
    ("lr x0.3, warm-up 100", {"lr_scale": 0.3, "warmup_steps": 100}),
    ("lr x0.1, warm-up 100", {"lr_scale": 0.1, "warmup_steps": 100}),
    ("lr x0.3, warm-up 20", {"lr_scale": 0.3, "warmup_steps": 20}),
    ("lr x1.0, warm-up 20", {"lr_scale": 1.0, "warmup_steps": 20}),
    ("lr x0.3, warm-up 100, margin 0", {"lr_scale": 0.3, "warmup_steps": 100, "margin": 0.0}),
    ("lr x0.3, warm-up 100, margin 10", {"lr_scale": 0.3, "warmup_steps": 100, "margin": 10.0}),
]


def arm(spec: dict[str, Any]) -> dict[str, Any]:
    """One run through the library, in this (fresh) process: the spec's corpus, base and
    options; its kept model's validation figures."""
    import charrnn.model.grow as grow
    from charrnn import api
    from charrnn.config import Level, TokenizerConfig
    from charrnn.defaults import lr_for

    torch.set_num_threads(1)
    options = dict(spec.get("options", {}))
    if "margin" in options:
        grow.NEW_SYMBOL_MARGIN = options.pop("margin")
    scale = options.pop("lr_scale", None)
    if scale is not None:
        options["lr"] = round(scale * lr_for(TokenizerConfig(level=Level.char), spec["hidden"]), 6)
    t0 = time.monotonic()
    model = api.train(
        spec["corpus"],
        run=spec["run"],
        checkpoints=spec["root"],
        base=spec.get("base"),
        time_budget=spec["seconds"],
        sample_every=0,
        device="cpu",
        **options,
    )
    result = model.result
    assert result is not None and result.val is not None
    info = json.loads((model.folder / "run.json").read_text())
    return {
        "seconds": time.monotonic() - t0,
        "val": result.val.bpc * math.log(2),
        "steps": result.steps,
        "hidden": model.config.hidden,
        "lr": info["train"]["lr"],
        "warmup": info["train"]["warmup_steps"],
        "symbols": model.tokenizer.vocab_size,
        "added": info.get("base", {}).get("added_symbols"),
        "level": model.level,
    }


def run_arm(spec: dict[str, Any]) -> dict[str, Any]:
    """``arm`` in a fresh process, so that no run warms another's caches or allocator."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "benchmarks.finetune", "--arm", json.dumps(spec)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def small_texts(folder: Path) -> list[tuple[str, Path]]:
    texts = []
    wiki = SHARED / "wikitext2-valid.txt"
    if wiki.exists():
        texts.append(("wiki-150k", head_of(wiki, SMALL, folder)))
    german = german_prose(folder)
    if german is not None:
        texts.append(("german-150k", head_of(german, SMALL, folder)))
    return texts


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.finetune",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--arm", help=argparse.SUPPRESS)  # one run, in a process of its own
    ap.add_argument("--only", nargs="*", choices=("compare", "sweep"), default=None)
    ap.add_argument("--seconds", type=float, default=90.0)
    ap.add_argument("--base-seconds", type=float, default=300.0)
    ap.add_argument("--rounds", type=int, default=1, help="scratch/finetune pairs per text")
    ap.add_argument("--texts", nargs="*", help="only these small texts (the sweep: the first)")
    args = ap.parse_args(argv)
    if args.arm:
        print(json.dumps(arm(json.loads(args.arm))), flush=True)
        return
    which = set(args.only or ("compare",))
    lines = [f"- {k}: {v}" for k, v in describe(torch.device("cpu")).items()]
    lines.append("- runs: one thread each (OMP_NUM_THREADS=1), one after the other")
    print("\n".join(lines), flush=True)
    rows: list[dict[str, Any]] = []

    def row(text: str, name: str, r: dict[str, Any]) -> None:
        rows.append({"text": text, "arm": name, **r})
        added = f", +{r['added']} symbols" if r.get("added") is not None else ""
        print(
            f"{text:<12} {name:<34} {r['val']:.4f} nats/char  {r['steps']:>5,} steps  "
            f"{r['level']} {r['symbols']}{added}, 1x{r['hidden']}, lr {r['lr']:g}, "
            f"warm-up {r['warmup']}, {r['seconds']:.0f} s",
            flush=True,
        )

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CHARRNN_CACHE"] = str(Path(tmp) / "cache")
        root = Path(tmp) / "ck"
        common = {"root": str(root), "seconds": args.seconds}
        base = {**common, "corpus": "shakespeare", "run": "base", "seconds": args.base_seconds}
        row("shakespeare", "base", run_arm({**base, "options": {"level": "char"}}))
        hidden = rows[-1]["hidden"]
        texts = [(n, t) for n, t in small_texts(Path(tmp)) if not args.texts or n in args.texts]
        for k, (name, text) in enumerate(texts):
            spec = {**common, "corpus": str(text), "hidden": hidden}
            if "compare" in which:
                for r in range(args.rounds):
                    arms = [("scratch", {}), ("finetune", {"base": "base"})]
                    for label, extra in arms[:: 1 if (k + r) % 2 == 0 else -1]:
                        run = f"{name}-{label}-{r}"
                        row(name, label, run_arm({**spec, **extra, "run": run}))
            if "sweep" in which and k == 0:
                for i, (label, options) in enumerate(SWEEP):
                    run = {**spec, "base": "base", "run": f"{name}-sweep-{i}", "options": options}
                    row(name, f"finetune, {label}", run_arm(run))
    write(lines, rows)


def write(lines: list[str], rows: list[dict[str, Any]]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    table = ["| text | arm | val nats/char | steps | model | lr | warm-up | seconds |"]
    table.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        added = f" (+{r['added']})" if r.get("added") is not None else ""
        table.append(
            f"| {r['text']} | {r['arm']} | {r['val']:.4f} | {r['steps']:,} | {r['level']} "
            f"{r['symbols']}{added}, 1x{r['hidden']} | {r['lr']:g} | {r['warmup']} | "
            f"{r['seconds']:.0f} |"
        )
    for text in sorted({r["text"] for r in rows} - {"shakespeare"}):
        mean = {
            arm: sum(vals) / len(vals)
            for arm in ("scratch", "finetune")
            if (vals := [r["val"] for r in rows if r["text"] == text and r["arm"] == arm])
        }
        if len(mean) == 2:
            ratio = mean["finetune"] / mean["scratch"]
            table.append(f"\n{text}: finetune / scratch = {ratio:.3f} (means of the rounds)")
    (OUT / "finetune.md").write_text("\n".join([*lines, "", *table]) + "\n", encoding="utf-8")
    (OUT / "finetune.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
