"""One step of the recurrent stack, for sampling: one token per stream, no per-call overhead.

``model.features`` on a (n, 1) input goes through ``nn.LSTM`` (or GRU, RNN), which is built
for long sequences: on a CPU each call prepares the whole layer again, so one token costs far
more than reading the weights once. ``Stepper`` computes the same step with the fused cell
kernels (``torch.lstm_cell``, ``torch.gru_cell``, ``torch.rnn_tanh_cell``,
``torch.rnn_relu_cell``) on the model's own parameters, layer by layer:

    x     = E[token] + length_input(ids)               as in RNNLM.features
    h1, c1 = cell(x,  (h1, c1), W_ih1, W_hh1, b_ih1, b_hh1)
    h2, c2 = cell(h1, (h2, c2), W_ih2, W_hh2, b_ih2, b_hh2)   ... up the stack

The weight matrices are copied once, transposed, when a Stepper is made (one per sampling
call): BLAS reads a (K, 4H) row-major matrix faster than the (4H, K) one nn.LSTM keeps, most
of all for one stream, where each step is bound by reading the weights. The cell kernels are
handed transposed views of the copies, so they do the very same arithmetic. The state keeps
``RNNLM``'s layout, so either path can take over from the other. Dropout is left out: use it
on a model in eval mode (``Stepper.usable``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from charrnn.model.cells import State
from charrnn.model.rnnlm import RNNLM
from charrnn.tokenizers import EOS


class Stepper:
    """``step(tokens, state, remaining) -> (h, state)``: ``model.features`` for one token per
    stream, with the top layer's output (n, H) instead of (n, 1, H)."""

    def __init__(self, model: RNNLM, mask: Tensor | None = None):
        """``mask`` (V,), 0 or -inf per token, is added to the logits."""
        c = model.config
        self.model = model
        self.kernel = model.cell.kernel(c.nonlinearity)
        rnn = model.rnn
        self.weights = [
            tuple(
                _transposed_copy(getattr(rnn, f"{k}_l{layer}")) for k in ("weight_ih", "weight_hh")
            )
            + tuple(getattr(rnn, f"{k}_l{layer}") for k in ("bias_ih", "bias_hh"))
            for layer in range(c.layers)
        ]
        # the token head, likewise (with tied weights: the embedding, after the projection),
        # with the temperature, the end calibration and the unseen symbols' -inf (their share
        # is given after: RNNLM.with_unseen) folded in once rather than applied to every
        # step's logits: ((h W + b) / T) + e and h (W / T) + (b / T + e) agree to rounding
        self.proj = None if model.proj is None else _transposed_copy(model.proj.weight)
        scale = torch.exp(-model.log_temperature.detach())
        if model.head is not None:
            weight, bias = model.head.weight, model.head.bias
        else:
            weight, bias = model.embed.weight, model.head_bias
        self.head = _transposed_copy(weight * scale)
        self.head_bias = bias.detach() * scale
        if c.stop_heads:
            self.head_bias[EOS] += model.end_bias[0]
            self.len_embed = model.length_table().detach()
        if model.any_unseen:
            self.head_bias.masked_fill_(model.unseen_mask, -torch.inf)
        self.mask = mask  # added after the unseen symbols' share, as the model's callers add it

    @staticmethod
    def usable(model: RNNLM) -> bool:
        """The step equals ``features`` only without dropout, and for the layers it knows."""
        rnn = model.rnn
        return (
            not model.training
            and rnn.bias
            and not rnn.bidirectional
            and getattr(rnn, "proj_size", 0) == 0
        )

    def embed(self, tokens: Tensor, remaining: Tensor | None) -> Tensor:
        """The input vectors (n, E), summed exactly as ``RNNLM.features`` sums them (None: a
        token read as the first of its row, as ``features`` reads a one-token input)."""
        m = self.model
        x = F.embedding(tokens, m.embed.weight)  # (n, E)
        if m.config.stop_heads:
            ids = m.unknown_ids(tokens[:, None])[:, 0] if remaining is None else remaining
            x = x + F.embedding(ids, self.len_embed)  # scaled once, not at every step
        return x

    def token_logits(self, h: Tensor) -> Tensor:
        """``RNNLM.token_logits`` for features (n, H) -> (n, V), plus the mask."""
        if self.proj is not None:
            h = F.linear(h, self.proj)  # (n, E)
        logits = self.model.with_unseen(F.linear(h, self.head, self.head_bias))
        return logits if self.mask is None else logits + self.mask

    def __call__(
        self, tokens: Tensor, state: State, remaining: Tensor | None = None
    ) -> tuple[Tensor, State]:
        """tokens (n,) and remaining-length buckets (n,) or None -> h (n, H), new state."""
        x = self.embed(tokens, remaining)  # (n, E)
        layers = []
        for layer, w in enumerate(self.weights):
            x, s = self.kernel(x, [s[layer] for s in state], w)  # (n, H), each (n, H)
            layers.append(s)
        return x, tuple(map(torch.stack, zip(*layers)))  # (n, H), each (layers, n, H)


def _transposed_copy(w: Tensor) -> Tensor:
    """The same matrix (4H, K), stored as its transpose: a view of a (K, 4H) contiguous copy."""
    return w.detach().t().contiguous().t()
