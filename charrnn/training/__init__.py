"""Training: truncated BPTT over parallel streams, as a function with callbacks.

run.py          train(): open or resume a run, build the model, hand over to the loop
resume.py       the job a resumed run recorded, what a resume may change, and its checks
loop.py         the loop: one optimizer step per window, evaluations, checkpoints
callbacks.py    the hooks the loop calls (progress bars live in the CLI) and its figures
calibrate.py    the start state and end calibration fitted on training text
distributed.py  several processes training one model (torchrun)
precision.py    mixed precision: bf16 on a CPU with bfloat16 arithmetic, bf16 or fp16 on a GPU
muon.py         Muon on the recurrent matrices, AdamW on the rest (--optimizer muon)
"""

from __future__ import annotations

from charrnn.training.callbacks import Callbacks, EvalStats, StepStats, TrainResult
from charrnn.training.run import train

__all__ = ["Callbacks", "EvalStats", "StepStats", "TrainResult", "train"]
