"""Sampling: temperature, top-k / top-p, under one of the stopping rules (``stopping``).

Several samples are drawn side by side as one batch. Each sample's log-probability is the
model's own (temperature 1, no truncation) under the chosen rule, so it equals what ``score``
gives for the same tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from charrnn.config import SampleConfig, Stop
from charrnn.errors import ConfigError
from charrnn.model import RNNLM, State
from charrnn.model.stepper import Stepper
from charrnn.stopping import RULES, LengthIds, Rows, StopRule, Totals
from charrnn.tokenizers import SOS, UNK, Tokenizer

Feed = Callable[[Tensor, State, "Tensor | None"], tuple[Tensor, State]]
Step = tuple[list[tuple[int, int]], list[int]]  # (sample, token) pairs drawn; samples drawing


@dataclass
class Sample:
    tokens: list[int]  # drawn tokens (the prompt excluded; <eos> kept in "none" mode)
    text: str  # prompt + generated text
    log_prob: float  # log P of the drawn tokens under the model and the stopping rule
    cut: bool  # stopped by --max-tokens rather than by the rule
    length: int | None = None  # length mode: the tau that was drawn
    unk_in_prompt: int = 0
    prompt_tokens: list[int] = field(default_factory=list)


def filter_logits(logits: Tensor, top_k: int | None, top_p: float | None) -> Tensor:
    """Keep the top-k tokens, then the smallest set whose probability reaches top-p. (N, V)"""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        before = probs.cumsum(-1) - probs  # mass of the tokens ranked above each one
        drop_sorted = before >= top_p
        drop_sorted[..., 0] = False  # the likeliest token stays, however small top_p is
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, -math.inf)
    return logits


def draw(logits: Tensor, config: SampleConfig, gen: torch.Generator) -> Tensor:
    """One token per row from rule-masked logits (N, V) -> (N,).

    The Gumbel-max trick: argmax(logits / T + G), G = -log(-log U), draws a token with
    probability softmax(logits / T), as ``torch.multinomial`` would, in a few elementwise
    steps instead of its per-call work (which is most of a one-stream step's drawing). U = 0
    gives G = -inf, and U < 1, so G is never +inf: a masked token (-inf) is never drawn.
    """
    if config.temperature == 0:
        return logits.argmax(-1)
    if config.temperature != 1:
        logits = logits / config.temperature
    logits = filter_logits(logits, config.top_k, config.top_p)
    u = torch.rand(logits.shape, generator=gen, dtype=logits.dtype)
    return (logits - u.log_().neg_().log_()).argmax(-1)


class Sampler:
    """Draws samples from a model; one instance per (model, tokenizer).

    ``fast`` (the default) feeds tokens through ``Stepper``, the one-step path; False feeds
    them through ``model.features``, the straightforward path. Both give the same tokens.
    """

    def __init__(self, model: RNNLM, tokenizer: Tokenizer, fast: bool = True):
        self.model, self.tokenizer, self.fast = model, tokenizer, fast
        self.device = next(model.parameters()).device

    def encode_prompt(self, prompt: str) -> list[int]:
        """<sos> and the prompt's tokens; a prompt of unknown symbols only is refused (the
        model would read nothing of it)."""
        ids = self.tokenizer.encode(prompt, "--prompt") if prompt else []
        if ids and all(t == UNK for t in ids):
            raise ConfigError("--prompt has only symbols this model does not know")
        return [SOS, *ids]

    def check(self, config: SampleConfig) -> None:
        """Refuse settings that only this model makes wrong."""
        RULES[config.stop].check(self.model)
        if config.top_k is not None and config.top_k > self.tokenizer.vocab_size:
            raise ConfigError(
                f"--top-k {config.top_k} is larger than the vocabulary "
                f"({self.tokenizer.vocab_size} symbols)"
            )

    @torch.no_grad()
    def sample(self, n: int, config: SampleConfig, prompt: str = "") -> list[Sample]:
        """``n`` samples, drawn side by side."""
        self.check(config)
        ids = self.encode_prompt(prompt)
        results: list[list[int]] = [[] for _ in range(n)]
        info: dict[str, np.ndarray] = {}
        for pairs, _ in self.iter_tokens(n, config, ids, info):
            for i, t in pairs:
                results[i].append(t)
        return self.finish(ids, results, info, config)

    def finish(
        self,
        prompt_ids: list[int],
        results: list[list[int]],
        info: dict[str, np.ndarray],
        config: SampleConfig,
    ) -> list[Sample]:
        """Samples from the tokens ``iter_tokens`` drew and the ``info`` it filled."""
        out = []
        for i, toks in enumerate(results):
            out.append(
                Sample(
                    tokens=toks,
                    text=self.tokenizer.decode(prompt_ids[1:] + toks),
                    log_prob=float(info["log_prob"][i]),
                    cut=bool(info["cut"][i]),
                    length=int(info["length"][i]) if config.stop is Stop.length else None,
                    unk_in_prompt=prompt_ids.count(UNK),
                    prompt_tokens=prompt_ids[1:],
                )
            )
        return out

    @torch.inference_mode()
    def iter_tokens(
        self, n: int, config: SampleConfig, prompt_ids: list[int], info: dict[str, np.ndarray]
    ) -> Iterator[Step]:
        """Yield, at each step, the (sample index, token) pairs drawn and the samples still
        drawing; fills ``info`` with per-sample log_prob, cut and length (length rule) when done.

        A sample that has ended leaves the batch, so a batch costs the sum of its samples'
        lengths rather than n times the longest one. The rule (``stopping``) decides when.
        """
        model, stop = self.model, RULES[config.stop]
        logits_of, feed = self._feeder(stop)
        lengths = LengthIds(model) if model.config.stop_heads else None
        gen = torch.Generator(device="cpu")
        gen.manual_seed(config.seed if config.seed is not None else int(torch.seed() % 2**63))
        h, state = model.features(torch.tensor([prompt_ids] * n, device=self.device))  # (n, P, H)
        rows = Rows.start(h[:, -1], state, len(prompt_ids), config.max_tokens)
        totals = Totals.zeros(n)
        stop.begin(model, rows, totals, config, gen)
        steps = 0  # no sample has drawn more tokens than this
        while len(rows):
            if steps >= config.max_tokens and not _cut_spent(rows, totals):
                break
            logits = logits_of(rows.h)  # (b, V), rule-masked
            tok = draw(logits, config, gen)  # (b,)
            lp = logits.log_softmax(-1).gather(-1, tok[:, None]).squeeze(-1)  # (b,)
            alive = rows.sample.tolist()
            rows.tok, lp, drew = stop.drawn(rows, tok, lp)
            if drew is None:
                rows.left = rows.left - 1
                yield list(zip(alive, rows.tok.tolist())), alive
            else:
                rows.left = rows.left - drew.long()
                yield list(zip(rows.sample[drew].tolist(), rows.tok[drew].tolist())), alive
            steps += 1
            totals.add(rows.sample, lp)
            stop.after_draw(rows)
            if not len(rows):
                break
            ids = None if lengths is None else stop.length_ids(lengths, rows)
            rows.h, rows.state = feed(rows.tok, rows.state, ids)
            rows.offset = rows.offset + 1
            stop.after_read(model, rows, totals, config, gen)
        info["log_prob"], info["cut"] = totals.log_prob.numpy(), totals.cut.numpy()
        info["length"] = totals.length.numpy()

    def _feeder(self, stop: StopRule) -> tuple[Callable[[Tensor], Tensor], Feed]:
        """``logits(h (b, H)) -> (b, V)``, the token logits under the rule's mask (float32, on
        the host), and ``feed(tokens (b,), state, length input ids (b,) or None) -> (h (b, H),
        state)``: the one-step path when it applies, else the model's."""
        model, dev = self.model, self.device
        mask = stop.mask(model.config.vocab_size)  # (V,)
        if not (self.fast and Stepper.usable(model)):

            def feed(tok: Tensor, state: State, ids: Tensor | None) -> tuple[Tensor, State]:
                r = None if ids is None else ids.to(dev)[:, None]  # (b, 1)
                h, state = model.features(tok.to(dev)[:, None], state, r)
                return h[:, 0], state  # (b, H)

            return lambda h: model.token_logits(h).cpu().float() + mask, feed
        step = Stepper(model, mask.to(dev))

        def feed_step(tok: Tensor, state: State, ids: Tensor | None) -> tuple[Tensor, State]:
            return step(tok.to(dev), state, None if ids is None else ids.to(dev))

        return lambda h: step.token_logits(h).float().cpu(), feed_step


def _cut_spent(rows: Rows, totals: Totals) -> bool:
    """Mark as cut the samples that drew all --max-tokens allows and drop them (in halt mode
    the halting unit may let a unit go on); whether any row is left."""
    spent = rows.left <= 0
    if bool(spent.any()):
        totals.cut[rows.sample[spent]] = True
        rows.keep(~spent)
    return len(rows) > 0
