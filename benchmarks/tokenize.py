"""Tokenization speed and memory at every level, next to reference encoders.

    python -m benchmarks.tokenize              # a 1 GB corpus (about 10 minutes on 2 cores)
    python -m benchmarks.tokenize --mb 100     # a quick run

Builds a corpus of the given size by repeating a shared corpus (tinyshakespeare by default)
into a temporary folder, then runs each encoder in a child process of its own and prints, for
each, MB/s of corpus text (wall clock) and the child's peak resident memory:

    ours       charrnn's dataset build, end to end: reading the file, the vocabulary (or the
               sentencepiece training on its sample), encoding, the token file and unit index
               written to disk. The child imports what `charrnn tokenize` imports (PyTorch
               included), so the memory is the command's.
    reference  python list comprehension (nanoGPT's prepare.py), a numpy lookup table, a
               regex word split alone, and sentencepiece's own batched encode of the same text
               with the same model, to lists of ints and (sentencepiece 0.2.2 and later) to
               numpy arrays. References encode only: their vocabulary is given.

Ratios compare figures taken in the same run, on the same file. The temporary folder is
deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the shared corpora sit beside the repository (or beside the folder of its worktrees)
SHARED = next(
    (p / "shared" / "corpora" for p in ROOT.parents if (p / "shared" / "corpora").is_dir()),
    ROOT.parent / "shared" / "corpora",
)
CHUNK = 1 << 22  # bytes of text per step in the reference encoders


def build_corpus(source: Path, mb: float, folder: Path) -> Path:
    """``source`` repeated to ``mb`` megabytes (whole copies, so the text stays valid)."""
    data = source.read_bytes()
    if not data.endswith(b"\n"):
        data += b"\n"
    path = folder / f"{source.stem}-{mb:g}MB.txt"
    target = int(mb * 1e6)
    with path.open("wb") as f:
        written = 0
        while written < target:
            f.write(data)
            written += len(data)
    if hasattr(os, "sync"):
        os.sync()  # the first encoder timed must not share the machine with the write-back
    return path


# -- what each child runs (the code is passed to `python -c`) --------------------------------

_PRELUDE = """
import json, resource, sys, time
from pathlib import Path
corpus, out, level = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
def done(t0, c0, **extra):
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"wall": wall, "cpu": cpu, "rss": rss, **extra}))
def chunks():
    from charrnn.text import iter_text
    yield from iter_text(corpus, chunk_bytes=CHUNK)
""".replace("CHUNK", str(CHUNK))

_OURS = """
import charrnn.cli  # what `charrnn tokenize` loads
from charrnn.config import DataConfig, Level, TokenizerConfig
from charrnn.data import build_dataset
config = DataConfig(TokenizerConfig(level=Level(level), vocab_size=int(sys.argv[4])))
t0, c0 = time.perf_counter(), time.process_time()
ds = build_dataset(corpus, config, out)
done(t0, c0, tokens=ds.meta["n_tokens"], vocab=ds.meta["vocab_size"],
     sample=ds.meta.get("tokenizer_sample_chars"))
"""

_LISTCOMP = """
import numpy as np
chars = sorted(set(next(chunks())))  # the vocabulary is given
stoi = {c: i for i, c in enumerate(chars)}
t0, c0 = time.perf_counter(), time.process_time()
with open(out, "wb") as f:
    for text in chunks():
        ids = [stoi.get(c, 0) for c in text]
        np.array(ids, dtype=np.uint16).tofile(f)
done(t0, c0)
"""

_NUMPY_LUT = """
import numpy as np
lut = np.zeros(0x110000, dtype=np.uint16)
for i, c in enumerate(sorted(set(next(chunks())))):
    lut[ord(c)] = i
t0, c0 = time.perf_counter(), time.process_time()
with open(out, "wb") as f:
    for text in chunks():
        lut[np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)].tofile(f)
done(t0, c0)
"""

_REGEX_WORDS = """
import re
words = re.compile(r"\\w+|[^\\w\\s]")
t0, c0 = time.perf_counter(), time.process_time()
n = 0
for text in chunks():
    n += len(words.findall(text))
done(t0, c0, tokens=n)
"""

_SP_BATCHED = """
import sentencepiece as spm
sp = spm.SentencePieceProcessor(model_file=sys.argv[4])
t0, c0 = time.perf_counter(), time.process_time()
n = 0
for text in chunks():
    n += sum(map(len, sp.encode([l for l in text.split("\\n") if l], out_type=int)))
done(t0, c0, tokens=n)
"""

_SP_NUMPY = _SP_BATCHED.replace("out_type=int", 'out_type="numpy"')  # sentencepiece >= 0.2.2


def run_child(code: str, corpus: Path, out: Path, level: str, extra: str = "") -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-c", _PRELUDE + code, str(corpus), str(out), level, extra]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{level} child failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the table -------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = f", load {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return f"{cpu}, {os.cpu_count()} cores{load}"


def _sp_version() -> tuple[int, ...]:
    import sentencepiece

    return tuple(int(x) for x in sentencepiece.__version__.split(".")[:3])


def mbs(r: dict, size: int) -> float:
    return size / r["wall"] / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=1000, help="corpus size in MB (default 1000)")
    ap.add_argument("--corpus", type=Path, default=SHARED / "tinyshakespeare.txt")
    ap.add_argument("--levels", default="char,word,bpe,unigram")
    ap.add_argument("--vocab-size", type=int, default=4000, help="subword vocabulary")
    ap.add_argument("--tmp", type=Path, default=None, help="where the corpus is built")
    args = ap.parse_args()
    if not args.corpus.exists():
        raise SystemExit(f"corpus not found: {args.corpus}")
    folder = Path(tempfile.mkdtemp(prefix="charrnn-bench-", dir=args.tmp))
    try:
        corpus = build_corpus(args.corpus, args.mb, folder)
        size = corpus.stat().st_size
        print(f"{size / 1e6:,.0f} MB corpus ({args.corpus.name} repeated) on {machine()}\n")
        print("| encoder | MB/s | peak RSS (MiB) | charrnn / this |")
        print("| --- | ---: | ---: | ---: |")
        for level in args.levels.split(","):
            _bench_level(level, corpus, folder, size, args.vocab_size)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _bench_level(level: str, corpus: Path, folder: Path, size: int, vocab: int) -> None:
    out = folder / f"ds-{level}"
    ours = run_child(_OURS, corpus, out, level, str(vocab))
    refs: list[tuple[str, dict]] = []
    scratch = folder / "reference.bin"
    if level == "char":
        refs.append(("python list comprehension", run_child(_LISTCOMP, corpus, scratch, level)))
        refs.append(("numpy lookup table", run_child(_NUMPY_LUT, corpus, scratch, level)))
    elif level == "word":
        refs.append(("regex word split alone", run_child(_REGEX_WORDS, corpus, scratch, level)))
    else:
        model = str(out / "tokenizer.model")  # the model charrnn trained, on the same text
        refs.append(
            ("sentencepiece batched encode", run_child(_SP_BATCHED, corpus, out, level, model))
        )
        if _sp_version() >= (0, 2, 2):
            sp_numpy = run_child(_SP_NUMPY, corpus, out, level, model)
            refs.append(("sentencepiece batched encode, numpy output", sp_numpy))
    shutil.rmtree(out, ignore_errors=True)
    scratch.unlink(missing_ok=True)
    note = f"{ours['tokens']:,} tokens, vocabulary {ours['vocab']:,}"
    if ours.get("sample"):
        note += f", tokenizer trained on {ours['sample'] / 1e6:.0f}M characters"
    print(
        f"| {level}: **charrnn** ({note}) | {mbs(ours, size):,.1f} | {ours['rss'] / 2**20:,.0f} | |"
    )
    for name, r in refs:
        ratio = mbs(ours, size) / mbs(r, size)
        print(f"| {level}: {name} | {mbs(r, size):,.1f} | {r['rss'] / 2**20:,.0f} | {ratio:.2f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
