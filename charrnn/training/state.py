"""The counters of the training loop, saved with every resumable checkpoint."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from charrnn.checkpoint.records import LOOP


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
    last_eval_progress: float = 0.0  # the run's progress (0..1) at that evaluation
    history: list[float] = field(default_factory=list)
    # decided once the pace is known (see regularization); None until then
    passes: float | None = None  # passes over the training text the run was expected to make
    pressure: float | None = None  # passes x recurrent parameters per training token
    weight_decay: float | None = None
    min_lr_ratio: float | None = None
    weight_drop: float | None = None  # None also in a checkpoint from before the rule
    dropout: float | None = None  # None also in a checkpoint from before the rule
    row_pressure: float | None = None  # passes x embedding and output parameters per token
    row_decay: float | None = None
    dropout_raised: float = 0.0  # added to the dropout by evaluations no better than the best

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["best_loss"] = None if math.isinf(self.best_loss) else self.best_loss
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoopState:
        """The loop state a checkpoint recorded, each field of the kind and range
        ``records.LOOP`` says; ValueError for a field that is unknown or wrong."""
        bad = sorted(set(d) - set(LOOP)) or [k for k, v in d.items() if LOOP[k].problem(v)]
        if bad:
            raise ValueError(f"loop state fields have the wrong types: {', '.join(bad)}")
        d = {k: LOOP[k].convert(v) for k, v in d.items()}
        d["best_loss"] = math.inf if d.get("best_loss") is None else d["best_loss"]
        return cls(**d)
