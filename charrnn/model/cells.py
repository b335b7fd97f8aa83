"""The recurrent cells, one registry entry each: the fused layer stack that trains on whole
windows, the kernel that reads one token per stream when sampling, and the tensors its state
holds. A new cell is a name in ``config.Cell`` and one entry in CELLS.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from charrnn.config import Cell, ModelConfig, Nonlinearity

State = tuple[Tensor, ...]  # (h,) for rnn and gru, (h, c) for lstm; each (layers, B, H)
# One layer, one token: input (n, K), the layer's state (each (n, H)), its weights
# (W_ih, W_hh, b_ih, b_hh) -> output (n, H) and the layer's new state.
Kernel = Callable[[Tensor, Sequence[Tensor], tuple[Tensor, ...]], tuple[Tensor, State]]


@dataclass(frozen=True)
class CellKind:
    layer: type[nn.RNNBase]  # the fused stack, batch first
    state_size: int  # tensors in the state
    kernel: Callable[[Nonlinearity], Kernel]
    gates: int  # blocks of H rows in each weight matrix (W_ih, W_hh) and bias

    def shapes(self, c: ModelConfig) -> dict[str, tuple[int, ...]]:
        """The stack's tensors and their shapes, as nn.RNNBase names them, without making it."""
        rows, out = self.gates * c.hidden, {}
        for k in range(c.layers):
            out[f"weight_ih_l{k}"] = (rows, c.embed if k == 0 else c.hidden)
            out[f"weight_hh_l{k}"] = (rows, c.hidden)
            out[f"bias_ih_l{k}"] = out[f"bias_hh_l{k}"] = (rows,)
        return out

    def stack(self, c: ModelConfig) -> nn.RNNBase:
        dropout = (c.dropout or 0.0) if c.layers > 1 else 0.0
        kwargs: dict[str, Any] = {"batch_first": True, "dropout": dropout}
        if c.cell is Cell.rnn:
            kwargs["nonlinearity"] = c.nonlinearity.value
        return self.layer(c.embed, c.hidden, c.layers, **kwargs)

    def pack(self, state: State) -> Tensor | State:
        """The state as the fused stack takes it: h, or (h, c)."""
        return state if self.state_size > 1 else state[0]

    def unpack(self, state: Tensor | State) -> State:
        return state if isinstance(state, tuple) else (state,)


def _lstm(x: Tensor, s: Sequence[Tensor], w: tuple[Tensor, ...]) -> tuple[Tensor, State]:
    h, c = torch.lstm_cell(x, tuple(s), *w)
    return h, (h, c)


def _gru(x: Tensor, s: Sequence[Tensor], w: tuple[Tensor, ...]) -> tuple[Tensor, State]:
    h = torch.gru_cell(x, s[0], *w)
    return h, (h,)


def _elman(nonlinearity: Nonlinearity) -> Kernel:
    cell = torch.rnn_relu_cell if nonlinearity is Nonlinearity.relu else torch.rnn_tanh_cell

    def step(x: Tensor, s: Sequence[Tensor], w: tuple[Tensor, ...]) -> tuple[Tensor, State]:
        h = cell(x, s[0], *w)
        return h, (h,)

    return step


CELLS: dict[Cell, CellKind] = {
    Cell.rnn: CellKind(nn.RNN, 1, _elman, gates=1),
    Cell.gru: CellKind(nn.GRU, 1, lambda _: _gru, gates=3),
    Cell.lstm: CellKind(nn.LSTM, 2, lambda _: _lstm, gates=4),
}
