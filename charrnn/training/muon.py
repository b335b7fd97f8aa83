"""Muon for the recurrent layers' matrices, AdamW for every other parameter: one optimizer.

    momentum  m = 0.95 m + g;  u = g + 0.95 m                        (Nesterov)
    update    W -= lr * 0.2 * sqrt(max(rows, cols)) * NS(u)          and AdamW's decoupled decay

NS(u) is u with its singular values pushed towards 1 (a quintic Newton-Schulz iteration,
Jordan et al., 2024): the step moves every direction of the matrix alike instead of the few
its gradient is largest in. Scaled by 0.2 * sqrt(max(rows, cols)), an update has about the
RMS of an AdamW update (Liu et al., 2025), so the run's learning rate and schedule serve both.
One parameter group in model.parameters() order, so a checkpoint's moments are keyed as
AdamW's are (``optim.<i>.<key>``): a Muon matrix keeps ``momentum``, the rest AdamW's three.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor
from torch.optim.adamw import adamw

BETAS = (0.9, 0.99)  # AdamW's: a plain AdamW run's (optim.adamw) and the other parameters' here
MOMENTUM = 0.95
RMS_MATCH = 0.2  # an orthogonal update times this and sqrt(max dim) has AdamW's RMS
NS_STEPS = 5
_NS = (3.4445, -4.7750, 2.0315)  # the quintic's coefficients (Jordan et al.)


def orthogonalize(g: Tensor, steps: int = NS_STEPS, dtype: torch.dtype = torch.bfloat16) -> Tensor:
    """``g`` (rows, cols) with its singular values moved near 1, computed in ``dtype``."""
    x = g.to(dtype)
    tall = x.size(0) > x.size(1)
    if tall:  # work on the wide form: its Gram matrix is the smaller one
        x = x.T
    x = x / (x.norm() + 1e-7)
    a, b, c = _NS
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).to(g.dtype)


class MuonAdamW(torch.optim.Optimizer):
    """Muon on the parameters in ``matrices``, AdamW (betas 0.9, 0.99) on the rest; the
    group's ``lr`` and ``weight_decay`` (set by the loop) serve both."""

    def __init__(
        self,
        params: Iterable[Tensor],
        matrices: Iterable[Tensor],
        lr: float,
        ns_dtype: torch.dtype = torch.bfloat16,
        fused: bool = False,
    ):
        defaults = {"lr": lr, "betas": BETAS, "weight_decay": 0.0, "eps": 1e-8}
        super().__init__(params, defaults)
        self.matrices = {id(p) for p in matrices}
        self.ns_dtype, self.fused = ns_dtype, fused

    @torch.no_grad()
    def step(self, closure: None = None) -> None:
        for group in self.param_groups:
            live = [p for p in group["params"] if p.grad is not None]
            self._adamw(group, [p for p in live if id(p) not in self.matrices])
            self._muon(group, [p for p in live if id(p) in self.matrices])

    def _adamw(self, group: dict, params: list[Tensor]) -> None:
        if not params:
            return
        moments = [self._adam_state(p) for p in params]
        beta1, beta2 = group["betas"]
        adamw(
            params,
            [p.grad for p in params],
            [m["exp_avg"] for m in moments],
            [m["exp_avg_sq"] for m in moments],
            [],
            [m["step"] for m in moments],
            capturable=group.get("capturable", False),  # a CUDA graph's (training/static)
            fused=self.fused or None,
            amsgrad=False,
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=False,
        )

    def _adam_state(self, p: Tensor) -> dict[str, Tensor]:
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        return state

    def _muon(self, group: dict, params: list[Tensor]) -> None:
        lr, decay = group["lr"], group["weight_decay"]
        for p in params:
            state = self.state[p]
            if not state:
                state["momentum"] = torch.zeros_like(p)
            m = state["momentum"]
            m.mul_(MOMENTUM).add_(p.grad)
            update = orthogonalize(p.grad.add(m, alpha=MOMENTUM), dtype=self.ns_dtype)
            p.mul_(1 - lr * decay)
            p.sub_(update * (lr * RMS_MATCH * math.sqrt(max(p.shape))))
