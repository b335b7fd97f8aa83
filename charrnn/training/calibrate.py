"""Calibrations: the state a unit starts from and how often the eos and halt rules end, fitted
on training text; the temperature of the logits, fitted on validation text."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import numpy as np
import torch

from charrnn.config import Stop
from charrnn.data import Split
from charrnn.device import to_device
from charrnn.evaluate import eval_mode, read_windows
from charrnn.model import RNNLM
from charrnn.stopping import rule_logits
from charrnn.tokenizers import EOS, PAD

TEMPERATURE_LOGITS = 2**25  # the most logits the temperature fit holds (128 MiB of float32)
LOGIT_CHUNK = 2**22  # ... in pieces of this many, each read at once
UNSEEN_FLOOR = -1e4  # an unseen symbol's logit in the fit: exp(s * floor) is 0 for every s tried


@torch.no_grad()
def fit_start_state(
    model: RNNLM, tokens: np.ndarray, eos_positions: np.ndarray, units: int = 128, context: int = 64
) -> None:
    """Set ``model.start_h`` to the mean state right after reading <eos>, over up to
    ``units`` unit ends spread through ``tokens``, each read with ``context`` tokens before it."""
    ends = eos_positions[eos_positions >= context - 1]
    if len(ends) == 0:
        return
    ends = ends[np.linspace(0, len(ends) - 1, min(units, len(ends))).astype(np.int64)]
    idx = ends[:, None] - context + 1 + np.arange(context)  # (U, context), each ending at <eos>
    x = torch.from_numpy(np.asarray(tokens[idx], dtype=np.int64)).to(model.start_h.device)
    remaining = None
    if model.config.stop_heads:  # each token's offset in its unit, as in training
        prev_eos = np.searchsorted(eos_positions, idx, side="left") - 1
        offsets = idx - np.where(prev_eos >= 0, eos_positions[prev_eos] + 1, 0)
        remaining = torch.from_numpy(model.unknown_at(offsets)).to(x.device)
    with eval_mode(model):
        _, state = model.features(x, model.init_state(len(ends)), remaining)
    model.start_h.copy_(torch.stack([s.mean(dim=1, keepdim=True) for s in state]))


@torch.no_grad()
def end_logits(
    model: RNNLM,
    split: Split,
    seq_len: int,
    max_tokens: int = 32768,
    batch_size: int = 64,
    device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where a unit may end in the first windows of ``batch_size`` streams over ``split``
    (up to ``max_tokens`` in all; 0 = the whole split, as in evaluation), read
    with the remaining length unknown (as the eos and halt rules read it): the logit of <eos>
    against the other tokens eos mode may draw, the halt logit, and whether the unit ends
    there. Three (N,) tensors."""
    device = device or next(model.parameters()).device
    eos_logit, halt_logit, ends = [], [], []
    for b, h in read_windows(model, split, seq_len, batch_size, max_tokens, device):
        z = rule_logits(model.token_logits(h), Stop.eos)  # (B, T, V)
        others = z.clone()
        others[..., EOS] = -math.inf
        decides = torch.from_numpy(b.halt >= 0).to(device)  # inside a unit, past its <sos>
        eos_logit.append((z[..., EOS] - others.logsumexp(-1))[decides])
        halt_logit.append(model.halt_logits(h).float()[decides])
        ends.append(torch.from_numpy(b.halt == 1).to(device)[decides])
    return torch.cat(eos_logit), torch.cat(halt_logit), torch.cat(ends)


def fit_end_bias(
    model: RNNLM,
    split: Split,
    seq_len: int,
    max_tokens: int = 32768,
    batch_size: int = 64,
    device: torch.device | None = None,
) -> tuple[float, float]:
    """Refit ``model.end_bias`` on ``split`` (training text): the shifts of the <eos> logit and
    of the halt logit that make the model's chance of ending (see ``end_logits``) match how
    often units end there. Each is a one-number maximum-likelihood fit (a logistic regression
    with the model's own logits as offsets), after which the model's end probabilities over
    that text add up to its number of ends. Returns the shifts added."""
    eos_logit, halt_logit, ends = end_logits(model, split, seq_len, max_tokens, batch_size, device)
    y = ends.double()
    shifts = (_logistic_shift(eos_logit, y), _logistic_shift(halt_logit, y))
    model.end_bias += torch.tensor(shifts, device=model.end_bias.device)
    return shifts


def _logistic_shift(a: torch.Tensor, y: torch.Tensor, bound: float = 20.0) -> float:
    """The b that maximises sum log P(y | sigmoid(a + b)): the root of the increasing
    sum sigmoid(a + b) - sum y, by bisection (Newton's steps overshoot from a poor start);
    0 when y has a single class (nothing to fit)."""
    a, target = a.double(), float(y.sum())
    if not 0 < target < len(y):
        return 0.0
    lo, hi = -bound, bound
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if float(torch.sigmoid(a + mid).sum()) < target else (lo, mid)
    return (lo + hi) / 2


@torch.no_grad()
def fit_temperature(
    model: RNNLM,
    split: Split,
    seq_len: int,
    max_tokens: int = 0,
    device: torch.device | None = None,
    part: tuple[int, int] = (0, 1),
    autocast: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext,
) -> tuple[float, int]:
    """log T for the temperature T at which ``model`` loses least on ``split``, and the
    tokens it was fitted on: up to ``max_tokens`` (0 = all) and TEMPERATURE_LOGITS logits,
    read as evaluation reads them. ``split`` is validation text: on its training text a model
    is as sure as training made it, and only held-out text shows how much surer than right."""
    cap = max(1, TEMPERATURE_LOGITS // model.config.vocab_size)
    max_tokens = min(max_tokens, cap) if max_tokens > 0 else cap
    zs, ys = [], []
    rows = max(1, LOGIT_CHUNK // model.config.vocab_size)
    windows = read_windows(model, split, seq_len, 64, max_tokens, device, part, autocast)
    for b, h in windows:
        (y,) = to_device([b.y], h.device)
        with autocast():
            z = model.head_logits(h)
        y, z = y.flatten(), z.flatten(0, 1).float()
        # an unseen symbol's chance is fixed whatever T (RNNLM.with_unseen): its targets are
        # left out, and its -inf logit made a floor that keeps p * z at 0
        unseen = model.unseen_mask
        counted = (y != PAD) & ~unseen[y]
        z = z.masked_fill(unseen, UNSEEN_FLOOR)
        zs += z[counted].split(rows)
        ys += y[counted].split(rows)
    n = sum(len(y) for y in ys)
    return (-math.log(_best_scale(model, zs, ys)) if n else 0.0), n


def _best_scale(model: RNNLM, zs: list[torch.Tensor], ys: list[torch.Tensor]) -> float:
    """The s in [1/4, 4] that minimises the loss of ``model.calibrated(z * s)`` on the targets
    ``ys``: Newton's steps on a convex function of s (its derivative is E[z] - z_y under
    the model's distribution, its second the variance of z), kept inside the bracket that
    the derivative's sign narrows."""
    lo, hi, s = 0.25, 4.0, 1.0
    for _ in range(30):
        grad = curv = 0.0
        for z, y in zip(zs, ys):
            p = torch.softmax(model.calibrated(z, torch.tensor(s)), dim=-1)
            mean = (p * z).sum(-1)
            grad += float((mean - z.gather(1, y[:, None]).squeeze(1)).sum())
            curv += float(((p * z * z).sum(-1) - mean * mean).sum())
        lo, hi = (s, hi) if grad < 0 else (lo, s)
        step = s - grad / curv if curv > 0 else math.nan
        new = step if lo < step < hi else (lo + hi) / 2
        if abs(new - s) < 1e-5:
            return new
        s = new
    return s
