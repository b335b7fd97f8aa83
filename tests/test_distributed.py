"""Data-parallel training: torchrun with 2 CPU processes (gloo), against one process.

Process start-up costs ~2 s each (python + torch), so there are two 2-process runs: a
torchrun resume shared by several tests (module fixture), and a fresh pair of processes
started by hand for the killed-rank test (no torchrun agent to end the survivor for us).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from charrnn.checkpoint import LAST, MetricsLog, load_tensors, read_meta
from charrnn.cli import app
from charrnn.data import LengthPlan, StreamBatches, prepare, share
from charrnn.errors import ConfigError
from charrnn.evaluate import evaluate
from charrnn.model import RNNLM
from charrnn.model.lengths import bucket_edges
from charrnn.training.distributed import Ranks, _detail, _device_and_backend, is_main_process
from charrnn.training.run import fit_model_config, train
from tests.conftest import VERSES, tiny_job

ROOT = Path(__file__).resolve().parents[1]
# The CLI twin of tiny_job(): the same model and batch, and no clock in the learning rate.
TINY = "--cell lstm --layers 1 --hidden 32 --embed 16 --batch-size 4 --seq-len 16 --lr 1e-2"
# fp32: one process's sums and two processes' agree to float32 rounding (bf16 autocast
# rounds each matmul to its own blocking of the batch)
TINY_ARGS = [*TINY.split(), "--sample-every", "0", "--device", "cpu", "--time-budget", "none"]
TINY_ARGS += ["--precision", "fp32"]


def _env(cache: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(ROOT), CHARRNN_CACHE=str(cache), OMP_NUM_THREADS="1", **extra)
    return env


def documented_torchrun() -> list[str]:
    """The one-machine torchrun command of docs/distributed.md, word for word."""
    page = (ROOT / "docs" / "distributed.md").read_text(encoding="utf-8")
    lines = [ln.strip() for ln in page.splitlines() if "torchrun --standalone" in ln]
    command = shlex.split(lines[0])
    assert command[command.index("-m") + 1 :][:2] == ["charrnn", "train"], command
    return command


def torchrun(cwd: Path, corpus: str, name: str, *args: str) -> subprocess.CompletedProcess:
    """The documented command as a user types it (corpus.txt and NAME filled in; no "--"),
    with the test's own settings after it; torchrun from this Python's PyTorch."""
    words = {"corpus.txt": corpus, "NAME": name}
    command = [words.get(w, w) for w in documented_torchrun()]
    cmd = [sys.executable, "-m", "torch.distributed.run", *command[1:], *args]
    return subprocess.run(
        cmd, cwd=cwd, env=_env(cwd / "cache"), capture_output=True, text=True, timeout=300
    )


def _job(**overrides):
    return tiny_job(time_budget=None, precision="fp32", **overrides)


def _assert_same_run(a: Path, b: Path, tol: float = 1e-6) -> None:
    """Weights, optimizer moments and the hidden state of all streams agree."""
    ta, tb = load_tensors(a / LAST), load_tensors(b / LAST)
    names = [k for k in ta if not k.startswith("rng.")]
    assert sorted(names) == sorted(k for k in tb if not k.startswith("rng."))
    assert any(k.startswith("loop.state.") for k in names)
    for k in names:
        assert ta[k].shape == tb[k].shape, k
        diff = (ta[k].double() - tb[k].double()).abs().max().item()
        assert diff <= tol, f"{k} differs by {diff}"
    assert read_meta(a / LAST)["loop"]["step"] == read_meta(b / LAST)["loop"]["step"]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A run trained one step by one process, then one step by two: (corpus, folder, stdout).

    Its second step is one DDP step from the state a single process would have had."""
    where = tmp_path_factory.mktemp("ddp")
    corpus = where / "verses.txt"
    corpus.write_text(VERSES * 20, encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHARRNN_CACHE", str(where / "solo-cache"))
        train(corpus, _job(max_steps=1), run="ddp", root=where / "ck")
    args = ["--max-steps", "2", "--resume", "--checkpoints", "ck"]
    done = torchrun(where, str(corpus), "ddp", *TINY_ARGS, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    return corpus, where / "ck" / "ddp", done.stdout


# -- two processes against one ------------------------------------------------------------


def test_one_ddp_step_equals_one_single_process_step(ddp_run, tmp_path):
    corpus, folder, stdout = ddp_run
    assert "resumed at step 1" in stdout  # two processes took the one-process state
    solo = train(corpus, _job(max_steps=2), run="solo", root=tmp_path)
    _assert_same_run(folder, solo.run)
    # the gathered hidden state is (layers, B, H): the format of one process
    assert load_tensors(folder / LAST, "loop.state.")["0"].shape == (1, 4, 32)


def test_rank_0_alone_reports_and_writes(ddp_run):
    _, folder, stdout = ddp_run
    assert stdout.count("training summary") == 1
    records = MetricsLog(folder / "metrics.jsonl").read()
    assert [r["step"] for r in records if "val_loss" in r] == [1, 2]  # one line an evaluation


def test_sample_and_score_load_a_two_process_checkpoint(ddp_run):
    _, folder, _ = ddp_run
    runner = CliRunner()
    r = runner.invoke(app, ["sample", "-c", str(folder), "--max-tokens", "20", "--seed", "1"])
    assert r.exit_code == 0 and r.stdout.strip(), r.output
    r = runner.invoke(app, ["score", "-c", str(folder), "The cat sat.", "--json"])
    assert r.exit_code == 0 and '"log_prob"' in r.stdout, r.output


def test_one_process_resumes_a_two_process_run(ddp_run, tmp_path):
    corpus, folder, _ = ddp_run
    shutil.copytree(folder, tmp_path / "ddp")
    resumed = train(corpus, _job(max_steps=3), run="ddp", root=tmp_path, resume=True)
    assert resumed.steps == 3
    # the same schedule in one process: the learning rate decays over --max-steps
    train(corpus, _job(max_steps=2), run="solo", root=tmp_path)
    solo = train(corpus, _job(max_steps=3), run="solo", root=tmp_path, resume=True)
    _assert_same_run(resumed.run, solo.run, tol=1e-5)


# -- a lost rank --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_killing_one_rank_stops_the_other_with_a_clear_error(tmp_path):
    corpus = tmp_path / "verses.txt"
    corpus.write_text(VERSES * 20, encoding="utf-8")
    port = str(_free_port())
    args = [str(corpus), *TINY_ARGS, "--max-steps", "1000000", "--checkpoints", "ck"]
    procs = []
    for rank in (0, 1):
        env = _env(
            tmp_path / "cache",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port,
            WORLD_SIZE="2",
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            CHARRNN_DIST_TIMEOUT="30",
        )
        cmd = [sys.executable, "-m", "charrnn", "train", *args]
        procs.append(
            subprocess.Popen(
                cmd,
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        metrics = tmp_path / "ck" / "verses" / "metrics.jsonl"
        deadline = time.monotonic() + 120
        while not (metrics.exists() and "loss" in metrics.read_text()):
            assert procs[0].poll() is None and time.monotonic() < deadline, "no training step"
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGKILL)
        _, err = procs[0].communicate(timeout=120)  # hangs only if the loss goes unnoticed
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert procs[0].returncode == 1
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "rank 0 lost contact with the other training processes" in lines[0]
    run = tmp_path / "ck" / "verses"
    assert (run / LAST).exists() and (run / "run.json").exists()  # rank 0 made the run


# -- the pieces, in one process -----------------------------------------------------------


def test_shares_cover_the_streams_once():
    for n in (1, 4, 7, 64):
        for world in (1, 2, 3, 8):
            blocks = [share(n, r, world) for r in range(world)]
            assert [i for b in blocks for i in b] == list(range(n))
            assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


def test_the_batch_must_split_evenly():
    assert Ranks(torch.device("cpu"), rank=1, world=2).streams(8) == range(4, 8)
    with pytest.raises(ConfigError, match="--batch-size 10 cannot be shared by 4 processes"):
        Ranks(torch.device("cpu"), rank=0, world=4).streams(10)


def test_each_rank_reads_its_rows_of_the_global_window(corpus):
    ds, _ = prepare(corpus, tiny_job().data)
    train_split, _ = ds.split(0.1)
    plan = LengthPlan(bucket_edges(64), unknown=len(bucket_edges(64)), seed=3)
    whole = StreamBatches(train_split, 4, 16, plan)
    parts = [StreamBatches(train_split, 4, 16, plan, rows=share(4, r, 2)) for r in (0, 1)]
    for k in (0, 5):
        w = whole.window(k, epoch=1)
        ws = [p.window(k, epoch=1) for p in parts]
        for name in ("x", "y", "remaining", "halt", "length"):
            joined = np.concatenate([getattr(p, name) for p in ws])
            assert np.array_equal(joined, getattr(w, name)), name


def test_evaluation_split_over_ranks_pools_to_the_whole(corpus):
    ds, _ = prepare(corpus, tiny_job().data)
    train_split, val = ds.split(0.3)
    torch.manual_seed(0)
    model = RNNLM(fit_model_config(tiny_job().model, ds, train_split))
    whole, n = evaluate(model, val, 8, batch_size=5)
    parts = [evaluate(model, val, 8, batch_size=5, part=(r, 3)) for r in range(3)]
    assert sum(c for _, c in parts) == n
    pooled = sum(loss * c for loss, c in parts) / n
    assert pooled == pytest.approx(whole, rel=1e-6)  # float32 sums per window


def test_torchrun_environment(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert is_main_process()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert not is_main_process()
    monkeypatch.setenv("RANK", "0")
    assert is_main_process()


def test_devices_and_messages():
    assert _device_and_backend(torch.device("cpu"), 1) == (torch.device("cpu"), "gloo")
    with pytest.raises(ConfigError, match="use cpu or cuda"):
        _device_and_backend(torch.device("mps"), 0)
    gloo = RuntimeError(
        "[/src/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:34457: "
        "Connection reset by peer. This is typically caused by a remote worker hanging."
    )
    assert _detail(gloo) == "Read error [127.0.0.1]:34457: Connection reset by peer"


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="nccl needs two CUDA devices")
def test_two_gpus_with_nccl(tmp_path):
    corpus = tmp_path / "verses.txt"
    corpus.write_text(VERSES * 20, encoding="utf-8")
    args = [a if a != "cpu" else "cuda" for a in TINY_ARGS]
    done = torchrun(
        tmp_path, str(corpus), "verses", *args, "--max-steps", "3", "--checkpoints", "ck"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    r = CliRunner().invoke(app, ["sample", "-c", str(tmp_path / "ck" / "verses")])
    assert r.exit_code == 0 and r.stdout.strip(), r.output


def test_processes_starts_the_training_processes_itself(tmp_path):
    """`charrnn train ... --processes 2` is torchrun --standalone --nproc-per-node 2, started
    by charrnn: one run, trained by two processes (rank 0 alone reports)."""
    corpus = tmp_path / "verses.txt"
    corpus.write_text(VERSES * 20, encoding="utf-8")
    args = [str(corpus), *TINY_ARGS, "--max-steps", "3", "--name", "p2", "--processes", "2"]
    done = subprocess.run(
        [sys.executable, "-m", "charrnn", "train", *args, "--checkpoints", "ck"],
        cwd=tmp_path,
        env=_env(tmp_path / "cache"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("run p2") == 1 and "training summary" in done.stdout
    assert read_meta(tmp_path / "ck" / "p2" / LAST)["loop"]["step"] == 3
    r = CliRunner().invoke(app, ["train", str(corpus), "--processes", "2", "--max-steps", "1"])
    assert r.exit_code == 1 and "--processes needs the charrnn program" in r.output
