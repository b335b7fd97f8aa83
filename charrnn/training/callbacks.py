"""What the training loop reports: the hooks it calls and the figures it hands them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charrnn.stopfit import (
    StopFit,
)


@dataclass
class StepStats:
    step: int
    loss: float  # nats/token, mean since the last report
    lr: float
    tokens_per_s: float
    elapsed: float
    progress: float | None  # 0..1 when the end is known
    epoch: int


@dataclass
class EvalStats:
    step: int
    loss: float  # nats/token
    bpc: float  # bits per character
    tokens: int
    best: bool
    full: bool  # the whole validation split, not a sample of it
    bpb: float = math.nan  # bits per UTF-8 byte

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 700.0))


@dataclass
class TrainResult:
    run: Path
    steps: int
    tokens: int
    elapsed: float
    tokens_per_s: float
    stopped_by: str
    best_step: int
    val: EvalStats | None  # the kept model on the whole validation split
    train_loss: float
    stop_fit: StopFit | None = None  # sample lengths per stopping rule vs the validation units


class Callbacks:
    """Hooks the training loop calls; override what you need."""

    def on_start(self, info: dict[str, Any]) -> None: ...
    def on_step(self, stats: StepStats) -> None: ...
    def on_eval(self, stats: EvalStats) -> None: ...
    def on_sample(self, step: int, text: str) -> None: ...
    def on_checkpoint(self, path: Path) -> None: ...
    def stop_requested(self) -> bool:
        return False


class Muted(Callbacks):
    """A rank other than 0 reports nothing, but may still ask every rank to stop."""

    def __init__(self, inner: Callbacks | None):
        self.inner = inner

    def stop_requested(self) -> bool:
        return self.inner is not None and self.inner.stop_requested()
