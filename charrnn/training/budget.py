"""Where a run stands towards its end, and the time it keeps for the work after its last step.

A run ends at --max-steps, --epochs or --time-budget, whichever comes first. The learning rate
follows ``progress``; the loop stops when the time left is what the final evaluation, the
saves and the stop fit need (``reserve``), re-estimated after every evaluation.
"""

from __future__ import annotations

from charrnn.config import TrainConfig
from charrnn.defaults import DECIDE_AFTER, DECIDE_AT, EVAL_SHARE, STOP_FIT_MIN, STOP_FIT_SHARE
from charrnn.training.distributed import Ranks


class Budget:
    """The pace of one training session against the run's ends. ``now`` is the clock every
    rank agreed on at the top of the step (``Trainer.should_stop`` sets it), so all ranks
    decide alike."""

    def __init__(self, config: TrainConfig, steps_per_epoch: int, ranks: Ranks):
        self.config, self.steps_per_epoch, self.ranks = config, steps_per_epoch, ranks
        self.now = 0.0  # training seconds at the top of this step
        self.session: tuple[float, int] | None = None  # (clock, step) at this session's start
        # (clock, step) after the last evaluation or sample: the pace of training steps alone
        # is measured from there (training_pace)
        self.since_pause: tuple[float, int] | None = None
        self.eval_cost = 0.0  # seconds the end-of-run evaluation is expected to take
        self.per_eval = 0.0  # seconds one periodic evaluation takes, as last measured
        self.stop_fit_cost = 0.0  # seconds the stop fit at the end is expected to take

    def progress(self, step: int) -> float | None:
        """How far the run is (0..1) towards whichever end comes first; None if none is set.

        With --max-steps or --epochs, the time budget counts only once it is projected to end
        the run first. So when the steps decide, the schedule never depends on the clock, and
        a resumed run follows, bit for bit, the schedule of an unbroken one.
        """
        c, parts = self.config, []
        horizon = self.horizon()
        if horizon:
            parts.append(step / horizon)
        if c.time_budget and (not horizon or self.time_binds(step, horizon)):
            usable = c.time_budget - self.reserve()  # the loop stops when it is spent
            parts.append(self.now / usable if usable > 0 else 1.0)
        return max(parts) if parts else None

    def reserve(self) -> float:
        """Seconds kept for the work after the last step: the final evaluation, saves, and
        the stop fit."""
        return self.eval_cost + self.stop_fit_cost

    def out_of_time(self, elapsed: float) -> bool:
        budget = self.config.time_budget
        return bool(budget) and elapsed + self.reserve() >= budget

    def horizon(self) -> float | None:
        """The step --max-steps or --epochs ends the run at, whichever comes first."""
        c = self.config
        ends = [h for h in (c.max_steps, c.epochs and c.epochs * self.steps_per_epoch) if h]
        return min(ends) if ends else None

    def pace(self, step: int) -> tuple[int, float]:
        """(steps, seconds per step) of this session so far."""
        if self.session is None:
            self.session = (self.now, step)
        now0, step0 = self.session
        done = step - step0
        return done, (self.now - now0) / done if done > 0 else 0.0

    def training_pace(self, step: int) -> tuple[int, float]:
        """(steps, seconds per step) since the last evaluation or sample (or this session's
        start): the pace of training steps alone."""
        if self.since_pause is None:
            self.since_pause = (self.now, step)
        now0, step0 = self.since_pause
        done = step - step0
        return done, (self.now - now0) / done if done > 0 else 0.0

    def paused(self) -> None:
        """An evaluation or a sample took place: the training pace is measured anew after it."""
        self.since_pause = None

    def time_binds(self, step: int, horizon: float) -> bool:
        """Whether, at this session's pace, the time budget runs out before ``horizon`` steps."""
        done, per_step = self.pace(step)
        if done <= 0 or not self.config.time_budget:
            return False
        finish = self.now + (horizon - step) * per_step + self.reserve()
        return finish > self.config.time_budget

    def expected_passes(self, step: int, evals_done: int) -> float | None:
        """Passes over the training text the run will have made at its end, after
        ``evals_done`` evaluations so far; None until it is time to decide (DECIDE_AFTER), or
        when the run has no end. A short budget evaluates before it decides: the pace is of
        training alone, and the evaluations still to come take their time from what is left."""
        c, horizon = self.config, self.horizon()
        if not c.time_budget:
            return None if horizon is None else horizon / self.steps_per_epoch
        if step < DECIDE_AFTER:
            return None
        if horizon is not None and not self.time_binds(step, horizon):
            return horizon / self.steps_per_epoch  # the steps end it: a resumed run decides alike
        done, per_step = self.training_pace(step)
        if done < DECIDE_AFTER or (self.progress(step) or 0.0) < DECIDE_AT:
            return None
        evals_left = max(0, self.evals() - evals_done) * self.per_eval
        usable = c.time_budget - self.reserve() - self.now - evals_left
        return (step + max(0.0, usable) / max(per_step, 1e-9)) / self.steps_per_epoch

    def evals(self) -> int:
        """Evaluations in this run: ``evals``, or fewer where a time budget decides the end
        and they would take more than EVAL_SHARE of it (a large vocabulary, a short budget)."""
        c = self.config
        if not c.time_budget or c.max_steps or c.epochs or not self.per_eval:
            return c.evals
        return max(1, min(c.evals, int(EVAL_SHARE * c.time_budget / self.per_eval)))

    def keep_for_stop_fit(self, samples: int, seconds: float) -> int:
        """Keep time for a stop fit of ``samples`` per rule expected to take ``seconds``: fewer
        samples (the cost is about linear in them), or none, where it would take more than
        STOP_FIT_SHARE of the budget. The samples it can afford."""
        n, cost = samples, seconds
        share = STOP_FIT_SHARE * (self.config.time_budget or 0.0)
        if samples and cost > share:
            n = int(samples * share / cost)
            n = n if n >= STOP_FIT_MIN else 0
            cost = cost * n / samples
        self.stop_fit_cost = self.ranks.maximum(cost)  # rank 0 draws it; all keep its time
        return n

    def record_eval(
        self, seconds: float, tokens: int, fit: float | None, saving: float, val_tokens: int
    ) -> None:
        """Re-estimate the end-of-run work from the latest evaluation: a last periodic one
        (fits, ``tokens`` read, saves), then the whole validation split, with a 20% margin
        for a machine that gets busier; so a run still ends on time. Every rank takes the
        slowest rank's figure: the learning rate follows it."""
        rate = seconds / max(1, tokens)
        if fit is None:  # not measured yet: the end-bias fit reads as many tokens again
            fit = rate * self.config.eval_tokens
        cost = fit + rate * (tokens + val_tokens) * 1.2 + 2 * saving
        self.eval_cost = self.ranks.maximum(cost)
        self.per_eval = self.ranks.maximum(fit + rate * self.config.eval_tokens + saving)
