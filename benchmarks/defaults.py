"""The best model per CPU-minute: charrnn's defaults next to two references, same machine,
same run, same split (tinyshakespeare; the last 10% of the text held out).

    python -m benchmarks.defaults                   # every row (hours: words and wordlevers
                                                    # alone take 30 and 90 minutes)
    python -m benchmarks.defaults --only gpt budget # some rows

Rows (validation loss in nats per character, over the whole held-out tail):

    gpt      nanoGPT's published CPU recipe (4 layers, 4 heads, 128 dims, block 64, batch 12,
             2000 iterations, lr 1e-3 with warmup and cosine decay), re-implemented here
    lstm     a plain 1x512 LSTM (embedding 128, batch 64, BPTT 128, Adam 2e-3, clip 1), 140 s
    budget   charrnn train CORPUS --time-budget 150s --val-fraction 0.1: the wall time of the
             whole command, tokenizing and evaluating included
    noflags  charrnn train CORPUS, no flags at all
    other    charrnn train --time-budget 150s on other corpora: WikiText-2 (word level) and
             German prose (the man pages on this machine, rendered by groff)
    levels   charrnn train --time-budget 150s with the default level (auto) and with
             --level char, one command after the other, on tinyshakespeare (--val-fraction 0.1),
             WikiText-2's test text, the first 250 KB of its validation text and German prose
    regularize  the defaults' regularization against its light setting held fixed
             (--weight-decay 0.1 --min-lr-ratio 0.1), each pair one command after the other:
             --time-budget 150s on WikiText-2's test characters and on the first 250 KB of
             its validation text; and no flags on tinyshakespeare, light (the defaults are
             the noflags row)
    small    charrnn train --time-budget 60s on the small texts of benchmarks.smalltexts, with
             the defaults and with those before issue 29 held fixed (BEFORE_29), one command
             after the other: the step the kept model was saved at, of the steps made
    words    charrnn train wikitext2-valid.txt --level word --unit line --time-budget 14m, with
             the defaults and with BEFORE_29 (about 30 minutes)
    wordlevers  the same words run untied, with a dropout that does not rise, with dropout 0.3
             and 0.5, a width of 256, and none of these (about 90 minutes)
    precision  the defaults (bf16 on a CPU with AMX or AVX-512 BF16) and --precision fp32, one
             command after the other, on tinyshakespeare: --time-budget 150s --val-fraction
             0.1 at the default level and at --level char (10 minutes)
    precision15  the same pair with no other flags (30 minutes)
    sweep    150-second runs of other sizes and learning rates (SWEEP), through the library
    calibrate  the defaults and --no-calibrate, one command after the other: the budget row,
             150 s on WikiText-2's validation characters (scored on its test text too), and 60 s
             on each small text (about 25 minutes)
    calibratewords  the same pair on the words row, scored on WikiText-2's test text too (about
             30 minutes)

Writes benchmarks/out/defaults.md (and .json).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.machine import describe
from benchmarks.reference import CHARS, BareLM

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "corpora"
SHAKESPEARE = SHARED / "tinyshakespeare.txt"
WIKI, WIKI_TEST = SHARED / "wikitext2-valid.txt", SHARED / "wikitext2-test.txt"
ROWS = ("gpt", "lstm", "budget", "noflags", "other", "levels", "regularize", "small", "words")
ROWS += ("wordlevers", "precision", "precision15", "sweep", "calibrate", "calibratewords")
LIGHT = ("--weight-decay", "0.1", "--min-lr-ratio", "0.1")  # the light end of the rule, fixed
CHAR = ("--level", "char")
# The defaults before issue 29: no weight drop or dropout, no extra decay of the rows, no
# averaged weights, untied words (the streams' start still moves from pass to pass, and the
# symbols only held-out text holds are still left out of training: neither has an option)
BEFORE_29 = ("--weight-drop", "0", "--dropout", "0", "--row-decay", "0", "--average", "0")
BEFORE_29 += ("--no-tie-weights", "--dropout-rise", "0")
NO_CALIBRATE = ("--no-calibrate",)  # the logits as trained (docs/defaults.md, "A temperature")
# Word level's usual levers around its defaults (tied rows, dropout 0.4 that rises;
# docs/defaults.md, "Tied words" and "Dropout that rises")
WORD_LEVERS = [
    ("--no-tie-weights",),
    ("--dropout-rise", "0"),
    ("--dropout", "0.3"),
    ("--dropout", "0.5"),
    ("--hidden", "256"),
    (),
]
# The 150-second sweep behind the defaults (docs/defaults.md): (layers, hidden, lr, B, T)
SWEEP = [
    (1, 512, 3e-3, 32, 64),
    (1, 512, 6e-3, 32, 64),
    (1, 512, 1e-2, 32, 64),
    (1, 768, 6e-3, 32, 64),
    (1, 384, 6e-3, 32, 64),
    (1, 384, 8e-3, 32, 64),
    (1, 256, 6e-3, 32, 64),
    (1, 256, 1e-2, 32, 64),
    (2, 256, 6e-3, 32, 64),
    (1, 192, 8e-3, 32, 64),
    (1, 256, 6e-3, 64, 32),
]


def char_data(path: Path) -> tuple[torch.Tensor, torch.Tensor, int]:
    """nanoGPT's split: the first 90% of characters train, the last 10% validate."""
    text = path.read_text(encoding="utf-8")
    index = {c: i for i, c in enumerate(sorted(set(text)))}
    data = torch.tensor([index[c] for c in text], dtype=torch.long)
    n = int(0.9 * len(data))
    return data[:n], data[n:], len(index)


# -- nanoGPT's CPU recipe, re-implemented -------------------------------------------------


class Block(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d, bias=False), nn.LayerNorm(d, bias=False)
        self.qkv, self.proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.mlp = nn.Sequential(
            nn.Linear(d, 4 * d, bias=False), nn.GELU(), nn.Linear(4 * d, d, bias=False)
        )
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)  # (B, T, D) each
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, heads, T, D/heads)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, vocab: int, block: int = 64, layers: int = 4, heads: int = 4, d: int = 128):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(block, d)
        self.blocks = nn.Sequential(*[Block(d, heads) for _ in range(layers)])
        self.ln = nn.LayerNorm(d, bias=False)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.tok.weight
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
        return self.head(self.ln(self.blocks(x)))  # (B, T, V)


def gpt_reference(iters: int = 2000, block: int = 64, batch: int = 12) -> dict:
    torch.manual_seed(1337)
    train, val, vocab = char_data(SHAKESPEARE)
    model = GPT(vocab, block)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.99))
    warmup, top, floor = 100, 1e-3, 1e-4
    t0 = time.monotonic()
    for it in range(iters):
        p = (it - warmup) / (iters - warmup)
        lr = (
            top * (it + 1) / warmup
            if it < warmup
            else floor + 0.5 * (top - floor) * (1 + math.cos(math.pi * p))
        )
        for g in opt.param_groups:
            g["lr"] = lr
        ix = torch.randint(len(train) - block - 1, (batch,))
        x = torch.stack([train[i : i + block] for i in ix])  # (B, T)
        y = torch.stack([train[i + 1 : i + block + 1] for i in ix])
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    seconds = time.monotonic() - t0
    model.eval()
    with torch.no_grad():  # every validation character once, in blocks of 64
        n = (len(val) - 1) // block * block
        x, y = val[:n].view(-1, block), val[1 : n + 1].view(-1, block)
        total = sum(
            float(
                F.cross_entropy(
                    model(x[i : i + 256]).flatten(0, 1), y[i : i + 256].flatten(), reduction="sum"
                )
            )
            for i in range(0, len(x), 256)
        )
    return {"seconds": seconds, "val": total / y.numel(), "note": f"{iters} iterations"}


# -- a plain LSTM -------------------------------------------------------------------------


def lstm_reference(seconds: float = 140.0, batch: int = 64, bptt: int = 128) -> dict:
    torch.manual_seed(1337)
    train, val, vocab = char_data(SHAKESPEARE)
    model = BareLM("lstm", vocab, embed=128, hidden=512, layers=1)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    streams = train[: len(train) // batch * batch].view(batch, -1)  # (B, N)
    t0, k, state, steps = time.monotonic(), 0, None, 0
    while time.monotonic() - t0 < seconds:
        if k + bptt + 1 > streams.shape[1]:
            k, state = 0, None
        x, y = streams[:, k : k + bptt], streams[:, k + 1 : k + bptt + 1]
        logits, state = model(x, state)
        state = tuple(s.detach() for s in state)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        k, steps = k + bptt, steps + 1
    model.eval()
    with torch.no_grad():
        logits, _ = model(val[:-1][None])  # the whole tail as one stream
        loss = F.cross_entropy(logits[0], val[1:])
    return {"seconds": time.monotonic() - t0, "val": float(loss), "note": f"{steps} steps"}


# -- charrnn itself -----------------------------------------------------------------------


@contextlib.contextmanager
def trained(corpus: Path, *args: str) -> Iterator[tuple[Path, dict[str, str], float]]:
    """`charrnn train CORPUS ARGS` in a fresh process with a cache of its own: the run's
    folder, the environment it ran in, and its wall time from outside; gone after the block."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "CHARRNN_CACHE": str(Path(tmp) / "cache"), "PYTHONPATH": str(ROOT)}
        ck = Path(tmp) / "ck"
        cmd = [sys.executable, "-m", "charrnn", "train", str(corpus.resolve()), "--run", "bench"]
        cmd += ["--checkpoints", str(ck), *args]
        t0 = time.monotonic()
        # from ROOT: python -m reads the working directory's charrnn before PYTHONPATH's
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
        yield ck / "bench", env, time.monotonic() - t0


def charrnn_run(corpus: Path, *args: str, test: Path | None = None) -> dict:
    """The CLI in a fresh process, timed from outside; the kept model's figures from its
    checkpoint (validation bits per character over the whole held-out split, times ln 2),
    and on a ``test`` text (charrnn eval) where one is given."""
    from charrnn.checkpoint import load_tensors, read_meta
    from charrnn.runs import details

    with trained(corpus, *args) as (folder, env, seconds):
        meta = read_meta(folder / "best.safetensors")
        loop = read_meta(folder / "last.safetensors")["loop"]
        reg = details(folder).regularization()  # in force: the flags', else the run's own
        run = json.loads((folder / "run.json").read_text())
        kept = load_tensors(folder / "best.safetensors", "model.")
        evaluation = None
        if test is not None:
            cmd = [sys.executable, "-m", "charrnn", "eval", str(test.resolve()), "-c", str(folder)]
            out = subprocess.run(
                [*cmd, "--json"], env=env, check=True, capture_output=True, cwd=ROOT
            )
            evaluation = json.loads(out.stdout)
    config, tok = run["model"], run["data"]["config"]["tokenizer"]
    size = f"{config['cell']} {config['layers']}x{config['hidden']}"
    level = tok["level"] + (f" {tok['vocab_size']}" if tok["level"] in ("bpe", "unigram") else "")
    val = meta["val_bpc"] * math.log(2)
    note = f"{' '.join(args) or 'no flags'}; {level}; {size}; {loop['step']:,} steps"
    note += f", kept step {meta['step']:,}, perplexity {math.exp(meta['val_loss']):,.1f} per token"
    if reg is not None:
        note += (
            f"; expected {reg.passes} passes, pressure {reg.pressure}: weight decay "
            f"{reg.weight_decay}, rate to {reg.min_lr_ratio} x peak"
        )
    if reg is not None and reg.row_pressure is not None:
        note += (
            f", weight drop {reg.weight_drop}, dropout {reg.dropout}; row pressure "
            f"{reg.row_pressure}: row decay {reg.row_decay}"
        )
    if config.get("tie_weights"):
        note += "; tied"
    if "log_temperature" in kept:
        note += f"; temperature {math.exp(float(kept['log_temperature'])):.3f}"
    if evaluation is not None:
        test_loss = evaluation["bits_per_char"] * math.log(2)
        note += (
            f"; {test.name}: {test_loss:.4f} nats/char, perplexity {evaluation['perplexity']:,.1f}"
        )
    return {"seconds": seconds, "val": val, "note": note}


def sweep_run(layers: int, hidden: int, lr: float, batch: int, seq_len: int) -> dict:
    """One 150-second run through the library: 5 evaluations of 16,384 tokens, no stop fit,
    the rest at its default."""
    from charrnn.config import ModelConfig, TrainConfig
    from charrnn.job import Job
    from charrnn.training.run import train

    model = ModelConfig(layers=layers, hidden=hidden)
    config = TrainConfig(
        time_budget=150,
        lr=lr,
        batch_size=batch,
        seq_len=seq_len,
        sample_every=0,
        device="cpu",
        evals=5,
        eval_tokens=16384,
        stop_fit=0,
    )
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CHARRNN_CACHE"] = str(Path(tmp) / "cache")
        t0 = time.monotonic()
        r = train(
            SHAKESPEARE, Job(model=model, train=config, data=CHARS), root=Path(tmp), started=t0
        )
    assert r.val is not None
    note = f"{r.tokens:,} tokens, {r.tokens_per_s:,.0f} tokens/s"
    return {"seconds": time.monotonic() - t0, "val": r.val.bpc * math.log(2), "note": note}


def head_of(path: Path, n_bytes: int, folder: Path) -> Path:
    """The first ``n_bytes`` of a text, cut back to its last whole line: a small corpus."""
    data = path.read_bytes()[:n_bytes]
    out = folder / f"{path.stem}-{n_bytes // 1000}k.txt"
    out.write_bytes(data[: data.rfind(b"\n") + 1])
    return out


def german_prose(folder: Path) -> Path | None:
    """German text from the man pages on this Debian machine, rendered by groff."""
    pages = sorted(Path("/usr/share/man/de").glob("man1/*.gz"))
    if not pages or not shutil.which("groff"):
        return None
    out = folder / "de-manpages.txt"
    with out.open("w", encoding="utf-8") as f:
        for page in pages:
            roff = subprocess.run(["zcat", str(page)], capture_output=True).stdout
            cmd = ["groff", "-Tutf8", "-man", "-P-cbou"]
            text = subprocess.run(cmd, input=roff, capture_output=True).stdout
            f.write(text.decode("utf-8", "replace").strip() + "\n\n")
    return out


def _small_rows(row: Callable[[str, dict], None]) -> None:
    """Each small text, 60 s, with the defaults and with those before issue 29."""
    from benchmarks.smalltexts import build

    with tempfile.TemporaryDirectory() as tmp:
        for name, corpus in build(Path(tmp)).items():
            budget60 = ("--time-budget", "60s")
            row(f"charrnn {name}, 60 s", charrnn_run(corpus, *budget60))
            row(f"charrnn {name}, 60 s, before 29", charrnn_run(corpus, *budget60, *BEFORE_29))


def _calibrate_rows(row: Callable[[str, dict], None], budget: tuple[str, ...]) -> None:
    """The defaults and --no-calibrate, one command after the other: the 150 s command on
    tinyshakespeare, 150 s on WikiText-2's valid characters (scored on its test text too),
    and 60 s on each small text."""
    from benchmarks.smalltexts import build

    for flags in ((), NO_CALIBRATE):
        row(f"charrnn {' '.join((*budget, *flags))}", charrnn_run(SHAKESPEARE, *budget, *flags))
    if WIKI.exists() and WIKI_TEST.exists():
        for flags in (CHAR, (*CHAR, *NO_CALIBRATE)):
            args = ("--time-budget", "150s", *flags)
            name = f"charrnn WikiText-2 valid {' '.join(args)}"
            row(name, charrnn_run(WIKI, *args, test=WIKI_TEST))
    with tempfile.TemporaryDirectory() as tmp:
        for name, corpus in build(Path(tmp)).items():
            for flags in ((), NO_CALIBRATE):
                args = ("--time-budget", "60s", *flags)
                row(f"charrnn {name} {' '.join(args)}", charrnn_run(corpus, *args))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.defaults",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--only", nargs="*", default=None, choices=ROWS)
    which = set(ap.parse_args(argv).only or ROWS)
    if not SHAKESPEARE.exists():
        sys.exit(f"needs {SHAKESPEARE}")
    info = describe(torch.device("cpu"))
    for k, v in info.items():
        print(f"- {k}: {v}", flush=True)
    rows: list[tuple[str, dict]] = []

    def row(name: str, result: dict) -> None:
        rows.append((name, result))
        seconds, val, note = result["seconds"], result["val"], result["note"]
        print(f"{name:<42} {seconds:6.0f} s  {val:.3f} nats/char  ({note})", flush=True)

    budget = ("--time-budget", "150s", "--val-fraction", "0.1")
    words = ("--level", "word", "--unit", "line", "--time-budget", "14m")
    wiki = WIKI
    if "gpt" in which:
        row("nanoGPT CPU recipe (re-implemented)", gpt_reference())
    if "lstm" in which:
        row("plain 1x512 LSTM, 140 s", lstm_reference())
    if "budget" in which:
        row("charrnn --time-budget 150s", charrnn_run(SHAKESPEARE, *budget))
    if "noflags" in which:
        row("charrnn, no flags", charrnn_run(SHAKESPEARE))
    if "other" in which:
        if wiki.exists():
            args = ("--level", "word", "--time-budget", "150s")
            row("charrnn WikiText-2 valid, word, 150 s", charrnn_run(wiki, *args))
        with tempfile.TemporaryDirectory() as tmp:
            german = german_prose(Path(tmp))
            if german is not None:
                row("charrnn German man pages, 150 s", charrnn_run(german, "--time-budget", "150s"))
    if "levels" in which:
        with tempfile.TemporaryDirectory() as tmp:
            corpora = [("tinyshakespeare", SHAKESPEARE, budget)]
            corpora.append(("WikiText-2 test", WIKI_TEST, budget[:2]))
            if wiki.exists():
                small = head_of(wiki, 250_000, Path(tmp))
                corpora.append(("WikiText-2 valid 250 KB", small, budget[:2]))
            corpora.append(("German man pages", german_prose(Path(tmp)), budget[:2]))
            for name, corpus, args in corpora:
                if corpus is not None and corpus.exists():
                    row(f"charrnn {name}, 150 s", charrnn_run(corpus, *args))
                    row(f"charrnn {name}, 150 s, chars", charrnn_run(corpus, *args, *CHAR))
    if "regularize" in which:
        with tempfile.TemporaryDirectory() as tmp:
            corpora = [("WikiText-2 test chars", WIKI_TEST)]
            if wiki.exists():
                corpora.append(("WikiText-2 valid 250 KB", head_of(wiki, 250_000, Path(tmp))))
            for name, corpus in corpora:
                if corpus.exists():
                    row(f"charrnn {name}, 150 s", charrnn_run(corpus, "--time-budget", "150s"))
                    light = charrnn_run(corpus, "--time-budget", "150s", *LIGHT)
                    row(f"charrnn {name}, 150 s, light", light)
        row("charrnn, no flags but light", charrnn_run(SHAKESPEARE, *LIGHT))
    if "small" in which:
        _small_rows(row)
    if "words" in which:
        row("charrnn WikiText-2 valid, words, 14 min", charrnn_run(wiki, *words))
        before = charrnn_run(wiki, *words, *BEFORE_29)
        row("charrnn WikiText-2 valid, words, 14 min, before 29", before)
    if "wordlevers" in which:
        for flags in WORD_LEVERS:
            name = f"charrnn WikiText-2 valid, words, 14 min, {' '.join(flags) or 'defaults'}"
            row(name, charrnn_run(wiki, *words, *flags))
    if "calibrate" in which:
        _calibrate_rows(row, budget)
    if "calibratewords" in which and wiki.exists():
        test = WIKI_TEST if WIKI_TEST.exists() else None
        for flags in ((), NO_CALIBRATE):
            name = f"charrnn WikiText-2 valid, words, 14 min {' '.join(flags)}"
            row(name, charrnn_run(wiki, *words, *flags, test=test))
    if "precision" in which:
        for level in ((), CHAR):
            for flags in ((), ("--precision", "fp32")):
                args = (*budget, *level, *flags)
                row(f"charrnn {' '.join(args)}", charrnn_run(SHAKESPEARE, *args))
    if "precision15" in which:
        row("charrnn, no flags", charrnn_run(SHAKESPEARE))
        row("charrnn --precision fp32", charrnn_run(SHAKESPEARE, "--precision", "fp32"))
    if "sweep" in which:
        for layers, hidden, lr, batch, seq_len in SWEEP:
            name = f"sweep {layers}x{hidden} lr {lr:g} B{batch} T{seq_len}"
            row(name, sweep_run(layers, hidden, lr, batch, seq_len))
    out = ROOT / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"charrnn defaults benchmark, {time.strftime('%Y-%m-%d')}", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += ["", "| run | wall s | val nats/char | note |", "| --- | ---: | ---: | --- |"]
    lines += [f"| {n} | {r['seconds']:.0f} | {r['val']:.3f} | {r['note']} |" for n, r in rows]
    (out / "defaults.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "defaults.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
