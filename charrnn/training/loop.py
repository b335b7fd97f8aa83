"""The training loop: truncated BPTT over B parallel streams.

    for each window [B, T] of the B parallel streams:
        features, state = model(x, state)          state carried from the previous window
        loss = CE(tokens) + w_h BCE(halt) + w_l CE(length)
        backward, clip, AdamW step                 lr: warmup, then cosine to the end
        state = state.detach()                     truncation: no gradient across windows
    evaluate on the held-out text now and then; keep the best weights; save "last" for resume

The run ends at --max-steps, --epochs or --time-budget (whichever comes first), by early
stopping, or when a callback asks it to stop (Ctrl-C). Progress bars live in the CLI.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from charrnn.checkpoint import (
    LAST,
    METRICS,
    MetricsLog,
)
from charrnn.checkpoint.training import Resumed, load_resumable, save_resumable
from charrnn.config import Precision, TrainConfig
from charrnn.data import (
    Dataset,
    LengthPlan,
    Split,
    StreamBatches,
)
from charrnn.defaults import (
    dropout_for,
    dropout_in_use,
    in_force,
    in_use,
    level_rise,
    raised_dropout,
    regularization,
    row_decay_for,
    weight_drop_for,
)
from charrnn.device import to_device
from charrnn.errors import CheckpointError, ConfigError, TrainingError, one_line
from charrnn.generate import Sampler
from charrnn.model import RNNLM, count_parameters, detach_state
from charrnn.stopping import head_loss, head_targets, target_counts
from charrnn.tokenloss import cross_entropy_sum
from charrnn.training.average import Averager
from charrnn.training.budget import Budget
from charrnn.training.callbacks import Callbacks, StepStats, TrainResult
from charrnn.training.distributed import Ranks
from charrnn.training.evals import Evaluations
from charrnn.training.optim import clip_gradients, lr_at, optimizer_for
from charrnn.training.precision import Amp
from charrnn.training.state import LoopState


class _NoLog(MetricsLog):
    """Rank 0 alone keeps the metrics log."""

    def append(self, record: dict[str, Any]) -> None: ...
    def truncate_after(self, step: int) -> None: ...


class Trainer(Evaluations):
    """The state of one training session; ``run`` is the loop."""

    def __init__(
        self,
        model: RNNLM,
        ds: Dataset,
        train: Split,
        val: Split,
        config: TrainConfig,
        folder: Path,
        callbacks: Callbacks,
        started: float,
        device: torch.device,
        ranks: Ranks | None = None,
    ):
        self.model, self.ds, self.train_split, self.val = model, ds, train, val
        self.config, self.folder, self.cb, self.device = config, folder, callbacks, device
        self.started = started
        self.ranks = ranks = ranks or Ranks(device)
        self.log = MetricsLog(folder / METRICS) if ranks.is_main else _NoLog(folder / METRICS)
        c = config
        self.rows = ranks.streams(c.batch_size)  # the streams this process trains
        self.batches = StreamBatches(
            train,
            c.batch_size,
            c.seq_len,
            LengthPlan(model.edges, model.unknown_length, seed=c.seed)
            if model.config.stop_heads
            else None,
            rows=self.rows,
            shift_seed=c.seed if c.shift_windows else None,
        )
        self.features = ranks.wrap(model)  # model.features, through DDP with several ranks
        self.amp = Amp(c.precision, device)
        self.opt = optimizer_for(c, model, device, self.amp.precision is Precision.bf16)
        self.loop = LoopState()
        self.budget = Budget(c, len(self.batches), ranks)
        self.state = model.init_state(len(self.rows))
        self.saved_step = 0  # the step of the newest last.safetensors
        self.stop_fit_n = config.stop_fit  # samples per rule it draws, fewer on a tight budget
        self.sampler = Sampler(model, ds.tokenizer)
        self.tokenizer_hash = ds.tokenizer.fingerprint()  # named by every checkpoint
        self.average = Averager(model, c.average) if c.average else None
        head = [model.head.weight] if model.head is not None else []
        self.row_params = [model.embed.weight, *head]  # the embedding and output rows
        self.row_decay = 0.0  # set by _set_regularization
        self._set_regularization()

    # -- progress --

    def elapsed(self) -> float:
        return self.loop.elapsed + time.monotonic() - self.started

    def progress(self) -> float | None:
        """How far the run is (0..1) towards its first end (``Budget.progress``)."""
        return self.budget.progress(self.loop.step)

    def _regularize(self) -> None:
        """Decide the regularization the config leaves to the run (weight decay, the learning
        rate's floor, weight drop, dropout, row decay), once, from the passes it is expected to make
        and its size; kept in the loop state, so a resumed run goes on as decided. Until then
        it is light."""
        c, loop = self.config, self.loop
        m = self.model.config
        left_open = (c.weight_decay, c.min_lr_ratio, m.weight_drop, m.dropout, c.row_decay)
        if loop.passes is None and None in left_open:
            passes = self.budget.expected_passes(loop.step, len(loop.history))
            if passes is not None:
                tokens = len(self.train_split)
                per_token = count_parameters(self.model.rnn) / tokens
                # a tied row is read twice (as the input and as the output): counted twice
                tied = self.model.head is None
                uses = 2 if tied else 1
                rows_per_token = uses * sum(p.numel() for p in self.row_params) / tokens
                loop.passes, loop.pressure = round(passes, 2), round(passes * per_token, 2)
                loop.row_pressure = round(passes * rows_per_token, 2)
                loop.weight_decay, loop.min_lr_ratio = regularization(loop.pressure)
                loop.weight_drop = weight_drop_for(loop.pressure)
                loop.dropout = dropout_for(loop.pressure, tied)
                loop.row_decay = row_decay_for(loop.row_pressure)
                self._set_regularization()

    def _set_regularization(self) -> None:
        """The config's settings where it gives them, else the loop's decisions (none: light,
        no weight drop, no dropout, no row decay)."""
        c, loop = self.config, self.loop
        decided = (loop.weight_decay, loop.min_lr_ratio) if loop.passes is not None else None
        wd, self.min_lr_ratio = in_force((c.weight_decay, c.min_lr_ratio), decided)
        for g in self.opt.param_groups:
            g["weight_decay"] = wd
        m = self.model.config
        self.model.weight_drop = in_use(m.weight_drop, loop.weight_drop)
        self.model.set_dropout(dropout_in_use(m.dropout, loop.dropout, loop.dropout_raised))
        self.row_decay = in_use(c.row_decay, loop.row_decay)

    def raise_dropout(self) -> None:
        """After an evaluation no better than the best, drop more of the features: the run
        has begun to learn its text by heart (docs/defaults.md, "Dropout that rises")."""
        loop = self.loop
        rise = in_use(self.config.dropout_rise, level_rise(self.ds.tokenizer.config))
        if rise:
            base = in_use(self.model.config.dropout, loop.dropout)
            loop.dropout_raised = raised_dropout(base, loop.dropout_raised, rise)
            self._set_regularization()

    # -- checkpoints --

    def save_last(self) -> None:
        state = self.ranks.gather(self.state)  # (layers, B, H): every rank takes part
        if not self.ranks.is_main:
            return
        loop = {**self.loop.to_dict(), "elapsed": self.elapsed()}
        scaler = self.amp.state_tensors()
        path = self.folder / LAST
        average = self.average.tensors() if self.average else None
        save_resumable(
            path,
            self.model,
            self.opt,
            state,
            scaler,
            loop,
            self.device,
            self.tokenizer_hash,
            average,
        )
        self.saved_step = self.loop.step
        self.cb.on_checkpoint(path)

    def restore(self) -> None:
        """Continue exactly where ``last.safetensors`` left off."""
        path = self.folder / LAST
        try:
            self._restore(load_resumable(path, self.model, self.opt, self.device))
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError, IndexError) as e:
            raise CheckpointError(
                f"{path} cannot be resumed: invalid saved state ({one_line(e)})"
            ) from None
        self.started = time.monotonic()
        self.saved_step = self.loop.step
        self.log.truncate_after(self.loop.step)

    def _restore(self, saved: Resumed) -> None:
        """This process's streams of the saved hidden state, the loss scale and the loop's
        counters; ValueError (and kin) where they do not fit this run."""
        state = saved.hidden
        if state and state[0].shape[1] != self.config.batch_size:
            raise ConfigError(
                f"--batch-size {self.config.batch_size} differs from the run's "
                f"{state[0].shape[1]}; resume with the same batch size"
            )
        want = [s.shape for s in self.model.init_state(self.config.batch_size)]
        if [s.shape for s in state] != want:
            raise ValueError("the saved hidden state does not fit the model")
        rows = slice(self.rows.start, self.rows.stop)  # this process's streams
        self.state = tuple(s[:, rows].contiguous() for s in state) or self.state
        self.amp.load_state_tensors(saved.scaler)
        if self.average is not None:
            self.average.load(saved.average)
        self.loop = LoopState.from_dict(saved.loop)
        self._set_regularization()

    # -- one step --

    def step(self) -> torch.Tensor | None:
        """One optimizer step on the next window; its token loss (a device tensor, so the
        loop never waits for the device), or None when a non-finite step was skipped."""
        c, m = self.config, self.model
        if self.loop.window >= len(self.batches):
            self.loop.epoch += 1
            self.loop.window = 0
            self.state = m.init_state(len(self.rows))
        b = self.batches.window(self.loop.window, self.loop.epoch)
        heads = head_targets(b)  # the stop heads' targets, when the model has them
        arrays = [b.x, b.y, b.remaining, *heads] if heads else [b.x, b.y]
        x, y, *targets = to_device(arrays, self.device)  # each (B, T), B of this rank
        # Sums over the targets divided by the whole batch's counts (over ranks): the same
        # mean in one process or several (see charrnn.distributed). Counted on the host.
        norm = self.ranks.share_counts(target_counts(b))
        with self.amp.autocast():
            h, state = self.features(x, self.state, targets[0] if heads else None)  # (B, T, H)
            logits = m.token_logits(h)  # (B, T, V)
            token_loss = cross_entropy_sum(logits.flatten(0, 1), y.flatten()) / float(norm[0])
            loss = token_loss
            if heads:
                loss = loss + self._stop_loss(h, targets[1:], norm)
        self._regularize()
        for g in self.opt.param_groups:
            g["lr"] = lr_at(c, self.loop.step, self.progress(), self.min_lr_ratio)
        # A finiteness check reads the loss on the host: free on the CPU, a sync on a GPU,
        # so there only with --skip-nonfinite (otherwise the loop checks every report).
        if (self.device.type == "cpu" or c.skip_nonfinite) and not self.ranks.all_true(
            torch.isfinite(loss)
        ):
            if not c.skip_nonfinite:
                raise TrainingError(
                    f"loss became {float(loss.detach())} at step {self.loop.step + 1}; the last "
                    f"good checkpoint (step {self.saved_step}) is kept: try a lower --lr, or "
                    "--skip-nonfinite"
                )
            self.opt.zero_grad(set_to_none=True)
            self.state = detach_state(state)
            self.loop.window += 1
            return None
        self.opt.zero_grad(set_to_none=True)
        scaler = self.amp.scaler  # a pass-through unless fp16
        scaler.scale(loss).backward()
        if c.clip > 0:
            scaler.unscale_(self.opt)
            clip_gradients(m, c.clip)
        scaler.step(self.opt)
        scaler.update()
        self.state = detach_state(state)
        self.loop.window += 1
        self.loop.step += 1
        self.loop.tokens += x.numel() * self.ranks.world
        self._after_update()
        return token_loss.detach()

    def _after_update(self) -> None:
        """The rows' own decay (decoupled, as AdamW's), then the average takes the new step."""
        if self.row_decay:
            shrink = 1 - self.opt.param_groups[0]["lr"] * self.row_decay
            with torch.no_grad():
                torch._foreach_mul_(self.row_params, shrink)
        if self.average is not None:
            self.average.update(self.loop.step)

    def _stop_loss(
        self, h: torch.Tensor, targets: list[torch.Tensor], norm: np.ndarray
    ) -> torch.Tensor:
        """The stop heads' losses. The heads read the state but do not shape it (unless
        --head-grad), and clip_gradients clips theirs apart from the language model's."""
        return head_loss(
            self.model, h if self.config.head_grad else h.detach(), targets, norm, self.config
        )

    # -- the loop --

    def run(self) -> TrainResult:
        loop = self.loop
        self.model.train()
        meter = _Meter(self)
        self._estimate_eval_cost()
        while not (stopped_by := self._should_stop()):
            token_loss = self.step()
            if token_loss is None:
                continue
            meter.add(token_loss)
            if loop.step % REPORT_EVERY == 0 or loop.step == 1:
                self._report(meter.take())
                meter.restart()  # the report's own time (the callback's) is not training
            t0 = time.monotonic()
            self._between_steps()
            meter.pause(time.monotonic() - t0)
        if loop.step > loop.last_eval_step and stopped_by != "interrupted":
            self._periodic_eval()
        self.save_last()
        final = self._final_eval() if stopped_by != "interrupted" else None
        fit = self._stop_fit() if final is not None else None
        elapsed = self.elapsed()
        return TrainResult(
            self.folder,
            loop.step,
            loop.tokens,
            elapsed,
            loop.tokens / max(1e-9, elapsed),
            stopped_by,
            loop.best_step,
            final,
            meter.last_loss,
            fit,
        )

    def _report(self, loss_and_rate: tuple[float, float]) -> None:
        loss, rate = loss_and_rate
        loop = self.loop
        lr, elapsed = self.opt.param_groups[0]["lr"], self.elapsed()
        stats = StepStats(loop.step, loss, lr, rate, elapsed, self.progress(), loop.epoch)
        record = {"step": loop.step, "loss": loss, "lr": lr, "tokens_per_s": rate}
        self.log.append({**record, "elapsed": elapsed})
        self.cb.on_step(stats)

    def _between_steps(self) -> None:
        """Evaluate and sample when it is time to (their time is not training throughput)."""
        c, step = self.config, self.loop.step
        if self._eval_due():
            self._periodic_eval()
            self.budget.paused()
        if c.sample_every and step % c.sample_every == 0:
            self.budget.paused()  # on every rank, as rank 0 alone samples
            if self.ranks.is_main:
                self.cb.on_sample(step, self._sample_text())

    def _should_stop(self) -> str:
        """Why to stop now, agreed by every rank (one stops, all stop), and the clock."""
        b = self.budget
        code, b.now = self.ranks.agree(_STOPS.index(self._stop_reason()), self.elapsed())
        return _STOPS[code]

    def _stop_reason(self) -> str:
        c = self.config
        if self.cb.stop_requested():
            return "interrupted"
        if c.max_steps and self.loop.step >= c.max_steps:
            return "max-steps"
        if c.epochs and self.loop.step >= c.epochs * len(self.batches):
            return "epochs"
        if self.budget.out_of_time(self.elapsed()):
            return "time-budget"
        if c.patience and self.loop.evals_since_best >= c.patience:
            return "early-stopping"
        return ""


_STOPS = ("", "early-stopping", "max-steps", "epochs", "time-budget", "interrupted")
REPORT_EVERY = 10  # steps between progress reports (and the loss's finiteness check)


class _Meter:
    """The mean training loss and the throughput since the last report. The losses are summed
    on the device and read once per report, so the loop never waits for the device."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        self.loss_sum, self.n = torch.zeros((), device=trainer.device), 0
        self.since, self.tokens = time.monotonic(), trainer.loop.tokens
        self.last_loss = math.nan

    def add(self, token_loss: torch.Tensor) -> None:
        self.loss_sum += token_loss.float()
        self.n += 1

    def pause(self, seconds: float) -> None:
        """Time spent on other work (evaluations, samples) does not count against the rate."""
        self.since += seconds

    def take(self) -> tuple[float, float]:
        """The mean loss over every rank, and tokens per second, since the last report."""
        tr, now = self.trainer, time.monotonic()
        self.last_loss = float(tr.ranks.average(self.loss_sum)) / self.n
        if not math.isfinite(self.last_loss):
            raise TrainingError(
                f"loss became {self.last_loss} by step {tr.loop.step}; the last good checkpoint "
                f"(step {tr.saved_step}) is kept: try a lower --lr, or --skip-nonfinite"
            )
        rate = (tr.loop.tokens - self.tokens) / max(1e-9, now - self.since)
        self.loss_sum.zero_()
        self.n = 0
        return self.last_loss, rate

    def restart(self) -> None:
        self.since, self.tokens = time.monotonic(), self.trainer.loop.tokens
