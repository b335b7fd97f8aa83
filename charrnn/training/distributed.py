"""Data-parallel training over several processes: torch.distributed, started by torchrun.

    torchrun --nproc-per-node 4 -m charrnn -- train corpus.txt --batch-size 64

Every process (a rank) runs the same ``train``. The B parallel streams are shared out in
contiguous blocks, so no two ranks ever read the same window:

    streams   0 .. 15 | 16 .. 31 | 32 .. 47 | 48 .. 63
    rank         0         1          2          3

DistributedDataParallel averages the gradients, and each rank divides its loss by its share
of the *global* count of targets, so one step is one optimizer step on the whole batch of
B streams, the update one process makes (up to float rounding). Rank 0 alone writes the
run folder and reports; the hidden state of all B streams is gathered to it, so checkpoints
are those of one process.
What depends on a clock or a signal (time budget, Ctrl-C) is agreed every step with an
all_reduce, so all ranks stop at the same step.

Without torchrun in the environment (WORLD_SIZE unset or 1), ``session`` yields
``Ranks(device)``, whose methods return their input: one process does no communication.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from charrnn.data import share
from charrnn.errors import ConfigError, TrainingError, first_line
from charrnn.model import RNNLM, State

T = TypeVar("T")
TIMEOUT_ENV = "CHARRNN_DIST_TIMEOUT"
DEFAULT_TIMEOUT = 300.0  # seconds a collective waits for a silent rank before giving up
PATIENT = timedelta(days=1)  # waiting for rank 0 to encode a corpus may take long


def world_size() -> int:
    """Processes torchrun started, from its environment (1 without torchrun)."""
    raw = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={raw!r} is not a number of processes") from None


def is_main_process() -> bool:
    """Whether this process reports: always, except ranks other than 0 under torchrun."""
    return world_size() <= 1 or os.environ.get("RANK", "0") == "0"


def launch(processes: int, args: Sequence[str] | None) -> int:
    """Run ``charrnn ARGS`` (without --processes) in ``processes`` processes on this machine
    through PyTorch's launcher, as ``torchrun --standalone`` would; its exit status."""
    if world_size() > 1:
        raise ConfigError("--processes starts processes of its own; under torchrun leave it out")
    if args is None:
        raise ConfigError("--processes needs the charrnn program (or torchrun) to start them")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc-per-node={processes}", "-m", "charrnn", *_without_processes(args)]
    return subprocess.run(command, check=False).returncode


def _without_processes(args: Sequence[str]) -> list[str]:
    kept, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == "--processes":
            skip = True
        elif not a.startswith("--processes="):
            kept.append(a)
    return kept


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes, and what they do together."""

    device: torch.device
    rank: int = 0
    world: int = 1
    local_rank: int = 0  # this process's place on its machine
    control: Any = None  # gloo group for host-side numbers; None: the default group
    patient: Any = None  # gloo group with a long timeout, for waiting on rank 0's data

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def streams(self, batch_size: int) -> range:
        """This rank's streams of the global batch; every rank must get as many."""
        if batch_size % self.world:
            lower = max(self.world, batch_size - batch_size % self.world)
            raise ConfigError(
                f"--batch-size {batch_size} cannot be shared by {self.world} processes: "
                f"each trains batch-size / processes streams; use e.g. --batch-size {lower}"
            )
        return share(batch_size, self.rank, self.world)

    # -- the model --

    def wrap(self, model: RNNLM) -> Callable[..., tuple[Tensor, State]]:
        """``model.features``; through DistributedDataParallel when there are several ranks,
        which broadcasts rank 0's weights now and averages the gradients in backward."""
        if self.world == 1:
            return model.features
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(_Features(model), device_ids=ids)

    def broadcast_module(self, model: nn.Module) -> None:
        """Give every rank rank 0's weights."""
        if self.world > 1:
            for t in model.state_dict().values():
                dist.broadcast(t, 0)

    def gather(self, state: State) -> State:
        """The hidden state of all B streams, (layers, B, H), from each rank's block."""
        if self.world == 1:
            return state
        full = []
        for s in state:  # (layers, B / world, H)
            parts = [torch.empty_like(s) for _ in range(self.world)]
            dist.all_gather(parts, s.contiguous())
            full.append(torch.cat(parts, dim=1))
        return tuple(full)

    def reseed(self, seed: int, step: int) -> None:
        """Different dropout noise on each rank (the same on all would correlate the streams)."""
        if self.world > 1:
            torch.manual_seed((seed * 1_000_003 + step) * 4099 + self.rank)

    # -- numbers every rank must agree on --

    def share_counts(self, counts: np.ndarray) -> np.ndarray:
        """This rank's part of the global counts (the whole batch's, divided by world), >= 1:
        a loss summed over a rank's targets and divided by it, then averaged over ranks by
        DDP, is the mean over the whole batch."""
        if self.world == 1:
            return np.maximum(counts, 1.0)
        total = self._host_reduce(counts, dist.ReduceOp.SUM)
        return np.maximum(total, 1.0) / self.world

    def average(self, t: Tensor) -> Tensor:
        """The mean of a tensor over ranks (on the training device)."""
        if self.world == 1:
            return t
        t = t.clone()
        dist.all_reduce(t)
        return t / self.world

    def all_true(self, flag: Tensor) -> bool:
        """Whether a (device) boolean holds on every rank."""
        if self.world == 1:
            return bool(flag)
        t = flag.to(torch.int32).reshape(1)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return bool(t.item())

    def pool(self, mean: float, count: int) -> tuple[float, int]:
        """A mean over every rank's items, from each rank's mean and count."""
        if self.world == 1:
            return mean, count
        total, n = self._host_reduce(np.array([mean * count, count]), dist.ReduceOp.SUM)
        return float(total) / max(1.0, float(n)), int(n)

    def maximum(self, value: float) -> float:
        if self.world == 1:
            return value
        return float(self._host_reduce(np.array([value]), dist.ReduceOp.MAX)[0])

    def agree(self, code: int, elapsed: float) -> tuple[int, float]:
        """Stop everywhere if one rank must stop (the highest code wins), and one clock for
        all: the largest elapsed time. Each rank's own clock would let them drift apart."""
        if self.world == 1:
            return code, elapsed
        c, e = self._host_reduce(np.array([code, elapsed]), dist.ReduceOp.MAX)
        return int(c), float(e)

    def from_main(self, text: str) -> str:
        """Rank 0's ``text`` on every rank."""
        if self.world == 1:
            return text
        data = torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8)
        size = torch.tensor([len(data)], dtype=torch.int64)
        dist.broadcast(size, 0, group=self.control)
        buf = data if self.is_main else torch.empty(int(size), dtype=torch.uint8)
        dist.broadcast(buf, 0, group=self.control)
        return buf.numpy().tobytes().decode("utf-8")

    def main_first(self, fn: Callable[[], T]) -> T:
        """``fn()`` on rank 0, then on the first rank of every other machine, then on the rest:
        what rank 0 builds (the encoded corpus in the cache) the others find, and no two
        ranks of one machine ever build the same thing at once."""
        if self.world == 1:
            return fn()
        result = fn() if self.is_main else None
        dist.barrier(group=self.patient)
        if self.local_rank == 0 and not self.is_main:
            result = fn()
        dist.barrier(group=self.patient)
        return fn() if self.local_rank != 0 else result  # type: ignore[return-value]

    def _host_reduce(self, values: np.ndarray, op: Any) -> np.ndarray:
        t = torch.from_numpy(np.asarray(values, dtype=np.float64).copy())
        dist.all_reduce(t, op=op, group=self.control)
        return t.numpy()


class _Features(nn.Module):
    """``model.features`` as ``forward``: DDP hooks into a module's forward."""

    def __init__(self, model: RNNLM):
        super().__init__()
        self.model = model

    def forward(
        self, tokens: Tensor, state: State | None = None, remaining: Tensor | None = None
    ) -> tuple[Tensor, State]:
        return self.model.features(tokens, state, remaining)


# -- starting and ending ------------------------------------------------------------------


@contextmanager
def session(device: torch.device) -> Iterator[Ranks]:
    """The ranks of this training job: joins torchrun's process group for its duration.

    gloo on CPU, nccl on CUDA (one GPU per process, cuda:LOCAL_RANK). A process group made
    by the caller is used as it is and left open. A lost or silent rank becomes one
    TrainingError on the others instead of a hang.
    """
    world = world_size()
    if world <= 1:
        yield Ranks(device)
        return
    env = os.environ
    local_rank = int(env.get("LOCAL_RANK", "0"))
    device, backend = _device_and_backend(device, local_rank)
    timeout = timedelta(seconds=_timeout())
    ours = not dist.is_initialized()
    if ours:
        if "RANK" not in env:
            raise ConfigError(
                "WORLD_SIZE is set but RANK is not: start several processes with torchrun"
            )
        dist.init_process_group(backend, timeout=timeout)
    rank = dist.get_rank()
    try:
        control = dist.new_group(backend="gloo", timeout=timeout) if backend != "gloo" else None
        patient = dist.new_group(backend="gloo", timeout=PATIENT)
        yield Ranks(device, rank, dist.get_world_size(), local_rank, control, patient)
    except RuntimeError as e:
        if _lost_contact(e):
            raise TrainingError(
                f"rank {rank} lost contact with the other training processes "
                f"({_detail(e)}); see their errors; the last checkpoint is kept"
            ) from None
        raise
    finally:
        if ours:
            with suppress(Exception):  # after a lost rank, tearing down may fail too
                dist.destroy_process_group()


def _device_and_backend(device: torch.device, local_rank: int) -> tuple[torch.device, str]:
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"process {local_rank} of this machine has no GPU of its own "
                f"({torch.cuda.device_count()} visible): start at most that many per machine"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        return device, "nccl"
    if device.type != "cpu":
        raise ConfigError(
            f"--device {device.type} cannot train in several processes; use cpu or cuda"
        )
    return device, "gloo"


def _timeout() -> float:
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(f"{TIMEOUT_ENV}={raw!r} must be a positive number of seconds")
    return seconds


_SIGNS = ("gloo", "nccl", "connection", "timed out", "timeout")


def _lost_contact(e: RuntimeError) -> bool:
    """Whether an error came from the communication between ranks (gloo raises plain
    RuntimeErrors; nccl raises torch.distributed.DistError)."""
    if isinstance(e, getattr(dist, "DistError", ())):
        return True
    text = str(e).lower()
    return any(s in text for s in _SIGNS)


def _detail(e: BaseException) -> str:
    """The useful part of a backend's message: no source path, the first sentence."""
    line = first_line(e, limit=None)
    line = re.sub(r"^\[[^\]]*\]\s*", "", line)
    return line.split(". ")[0][:200]
