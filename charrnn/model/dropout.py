"""Dropout, with masks drawn from random bytes on the CPU.

PyTorch's CPU dropout draws one Bernoulli sample per element; a byte of a random 64-bit word
compared with the rate costs far less (``python -m benchmarks.dropout``), and a run that
decides to drop draws two or three masks every step. On the CPU the rate is rounded to 1/256;
elsewhere F.dropout, whose fused kernel is fast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """``x`` with each element zeroed with probability ``p`` (as rounded) and the rest
    scaled to keep the mean; ``x`` itself outside training or at p = 0."""
    if not training or p <= 0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    dropped = round(p * 256)  # of 256 byte values
    n = x.numel()  # bytes, eight to a random 64-bit word (one draw each)
    words = torch.empty(-(-n // 8), dtype=torch.int64).random_(-(2**63), 2**63 - 1)
    keep = words.view(torch.uint8)[:n].view(x.shape) >= dropped
    return x * keep * (256 / (256 - dropped))
