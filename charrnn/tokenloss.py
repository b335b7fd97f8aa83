"""The token loss of training and evaluation: cross-entropy summed over the targets, <pad>
ignored.

On the CPU it is computed a block of rows at a time, each block read while it sits in the
cache: forward, the log-sum-exp of each row; backward, softmax minus the one-hot target in
one pass, in the logits' dtype. F.cross_entropy on bf16 logits makes a float32 copy, writes
the log-softmax, fills a zero gradient, scatters into it and converts it back: five passes
over logits as large as the step's matrix products (docs/benchmarks.md, "A training
step's output layer and loss").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from charrnn.tokenizers import PAD

BLOCK = 2**18  # logits per block: 1 MiB in float32, read from the cache rather than memory


def cross_entropy_sum(logits: Tensor, targets: Tensor) -> Tensor:
    """The summed cross-entropy (float32) of logits (N, V) against targets (N,), targets
    equal to PAD counting nothing."""
    if logits.device.type != "cpu":  # measured on the CPU only; elsewhere the fused kernel
        return F.cross_entropy(logits.float(), targets, ignore_index=PAD, reduction="sum")
    return _BlockedCrossEntropy.apply(logits, targets)


class _BlockedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor) -> Tensor:  # type: ignore[override]
        rows = max(1, BLOCK // logits.shape[1])
        lse = torch.cat([torch.logsumexp(z.float(), 1) for z in logits.split(rows)])
        picked = logits.gather(1, targets[:, None]).squeeze(1).float()
        counted = targets != PAD
        ctx.save_for_backward(logits, targets, lse, counted)
        return torch.where(counted, lse - picked, 0.0).sum()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        logits, targets, lse, counted = ctx.saved_tensors
        coef = grad * counted  # (N,): d loss / d log-softmax of each row's target
        out = torch.empty_like(logits)
        rows = max(1, BLOCK // logits.shape[1])
        for k in range(0, len(logits), rows):
            block = slice(k, k + rows)
            p = logits[block].to(torch.float32, copy=True).sub_(lse[block, None]).exp_()
            p.mul_(coef[block, None])
            p.scatter_add_(1, targets[block, None], -coef[block, None])
            out[block] = p
        return out, None
