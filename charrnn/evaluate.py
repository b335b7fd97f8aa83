"""Reading a split as training reads it, and the loss of a model on it: nats per token, bits per
character and per byte. Training, the calibrations and the stop fit all read through here."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from charrnn.data import (
    Batch,
    LengthPlan,
    Split,
    StreamBatches,
    reading_streams,
    share,
    windows_to_read,
)
from charrnn.device import to_device
from charrnn.model import RNNLM, detach_state
from charrnn.tokenizers import PAD
from charrnn.tokenloss import cross_entropy_sum

LOG2 = math.log(2.0)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """The model in eval mode (no dropout) for the duration, then as it was."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def read_windows(
    model: RNNLM,
    split: Split,
    seq_len: int,
    batch_size: int = 64,
    max_tokens: int = 0,
    device: torch.device | None = None,
    part: tuple[int, int] = (0, 1),
    autocast: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext,
) -> Iterator[tuple[Batch, Tensor]]:
    """A split read as training reads it, window by window: up to ``batch_size`` streams, the
    state carried across windows, the remaining length unknown. Yields each window's batch
    and the model's features (B, T, H) for it, computed under ``autocast``, in eval mode.

    ``max_tokens`` > 0 reads only the first windows of every stream (a spread-out sample).
    ``part`` = (rank, world) reads only that rank's block of the streams.
    """
    device = device or next(model.parameters()).device
    streams = reading_streams(split, batch_size, seq_len)
    rows = share(streams, *part)
    hidden = LengthPlan(model.edges, model.unknown_length, p_hidden=1.0)  # offsets, no lengths
    plan = hidden if model.config.stop_heads else None
    batches = StreamBatches(split, streams, seq_len, plan, rows=rows)
    n_windows = windows_to_read(batches, streams, max_tokens) if rows else 0
    state = None
    with eval_mode(model):
        for k in range(n_windows):
            b = batches.window(k)
            arrays = [b.x] if b.remaining is None else [b.x, b.remaining]
            x, *remaining = to_device(arrays, device)  # (B, T) each
            with autocast():
                h, state = model.features(x, state, *remaining)  # (B, T, H)
            state = detach_state(state)  # a reader that learns (dynamic) steps window by window
            yield b, h


def window_count(split: Split, seq_len: int, batch_size: int = 64) -> int:
    """How many windows ``read_windows`` reads of a whole split."""
    streams = reading_streams(split, batch_size, seq_len)
    return -(-((len(split) - 1) // streams) // seq_len)


def window_loss(
    model: RNNLM,
    b: Batch,
    h: Tensor,
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext,
) -> tuple[Tensor, int]:
    """The summed token loss (nats, float32, on the device) of one window read by
    ``read_windows``, and the tokens it counts (targets other than <sos>)."""
    with autocast():
        logits = model.token_logits(h)  # (B, T, V)
    (y,) = to_device([b.y], device)
    loss = cross_entropy_sum(logits.flatten(0, 1), y.flatten())
    return loss, int(np.count_nonzero(b.y != PAD))


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
    """Mean token loss (nats) over a split, with the length unknown, and the tokens counted
    (``read_windows`` says how the split is read)."""
    device = device or next(model.parameters()).device
    total = torch.zeros((), dtype=torch.float64, device=device)  # summed on the device: one sync
    count = 0
    windows = read_windows(model, split, seq_len, batch_size, max_tokens, device, part, autocast)
    for b, h in windows:
        loss, n = window_loss(model, b, h, device, autocast)
        total += loss.double()
        count += n
    return float(total) / max(1, count), count


def bits_per_char(loss: float, split: Split) -> float:
    """Nats per token -> bits per character of the split's text."""
    targets = len(split) - len(split.unit_starts)  # <sos> targets are not counted
    return loss * targets / max(1, split.n_chars) / LOG2


def bits_per_byte(loss: float, split: Split) -> float:
    """Nats per token -> bits per UTF-8 byte of the split's text."""
    return bits_per_char(loss, split) * split.n_chars / max(1, split.n_bytes)
