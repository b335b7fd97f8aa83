"""Beam search: the likeliest continuations under a stopping rule, instead of drawn ones.

The N hypotheses of a search go side by side as one batch, through the sampler's one-step
path. Each step is a choice among candidates:

    token    every extension of every hypothesis: log P so far + log P(token), from the same
             rule-masked logits that sampling reads (shaped by penalties, bias and bans when
             those are set). An extension the rule ends there finishes its hypothesis:
                 eos     the token is <eos> (its term counted)
                 length  it is the tau-th token (a search starts from the N likeliest tau,
                         log P(tau) counted, or from --length)
    halt     (halt rule) once the token is read: end, + log p(halt), or go on, + log(1 - p)

so a finished beam's log-probability is exactly ``score``'s for its text (the shaping only
ranks). The 2N best candidates of a step are its pool: those that end a hypothesis among the
N best become beams, and the N best others go on (as Hugging Face's beam search does). With
one beam each choice is the argmax: greedy sampling. A search ends when no
hypothesis goes on, when none going on can beat the N-th best finished one (a log-probability
only falls as a hypothesis grows; a length penalty is allowed for), or at --max-tokens, where
the best hypotheses still going on fill the -n asked for, marked cut. Finished beams are
ranked by log P / tokens ** --length-penalty.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from charrnn.config import SampleConfig
from charrnn.controls import Controls
from charrnn.decoding import TextWatch
from charrnn.errors import ConfigError
from charrnn.generate import Sample, Sampler
from charrnn.prime import read
from charrnn.stopping import RULES, LengthIds, Rows


@dataclass
class Beam:
    """A finished (or cut) hypothesis."""

    tokens: list[int]
    log_prob: float  # the model's own, under the rule
    rank: float  # what the search ranks by: log_prob, or its shaped twin
    cut: bool = False
    length: int = 0  # length rule: its tau
    stop_string: str | None = None
    end: int = -1  # where a stop string ends its text, after the prompt

    def score(self, alpha: float) -> float:
        return self.rank / max(len(self.tokens), 1) ** alpha


@torch.inference_mode()
def search(sampler: Sampler, n: int, config: SampleConfig, prompt: str = "") -> list[Sample]:
    """The ``n`` best beams of a search with ``config.beam`` beams, best first."""
    sampler.check(config)
    width = config.beam or 1
    if n > width:
        raise ConfigError(f"-n {n} is more than --beam {width}: a search ends with {width} beams")
    ids = sampler.encode_prompt(prompt)
    beams = _Search(sampler, config, ids).run()[:n]
    info = {
        "log_prob": np.array([b.log_prob for b in beams]),
        "cut": np.array([b.cut for b in beams]),
        "length": np.array([b.length for b in beams]),
        "text_end": np.array([b.end for b in beams], dtype=np.int64),
        "stop_string": np.array([b.stop_string for b in beams], dtype=object),
    }
    return sampler.finish(ids, [b.tokens for b in beams], info, config)


class _Search:
    """The hypotheses going on (``rows``, one per hypothesis) and the beams finished."""

    def __init__(self, sampler: Sampler, config: SampleConfig, prompt_ids: list[int]):
        self.sampler, self.config, self.width = sampler, config, config.beam or 1
        self.model, self.rule = sampler.model, RULES[config.stop]
        self.logits_of, self.feed = sampler.feeder(self.rule)
        self.lengths = LengthIds(self.model) if self.model.config.stop_heads else None
        start = read(self.model, prompt_ids, 1)
        tau, log_tau = self.rule.beam_starts(self.model, start.h, config, self.width)
        k = len(tau)
        self.rows = Rows.start(start.h, start.state, start.offset, config.max_tokens)
        self.rows.select(torch.zeros(k, dtype=torch.long))
        self.rows.sample, self.rows.remaining = torch.arange(k), tau.clone()
        self.tau, self.score, self.rank = tau, log_tau, log_tau.clone()
        self.tokens: list[list[int]] = [[] for _ in range(k)]
        vocab = self.model.config.vocab_size
        self.shaping = Controls.make(config, sampler.tokenizer, vocab, k, prompt_ids)
        self.texts = None
        if config.stop_at:
            c, prompt = config, prompt_ids[1:]
            watch = TextWatch(sampler.tokenizer, c.stop_at, c.keep_stop, prompt, show_prefix=False)
            self.texts = [watch.copy() for _ in range(k)]
        self.done: list[Beam] = []
        self._finish(tau == 0)  # an empty continuation, if its length was among the likeliest

    def run(self) -> list[Beam]:
        for step in range(self.config.max_tokens):
            if not len(self.rows) or self._settled(step):
                break
            self._tokens()
            if len(self.rows):
                self._halts()
            self._trim()
        self._finish(torch.ones(len(self.rows), dtype=torch.bool), cut=True)
        alpha = self.config.length_penalty
        return sorted(self.done, key=lambda b: (b.cut, -b.score(alpha)))

    def _tokens(self) -> None:
        """Extend each hypothesis by a token: the 2N best extensions are the pool."""
        logits = self.logits_of(self.rows.h)  # (b, V), rule-masked
        lp = _log_softmax(logits)  # (b, V) float64: the model's own
        shaped = lp
        if self.shaping is not None:
            shaped = _log_softmax(self.shaping.apply(logits, torch.arange(len(self.rows))))
        cand = (self.rank[:, None] + shaped).flatten()  # (b * V,)
        top = cand.topk(min(2 * self.width, int(torch.isfinite(cand).sum()))).indices
        vocab = logits.shape[1]
        parent, tok = top // vocab, top % vocab
        self._select(parent, self.score[parent] + lp[parent, tok], cand[top])
        self.rows.tok = tok
        for i, t in enumerate(tok.tolist()):
            self.tokens[i].append(t)
        if self.shaping is not None:
            self.shaping.push(torch.arange(len(tok)), tok)
        ends = self.rule.beam_ends(tok, self.rows.remaining) | self._stop_strings(tok)
        self.rows.remaining = self.rows.remaining - 1
        self._choose(ends)
        if len(self.rows):
            rows = self.rows
            ids = None if self.lengths is None else self.rule.length_ids(self.lengths, rows)
            rows.h, rows.state = self.feed(rows.tok, rows.state, ids)
            rows.offset = rows.offset + 1

    def _halts(self) -> None:
        """Halt rule: each hypothesis ends or goes on; the pool is both, best first."""
        z = self.rule.beam_halt(self.model, self.rows.h)
        if z is None:
            return
        b = len(z)
        end, go_on = F.logsigmoid(z), F.logsigmoid(-z)  # (b,) each
        cand = torch.cat([self.rank + end, self.rank + go_on])  # (2b,)
        top = cand.topk(2 * b).indices
        parent = top % b
        self._select(parent, self.score[parent] + torch.cat([end, go_on])[top], cand[top])
        self._choose(top < b)

    def _choose(self, ends: Tensor) -> None:
        """From a pool of candidates, best first: those that end among the first N become
        beams, and the first N that do not go on. With N = 1 this is the argmax's choice."""
        first = torch.arange(len(ends)) < self.width
        self._finish(ends & first, cut=False, keep=(~ends).nonzero().squeeze(1)[: self.width])

    def _select(self, parent: Tensor, score: Tensor, rank: Tensor) -> None:
        """The hypotheses going on are ``parent``'s (rows of the last step), now scored so."""
        self.rows.select(parent)
        self.rows.sample = torch.arange(len(parent))
        self.tau, self.score, self.rank = self.tau[parent], score, rank
        self.tokens = [list(self.tokens[p]) for p in parent.tolist()]
        if self.shaping is not None:
            self.shaping.history.select(parent)
        if self.texts is not None:
            self.texts = [self.texts[p].copy() for p in parent.tolist()]

    def _stop_strings(self, tok: Tensor) -> Tensor:
        if self.texts is None:
            return torch.zeros(tok.shape, dtype=torch.bool)
        for watch, t in zip(self.texts, tok.tolist()):
            watch.feed(t)
            watch.take()
        return torch.tensor([w.hit is not None for w in self.texts], dtype=torch.bool)

    def _finish(self, ends: Tensor, cut: bool = False, keep: Tensor | None = None) -> None:
        """Hypotheses ``ends`` (b,) become beams; ``keep`` (default: the others) go on."""
        for i in ends.nonzero().squeeze(1).tolist():
            text = None if self.texts is None else self.texts[i]
            self.done.append(
                Beam(
                    self.tokens[i],
                    float(self.score[i]),
                    float(self.rank[i]),
                    cut=cut and (text is None or text.hit is None),
                    length=max(int(self.tau[i]), 0),
                    stop_string=None if text is None else text.hit,
                    end=-1 if text is None or text.end is None else text.end,
                )
            )
        if keep is None:
            keep = (~ends).nonzero().squeeze(1)
        if len(keep) < len(ends) or bool((keep != torch.arange(len(keep))).any()):
            self._select(keep, self.score[keep], self.rank[keep])

    def _trim(self) -> None:
        """Keep the ``width`` best finished beams."""
        alpha = self.config.length_penalty
        self.done = sorted(self.done, key=lambda b: -b.score(alpha))[: self.width]

    def _settled(self, step: int) -> bool:
        """Whether no hypothesis going on can beat the worst of ``width`` finished beams: a
        rank only falls as tokens are added, and a hypothesis has at least step + 1 tokens."""
        if len(self.done) < self.width:
            return False
        alpha = self.config.length_penalty
        longest = step + 1 if alpha <= 0 else self.config.max_tokens
        best_going = float(self.rank.max()) / longest**alpha
        return best_going <= min(b.score(alpha) for b in self.done)


def _log_softmax(logits: Tensor) -> Tensor:
    x = logits.double()
    return x - x.logsumexp(-1, keepdim=True)
