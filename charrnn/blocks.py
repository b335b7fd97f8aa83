"""Sampling in blocks on the model's device: the step and the draw stay where the model is,
and the host reads the tokens back once per block of K tokens instead of once per token.

    host                            device (n rows, fixed shapes for the whole sample)
    words of the seeded generator -> buffer of raw 32-bit words, a device-side offset
    run a block                     K times: cut, logits, draw, log P, rule, read the token
    read tokens, rows, offset  <-   (K, n) tokens, which rows drew, which were drawing
    top the buffer up, go on

Rows that end stay in the batch, marked dead, so every shape is fixed and a block's
per-token work has no branch that depends on the data: it can be captured as a CUDA graph.
The random numbers are the very words ``torch.rand`` would read from the same CPU generator
(the sampler's), taken in the same order, so a seeded sample draws the tokens of
``Sampler.iter_tokens``' per-token path (tested on the CPU; on a GPU the logits round
differently, so a near tie may go the other way). ``plain`` says which settings it takes.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from charrnn.config import SampleConfig, Stop
from charrnn.controls import filter_logits
from charrnn.model import RNNLM, State
from charrnn.model.stepper import Stepper
from charrnn.prime import Primed, read
from charrnn.stopping import RULES, LengthIds, Rows, Totals
from charrnn.tokenizers import EOS, SOS

BLOCK = 32  # tokens drawn between two read-backs
WORDS = 1 << 22  # random words a block may hold (16 MB): large vocabularies get shorter blocks
Step = tuple[list[tuple[int, int]], list[int]]  # as generate.Step: pairs drawn, samples drawing

_MT_N = 624  # words in the Mersenne Twister's state
_LOW24, _LOW21, _WORD = (1 << 24) - 1, (1 << 21) - 1, (1 << 32) - 1


def plain(config: SampleConfig, model: RNNLM) -> bool:
    """Whether the block path takes these settings: no control that reads the text or the
    tokens drawn so far (penalties, bans, biases, stop strings), and a model the one-step
    path can run (eval mode). Every rule, temperature, top-k, top-p and min-p are taken."""
    return not config.shaping and not config.stop_at and Stepper.usable(model)


def _twister(gen: torch.Generator) -> np.random.MT19937:
    """numpy's Mersenne Twister in the state of ``gen`` (torch's CPU generator is one)."""
    s = gen.get_state().numpy()
    left = int(s[8:12].view(np.int32)[0])  # torch's layout: seed, left, seeded, next, state
    at = int(s[16:24].view(np.uint64)[0])
    key = s[24 : 24 + 8 * _MT_N].view(np.uint64).astype(np.uint32)
    mt = np.random.MT19937()
    pos = _MT_N if left == 1 else at  # torch's left == 1: the state is to be renewed first
    mt.state = {"bit_generator": "MT19937", "state": {"key": key, "pos": pos}}
    return mt


class Words:
    """The seeded generator's next raw words on the device, read at a device-side offset.

    ``torch.rand`` makes a float32 from the low 24 bits of one word and a float64 from the
    low 53 bits of two (the first word high): the same arithmetic on the same words gives the
    same numbers, wherever it runs. ``gen`` itself moves on only by the words used (``close``).
    """

    def __init__(self, gen: torch.Generator, size: int, device: torch.device):
        self.gen, self.source, self.used = gen, _twister(gen), 0
        self.buf = self._fresh(size).to(device)  # (size,)
        self.pos = torch.zeros((), dtype=torch.long, device=device)

    def _fresh(self, m: int) -> Tensor:
        raw = self.source.random_raw(m).astype(np.uint32).view(np.int32)  # 32 bits kept
        return torch.from_numpy(raw)

    def uniform32(self, alive: Tensor, width: int) -> Tensor:
        """``torch.rand((alive rows, width))``, laid out on all n rows (dead rows: junk)."""
        rank = alive.long().cumsum(0) - 1  # (n,) each live row's place among the live ones
        at = self.pos + rank[:, None] * width + torch.arange(width, device=alive.device)
        w = self.buf[at.clamp(0, len(self.buf) - 1)]  # (n, width)
        self.pos += alive.sum() * width
        return (w & _LOW24).float() * 2.0**-24

    def uniform64(self, alive: Tensor) -> Tensor:
        """``torch.rand(alive rows, dtype=float64)`` on all n rows. (n,)"""
        at = (self.pos + 2 * (alive.long().cumsum(0) - 1)).clamp(0, len(self.buf) - 2)
        hi, lo = self.buf[at].long() & _LOW21, self.buf[at + 1].long() & _WORD
        self.pos += 2 * alive.sum()
        return (hi * 2**32 + lo).double() * 2.0**-53

    def refill(self, used: int) -> None:
        """Drop the ``used`` words read so far and top the buffer up (on the host's side)."""
        if used:
            fresh = self._fresh(used).to(self.buf.device, non_blocking=True)
            self.buf.copy_(torch.cat([self.buf[used:], fresh]))
            self.pos.zero_()
            self.used += used

    def close(self, used: int) -> None:
        """Move ``gen`` on by every word read, as the per-token path would have."""
        total = self.used + used
        if total:
            torch.empty(total, dtype=torch.int32).random_(generator=self.gen)


@dataclass
class Slots:
    """Every row's place, in tensors of fixed shape on the device, updated in place."""

    h: Tensor  # (n, H) features after the last token read
    state: State  # each (layers, n, H)
    alive: Tensor  # (n,) bool: still drawing
    offset: Tensor  # (n,) long: the offset in its unit of the next token read
    left: Tensor  # (n,) long: tokens each may still draw
    remaining: Tensor  # (n,) long: length rule, tokens still to draw
    restart: Tensor  # (n,) bool: none rule, reads <sos> at this step
    log_prob: Tensor  # (n,) float64
    cut: Tensor  # (n,) bool
    tokens: Tensor  # (K, n) long: the tokens of the block's steps
    drew: Tensor  # (K, n) bool: which rows drew a token at each step
    drawing: Tensor  # (K, n) bool: which rows were drawing at each step

    @classmethod
    def start(cls, start: Primed, rows: Rows, totals: Totals, max_tokens: int, k: int) -> Slots:
        """The rows after the prompt and the rule's ``begin`` (which may drop some)."""
        dev, n = start.h.device, start.h.shape[0]

        def full(value: object, dtype: torch.dtype) -> Tensor:
            return torch.full((n,), value, dtype=dtype, device=dev)

        alive, remaining = full(False, torch.bool), full(-1, torch.long)
        alive[rows.sample.to(dev)] = True
        remaining[rows.sample.to(dev)] = rows.remaining.to(dev)
        return cls(
            h=start.h.clone(),
            state=tuple(s.clone() for s in start.state),
            alive=alive,
            offset=full(start.offset, torch.long),
            left=full(max_tokens, torch.long),
            remaining=remaining,
            restart=full(False, torch.bool),
            log_prob=totals.log_prob.to(dev),
            cut=full(False, torch.bool),
            tokens=torch.zeros(k, n, dtype=torch.long, device=dev),
            drew=torch.zeros(k, n, dtype=torch.bool, device=dev),
            drawing=torch.zeros(k, n, dtype=torch.bool, device=dev),
        )


class BlockSampler:
    """``Sampler.iter_tokens`` for the plain settings, in blocks of ``block`` tokens on the
    model's device. ``_Block`` is the per-token work: fixed shapes, no host sync; ``graph``
    (CUDA only) captures it once per call as a CUDA graph and replays it."""

    def __init__(self, model: RNNLM, block: int = BLOCK, graph: bool = False):
        self.model, self.block = model, block
        self.device = next(model.parameters()).device
        assert not graph or self.device.type == "cuda", "CUDA graphs need a CUDA device"
        self.graph = graph

    @torch.inference_mode()
    def iter_tokens(
        self,
        n: int,
        config: SampleConfig,
        prompt_ids: list[int],
        info: dict[str, np.ndarray],
        gen: torch.Generator,
        start: Primed | None = None,
    ) -> Iterator[Step]:
        """As ``Sampler.iter_tokens``: the same steps, the same ``info``, ``gen`` moved on
        alike (``gen``: the sampler's, ``generate.generator(seed)`` for a seed)."""
        assert plain(config, self.model), "the block path takes the plain settings only"
        model, stop = self.model, RULES[config.stop]
        start = start or read(model, prompt_ids, n)
        rows = Rows.start(start.h, start.state, start.offset, config.max_tokens)
        totals = Totals.zeros(n)
        stop.begin(model, rows, totals, config, gen)  # the length rule draws its lengths
        per_step = n * (model.config.vocab_size + 2)  # words a step reads at most
        k = min(self.block, max(1, WORDS // per_step))
        run: _Block | _Graphed = _Block(model, config, k)
        s = Slots.start(start, rows, totals, config.max_tokens, k)
        words = Words(gen, k * per_step, self.device)
        used, live = 0, len(rows) > 0
        if self.graph and live:
            run = _Graphed(run, s, words)
        while live:
            run(s, words)
            flags = [s.tokens, s.drew, s.drawing, s.alive[None], words.pos.expand(1, n)]
            got = torch.cat(flags).cpu()  # the block's one read
            used, live = int(got[-1, 0]), bool(got[-2].any())
            yield from _steps(got[:-2].view(3, k, n))
            if live:
                words.refill(used)
                used = 0
        words.close(used)
        info["log_prob"], info["cut"] = s.log_prob.cpu().numpy(), s.cut.cpu().numpy()
        info["length"] = totals.length.numpy()


def _steps(got: Tensor) -> Iterator[Step]:
    """The block's steps as ``iter_tokens`` yields them: (sample, token) pairs, samples drawing."""
    tokens, drew, drawing = got.tolist()
    for tok, d, alive in zip(tokens, drew, drawing):
        samples = [i for i, a in enumerate(alive) if a]
        if not samples:
            return
        yield [(i, t) for i, (t, x) in enumerate(zip(tok, d)) if x], samples


class _Block:
    """K steps on fixed-shape slots; every branch here is on the settings, never the data."""

    def __init__(self, model: RNNLM, config: SampleConfig, k: int):
        self.model, self.config, self.k = model, config, k
        self.rule = config.stop
        dev = next(model.parameters()).device
        self.net = Stepper(model, RULES[config.stop].mask(model.config.vocab_size).to(dev))
        self.lengths = LengthIds(model) if model.config.stop_heads else None
        if self.lengths is not None:
            self.lengths.buckets = self.lengths.buckets.to(dev)
            self.lengths.unknown = self.lengths.unknown.to(dev)

    def __call__(self, s: Slots, words: Words) -> None:
        for k in range(self.k):
            self.step(s, words, k)

    def step(self, s: Slots, words: Words, k: int) -> None:
        """One token for every live row, as one step of ``Sampler.iter_tokens``."""
        spent = s.alive & (s.left <= 0)  # --max-tokens reached
        s.cut |= spent
        s.alive &= ~spent
        logits = self.net.token_logits(s.h).float()  # (n, V), rule-masked
        tok = self.draw(logits, s.alive, words)  # (n,)
        lp = logits.log_softmax(-1).gather(-1, tok[:, None]).squeeze(-1)  # (n,)
        s.drawing[k] = s.alive
        drew = s.alive
        if self.rule is Stop.none:  # rows that drew <eos> read <sos> instead, and draw nothing
            tok, lp = tok.masked_fill(s.restart, SOS), lp.masked_fill(s.restart, 0.0)
            s.offset.masked_fill_(s.restart, 0)
            drew = s.alive & ~s.restart
        s.left -= drew.long()
        s.tokens[k], s.drew[k] = tok, drew
        s.log_prob += torch.where(s.alive, lp.double(), 0.0)
        if self.rule is Stop.eos:
            s.alive &= tok != EOS
        elif self.rule is Stop.length:
            s.remaining -= s.alive.long()
            s.alive &= s.remaining > 0
        self.read(s, tok)
        if self.rule is Stop.halt:
            self.halt(s, words)
        elif self.rule is Stop.none:
            s.restart.copy_(tok == EOS)

    def draw(self, logits: Tensor, alive: Tensor, words: Words) -> Tensor:
        """``controls.draw`` on the device, its uniforms read from ``words``."""
        c = self.config
        if c.temperature == 0:
            return logits.argmax(-1)
        if c.temperature != 1:
            logits = logits / c.temperature
        logits = filter_logits(logits, c.top_k, c.top_p, c.min_p)
        u = words.uniform32(alive, logits.shape[-1])  # (n, V)
        return (logits - u.log_().neg_().log_()).argmax(-1)

    def read(self, s: Slots, tok: Tensor) -> None:
        """Every row reads its token (dead rows too: fixed shapes; their results are unused)."""
        ids = None
        if self.lengths is not None:
            rule_len = self.rule is Stop.length
            ids = self.lengths.remaining(s.remaining) if rule_len else self.lengths.at(s.offset)
        h, state = self.net(tok, s.state, ids)
        s.h.copy_(h)
        for mine, new in zip(s.state, state):
            mine.copy_(new)
        s.offset += 1

    def halt(self, s: Slots, words: Words) -> None:
        """The halting unit's decision after the token is read (``HaltRule.after_read``)."""
        z = self.model.halt_logits(s.h).double()  # (n,)
        p = torch.sigmoid(z)
        greedy = self.config.temperature == 0
        halt = p >= 0.5 if greedy else words.uniform64(s.alive) < p
        lp = torch.where(halt, F.logsigmoid(z), F.logsigmoid(-z))
        s.log_prob += torch.where(s.alive, lp, 0.0)
        s.alive &= ~halt


class _Graphed:
    """A block captured once as a CUDA graph (after a warm-up on copies of the slots, which
    leaves the real ones untouched) and replayed: its slots and words change in place."""

    def __init__(self, run: _Block, s: Slots, words: Words):
        spare = Slots(**{f.name: _cloned(getattr(s, f.name)) for f in fields(Slots)})
        spare_words = copy.copy(words)
        spare_words.buf, spare_words.pos = words.buf.clone(), words.pos.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            run(spare, spare_words)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            run(s, words)

    def __call__(self, s: Slots, words: Words) -> None:
        self.graph.replay()


def _cloned(x: Tensor | tuple[Tensor, ...]) -> Tensor | tuple[Tensor, ...]:
    return tuple(t.clone() for t in x) if isinstance(x, tuple) else x.clone()
