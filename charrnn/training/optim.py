"""The optimizer and its step: AdamW or Muon, the learning-rate schedule, gradient clipping."""

from __future__ import annotations

import math

import torch

from charrnn.config import Optimizer, TrainConfig
from charrnn.defaults import LIGHT
from charrnn.model import RNNLM
from charrnn.training.muon import BETAS, MuonAdamW


def lr_at(
    config: TrainConfig, step: int, progress: float | None, floor: float | None = None
) -> float:
    """Linear warmup, then cosine decay to lr * floor as progress goes 0 -> 1 (floor: the
    config's min_lr_ratio, or the light default when that is left to the run)."""
    warm = min(1.0, (step + 1) / max(1, config.warmup_steps))
    if progress is None:
        return config.lr * warm
    p = min(1.0, max(0.0, progress))
    if floor is None:
        floor = LIGHT[1] if config.min_lr_ratio is None else config.min_lr_ratio
    return config.lr * warm * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p)))


def clip_gradients(model: RNNLM, max_norm: float) -> None:
    """Clip the language model's gradient to ``max_norm`` by its own norm, and the stop heads'
    by theirs: the halting and length losses never shrink the language model's step. The
    length input's rows count as the vectors they add (their gradient over the scale each is
    read through), so how they are parametrized does not change the norm."""
    heads = model.stop_head_parameters()
    if not heads:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        return
    rows, in_heads = model.len_embed.weight, {id(p) for p in heads}
    lm = [p for p in model.parameters() if p.grad is not None and id(p) not in in_heads]
    if lm:
        norms = list(torch._foreach_norm([p.grad for p in lm if p is not rows]))
        if rows.grad is not None:
            norms.append((rows.grad / model.length_scales).norm())
        total = torch.linalg.vector_norm(torch.stack(norms).float())
        coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
        torch._foreach_mul_([p.grad for p in lm], coef.to(lm[0].grad.dtype))
    torch.nn.utils.clip_grad_norm_(heads, max_norm)


def optimizer_for(
    config: TrainConfig, model: RNNLM, device: torch.device, bf16: bool
) -> torch.optim.Optimizer:
    """The run's optimizer: AdamW, or Muon on the recurrent layers' matrices (their
    orthogonalization in bf16 where the step computes in it) and AdamW on the rest."""
    if config.optimizer is Optimizer.adamw:
        return adamw(model, config.lr, device)
    matrices = [p for name, p in model.rnn.named_parameters() if name.startswith("weight_")]
    dtype = torch.bfloat16 if bf16 or device.type == "cuda" else torch.float32
    return MuonAdamW(model.parameters(), matrices, config.lr, dtype, fused=fused(device))


def adamw(model: RNNLM, lr: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW over every parameter; its weight decay is set by the run's regularization."""
    return torch.optim.AdamW(
        model.parameters(),
        lr=lr,
        betas=BETAS,
        weight_decay=0.0,
        fused=fused(device),
    )


def fused(device: torch.device) -> bool:
    """Whether AdamW runs as one kernel for all parameters on ``device``."""
    return device.type in ("cpu", "cuda")
