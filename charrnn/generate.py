"""Sampling: temperature, top-k / top-p, and the four stopping rules.

    eos     stop when <eos> is drawn
    halt    after each token, the halting unit says stop with probability p(t); <eos> masked
    length  draw the length tau first (or take --length), then exactly tau tokens; the net is
            told how many remain; <eos> masked
    none    draw --max-tokens tokens; a drawn <eos> starts a new unit, char-rnn style

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
import torch.nn.functional as F
from torch import Tensor

from charrnn.config import SampleConfig, Stop
from charrnn.errors import ConfigError
from charrnn.model import RNNLM, State
from charrnn.model.stepper import Stepper
from charrnn.tokenizers import EOS, PAD, SOS, UNK, Tokenizer

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


def rule_mask(vocab_size: int, stop: Stop, device: torch.device | str = "cpu") -> Tensor:
    """0 where the rule may draw a symbol, -inf where it never does (<pad>, <sos>, and <eos>
    in halt and length modes). (V,)"""
    mask = torch.zeros(vocab_size, device=device)
    banned = [PAD, SOS, EOS] if stop in (Stop.halt, Stop.length) else [PAD, SOS]
    mask[banned] = -math.inf
    return mask


def rule_logits(logits: Tensor, stop: Stop, mask: Tensor | None = None) -> Tensor:
    """Logits (float32) with the symbols the rule never draws set to -inf; ``mask`` is
    ``rule_mask``'s, passed in to save making it again."""
    if mask is None:
        mask = rule_mask(logits.shape[-1], stop, logits.device)
    return logits.float() + mask  # x + 0 is x exactly; x + -inf is -inf


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
        ids = self.tokenizer.encode(prompt) if prompt else []
        return [SOS, *ids]

    def check(self, config: SampleConfig) -> None:
        """Refuse settings that only this model makes wrong."""
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
        drawing; fills ``info`` with per-sample log_prob, cut and length when done.

        A sample that has ended leaves the batch, so a batch costs the sum of its samples'
        lengths rather than n times the longest one. In "none" mode a sample that drew <eos>
        reads <sos> at the next step, in the same batch as the others' tokens, and draws
        nothing at that step: the batch stays one step of the net per step.
        """
        model, dev, stop = self.model, self.device, config.stop
        logits_of, feed = self._feeder(stop)
        lengths = _LengthIds(model) if model.config.stop_heads else None
        gen = torch.Generator(device="cpu")
        gen.manual_seed(config.seed if config.seed is not None else int(torch.seed() % 2**63))
        prompt = torch.tensor([prompt_ids] * n, device=dev)  # (n, P)
        h, state = model.features(prompt)  # (n, P, H)
        h = h[:, -1]  # (b, H): one row per sample still drawing, b <= n
        rows = torch.arange(n)  # (b,) the sample each row draws for
        log_prob = torch.zeros(n, dtype=torch.float64)
        cut = torch.zeros(n, dtype=torch.bool)
        tau = torch.zeros(n, dtype=torch.long)
        remaining = torch.full((n,), -1, dtype=torch.long)
        offset = torch.full((n,), len(prompt_ids), dtype=torch.long)  # of the next token fed
        left = torch.full((n,), config.max_tokens, dtype=torch.long)  # tokens each may draw
        restart = torch.zeros(n, dtype=torch.bool)  # "none" mode: reads <sos> at this step
        if stop is Stop.length:
            tau, lp = self._draw_length(h, n, config, gen)
            remaining = tau.clone()
            log_prob += lp
            rows, remaining, offset, left, restart, h, state = _keep(
                remaining > 0, rows, remaining, offset, left, restart, h, state
            )
        steps = 0  # no sample has drawn more tokens than this
        while len(rows):
            if steps >= config.max_tokens:  # some samples may have drawn all they may draw
                spent = left <= 0  # (halt mode: the halting unit let the unit go on)
                if bool(spent.any()):
                    cut[rows[spent]] = True
                    rows, remaining, offset, left, restart, h, state = _keep(
                        ~spent, rows, remaining, offset, left, restart, h, state
                    )
                    if not len(rows):
                        break
            logits = logits_of(h)  # (b, V), rule-masked
            tok = draw(logits, config, gen)  # (b,)
            lp = logits.log_softmax(-1).gather(-1, tok[:, None]).squeeze(-1)  # (b,)
            alive = rows.tolist()
            if stop is Stop.none and bool(restart.any()):
                # these rows read <sos> at this step: their draw is dropped, with its log-prob
                tok, lp = tok.masked_fill(restart, SOS), lp.masked_fill(restart, 0.0)
                offset = offset.masked_fill(restart, 0)
                drew = ~restart
                left = left - drew.long()
                pairs = list(zip(rows[drew].tolist(), tok[drew].tolist()))
            else:
                left = left - 1
                pairs = list(zip(alive, tok.tolist()))
            yield pairs, alive
            steps += 1
            log_prob.index_add_(0, rows, lp.double())
            if stop is Stop.eos and any(t == EOS for _, t in pairs):
                rows, tok, offset, left, state = _keep(tok != EOS, rows, tok, offset, left, state)
            elif stop is Stop.length:
                remaining = remaining - 1
                rows, tok, remaining, offset, left, state = _keep(
                    remaining > 0, rows, tok, remaining, offset, left, state
                )
            if not len(rows):
                break
            ids = None
            if lengths is not None:
                ids = lengths.remaining(remaining) if stop is Stop.length else lengths.at(offset)
            h, state = feed(tok, state, ids)
            offset = offset + 1
            if stop is Stop.none:
                restart = tok == EOS
            elif stop is Stop.halt:
                h_logit = model.halt_logits(h).cpu().double()  # (b,)
                halt = self._draw_halt(h_logit, config, gen)
                terms = torch.where(halt, F.logsigmoid(h_logit), F.logsigmoid(-h_logit))
                log_prob.index_add_(0, rows, terms)
                rows, h, offset, left, state = _keep(~halt, rows, h, offset, left, state)
        info["log_prob"] = log_prob.numpy()
        info["cut"] = cut.numpy()
        info["length"] = tau.numpy()

    def _feeder(self, stop: Stop) -> tuple[Callable[[Tensor], Tensor], Feed]:
        """``logits(h (b, H)) -> (b, V)``, the token logits under ``stop``'s mask (float32, on
        the host), and ``feed(tokens (b,), state, length input ids (b,) or None) -> (h (b, H),
        state)``: the one-step path when it applies, else the model's."""
        model, dev = self.model, self.device
        mask = rule_mask(model.config.vocab_size, stop)  # (V,)
        if not (self.fast and Stepper.usable(model)):

            def feed(tok: Tensor, state: State, ids: Tensor | None) -> tuple[Tensor, State]:
                r = None if ids is None else ids.to(dev)[:, None]  # (b, 1)
                h, state = model.features(tok.to(dev)[:, None], state, r)
                return h[:, 0], state  # (b, H)

            return lambda h: rule_logits(model.token_logits(h).cpu(), stop, mask), feed
        step = Stepper(model, mask.to(dev))

        def feed_step(tok: Tensor, state: State, ids: Tensor | None) -> tuple[Tensor, State]:
            return step(tok.to(dev), state, None if ids is None else ids.to(dev))

        return lambda h: step.token_logits(h).float().cpu(), feed_step

    def _draw_length(
        self, h: Tensor, n: int, config: SampleConfig, gen: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """The number of tokens to draw and its log-probability, per sample."""
        log_p = self.model.length_log_probs(h).cpu().double()  # (n, max_len + 1)
        if config.length is not None:
            if config.length > self.model.config.max_len:
                raise ConfigError(
                    f"--length {config.length} is beyond this model's longest unit "
                    f"({self.model.config.max_len} tokens)"
                )
            tau = torch.full((n,), config.length, dtype=torch.long)
        elif config.temperature == 0:
            tau = log_p.argmax(-1)
        else:
            tau = torch.multinomial(log_p.exp().float(), 1, generator=gen).squeeze(-1)
        return tau, log_p.gather(-1, tau[:, None]).squeeze(-1)

    @staticmethod
    def _draw_halt(h_logit: Tensor, config: SampleConfig, gen: torch.Generator) -> Tensor:
        p = torch.sigmoid(h_logit)
        if config.temperature == 0:
            return p >= 0.5
        return torch.rand(p.shape, generator=gen, dtype=torch.float64) < p


def _keep(go_on: Tensor, rows: Tensor, *batch: Tensor | State) -> tuple:
    """``rows`` and each batch tensor (rows first) or state ((layers, k, H) tensors) cut down
    to the samples that go on; unchanged when all do."""
    if bool(go_on.all()):
        return (rows, *batch)
    sel = go_on.nonzero().squeeze(1)  # (k',)
    out: list[Tensor | State] = []
    for b in batch:
        if isinstance(b, tuple):
            out.append(tuple(s[:, sel.to(s.device)] for s in b))
        else:
            out.append(b[sel.to(b.device)])
    return (rows[sel], *out)


class _LengthIds:
    """The length input ids the sampler feeds, by table lookup: the bucket of a remaining
    length (length mode), or "unknown" at an offset in the unit (the other rules)."""

    def __init__(self, model: RNNLM):
        c = model.config
        self.max_len = c.max_len
        lengths = np.arange(c.max_len + 1)
        self.buckets = torch.as_tensor(model.length_buckets(lengths))
        self.unknown = torch.as_tensor(model.unknown_at(lengths))

    def remaining(self, r: Tensor) -> Tensor:
        return self.buckets[r.clamp(0, self.max_len)]

    def at(self, offset: Tensor) -> Tensor:
        return self.unknown[offset.clamp(max=self.max_len)]
