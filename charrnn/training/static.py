"""``Trainer.step`` with fixed buffers, the form a CUDA graph can capture and replay.

    host, each step                         device (fixed addresses, no host read)
    next window -> pinned copy  ------->    inputs (K, B, T): x, y, length input, head targets
    target counts -> pinned copy ------>    norm (1 + heads,)
    learning rate, regularization           forward, loss, backward, clip, AdamW,
                                            state (layers, B, H) carried in place, loss kept

Each step does what ``Trainer.step`` does, in the same order and arithmetic (the same
parameters after any number of steps, tested on the CPU), with three differences:
the loss is not read on the host (the loop's meter reads it at every report), a non-finite
step is not skipped (``--skip-nonfinite`` takes ``Trainer.step``), and one process only.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from charrnn.data import Batch
from charrnn.stopping import TRAINED, head_targets, target_counts
from charrnn.tokenloss import cross_entropy_sum
from charrnn.training.loop import Trainer
from charrnn.training.optim import clip_gradients, lr_at


class StaticStep:
    """One optimizer step per call on ``trainer``'s model, optimizer and loop counters."""

    def __init__(self, trainer: Trainer):
        t = trainer
        assert t.ranks.world == 1 and not t.config.skip_nonfinite, "one process, no skipping"
        self.trainer, self.device = t, t.device
        self.heads = t.model.config.stop_heads
        b, k = len(t.rows), 2 + (1 + len(TRAINED) if self.heads else 0)
        self.inputs = torch.zeros(k, b, t.config.seq_len, dtype=torch.long, device=t.device)
        self.norm = torch.ones(1 + len(TRAINED), device=t.device)  # (1 + heads,) float32
        self.state = tuple(s.detach().clone() for s in t.state)  # each (layers, B, H)
        self.loss = torch.zeros((), device=t.device)  # the latest step's token loss
        self.graph: torch.cuda.CUDAGraph | None = None
        self.captured: tuple[float, ...] = ()
        t.state = self.state  # the trainer saves the very tensors this step carries

    def step(self) -> Tensor:
        """The next window's step; its token loss (a device tensor, overwritten next step)."""
        t = self.trainer
        loop = t.loop
        if loop.window >= len(t.batches):
            loop.epoch += 1
            loop.window = 0
            for s, s0 in zip(self.state, t.model.init_state(len(t.rows))):
                s.copy_(s0)
        self.stage(t.batches.window(loop.window, loop.epoch))
        if self.graph is not None:
            t._regularize()  # decided once, early: the graph holds the values it was taken with
            if self._settings() != self.captured:
                self._capture()
            self.set_lr()
            self.graph.replay()
        else:
            self.forward_backward()
            t._regularize()  # after the forward, as Trainer.step
            self.set_lr()
            self.update()
        loop.window += 1
        loop.step += 1
        loop.tokens += self.inputs[0].numel()
        t._after_update()
        return self.loss

    def stage(self, b: Batch) -> None:
        """The window and its target counts into the fixed buffers, without waiting."""
        heads = head_targets(b)
        arrays = [b.x, b.y, b.remaining, *heads] if self.heads else [b.x, b.y]
        counts = self.trainer.ranks.share_counts(target_counts(b)).astype(np.float32)
        for src, dst in ((np.stack(arrays), self.inputs), (counts, self.norm)):
            host = torch.from_numpy(src)
            if self.device.type == "cuda":
                host = host.pin_memory()  # the caching host allocator keeps it until copied
            dst.copy_(host, non_blocking=True)

    def set_lr(self) -> None:
        t = self.trainer
        lr = lr_at(t.config, t.loop.step, t.progress(), t.min_lr_ratio)
        for g in t.opt.param_groups:
            if isinstance(g["lr"], Tensor):
                g["lr"].fill_(lr)  # a captured optimizer reads it from the device
            else:
                g["lr"] = lr

    def forward_backward(self) -> None:
        """Losses and gradients; the state carried on, in place, once backward has read it."""
        t = self.trainer
        m, c = t.model, t.config
        x, y = self.inputs[0], self.inputs[1]  # (B, T)
        with t.amp.autocast(cache=False):
            h, state = t.features(x, self.state, self.inputs[2] if self.heads else None)
            logits = m.token_logits(h)  # (B, T, V)
            token_loss = cross_entropy_sum(logits.flatten(0, 1), y.flatten()) / self.norm[0]
            loss = token_loss
            if self.heads:
                hh = h if c.head_grad else h.detach()
                targets = self.inputs[3:]
                losses = [
                    r.weight(c) * r.loss(m, hh, targets[k], self.norm[k + 1])
                    for k, r in enumerate(TRAINED)
                ]
                stop = losses[0]
                for more in losses[1:]:
                    stop = stop + more
                loss = loss + stop
        t.opt.zero_grad(set_to_none=True)
        t.amp.scaler.scale(loss).backward()
        with torch.no_grad():
            for s, new in zip(self.state, state):
                s.copy_(new)
            self.loss.copy_(token_loss)

    def update(self) -> None:
        """Clip and step, as ``Trainer.step``."""
        t = self.trainer
        scaler = t.amp.scaler
        if t.config.clip > 0:
            scaler.unscale_(t.opt)
            clip_gradients(t.model, t.config.clip)
        scaler.step(t.opt)
        scaler.update()

    def capture(self, warmup: int = 3) -> None:
        """On CUDA: a few eager steps on a side stream (the kernels and the optimizer's state
        set up), then forward to update captured once; ``step`` replays it from then on."""
        assert self.device.type == "cuda", "CUDA graphs need a CUDA device"
        t = self.trainer
        for g in t.opt.param_groups:
            g["capturable"] = True
            g["lr"] = torch.tensor(float(g["lr"]), device=self.device)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                self.step()
        torch.cuda.current_stream().wait_stream(side)
        self._capture()

    def _capture(self) -> None:
        self.trainer.opt.zero_grad(set_to_none=True)
        self.captured = self._settings()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.forward_backward()
            self.update()

    def _settings(self) -> tuple[float, ...]:
        """What a captured step holds as constants: the weight decay, the weight drop and the
        dropout."""
        t = self.trainer
        return (t.opt.param_groups[0]["weight_decay"], t.model.weight_drop, t.model.dropout)
