"""The counters of the training loop, saved with every resumable checkpoint."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class LoopState:
    step: int = 0
    epoch: int = 0
    window: int = 0
    tokens: int = 0
    elapsed: float = 0.0  # training seconds before this session
    best_loss: float = math.inf
    best_step: int = 0
    evals_since_best: int = 0
    last_eval_step: int = 0
    history: list[float] = field(default_factory=list)
    # decided once the pace is known (see regularization); None until then
    passes: float | None = None  # passes over the training text the run was expected to make
    pressure: float | None = None  # passes x recurrent parameters per training token
    weight_decay: float | None = None
    min_lr_ratio: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["best_loss"] = None if math.isinf(self.best_loss) else self.best_loss
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoopState:
        """The loop state a checkpoint recorded; ValueError if a field has the wrong type."""
        d = dict(d)
        d["best_loss"] = math.inf if d.get("best_loss") is None else d["best_loss"]
        loop = cls(**d)
        counts = (loop.step, loop.epoch, loop.window, loop.tokens, loop.best_step)
        counts += (loop.evals_since_best, loop.last_eval_step)
        reals = (loop.elapsed, loop.best_loss, *loop.history)
        decided = (loop.passes, loop.pressure, loop.weight_decay, loop.min_lr_ratio)
        reals += tuple(x for x in decided if x is not None)
        if not all(type(n) is int and n >= 0 for n in counts) or not all(
            type(x) in (int, float) for x in reals
        ):
            raise ValueError("loop state fields have the wrong types")
        return loop
