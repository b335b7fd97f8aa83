"""Symbols only the held-out text holds, at equal steps: a run that marks them (the defaults:
RNNLM.set_unseen) against one that does not (as runs of format 8 and before trained), on one
thread each, side by side. At every evaluation and for the kept model, the held-out loss is
split between the tokens whose symbol the training text holds and the others.

    python -m benchmarks.unseen --corpus wikitext2-valid.txt --level word --unit line \\
        --steps 1500 --base "hidden=320"
    python -m benchmarks.unseen --corpus cjk-synth-80k.txt --steps 1350 --base "hidden=192"

Prints one JSON line per evaluation and per run; writes benchmarks/out/unseen-<stamp>.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.equalsteps import OUT, StopAt, data_config, encode_once, step_job


def held_out_split(model: Any, split: Any, seq_len: int, trained: Any, autocast: Any) -> dict:
    """Mean loss (nats) of the validation tokens whose symbol training holds, of the others,
    and their counts."""
    import numpy as np
    import torch

    from charrnn.evaluate import read_windows
    from charrnn.tokenizers import PAD

    sums, counts = [0.0, 0.0], [0, 0]
    with torch.no_grad():
        for b, h in read_windows(model, split, seq_len, autocast=autocast):
            with autocast():
                logits = model.token_logits(h)
            y = torch.from_numpy(b.y.astype(np.int64))
            nll = -torch.log_softmax(logits.float(), -1).gather(-1, y[..., None])[..., 0]
            known = torch.from_numpy(trained[b.y] > 0)
            for k, mask in enumerate((known & (y != PAD), ~known & (y != PAD))):
                sums[k] += float(nll[mask].sum())
                counts[k] += int(mask.sum())
    return {
        "held_symbols": round(sums[0] / max(1, counts[0]), 4),
        "others": round(sums[1] / max(1, counts[1]), 4),
        "n_held": counts[0],
        "n_others": counts[1],
    }


def run_one(args: dict[str, Any]) -> dict[str, Any]:
    """One run in this (worker) process, on one thread; ``marked`` False leaves every symbol
    unmarked, as before format 9."""
    import contextlib
    import math

    import torch

    torch.set_num_threads(1)
    import charrnn.training.evals as evals
    from charrnn.model import RNNLM
    from charrnn.training.run import train

    if not args["marked"]:
        RNNLM.set_unseen = lambda self, *a, **k: None  # type: ignore[method-assign]
    rows: list[dict[str, Any]] = []
    evaluate = evals.evaluate

    def split_too(model, split, seq_len, batch_size=64, max_tokens=0, device=None, part=(0, 1),
                  autocast=contextlib.nullcontext):  # fmt: skip
        loss, n = evaluate(model, split, seq_len, batch_size, max_tokens, device, part, autocast)
        row = {"marked": args["marked"], "loss": round(loss, 4), "whole": max_tokens == 0}
        row |= held_out_split(model, split, seq_len, args["trained"], autocast)
        print(json.dumps(row), flush=True)
        rows.append(row)
        return loss, n

    evals.evaluate = split_too
    job = step_job(args["base"], args["steps"], args["seed"], args["data"])
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CHARRNN_CACHE"] = args["cache"]
        result = train(args["corpus"], job, root=Path(tmp), callbacks=StopAt(0))
    return {
        "marked": args["marked"],
        "steps": result.steps,
        "best_step": result.best_step,
        "val": round(result.val.loss, 4),
        "perplexity": round(math.exp(result.val.loss), 1),
        "kept": rows[-1],
        "evals": rows[:-1],
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.unseen", description=__doc__)
    p.add_argument("--corpus", type=Path, required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--level", default="char")
    p.add_argument("--unit", default="auto")
    p.add_argument("--base", default="", help="settings both runs take")
    p.add_argument("--seed", type=int, default=1337)
    args = p.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = "1"
    cache = tempfile.mkdtemp(prefix="unseen-cache-")
    os.environ["CHARRNN_CACHE"] = cache
    data = data_config(args.level, args.unit)
    ds, _ = encode_once(args.corpus, data, 0.1)
    train_split, _ = ds.split(0.1)
    trained, _ = ds.symbol_counts(train_split)
    jobs = [
        {"marked": marked, "corpus": str(args.corpus), "steps": args.steps, "data": data}
        | {"base": args.base, "seed": args.seed, "cache": cache, "trained": trained}
        for marked in (True, False)
    ]
    fresh = multiprocessing.get_context("spawn")  # each run in a process of its own
    with ProcessPoolExecutor(2, mp_context=fresh, max_tasks_per_child=1) as pool:
        results = list(pool.map(run_one, jobs))
    for r in results:
        print(json.dumps({k: v for k, v in r.items() if k != "evals"}))
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"unseen-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(
        json.dumps({"args": vars(args) | {"corpus": str(args.corpus)}, "runs": results})
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
