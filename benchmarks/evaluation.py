"""Held-out perplexity and dynamic evaluation, against word_language_model.

    python -m benchmarks.evaluation wordlm --minutes 5    # WikiText-2, word level, equal wall time
    python -m benchmarks.evaluation dynamic --minutes 5   # static vs dynamic, two texts
    python -m benchmarks.evaluation sweep --run R --text T --chars 20000  # lr x decay x rule

wordlm   trains charrnn (`train --level word --unit line --time-budget M`) on WikiText-2's
         validation text (its training text is not here), then `eval`s it on the test text;
         trains benchmarks/wordlm.py (word_language_model's defaults) for the same wall time
         in the same process and tests it. Perplexity is quoted per word: whitespace-separated
         words and one end per line, the count word_language_model divides by, so that both
         models' figures divide the same text's nats by the same number.
dynamic  trains a char run on tinyshakespeare's head (90%) unless --work has it, then scores
         the tail static and dynamic; and the wordlm run (when --work has it) on WikiText-2's
         test text. nats/char and the time each reading takes.
sweep    dynamic evaluation settings on the first --chars characters of a text.

Runs are kept in --work (default /tmp/charrnn-eval-bench), so a later part reuses them;
figures go to stdout and to benchmarks/out/evaluation-<part>-<time>.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from benchmarks import machine, wordlm
from charrnn.api import Model, load, train
from charrnn.config import AdaptConfig, AdaptRule

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
SHARED = next(
    (p / "shared" / "corpora" for p in ROOT.parents if (p / "shared" / "corpora").is_dir()),
    ROOT.parent / "shared" / "corpora",
)
WT2_TRAIN, WT2_TEST = SHARED / "wikitext2-valid.txt", SHARED / "wikitext2-test.txt"
SHAKESPEARE = SHARED / "tinyshakespeare.txt"


def _say(what: str) -> None:
    print(f"... {what}", file=sys.stderr, flush=True)


def _run(work: Path, name: str) -> Model | None:
    folder = work / "runs" / name
    return load(folder) if (folder / "run.json").exists() else None


def wordlm_part(args: argparse.Namespace) -> dict[str, Any]:
    seconds = args.minutes * 60
    _say(f"charrnn, word level, {args.minutes} min")
    started = time.monotonic()
    ours = train(
        WT2_TRAIN,
        run=args.name,
        checkpoints=args.work / "runs",
        level="word",
        unit="line",
        time_budget=seconds,
        device="cpu",
        **args.options,
    )
    ours_wall = time.monotonic() - started
    _say("charrnn eval")
    static = ours.evaluate(WT2_TEST)
    _say(f"word_language_model, {args.minutes} min")
    ref = wordlm.train(WT2_TRAIN, seconds)
    ref_loss, ref_tokens, ref_eval_s = wordlm.test_loss(ref, WT2_TEST)
    words = static.words + static.units  # word_language_model's tokens of the same text
    result = {
        "charrnn": {
            "model": ours.config.to_dict(),
            "parameters": ours.n_parameters,
            "train_seconds": ours_wall,
            "train_tokens_per_s": ours.result.tokens_per_s if ours.result else None,
            "test": static.to_dict(),
        },
        "word_language_model": {
            "parameters": sum(p.numel() for p in ref.model.parameters()),
            "vocabulary": len(ref.dictionary.words),
            "train_seconds": ref.seconds,
            "train_tokens_per_s": ref.tokens / ref.seconds,
            "epochs": ref.epochs,
            "test_loss": ref_loss,
            "test_tokens": ref_tokens,
            "test_seconds": ref_eval_s,
            "test_word_perplexity": float(torch.tensor(ref_loss * ref_tokens / words).exp()),
        },
        "words": words,
    }
    if args.dynamic:
        _say("charrnn eval --dynamic")
        result["charrnn"]["test_dynamic"] = ours.evaluate(WT2_TEST, dynamic=True).to_dict()
    return result


def shakespeare_split(work: Path) -> tuple[Path, Path]:
    """tinyshakespeare's head (90% of its characters) and tail, cut at a blank line."""
    head, tail = work / "shakespeare-head.txt", work / "shakespeare-tail.txt"
    if not tail.exists():
        text = SHAKESPEARE.read_text(encoding="utf-8")
        cut = text.index("\n\n", int(len(text) * 0.9)) + 2
        head.write_text(text[:cut], encoding="utf-8")
        tail.write_text(text[cut:], encoding="utf-8")
    return head, tail


def dynamic_part(args: argparse.Namespace) -> dict[str, Any]:
    head, tail = shakespeare_split(args.work)
    model = _run(args.work, "shakespeare-char")
    if model is None:
        _say(f"charrnn, tinyshakespeare's head, char level, {args.minutes} min")
        model = train(
            head,
            run="shakespeare-char",
            checkpoints=args.work / "runs",
            level="char",
            time_budget=args.minutes * 60,
            device="cpu",
        )
    texts = [("tinyshakespeare tail", model, tail)]
    word = _run(args.work, "wt2-word")
    if word is not None:
        texts.append(("WikiText-2 test", word, WT2_TEST))
    result: dict[str, Any] = {}
    for name, m, path in texts:
        _say(f"{name}: static (as training evaluates, then as dynamic reads), then dynamic")
        config = AdaptConfig(**args.adapt)
        static = m.evaluate(path)
        ordered = m.evaluate(path, window=config.window, streams=config.streams)
        dynamic = m.evaluate(path, dynamic=config)
        result[name] = {"run": m.name, "static": static.to_dict()}
        result[name].update(static_in_order=ordered.to_dict(), dynamic=dynamic.to_dict())
    return result


def sweep_part(args: argparse.Namespace) -> dict[str, Any]:
    model = load(args.run)
    text = args.work / f"sweep-{Path(args.text).stem}-{args.chars}.txt"
    with Path(args.text).open(encoding="utf-8") as f:
        text.write_text(f.read(args.chars), encoding="utf-8")
    rows = [{"static": "training's layout", **model.evaluate(text).to_dict()}]
    ordered = model.evaluate(text, window=args.windows[0], streams=args.streams[0])
    rows.append({"static": "dynamic's layout", **ordered.to_dict()})
    _say(
        f"static: {rows[0]['bits_per_char']:.4f} bits/char; read as dynamic reads: "
        f"{rows[1]['bits_per_char']:.4f}"
    )
    grid = itertools.product(args.rules, args.lrs, args.decays, args.windows, args.streams)
    for rule, lr, decay, window, streams in grid:
        config = replace(AdaptConfig(), rule=AdaptRule(rule), lr=lr, decay=decay)
        config = replace(config, window=window, streams=streams)
        e = model.evaluate(text, dynamic=config)
        _say(
            f"{rule} lr {lr:g} decay {decay:g} window {window} streams {streams}: "
            f"{e.bits_per_char:.4f} bits/char, {e.seconds:.0f}s"
        )
        rows.append(e.to_dict())
    return {"run": model.name, "text": str(args.text), "chars": args.chars, "rows": rows}


def _option(text: str) -> tuple[str, object]:
    """NAME=VALUE, the value as a number where it reads as one."""
    name, _, value = text.partition("=")
    for kind in (int, float):
        try:
            return name, kind(value)
        except ValueError:
            pass
    return name, value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.evaluation", description=__doc__)
    p.add_argument("part", choices=("wordlm", "dynamic", "sweep"))
    p.add_argument("--minutes", type=float, default=5.0, help="training time of each model")
    p.add_argument("--work", type=Path, default=Path("/tmp/charrnn-eval-bench"))
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--dynamic", action="store_true", help="wordlm: also charrnn eval --dynamic")
    p.add_argument("--lr", type=float, default=AdaptConfig.lr, help="dynamic: learning rate")
    p.add_argument("--decay", type=float, default=AdaptConfig.decay, help="dynamic: decay")
    p.add_argument("--name", default="wt2-word", help="wordlm: charrnn's run name")
    p.add_argument(
        "--options", nargs="*", default=[], help="wordlm: charrnn train options, NAME=VALUE"
    )
    p.add_argument("--run", help="sweep: the run")
    p.add_argument("--text", help="sweep: the text")
    p.add_argument("--chars", type=int, default=20000, help="sweep: characters of the text")
    p.add_argument("--rules", nargs="+", default=["rms", "sgd"])
    p.add_argument("--lrs", nargs="+", type=float, default=[1e-3, 3e-3, 1e-2])
    p.add_argument("--decays", nargs="+", type=float, default=[0.0, 0.01, 0.03])
    p.add_argument("--windows", nargs="+", type=int, default=[AdaptConfig.window])
    p.add_argument("--streams", nargs="+", type=int, default=[AdaptConfig.streams])
    args = p.parse_args(argv)
    args.adapt = {"lr": args.lr, "decay": args.decay}
    args.options = dict(_option(o) for o in args.options)
    return args


def _plain(o: object) -> object:
    return asdict(o) if hasattr(o, "__dataclass_fields__") else str(o)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("CHARRNN_CACHE", str(args.work / "cache"))
    info = machine.describe(torch.device("cpu"))
    part = {"wordlm": wordlm_part, "dynamic": dynamic_part, "sweep": sweep_part}[args.part]
    payload = {"info": info, "args": {k: str(v) for k, v in vars(args).items()}}
    payload["result"] = part(args)
    payload["info"]["load average at end"] = machine.load_average()
    text = json.dumps(payload, indent=2, default=_plain)
    print(text)
    OUT.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (OUT / f"evaluation-{args.part}-{stamp}.json").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
