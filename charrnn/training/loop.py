"""The training loop: one optimizer step on a window of B streams, and the run around it."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from charrnn.checkpoint import (
    BEST,
    LAST,
    METRICS,
    MetricsLog,
    load_tensors,
    load_weights,
    read_meta,
    save_tensors,
)
from charrnn.config import SampleConfig, Stop, TrainConfig
from charrnn.data import (
    Dataset,
    LengthPlan,
    Split,
    StreamBatches,
)
from charrnn.defaults import (
    DECIDE_AFTER,
    DECIDE_AT,
    EVAL_SHARE,
    LIGHT,
    STOP_FIT_MIN,
    STOP_FIT_SHARE,
    in_force,
    regularization,
)
from charrnn.device import to_device
from charrnn.errors import CheckpointError, ConfigError, TrainingError
from charrnn.evaluate import bits_per_byte, bits_per_char, eval_mode, evaluate
from charrnn.generate import Sampler
from charrnn.model import RNNLM, count_parameters, detach_state
from charrnn.stopfit import (
    STEPS_PER_LENGTH,
    StopFit,
    estimate_seconds,
    fit_lengths,
    write_stopfit,
)
from charrnn.stopping import ENDING, head_loss, head_targets, target_counts
from charrnn.tokenizers import PAD
from charrnn.training.calibrate import fit_end_bias, fit_start_state
from charrnn.training.callbacks import Callbacks, EvalStats, StepStats, TrainResult
from charrnn.training.distributed import Ranks
from charrnn.training.precision import Amp


class _NoLog(MetricsLog):
    """Rank 0 alone keeps the metrics log."""

    def append(self, record: dict[str, Any]) -> None: ...
    def truncate_after(self, step: int) -> None: ...


@dataclass
class LoopState:
    step: int = 0
    epoch: int = 0
    window: int = 0
    tokens: int = 0
    elapsed: float = 0.0  # training seconds before this session
    best_loss: float = math.inf
    best_step: int = 0
    evals_since_best: int = 0
    last_eval_step: int = 0
    history: list[float] = field(default_factory=list)
    # decided once the pace is known (see regularization); None until then
    passes: float | None = None  # passes over the training text the run was expected to make
    pressure: float | None = None  # passes x recurrent parameters per training token
    weight_decay: float | None = None
    min_lr_ratio: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["best_loss"] = None if math.isinf(self.best_loss) else self.best_loss
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoopState:
        """The loop state a checkpoint recorded; ValueError if a field has the wrong type."""
        d = dict(d)
        d["best_loss"] = math.inf if d.get("best_loss") is None else d["best_loss"]
        loop = cls(**d)
        counts = (loop.step, loop.epoch, loop.window, loop.tokens, loop.best_step)
        counts += (loop.evals_since_best, loop.last_eval_step)
        reals = (loop.elapsed, loop.best_loss, *loop.history)
        decided = (loop.passes, loop.pressure, loop.weight_decay, loop.min_lr_ratio)
        reals += tuple(x for x in decided if x is not None)
        if not all(type(n) is int and n >= 0 for n in counts) or not all(
            type(x) in (int, float) for x in reals
        ):
            raise ValueError("loop state fields have the wrong types")
        return loop


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


class _Trainer:
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
        )
        self.features = ranks.wrap(model)  # model.features, through DDP with several ranks
        self.opt = torch.optim.AdamW(
            model.parameters(),
            lr=c.lr,
            betas=(0.9, 0.99),
            weight_decay=0.0,  # set by _set_regularization
            fused=device.type in ("cpu", "cuda"),  # one kernel for all parameters
        )
        self.amp = Amp(c.precision, device)
        self.loop = LoopState()
        self.state = model.init_state(len(self.rows))
        self.now = 0.0  # training seconds, as all ranks agreed at the top of this step
        self.eval_cost = 0.0  # seconds one full evaluation is expected to take
        self.session: tuple[float, int] | None = None  # (clock, step) at this session's start
        self.saved_step = 0  # the step of the newest last.safetensors
        self.stop_fit_cost = 0.0  # seconds the stop fit at the end is expected to take
        self.stop_fit_n = config.stop_fit  # samples per rule it draws, fewer on a tight budget
        self.per_eval = 0.0  # seconds one periodic evaluation takes, as last measured
        self.sampler = Sampler(model, ds.tokenizer)
        self._set_regularization()

    # -- progress --

    def elapsed(self) -> float:
        return self.loop.elapsed + time.monotonic() - self.started

    def progress(self) -> float | None:
        """How far the run is (0..1) towards whichever end comes first; None if none is set.

        With --max-steps or --epochs, the time budget counts only once it is projected to end
        the run first. So when the steps decide, the schedule never depends on the clock, and
        a resumed run follows, bit for bit, the schedule of an unbroken one.
        """
        c, parts = self.config, []
        horizon = self._horizon()
        if horizon:
            parts.append(self.loop.step / horizon)
        if c.time_budget and (not horizon or self._time_binds(horizon)):
            usable = c.time_budget - self._reserve()  # the loop stops when it is spent
            parts.append(self.now / usable if usable > 0 else 1.0)
        return max(parts) if parts else None

    def _reserve(self) -> float:
        """Seconds kept for the work after the last step: the final evaluation, saves, and
        the stop fit."""
        return self.eval_cost + self.stop_fit_cost

    def _horizon(self) -> float | None:
        """The step --max-steps or --epochs ends the run at, whichever comes first."""
        c = self.config
        ends = [h for h in (c.max_steps, c.epochs and c.epochs * len(self.batches)) if h]
        return min(ends) if ends else None

    def _pace(self) -> tuple[int, float]:
        """(steps, seconds per step) of this session so far, on the clock every rank agreed
        on, so all ranks decide alike."""
        if self.session is None:
            self.session = (self.now, self.loop.step)
        now0, step0 = self.session
        done = self.loop.step - step0
        return done, (self.now - now0) / done if done > 0 else 0.0

    def _time_binds(self, horizon: float) -> bool:
        """Whether, at this session's pace, the time budget runs out before ``horizon`` steps."""
        done, per_step = self._pace()
        if done <= 0 or not self.config.time_budget:
            return False
        finish = self.now + (horizon - self.loop.step) * per_step + self._reserve()
        return finish > self.config.time_budget

    def _expected_passes(self) -> float | None:
        """Passes over the training text the run will have made at its end; None until it is
        time to decide (DECIDE_AFTER), or when the run has no end."""
        c, horizon = self.config, self._horizon()
        if not c.time_budget:
            return None if horizon is None else horizon / len(self.batches)
        if self.loop.step < DECIDE_AFTER:
            return None
        if horizon is not None and not self._time_binds(horizon):
            return horizon / len(self.batches)  # the steps end it: a resumed run decides alike
        done, per_step = self._pace()
        if done < DECIDE_AFTER or (self.progress() or 0.0) < DECIDE_AT:
            return None
        usable = c.time_budget - self._reserve() - self.now
        return (self.loop.step + max(0.0, usable) / max(per_step, 1e-9)) / len(self.batches)

    def _regularize(self) -> None:
        """Decide the weight decay and the learning rate's floor the config leaves to the run,
        once, from the passes it is expected to make and its size; kept in the loop state, so
        a resumed run goes on as decided. Until then they are light."""
        c, loop = self.config, self.loop
        if loop.passes is None and (c.weight_decay is None or c.min_lr_ratio is None):
            passes = self._expected_passes()
            if passes is not None:
                per_token = count_parameters(self.model.rnn) / len(self.train_split)
                loop.passes, loop.pressure = round(passes, 2), round(passes * per_token, 2)
                loop.weight_decay, loop.min_lr_ratio = regularization(loop.pressure)
                self._set_regularization()

    def _set_regularization(self) -> None:
        """The config's weight decay and floor where it sets them, else the loop's decision."""
        c, loop = self.config, self.loop
        decided = (loop.weight_decay, loop.min_lr_ratio) if loop.passes is not None else None
        wd, self.min_lr_ratio = in_force((c.weight_decay, c.min_lr_ratio), decided)
        for g in self.opt.param_groups:
            g["weight_decay"] = wd

    # -- checkpoints --

    def save_last(self) -> None:
        state = self.ranks.gather(self.state)  # (layers, B, H): every rank takes part
        if not self.ranks.is_main:
            return
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        opt = self.opt.state_dict()
        for pid, st in opt["state"].items():
            for k, v in st.items():
                tensors[f"optim.{pid}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
        for i, s in enumerate(state):
            tensors[f"loop.state.{i}"] = s
        for k, v in self.amp.state_tensors().items():
            tensors[f"scaler.{k}"] = v
        tensors["rng.torch"] = torch.get_rng_state()
        if self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        loop = self.loop.to_dict()
        loop["elapsed"] = self.elapsed()
        meta = {"kind": "last", "loop": loop, "param_groups": _json_groups(opt["param_groups"])}
        save_tensors(self.folder / LAST, tensors, meta)
        self.saved_step = self.loop.step
        self.cb.on_checkpoint(self.folder / LAST)

    def save_best(self, loss: float) -> None:
        if not self.ranks.is_main:
            return
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        meta = {
            "kind": "best",
            "step": self.loop.step,
            "val_loss": loss,
            "val_bpc": bits_per_char(loss, self.val),
            "val_bpb": bits_per_byte(loss, self.val),
        }
        save_tensors(self.folder / BEST, tensors, meta)

    def restore(self) -> None:
        """Continue exactly where ``last.safetensors`` left off."""
        path = self.folder / LAST
        meta = read_meta(path)
        load_weights(self.model, path)
        try:
            self._restore_state(path, meta)
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError, IndexError) as e:
            detail = " ".join(str(e).split())[:200] or type(e).__name__
            raise CheckpointError(
                f"{path} cannot be resumed: invalid saved state ({detail})"
            ) from None
        self.started = time.monotonic()
        self.saved_step = self.loop.step
        self.log.truncate_after(self.loop.step)

    def _restore_state(self, path: Path, meta: dict[str, Any]) -> None:
        """Optimizer moments, hidden state, RNG and loop state; ValueError (and kin) if the
        file's state does not fit this model, so a tampered file cannot fail mid-run."""
        params = list(self.model.parameters())
        opt_state: dict[int, dict[str, Any]] = {}
        for name, t in load_tensors(path, "optim.").items():
            pid, key = name.split(".", 1)
            if not 0 <= int(pid) < len(params):
                raise ValueError(f"optimizer state for a parameter #{pid} the model lacks")
            if t.shape != (params[int(pid)].shape if key != "step" else ()):
                raise ValueError(f"optimizer state {name} has shape {tuple(t.shape)}")
            opt_state.setdefault(int(pid), {})[key] = t
        # The hyperparameters come from the run's config (the learning rate is set at every
        # step), not from the file: its param_groups are a record, never an input.
        groups = self.opt.state_dict()["param_groups"]
        self.opt.load_state_dict({"state": opt_state, "param_groups": groups})
        loop_t = load_tensors(path, "loop.state.")
        state = tuple(loop_t[str(i)].to(self.device) for i in range(len(loop_t)))
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
        self.amp.load_state_tensors(load_tensors(path, "scaler."))
        rng = load_tensors(path, "rng.")
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        self.loop = LoopState.from_dict(meta["loop"])
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
            token_loss = F.cross_entropy(
                logits.flatten(0, 1).float(), y.flatten(), ignore_index=PAD, reduction="sum"
            ) / float(norm[0])
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
        return token_loss.detach()

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
        c, loop = self.config, self.loop
        self.model.train()
        stopped_by = ""
        report_every = 10
        loss_sum, loss_n = torch.zeros((), device=self.device), 0
        t_mark, tok_mark = time.monotonic(), loop.tokens
        last_loss = math.nan
        self._estimate_eval_cost()
        while True:
            stopped_by = self._should_stop()
            if stopped_by:
                break
            tl = self.step()
            if tl is None:
                continue
            loss_sum += tl.float()
            loss_n += 1
            if loop.step % report_every == 0 or loop.step == 1:
                now = time.monotonic()
                last_loss = float(self.ranks.average(loss_sum)) / loss_n
                if not math.isfinite(last_loss):
                    raise TrainingError(
                        f"loss became {last_loss} by step {loop.step}; the last good checkpoint "
                        f"(step {self.saved_step}) is kept: try a lower --lr, or --skip-nonfinite"
                    )
                rate = (loop.tokens - tok_mark) / max(1e-9, now - t_mark)
                stats = StepStats(
                    loop.step,
                    last_loss,
                    self.opt.param_groups[0]["lr"],
                    rate,
                    self.elapsed(),
                    self.progress(),
                    loop.epoch,
                )
                self.log.append(
                    {
                        "step": loop.step,
                        "loss": last_loss,
                        "lr": stats.lr,
                        "tokens_per_s": rate,
                        "elapsed": stats.elapsed,
                    }
                )
                self.cb.on_step(stats)
                loss_sum.zero_()
                loss_n = 0
                t_mark, tok_mark = time.monotonic(), loop.tokens
            if self._eval_due():
                t0 = time.monotonic()
                self._periodic_eval()
                t_mark += time.monotonic() - t0
            if c.sample_every and loop.step % c.sample_every == 0 and self.ranks.is_main:
                t0 = time.monotonic()
                self.cb.on_sample(loop.step, self._sample_text())
                t_mark += time.monotonic() - t0
        if loop.step > loop.last_eval_step and stopped_by != "interrupted":
            self._periodic_eval()
        self.save_last()
        final = self._final_eval() if stopped_by != "interrupted" else None
        fit = self._stop_fit() if final is not None else None
        tokens_per_s = loop.tokens / max(1e-9, self.elapsed())
        return TrainResult(
            self.folder,
            loop.step,
            loop.tokens,
            self.elapsed(),
            tokens_per_s,
            stopped_by,
            loop.best_step,
            final,
            last_loss,
            fit,
        )

    def _should_stop(self) -> str:
        """Why to stop now, agreed by every rank (one stops, all stop), and the clock."""
        code, self.now = self.ranks.agree(_STOPS.index(self._stop_reason()), self.elapsed())
        return _STOPS[code]

    def _stop_reason(self) -> str:
        c = self.config
        if self.cb.stop_requested():
            return "interrupted"
        if c.max_steps and self.loop.step >= c.max_steps:
            return "max-steps"
        if c.epochs and self.loop.step >= c.epochs * len(self.batches):
            return "epochs"
        if c.time_budget and self.elapsed() + self._reserve() >= c.time_budget:
            return "time-budget"
        if c.patience and self.loop.evals_since_best >= c.patience:
            return "early-stopping"
        return ""

    def _eval_due(self) -> bool:
        c, loop = self.config, self.loop
        p = self.progress()
        if p is None:
            return loop.step - loop.last_eval_step >= c.eval_every
        return p >= (len(loop.history) + 1) / self._evals()

    def _evals(self) -> int:
        """Evaluations in this run: ``evals``, or fewer where a time budget decides the end
        and they would take more than EVAL_SHARE of it (a large vocabulary, a short budget)."""
        c = self.config
        if not c.time_budget or c.max_steps or c.epochs or not self.per_eval:
            return c.evals
        return max(1, min(c.evals, int(EVAL_SHARE * c.time_budget / self.per_eval)))

    def _estimate_eval_cost(self) -> None:
        """Time the final full evaluation will take, so a time budget leaves room for it."""
        if not self.config.time_budget:
            return
        cost, n = 0.0, self._stop_fit_samples()
        if n:  # rank 0 draws the stop fit; every rank keeps time for it
            mean = float(self.val.unit_lengths().mean())
            cost = estimate_seconds(self.model, n, mean)
            share = STOP_FIT_SHARE * self.config.time_budget
            if cost > share:  # fewer samples (the cost is about linear in them), or none
                n = int(n * share / cost)
                self.stop_fit_n = n if n >= STOP_FIT_MIN else 0
                cost = cost * self.stop_fit_n / self._stop_fit_samples()
        self.stop_fit_cost = self.ranks.maximum(cost)
        t0 = time.monotonic()
        _, n = self._evaluate(max_tokens=4096)
        self._update_eval_cost(time.monotonic() - t0, n, fit=None, saving=1.0)

    def _update_eval_cost(
        self, seconds: float, tokens: int, fit: float | None, saving: float
    ) -> None:
        """Re-estimate the end-of-run work from the latest evaluation: a last periodic one
        (fits, ``tokens`` read, saves), then the whole validation split, with a 20% margin
        for a machine that gets busier; so a run still ends on time. Every rank takes the
        slowest rank's figure: the learning rate follows it."""
        rate = seconds / max(1, tokens)
        if fit is None:  # not measured yet: the end-bias fit reads as many tokens again
            fit = rate * self.config.eval_tokens
        cost = fit + rate * (tokens + len(self.val)) * 1.2 + 2 * saving
        self.eval_cost = self.ranks.maximum(cost)
        self.per_eval = self.ranks.maximum(fit + rate * self.config.eval_tokens + saving)

    def _evaluate(self, max_tokens: int = 0) -> tuple[float, int]:
        """Validation loss and tokens; each rank reads its block of the streams."""
        r = self.ranks
        loss, n = evaluate(
            self.model,
            self.val,
            self.config.seq_len,
            max_tokens=max_tokens,
            device=self.device,
            part=(r.rank, r.world),
            autocast=self.amp.autocast,
        )
        return r.pool(loss, n)

    def _fit_end_bias(self) -> None:
        """How often the eos and halt rules end, matched to training text (model.end_bias)."""
        if self.model.config.stop_heads:
            c = self.config
            fit_end_bias(self.model, self.train_split, c.seq_len, c.eval_tokens, device=self.device)

    def _fit_start_state(self) -> None:
        split = self.train_split
        fit_start_state(self.model, split.tokens, split.unit_starts[1:] - 1)

    def _periodic_eval(self) -> None:
        c, loop = self.config, self.loop
        t0 = time.monotonic()
        self._fit_start_state()
        self._fit_end_bias()
        t_fit = time.monotonic()
        loss, n = self._evaluate(c.eval_tokens)
        t_eval = time.monotonic()
        if not math.isfinite(loss):
            raise TrainingError(
                f"validation loss became {loss} at step {loop.step}; the last good checkpoint "
                f"(step {self.saved_step}) is kept: try a lower --lr"
            )
        loop.last_eval_step = loop.step
        loop.history.append(loss)
        best = loss < loop.best_loss
        if best:
            loop.best_loss, loop.best_step, loop.evals_since_best = loss, loop.step, 0
            self.save_best(loss)
        else:
            loop.evals_since_best += 1
        stats = EvalStats(
            loop.step, loss, bits_per_char(loss, self.val), n, best, False, self._bpb(loss)
        )
        self.log.append(
            {"step": loop.step, "val_loss": loss, "val_bpc": stats.bpc, "val_bpb": stats.bpb}
        )
        self.save_last()
        self._update_eval_cost(t_eval - t_fit, n, fit=t_fit - t0, saving=time.monotonic() - t_eval)
        self.cb.on_eval(stats)

    def _final_eval(self) -> EvalStats:
        """The kept (best) weights on the whole validation split."""
        best_path = self.folder / BEST
        if self.loop.best_step != self.loop.step:
            if self.ranks.is_main and best_path.exists():
                load_weights(self.model, best_path)
            self.ranks.broadcast_module(self.model)  # every rank evaluates the same weights
        loss, n = self._evaluate()
        bpc = bits_per_char(loss, self.val)
        stats = EvalStats(self.loop.best_step, loss, bpc, n, True, True, self._bpb(loss))
        meta = {
            "kind": "best",
            "step": self.loop.best_step,
            "val_loss": loss,
            "val_bpc": stats.bpc,
            "val_bpb": stats.bpb,
            "full": True,
        }
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        if self.ranks.is_main:
            save_tensors(best_path, tensors, meta)
        self.log.append(
            {
                "step": self.loop.step,
                "final_val_loss": loss,
                "final_val_bpc": stats.bpc,
                "final_val_bpb": stats.bpb,
            }
        )
        self.cb.on_eval(stats)
        return stats

    def _stop_fit_samples(self) -> int:
        """Samples per rule for the stop fit: rank 0 draws them, for a model with stop heads."""
        wanted = self.model.config.stop_heads and len(self.val.unit_starts) and self.ranks.is_main
        return self.config.stop_fit if wanted else 0

    def _stop_fit(self) -> StopFit | None:
        """Lengths drawn under each stopping rule against the validation units (stopfit.json),
        for the kept model."""
        n = min(self._stop_fit_samples(), self.stop_fit_n)
        if not n:
            return None
        lengths = self.val.unit_lengths()
        cap = None
        if self.config.time_budget and self.stop_fit_cost > 0:
            # what is left of the budget, in steps of the estimate: a model that rarely ends
            # its samples (early in training) must not run past the budget; never longer than
            # the samples are without a budget (a long budget and a fast step would ask for
            # more tokens than a sample may have)
            per_step = self.stop_fit_cost / (len(ENDING) * STEPS_PER_LENGTH * lengths.mean())
            left = self.config.time_budget - self.elapsed()
            cap = max(1, min(self.model.config.max_len, int(left / (len(ENDING) * per_step))))
        fit = fit_lengths(
            self.model, self.ds.tokenizer, lengths, n, seed=self.config.seed, max_tokens=cap
        )
        write_stopfit(self.folder, fit)
        return fit

    def _bpb(self, loss: float) -> float:
        return bits_per_byte(loss, self.val)

    def _sample_text(self) -> str:
        cfg = SampleConfig(
            temperature=0.8,
            max_tokens=self.config.sample_tokens,
            stop=Stop.eos,
            seed=self.config.seed + self.loop.step,
        )
        with eval_mode(self.model):
            return self.sampler.sample(1, cfg)[0].text


_STOPS = ("", "early-stopping", "max-steps", "epochs", "time-budget", "interrupted")


def clip_gradients(model: RNNLM, max_norm: float) -> None:
    """Clip the language model's gradient to ``max_norm`` by its own norm, and the stop heads'
    by theirs: the halting and length losses never shrink the language model's step. The
    length input's rows count as the vectors they add (their gradient over the scale each is
    read through), so how they are parametrized does not change the norm. Clipping every
    parameter together cost the language model ~0.01 nats/char at equal steps
    (docs/defaults.md, "What the stop heads cost")."""
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


def _json_groups(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in groups]
