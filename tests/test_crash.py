"""Crash safety across real processes: kill -9 at random moments, Ctrl-C and SIGTERM, a locked
run, and resume that continues bit for bit.

Each charrnn process here runs ``python -m charrnn``: the Ctrl-C tests start it as
``sys.executable -m charrnn``, the kill test forks it from a server that has already imported
torch (tests/forkserver.py), so that twenty kills take seconds rather than minutes.
"""

from __future__ import annotations

import json
import random
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from charrnn.checkpoint import (
    BEST,
    LAST,
    LOCK,
    METRICS,
    RUN_JSON,
    STARTING,
    find_run,
    is_incomplete_run,
    load_run,
    load_tensors,
    read_meta,
)
from charrnn.config import TrainConfig
from charrnn.errors import CheckpointError
from charrnn.runs import STOPFIT
from charrnn.tokenizers import TOKENIZER_JSON
from tests.conftest import VERSES
from tests.forkserver import ForkServer, cli_env

N = 80  # steps of the reference run: a checkpoint every N / TrainConfig.evals = 10 steps
KILLS = 20
TINY = [
    *("--layers", "1", "--hidden", "32", "--embed", "16"),
    *("--batch-size", "4", "--seq-len", "16", "--sample-every", "0", "--device", "cpu"),
]
RUN_FILES = {RUN_JSON, TOKENIZER_JSON, BEST, LAST, METRICS, LOCK, STOPFIT, STARTING}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("crash")
    (folder / "verses.txt").write_text(VERSES * 20, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def server():
    fs = ForkServer()
    yield fs
    fs.close()


@pytest.fixture(scope="module")
def straight(server: ForkServer, work: Path) -> tuple[Path, float]:
    """The reference: N steps in one go, and how long that takes on this machine now."""
    r = server.run(train_args("straight"), work / "straight.log", work, env(work))
    assert r["rc"] == 0, (work / "straight.log").read_text()
    return work / "ck" / "straight", r["seconds"]


def env(work: Path) -> dict[str, str]:
    return {"CHARRNN_CACHE": str(work / "cache")}


def train_args(run: str, *extra: str) -> list[str]:
    return [
        *("train", "verses.txt", *TINY, "--max-steps", str(N)),
        *("--run", run, "--checkpoints", "ck", *extra),
    ]


# -- comparing runs -----------------------------------------------------------------------


def metrics(folder: Path) -> list[tuple]:
    """What a run logged, without the wall-clock fields."""
    keep = ("step", "loss", "lr", "val_loss", "final_val_loss")
    lines = (folder / METRICS).read_text().splitlines()
    return [tuple(json.loads(ln).get(k) for k in keep) for ln in lines]


def assert_same_run(got: Path, want: Path) -> None:
    """Bit-identical: weights, optimizer, hidden state, RNG, loop state, logged losses."""
    for name in (LAST, BEST):
        a, b = load_tensors(got / name), load_tensors(want / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}: {k} differs"
    loops = [read_meta(f / LAST)["loop"] for f in (got, want)]
    for loop in loops:
        loop.pop("elapsed")
    assert loops[0] == loops[1]
    assert metrics(got) == metrics(want)


# -- kill -9 ------------------------------------------------------------------------------


def check_after_kill(folder: Path, last_step: int) -> int:
    """Whatever the moment of the kill, the newest complete checkpoint loads."""
    if not folder.exists():
        return last_step
    names = {p.name for p in folder.iterdir()}
    temps = {n for n in names if n.startswith(".") and n.endswith(".tmp")}
    assert names - temps <= RUN_FILES, names
    for t in temps:  # a torn or unrenamed write is never taken for a checkpoint
        with pytest.raises(CheckpointError):
            find_run(folder / t)
    if not (folder / LAST).exists():
        assert is_incomplete_run(folder)  # killed before the first checkpoint
        return last_step
    last = load_run(folder, which="last")
    step = last.meta["loop"]["step"]
    assert step >= last_step and step % (N // TrainConfig().evals) == 0, (step, last_step)
    assert load_run(folder).model is not None  # best (or last), config and tokenizer agree
    return step


def test_kill_at_20_random_moments_then_resume_bit_for_bit(
    server: ForkServer, work: Path, straight: tuple[Path, float]
):
    straight, span = straight  # kills fall anywhere in the first 60% of a whole run's time
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    why = f"(kill seed {seed})"
    chain, kills, completed, last_step = 1, 0, 0, 0
    while kills < KILLS:
        run = f"killed-{chain}"
        folder = work / "ck" / run
        resume = ["--resume"] if (folder / LAST).exists() else []
        hook = None
        if kills % 7 == 3:  # now and then, die inside a checkpoint write, half of it written
            hook = {"die_in_write": rng.randint(1, 4)}
        log = work / f"kill-{kills}.log"
        r = server.run(
            train_args(run, *resume), log, work, env(work), rng.uniform(0, 0.6 * span), hook
        )
        if r["rc"] == 0:  # the run reached its end before the kill: compare, start another
            assert_same_run(folder, straight)
            chain, completed, last_step = chain + 1, completed + 1, 0
            continue
        assert r["rc"] == -signal.SIGKILL, f"{why} rc {r['rc']}: {log.read_text()[-2000:]}"
        kills += 1
        last_step = check_after_kill(folder, last_step)
    # The last run goes on to its end.
    folder = work / "ck" / f"killed-{chain}"
    resume = ["--resume"] if (folder / LAST).exists() else []
    log = work / "final.log"
    r = server.run(train_args(folder.name, *resume), log, work, env(work))
    assert r["rc"] == 0, f"{why} {log.read_text()[-2000:]}"
    assert_same_run(folder, straight)
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]  # swept on resume


# -- exact resume across processes --------------------------------------------------------


def test_stop_at_half_then_resume_equals_straight(
    server: ForkServer, work: Path, straight: tuple[Path, float]
):
    """N/2 steps of a run planned for N, a Ctrl-C, then --resume: the same run, bit for bit."""
    log = work / "half.log"
    hook = {"signal_at_step": N // 2, "signal": int(signal.SIGINT)}
    r = server.run(train_args("halves"), log, work, env(work), hook=hook)
    assert r["rc"] == 130, log.read_text()
    assert read_meta(work / "ck" / "halves" / LAST)["loop"]["step"] == N // 2
    command = resume_command(log.read_text())
    r = server.run(command, work / "resume.log", work, env(work))
    assert r["rc"] == 0, (work / "resume.log").read_text()
    assert_same_run(work / "ck" / "halves", straight[0])


def resume_command(output: str) -> list[str]:
    """The arguments of the one line that says how to resume."""
    lines = [ln for ln in output.splitlines() if "resume with:" in ln]
    assert len(lines) == 1, output
    words = shlex.split(lines[0].split("resume with:", 1)[1])
    assert words[:2] == ["charrnn", "train"] and "--resume" in words
    return words[1:]


# -- Ctrl-C, SIGTERM and the run lock, in real processes ----------------------------------


def wait_for(predicate, what: str, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"process ended before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def logged_steps(folder: Path) -> list[int]:
    path = folder / METRICS
    if not path.exists():
        return []
    return [json.loads(ln)["step"] for ln in path.read_text().splitlines() if ln.endswith("}")]


def test_ctrl_c_and_sigterm_save_and_say_how_to_resume_and_the_run_is_locked(
    server: ForkServer, work: Path
):
    procs = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        args = [*train_args(sig.name), "--max-steps", "100000", "--time-budget", "none"]
        procs[sig] = subprocess.Popen(
            [sys.executable, "-m", "charrnn", *args],
            cwd=work,
            env=cli_env(**env(work)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    try:
        for sig, proc in procs.items():
            folder = work / "ck" / sig.name
            wait_for(lambda f=folder: logged_steps(f), f"{sig.name} to train", proc)
        # While SIGTERM's run trains, a second training into its folder is refused.
        folder = work / "ck" / "SIGTERM"
        for extra in (["--resume"], []):
            log = work / "second.err"
            r = server.run(
                train_args("SIGTERM", *extra), work / "second.out", work, env(work), err=log
            )
            lines = log.read_text().strip().splitlines()
            assert r["rc"] == 1 and len(lines) == 1, lines
            assert lines[0].startswith("error:") and "SIGTERM" in lines[0]
            assert "being trained by pid" in lines[0] or "already exists" in lines[0]
        for sig, proc in procs.items():
            proc.send_signal(sig)
        outputs = {sig: proc.communicate(timeout=120) for sig, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for sig, proc in procs.items():
        _stdout, stderr = outputs[sig]
        assert proc.returncode == 130, stderr
        lines = [ln for ln in stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "Traceback" not in stderr, stderr
        step = int(re.search(r"interrupted at step (\d+)", lines[0]).group(1))
        folder = work / "ck" / sig.name
        assert read_meta(folder / LAST)["loop"]["step"] == step
        steps = logged_steps(folder)
        assert steps == sorted(steps)  # one writer: the log never interleaves
        # The printed command resumes the run where it stopped.
        log = work / f"resume-{sig.name}.log"
        r = server.run(
            [*resume_command(stderr), "--max-steps", str(step + 5)], log, work, env(work)
        )
        assert r["rc"] == 0, log.read_text()
        assert f"resumed at step {step}" in log.read_text()
        assert read_meta(folder / LAST)["loop"]["step"] == step + 5
