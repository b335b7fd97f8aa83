"""Dynamic evaluation (Krause et al. 2017, 2018): a model that keeps learning from the text it
reads, so that later text is predicted better.

    for each window of the text (B streams x T tokens, the state carried as in training):
        loss = the window's mean token loss, with the weights as they are    <- the figure
        g = d loss / d theta
        MS = mean of g * g over the windows read so far                     (rule rms)
        theta <- theta - lr * g / (sqrt(MS) + eps)  +  decay * (theta_trained - theta)

Each window is scored before it is learned from, so no token is predicted by weights that have
seen it. The papers divide by the mean square of gradients over the training text; a run's
training text may be gone, so here the mean runs over the text read so far. The trained
weights are kept aside and the run's files are never written.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from charrnn.config import AdaptConfig, AdaptRule
from charrnn.data import Split
from charrnn.evaluate import read_windows, window_count, window_loss
from charrnn.model import RNNLM
from charrnn.tokenizers import UNK

Progress = Callable[[int, int], None]  # (windows done, windows in all)


class Adapter:
    """One step of dynamic evaluation at a time, on ``model``'s own parameters."""

    def __init__(self, model: RNNLM, config: AdaptConfig):
        self.config = config
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.trained = [p.detach().clone() for p in self.params]
        rms = config.rule is AdaptRule.rms
        self.mean_square = [torch.zeros_like(p) for p in self.params] if rms else []
        self.steps = 0

    @torch.no_grad()
    def _update(self, grads: tuple[Tensor | None, ...]) -> None:
        c = self.config
        self.steps += 1
        for i, (p, g, p0) in enumerate(zip(self.params, grads, self.trained)):
            if g is None:  # the stop heads: the token loss does not reach them
                continue
            if self.mean_square:
                ms = self.mean_square[i]
                ms.add_(g * g - ms, alpha=1.0 / self.steps)  # the running mean
                g = g / (ms.sqrt() + c.eps)
            p.add_(g, alpha=-c.lr)
            if c.decay:
                p.add_(p0 - p, alpha=c.decay)

    def step(self, loss: Tensor) -> None:
        """One step on ``loss`` (a scalar with a graph through the parameters)."""
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        self._update(grads)


@contextlib.contextmanager
def _with_gradients(device: torch.device) -> Iterator[None]:
    """Gradients on, and on CUDA the plain RNN kernels: cuDNN's backward refuses a model
    in eval mode (which keeps dropout off)."""
    cudnn = torch.backends.cudnn.flags(enabled=False) if device.type == "cuda" else None
    with torch.enable_grad(), cudnn or contextlib.nullcontext():
        yield


def adapt_windows(
    model: RNNLM,
    split: Split,
    config: AdaptConfig,
    device: torch.device | None = None,
    progress: Progress | None = None,
) -> tuple[float, int, int]:
    """Read ``split`` once as dynamic evaluation reads it, learning from each window after it
    is scored; ``model``'s weights are changed. Returns the summed loss (nats) of the scored
    tokens, their count, and how many of them are <unk>."""
    device = device or next(model.parameters()).device
    adapter = Adapter(model, config)
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = unknown = 0
    n = window_count(split, config.window, config.streams)
    with _with_gradients(device):
        windows = read_windows(model, split, config.window, config.streams, device=device)
        for k, (b, h) in enumerate(windows):
            loss, tokens = window_loss(model, b, h, device)
            total += loss.detach().double()
            count += tokens
            unknown += int(np.count_nonzero(b.y == UNK))
            if tokens:
                adapter.step(loss / tokens)
            if progress:
                progress(k + 1, n)
    return float(total), count, unknown
