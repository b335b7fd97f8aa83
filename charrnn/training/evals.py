"""The evaluations of a training run: when they fall due, the calibrations before each, the
kept model on the whole validation split at the end, and the stop fit."""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

import torch

from charrnn.checkpoint import BEST, MetricsLog, load_weights
from charrnn.checkpoint.training import save_weights
from charrnn.config import SampleConfig, Stop, TrainConfig
from charrnn.data import Dataset, Split
from charrnn.errors import TrainingError
from charrnn.evaluate import bits_per_byte, bits_per_char, eval_mode, evaluate
from charrnn.generate import Sampler
from charrnn.model import RNNLM
from charrnn.stopfit import StopFit, estimate_seconds, fit_lengths, sample_cap, write_stopfit
from charrnn.training.average import Averager, kept
from charrnn.training.budget import Budget
from charrnn.training.calibrate import fit_end_bias, fit_start_state, fit_temperature
from charrnn.training.callbacks import Callbacks, EvalStats
from charrnn.training.distributed import Ranks
from charrnn.training.precision import Amp
from charrnn.training.state import LoopState


class Evaluations:
    """What ``Trainer`` does between its steps to measure the model; its state is the
    trainer's."""

    model: RNNLM
    ds: Dataset
    train_split: Split
    val: Split
    config: TrainConfig
    folder: Path
    cb: Callbacks
    device: torch.device
    ranks: Ranks
    log: MetricsLog
    loop: LoopState
    budget: Budget
    amp: Amp
    sampler: Sampler
    average: Averager | None
    saved_step: int
    stop_fit_n: int

    def elapsed(self) -> float:
        raise NotImplementedError

    def progress(self) -> float | None:
        raise NotImplementedError

    def save_last(self) -> None:
        raise NotImplementedError

    def raise_dropout(self) -> None:
        raise NotImplementedError

    def save_best(self, stats: EvalStats) -> None:
        """The model as best.safetensors, with the figures that made it the best."""
        if self.ranks.is_main:
            meta = {"kind": "best", "step": stats.step, "val_loss": stats.loss}
            meta["tokenizer_hash"] = self.tokenizer_hash
            meta.update(val_bpc=stats.bpc, val_bpb=stats.bpb)
            if stats.full:  # the whole validation split, not a sample of it
                meta["full"] = True
            if self.config.calibrate:
                meta["temperature"] = round(math.exp(self.model.log_temperature.item()), 4)
            save_weights(self.folder / BEST, self.model, meta)

    def _stats(self, step: int, loss: float, n: int, best: bool, full: bool) -> EvalStats:
        bpc, bpb = bits_per_char(loss, self.val), bits_per_byte(loss, self.val)
        return EvalStats(step, loss, bpc, n, best, full, bpb)

    def _eval_due(self) -> bool:
        c, loop = self.config, self.loop
        p = self.progress()
        if p is None:
            return loop.step - loop.last_eval_step >= c.eval_every
        # the evaluations still to come, spread evenly over the progress still to come: a
        # count that grows (a cheaper evaluation than estimated) never bunches them up
        evals, done = self.budget.evals(), len(loop.history)
        left = evals - done
        # a checkpoint from before the progress was saved: where the even schedule put it
        last = loop.last_eval_progress or min(1.0, done / evals)
        return left > 0 and p >= last + (1.0 - last) / left - 1e-9

    def _estimate_eval_cost(self) -> None:
        """Time the end-of-run work will take, so a time budget leaves room for it."""
        if not self.config.time_budget:
            return
        n, cost = self._stop_fit_samples(), 0.0
        if n:
            cost = estimate_seconds(self.model, n, float(self.val.unit_lengths().mean()))
        self.stop_fit_n = self.budget.keep_for_stop_fit(n, cost)
        t0 = time.monotonic()
        _, tokens = self._evaluate(max_tokens=4096)
        self.budget.record_eval(time.monotonic() - t0, tokens, None, 1.0, len(self.val))

    def _evaluate(self, max_tokens: int = 0, exact: bool = False) -> tuple[float, int]:
        """Validation loss and tokens; each rank reads its block of the streams. ``exact``: in
        float32 whatever the training precision, the figure ``charrnn eval`` gives."""
        r = self.ranks
        loss, n = evaluate(
            self.model,
            self.val,
            self.config.seq_len,
            max_tokens=max_tokens,
            device=self.device,
            part=(r.rank, r.world),
            autocast=contextlib.nullcontext if exact else self.amp.autocast,
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

    def _fit_temperature(self) -> None:
        """The temperature of the logits, fitted on the validation text an evaluation reads
        (each rank on its block, then averaged); 1 where the run does not calibrate (a base
        it was fine-tuned from may have fitted one)."""
        if not self.config.calibrate:
            self.model.log_temperature.zero_()
            return
        c, r = self.config, self.ranks
        part = (r.rank, r.world)
        log_t, n = fit_temperature(
            self.model, self.val, c.seq_len, c.eval_tokens, self.device, part, self.amp.autocast
        )
        self.model.log_temperature.fill_(r.pool(log_t, n)[0])

    def _periodic_eval(self) -> None:
        c, loop = self.config, self.loop
        t0 = time.monotonic()
        with kept(self.average):  # the weights a run keeps are those it evaluates
            self._fit_start_state()
            self._fit_temperature()
            self._fit_end_bias()
            t_fit = time.monotonic()
            loss, n = self._evaluate(c.eval_tokens)
            t_eval = time.monotonic()
            if not math.isfinite(loss):
                raise TrainingError(
                    f"validation loss became {loss} at step {loop.step}; the last good "
                    f"checkpoint (step {self.saved_step}) is kept: try a lower --lr"
                )
            loop.last_eval_step = loop.step
            loop.last_eval_progress = min(1.0, self.progress() or 0.0)
            loop.history.append(loss)
            stats = self._stats(loop.step, loss, n, loss < loop.best_loss, full=False)
            if stats.best:
                loop.best_loss, loop.best_step, loop.evals_since_best = loss, loop.step, 0
                self.save_best(stats)
            else:
                loop.evals_since_best += 1
                self.raise_dropout()  # before save_last, so a resumed run goes on as raised
        self.log.append(
            {"step": loop.step, "val_loss": loss, "val_bpc": stats.bpc, "val_bpb": stats.bpb}
        )
        self.save_last()
        saving = time.monotonic() - t_eval
        self.budget.record_eval(t_eval - t_fit, n, t_fit - t0, saving, len(self.val))
        self.cb.on_eval(stats)

    def _final_eval(self) -> EvalStats:
        """The kept (best) weights on the whole validation split."""
        best_path = self.folder / BEST
        if self.loop.best_step != self.loop.step or self.average is not None:
            if self.ranks.is_main and best_path.exists():
                load_weights(self.model, best_path)
            self.ranks.broadcast_module(self.model)  # every rank evaluates the same weights
        loss, n = self._evaluate(exact=True)
        stats = self._stats(self.loop.best_step, loss, n, best=True, full=True)
        self.save_best(stats)
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
        lengths, cost, budget = self.val.unit_lengths(), self.budget.stop_fit_cost, None
        if self.config.time_budget and cost > 0:  # a model that rarely ends must not overrun
            budget = self.config.time_budget - self.elapsed()
        max_len = self.model.config.max_len
        cap = None if budget is None else sample_cap(cost, float(lengths.mean()), budget, max_len)
        fit = fit_lengths(
            self.model, self.ds.tokenizer, lengths, n, seed=self.config.seed, max_tokens=cap
        )
        write_stopfit(self.folder, fit)
        return fit

    def _sample_text(self) -> str:
        cfg = SampleConfig(
            temperature=0.8,
            max_tokens=self.config.sample_tokens,
            stop=Stop.eos,
            seed=self.config.seed + self.loop.step,
        )
        with eval_mode(self.model):
            return self.sampler.sample(1, cfg)[0].text
