"""``python -m benchmarks.startup [--rounds 5]``: how soon a command shows something.

    import torch         the floor: every command but --version imports it
    --version            answers without torch
    sample, 1st char     `charrnn sample` on a trained run, to the first byte of its text
    train, 1st line      `charrnn train shakespeare`, to the line that names the run
    train, 1st step      the same, to the progress bar's first step (run on a terminal)

Each command runs as a user starts it, in a new process, on a pseudo-terminal (so that rich
draws the progress bar), with the corpus's encoding cached as after a first run. Figures are
the median of the rounds, and each is also given as a multiple of `import torch` measured in
the same rounds, which is what a busy machine slows alike.
"""

from __future__ import annotations

import argparse
import os
import pty
import select
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["train", "shakespeare", "--max-steps", "20", "--stop-fit", "0", "--sample-every", "0"]


def until(args: list[str], marker: bytes, cwd: Path, timeout: float = 600.0) -> float:
    """Seconds from starting ``args`` until ``marker`` shows on its terminal; the process is
    then ended."""
    main, child = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100", "TERM": "xterm"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=child, stderr=child, stdin=child)
    os.close(child)
    seen = b""
    try:
        while marker not in seen:
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError(f"{marker!r} not seen from {args}: {seen[-500:]!r}")
            ready, _, _ = select.select([main], [], [], 0.05)
            if ready:
                try:
                    seen += os.read(main, 65536)
                except OSError:  # the process closed its terminal
                    if proc.poll() is not None and marker not in seen:
                        raise RuntimeError(f"{args} ended without {marker!r}: {seen!r}") from None
        return time.perf_counter() - t0
    finally:
        proc.kill()
        proc.wait()
        os.close(main)


def charrnn(*args: str) -> list[str]:
    return [sys.executable, "-m", "charrnn", *args]


def measure(rounds: int, work: Path) -> dict[str, list[float]]:
    subprocess.run(  # the run `sample` reads, and the cached encoding `train` reuses
        charrnn(*TRAIN, "--hidden", "64", "--max-steps", "5"),
        cwd=work,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
        capture_output=True,
    )
    sample = ["sample", "--max-tokens", "50", "--seed", "1", "--prompt", "R"]
    figures: dict[str, list[float]] = {}
    for _ in range(rounds):
        rows = {
            "import torch": until([sys.executable, "-c", "import torch; print('ok')"], b"ok", work),
            "charrnn --version": until(charrnn("--version"), b"charrnn", work),
            "charrnn sample, 1st character": until(charrnn(*sample), b"R", work),
            "charrnn train, 1st line": until(charrnn(*TRAIN), b"run ", work),
            "charrnn train, 1st step": until(charrnn(*TRAIN), b"step 1", work),
        }
        for k, v in rows.items():
            figures.setdefault(k, []).append(v)
    return figures


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    import torch

    from benchmarks.machine import describe

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CHARRNN_CACHE"] = str(Path(tmp) / "cache")
        figures = measure(args.rounds, Path(tmp))
    floor = statistics.median(figures["import torch"])
    for k, v in describe(torch.device("cpu")).items():
        print(f"- {k}: {v}")
    print()
    print("| to | seconds (median) | x `import torch` |")
    print("| --- | ---: | ---: |")
    for what, values in figures.items():
        s = statistics.median(values)
        print(f"| {what} | {s:.2f} | {s / floor:.2f} |")


if __name__ == "__main__":
    main()
