"""Averaged weights: what a run evaluates and keeps when --average is on.

A power-function average (Karras et al., 2024, "EDM2"): at step t the average weighs step s
as s^gamma, so it spans a fixed share of the run so far whatever its length (about the last
10% at gamma 7), and needs no horizon. last.safetensors holds it (``average.<name>``, see
checkpoint.training), so a resumed run averages exactly as an unbroken one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


class Averager:
    """A running average of a model's parameters, folded in after every optimizer step."""

    def __init__(self, model: torch.nn.Module, gamma: float):
        self.names, self.params = zip(*model.named_parameters())
        self.avg = [p.detach().clone() for p in self.params]
        self.gamma = gamma

    def update(self, step: int) -> None:
        """Fold in the parameters after optimizer step ``step`` (1, 2, ...):
        beta_t = (1 - 1/t)^(gamma + 1)."""
        beta = (1 - 1 / max(1, step)) ** (self.gamma + 1)
        torch._foreach_lerp_(self.avg, [p.detach() for p in self.params], 1 - beta)

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The averaged weights in the model for the block; the trained ones back after it."""
        trained = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            torch._foreach_copy_([p.data for p in self.params], self.avg)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_([p.data for p in self.params], trained)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The average by parameter name."""
        return dict(zip(self.names, self.avg))

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        """The average a checkpoint holds (ValueError if it does not fit), or, where it holds
        none (written without averaging), the weights as they are."""
        if not tensors:
            self.avg = [p.detach().clone() for p in self.params]
            return
        if set(tensors) != set(self.names):
            raise ValueError("the saved average does not fit the model")
        for a, n in zip(self.avg, self.names):
            if tensors[n].shape != a.shape:
                raise ValueError(f"the saved average of {n} has shape {tuple(tensors[n].shape)}")
            a.copy_(tensors[n])


def kept(average: Averager | None) -> contextlib.AbstractContextManager[None]:
    """The weights a run evaluates and keeps in the block: the average, where it keeps one."""
    return average.swapped_in() if average else contextlib.nullcontext()
