"""One evaluation of a model on a split: mean token loss, bits per character and per byte."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from charrnn.data import (
    LengthPlan,
    Split,
    StreamBatches,
    reading_streams,
    windows_to_read,
)
from charrnn.device import to_device
from charrnn.model import RNNLM
from charrnn.tokenizers import PAD
from charrnn.training.distributed import share

LOG2 = math.log(2.0)


@torch.no_grad()
def evaluate(
    model: RNNLM,
    split: Split,
    seq_len: int,
    batch_size: int = 64,
    max_tokens: int = 0,
    device: torch.device | None = None,
    part: tuple[int, int] = (0, 1),
    autocast: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext,
) -> tuple[float, int]:
    """Mean token loss (nats) over a split, with the length unknown, and the tokens counted.

    ``max_tokens`` > 0 reads only the first windows of every stream (a spread-out sample).
    ``part`` = (rank, world) reads only that rank's block of the streams.
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    streams = reading_streams(split, batch_size, seq_len)
    rows = share(streams, *part)
    hidden = LengthPlan(model.edges, model.unknown_length, p_hidden=1.0)  # offsets, no lengths
    batches = StreamBatches(
        split, streams, seq_len, hidden if model.config.stop_heads else None, rows=rows
    )
    n_windows = windows_to_read(batches, streams, max_tokens) if rows else 0
    state = None
    total = torch.zeros((), dtype=torch.float64, device=device)  # summed on the device: one sync
    count = 0
    for k in range(n_windows):
        b = batches.window(k)
        arrays = [b.x, b.y] if b.remaining is None else [b.x, b.y, b.remaining]
        x, y, *remaining = to_device(arrays, device)  # (B, T) each
        with autocast():
            logits, state = model(x, state, *remaining)  # (B, T, V)
        loss = F.cross_entropy(
            logits.flatten(0, 1).float(), y.flatten(), ignore_index=PAD, reduction="sum"
        )
        total += loss.double()
        count += int(np.count_nonzero(b.y != PAD))
    model.train(was_training)
    return float(total) / max(1, count), count


def bits_per_char(loss: float, split: Split) -> float:
    """Nats per token -> bits per character of the split's text."""
    targets = len(split) - len(split.unit_starts)  # <sos> targets are not counted
    return loss * targets / max(1, split.n_chars) / LOG2


def bits_per_byte(loss: float, split: Split) -> float:
    """Nats per token -> bits per UTF-8 byte of the split's text."""
    return bits_per_char(loss, split) * split.n_chars / max(1, split.n_bytes)
