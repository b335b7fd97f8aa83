"""`charrnn score --jsonl` as a filter over a large file, against batched scoring of the same lines.

    python -m benchmarks.filter              # a 100 MB file (tinyshakespeare's lines, repeated)
    python -m benchmarks.filter --mb 10      # a quick run

Trains a small char model (--hidden, --seconds) unless --run names one, builds the file in a
temporary folder (deleted at the end), then runs each side in a child process of its own and
reports lines per second (wall clock) and the child's peak resident memory:

    jsonl      `python -m charrnn score -f FILE --jsonl > /dev/null`: lines read at most 1 MiB
               at a time, each read's lines scored as one batch, written as they are scored
    batched    the same lines read whole into a list and scored by one `Model.score` call (the
               library's batching: sorted by length, padded, 16k tokens a batch), results
               kept: what `score --file FILE --json` did before it streamed
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import machine

ROOT = Path(__file__).resolve().parents[1]
SHARED = next(
    (p / "shared" / "corpora" for p in ROOT.parents if (p / "shared" / "corpora").is_dir()),
    ROOT.parent / "shared" / "corpora",
)
BATCHED = """
import sys, torch
torch.set_num_threads(1)
from charrnn.api import load
model = load(sys.argv[1])
with open(sys.argv[2], encoding="utf-8") as f:
    lines = [line for line in f.read().split("\\n") if line.strip()]
scores = model.score(lines)
print(len(scores))
"""


def build_file(mb: float, folder: Path) -> tuple[Path, int]:
    """tinyshakespeare's non-blank lines repeated to ``mb`` megabytes; the file and its lines."""
    lines = [ln for ln in (SHARED / "tinyshakespeare.txt").read_text().splitlines() if ln.strip()]
    block = ("\n".join(lines) + "\n").encode("utf-8")
    path, written, n = folder / f"lines-{mb:g}MB.txt", 0, 0
    with path.open("wb") as f:
        while written < mb * 1e6:
            f.write(block)
            written, n = written + len(block), n + len(lines)
    return path, n


def child(cmd: list[str], stdout: int | None = subprocess.DEVNULL) -> tuple[float, float, str]:
    """Wall seconds, peak resident MB and stdout of a child process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=stdout, env=env, text=True)
    text = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{cmd} failed with {proc.returncode}")
    return seconds, usage.ru_maxrss / 1024, text


def train_small(folder: Path, hidden: int, seconds: float) -> Path:
    from charrnn.api import train

    model = train(
        SHARED / "tinyshakespeare.txt",
        run="filter-bench",
        checkpoints=folder / "runs",
        level="char",
        hidden=hidden,
        embed=min(64, hidden),
        time_budget=seconds,
        device="cpu",
        stop_fit=0,
    )
    return model.folder


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.filter", description=__doc__)
    p.add_argument("--mb", type=float, default=100.0)
    p.add_argument("--run", type=Path, help="a run folder (default: train a small one)")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--seconds", type=float, default=60.0, help="training time of the small run")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    info = machine.describe(torch.device("cpu"))
    with tempfile.TemporaryDirectory(prefix="charrnn-filter-") as tmp:
        work = Path(tmp)
        os.environ["CHARRNN_CACHE"] = str(work / "cache")
        run = args.run or train_small(work, args.hidden, args.seconds)
        path, n_lines = build_file(args.mb, work)
        print(f"... {path.stat().st_size / 1e6:.0f} MB, {n_lines:,} lines", file=sys.stderr)
        cmd = [sys.executable, "-m", "charrnn", "score", "-f", str(path), "--jsonl", "-c"]
        jsonl = child([*cmd, str(run)])
        batched = child([sys.executable, "-c", BATCHED, str(run), str(path)], subprocess.PIPE)
        assert int(batched[2]) == n_lines
    rows = {
        name: {"seconds": s, "lines_per_s": n_lines / s, "peak_rss_mb": rss}
        for name, (s, rss, _) in (("jsonl", jsonl), ("batched", batched))
    }
    ratio = rows["jsonl"]["lines_per_s"] / rows["batched"]["lines_per_s"]
    payload = {"info": info, "mb": args.mb, "lines": n_lines, "rows": rows, "ratio": ratio}
    print(json.dumps(payload, indent=2))
    out = ROOT / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"filter-{stamp}.json").write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
