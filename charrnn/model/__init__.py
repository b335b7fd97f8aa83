"""The recurrent language model: RNNLM, its length buckets, and the one-step path for sampling.

rnnlm.py     RNNLM: embedding, fused recurrent stack, token / halt / length heads
dropout.py   dropout with masks drawn from random bytes on the CPU
lengths.py   how remaining lengths are bucketed, read and predicted
stepper.py   one token per stream through the fused cell kernels (sampling)
"""

from __future__ import annotations

from charrnn.model.cells import CELLS, State
from charrnn.model.rnnlm import (
    LENGTH_INPUT_SCALE,
    RNNLM,
    count_parameters,
    detach_state,
    model_shapes,
)
from charrnn.model.stepper import Stepper

__all__ = [
    "CELLS",
    "LENGTH_INPUT_SCALE",
    "RNNLM",
    "State",
    "Stepper",
    "count_parameters",
    "detach_state",
    "model_shapes",
]
