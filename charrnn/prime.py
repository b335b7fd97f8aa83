"""Reading text into the recurrent state: a prompt in one batched forward, not token by token.

``model.features`` reads a whole sequence in one call of the fused recurrent stack: one
matrix product for the input side of every step, then the recurrence inside the kernel (cuDNN
on a GPU), many times faster than a call per token (docs/sampling.md has the figures). A long
text is read in chunks of ``CHUNK`` tokens, the state carried from one to the next, so memory
stays bounded whatever its length.

    tokens   <sos> t1 t2 ... | t4096 ... | ...      chunks, read one after another
    state    s0 ------------> s ---------> s ...    (rows, H) per layer, carried
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from charrnn.model import RNNLM, State
from charrnn.tokenizers import SOS

CHUNK = 4096  # tokens read per call of the recurrent stack


@dataclass
class Primed:
    """Where the net stands after reading some text, for ``rows`` rows alike."""

    h: Tensor  # (rows, H) features after the last token read
    state: State  # each (layers, rows, H)
    offset: int  # the next token's offset in its unit (tokens read since the last <sos>)

    def rows(self, n: int) -> Primed:
        """The same place for n rows (from one)."""
        if self.h.shape[0] == n:
            return self
        state = tuple(s.expand(-1, n, -1).contiguous() for s in self.state)
        return Primed(self.h.expand(n, -1).contiguous(), state, self.offset)


@torch.inference_mode()
def read(
    model: RNNLM,
    ids: list[int],
    rows: int = 1,
    start: Primed | None = None,
    chunk: int = CHUNK,
) -> Primed:
    """The net after reading ``ids`` (from the start of a unit, or from ``start``), for
    ``rows`` rows alike. A prompt that fits one chunk is read once per row, as sampling has
    always read it; a longer one once, then shared."""
    dev = next(model.parameters()).device
    if start is None and len(ids) <= chunk:
        h, state = model.features(torch.tensor([ids] * rows, device=dev))  # (rows, P, H)
        return Primed(h[:, -1], state, _offset_after(ids, 0))
    if not ids:
        assert start is not None, "nothing to read and nowhere to start"
        return start.rows(rows)
    state = None if start is None else start.rows(1).state
    offset = 0 if start is None else start.offset
    for i in range(0, len(ids), chunk):
        piece = ids[i : i + chunk]
        x = torch.tensor([piece], device=dev)  # (1, C)
        h, state = model.features(x, state, _length_ids(model, piece, offset, dev))
        offset = _offset_after(piece, offset)
    assert state is not None
    return Primed(h[:, -1], state, offset).rows(rows)


def _offsets(ids: list[int], offset: int) -> np.ndarray:
    """Each token's offset in its unit: counted from the last <sos> before it, else on from
    ``offset``. (C,)"""
    t = np.arange(len(ids))
    sos = np.where(np.asarray(ids) == SOS, t, -1)
    last = np.maximum.accumulate(sos)
    return np.where(last >= 0, t - last, offset + t)


def _offset_after(ids: list[int], offset: int) -> int:
    return int(_offsets(ids, offset)[-1]) + 1 if ids else offset


def _length_ids(model: RNNLM, ids: list[int], offset: int, dev: torch.device) -> Tensor | None:
    """The "remaining unknown" length inputs of a chunk that may continue a unit. (1, C)"""
    if not model.config.stop_heads:
        return None
    return torch.as_tensor(model.unknown_at(_offsets(ids, offset)), device=dev)[None]
