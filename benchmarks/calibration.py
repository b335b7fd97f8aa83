"""What the fitted temperature adds to a trained model: its kept model with the temperature
and with T = 1, on its validation split and on a held-out test text, the same weights.

    python -m benchmarks.calibration [--only NAME ...]

Each case is one `charrnn train` command (a fresh process; the defaults, which calibrate);
the run's own figure then is the first column. Loss in nats per character over the whole
split (or test text). The validation figure at T is fitted on (part of) that split; two
figures are not: each half of the split (cut at a unit boundary) at the T fitted on the other
half, against T = 1 (``cross``, nats per token over both halves), and a test text read by
neither the run nor its fit.

Prints one line per case and writes benchmarks/out/calibration.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

from benchmarks.defaults import ROOT, SHAKESPEARE, WIKI, WIKI_TEST, trained
from benchmarks.machine import describe

OUT = ROOT / "benchmarks" / "out"
WORDS = ("--level", "word", "--unit", "line")


def cases(small: dict[str, Path]) -> list[tuple[str, Path, tuple[str, ...], Path | None]]:
    """(name, corpus, train flags, test text or None); ``small``: benchmarks.smalltexts."""
    out = [
        ("tinyshakespeare 150s", SHAKESPEARE, ("--time-budget", "150s"), None),
        ("wikitext2 chars 150s", WIKI, ("--time-budget", "150s", "--level", "char"), WIKI_TEST),
        ("wikitext2 words 4m", WIKI, (*WORDS, "--time-budget", "4m"), WIKI_TEST),
    ]
    for name in ("shakespeare-100k", "zh-ui-80k", "cjk-synth-80k"):
        if name in small:
            out.append((f"{name} 60s", small[name], ("--time-budget", "60s"), None))
    return out


def measure(corpus: Path, flags: tuple[str, ...], test: Path | None) -> dict:
    import torch

    import charrnn
    from charrnn.evaluate import bits_per_char, evaluate
    from charrnn.stopfit import open_dataset

    with trained(corpus, *flags) as (folder, env, _):
        os.environ["CHARRNN_CACHE"] = env["CHARRNN_CACHE"]
        model = charrnn.load(folder)
        net, info = model.loaded.model, model.loaded.info
        t = info["train"]
        _, val = open_dataset(info).split(t["val_fraction"], t["split"], t["split_cut"])
        log_t = float(net.log_temperature)
        row: dict = {"temperature": math.exp(log_t), "kept_step": model.loaded.meta.get("step")}
        row["cross_fitted"], row["cross_t1"] = cross_fitted(net, val, t["seq_len"])
        for label, value in (("calibrated", log_t), ("t1", 0.0)):
            net.log_temperature.fill_(value)
            with torch.no_grad():
                loss, _ = evaluate(net, val, t["seq_len"])
            row[f"val_{label}"] = bits_per_char(loss, val) * math.log(2)
            if test is not None:
                row[f"test_{label}"] = model.evaluate(test).bits_per_char * math.log(2)
    return row


def cross_fitted(net, val, seq_len: int) -> tuple[float, float]:
    """Nats per token over both halves of ``val``, each at the temperature fitted on the
    other half, and at T = 1."""
    import numpy as np
    import torch

    from charrnn.data import Split
    from charrnn.evaluate import evaluate
    from charrnn.training.calibrate import fit_temperature

    i = len(val.unit_starts) // 2
    cut = int(val.unit_starts[i])
    starts = np.asarray(val.unit_starts)
    halves = [
        Split(val.tokens[:cut], starts[:i], 0, 0),
        Split(val.tokens[cut:], starts[i:] - cut, 0, 0),
    ]
    fitted = [fit_temperature(net, half, seq_len)[0] for half in halves]
    totals = {"fitted": 0.0, "t1": 0.0}
    count = 0
    for half, other in zip(halves, reversed(fitted)):
        for label, value in (("fitted", other), ("t1", 0.0)):
            net.log_temperature.fill_(value)
            with torch.no_grad():
                loss, n = evaluate(net, half, seq_len)
            totals[label] += loss * n
        count += n
    return totals["fitted"] / count, totals["t1"] / count


def main(argv: list[str] | None = None) -> None:
    from benchmarks.smalltexts import build

    ap = argparse.ArgumentParser(prog="python -m benchmarks.calibration", description=__doc__)
    ap.add_argument("--only", nargs="*", default=None, help="case names (as printed)")
    args = ap.parse_args(argv)
    info = describe(__import__("torch").device("cpu"))
    for k, v in info.items():
        print(f"- {k}: {v}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, corpus, flags, test in cases(build(Path(tmp))):
            if (args.only and name not in args.only) or not corpus.exists():
                continue
            t0 = time.monotonic()
            row = {"case": name, "flags": " ".join(flags), **measure(corpus, flags, test)}
            row["seconds"] = round(time.monotonic() - t0)
            rows.append(row)
            print(json.dumps(row), flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "calibration.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
