"""How a unit ends: one StopRule per rule, for sampling, scoring and training.

    eos     stop when <eos> is drawn
    halt    after each token, the halting unit says stop with probability p(t); <eos> masked
    length  draw the length tau first (or take --length), then exactly tau tokens; the net is
            told how many remain; <eos> masked
    none    draw --max-tokens tokens; a drawn <eos> starts a new unit, char-rnn style

A rule says which tokens it never draws, what length input the net reads, what it does at
each step of a sample (before the first draw, after a draw, after the drawn token is read),
its own terms in a sentence's score, and the loss that trains its head. A new rule is one
class here and one entry in RULES.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from charrnn.config import SampleConfig, Stop, TrainConfig
from charrnn.errors import ConfigError
from charrnn.model import RNNLM, State
from charrnn.tokenizers import EOS, PAD, SOS, UNK, Tokenizer

if TYPE_CHECKING:
    from charrnn.data import Batch


@dataclass(frozen=True)
class Term:
    """One term of a score: a token, the end marker, a halt decision or the length."""

    kind: str  # "token", "eos", "continue", "halt", "length"
    piece: str
    log_prob: float
    unk: bool = False


@dataclass
class Rows:
    """The samples still drawing, one row each (b <= n), and what each row carries."""

    sample: Tensor  # (b,) the sample each row draws for
    h: Tensor  # (b, H) features after the last token read
    state: State  # each (layers, b, H)
    offset: Tensor  # (b,) the offset in its unit of the next token read
    left: Tensor  # (b,) tokens each may still draw
    remaining: Tensor  # (b,) length rule: tokens still to draw
    restart: Tensor  # (b,) none rule: reads <sos> at this step
    tok: Tensor  # (b,) the tokens drawn at this step

    @classmethod
    def start(cls, h: Tensor, state: State, offset: int, max_tokens: int) -> Rows:
        n = h.shape[0]
        return cls(
            sample=torch.arange(n),
            h=h,
            state=state,
            offset=torch.full((n,), offset, dtype=torch.long),
            left=torch.full((n,), max_tokens, dtype=torch.long),
            remaining=torch.full((n,), -1, dtype=torch.long),
            restart=torch.zeros(n, dtype=torch.bool),
            tok=torch.zeros(n, dtype=torch.long),
        )

    def __len__(self) -> int:
        return len(self.sample)

    def select(self, index: Tensor) -> None:
        """Row i becomes the old row ``index[i]`` (rows may repeat: beam search's parents)."""
        on = index.to(self.h.device)
        self.sample, self.h = self.sample[index], self.h[on]
        self.state = tuple(s[:, on] for s in self.state)
        for name in ("offset", "left", "remaining", "restart", "tok"):
            setattr(self, name, getattr(self, name)[index])

    def keep(self, go_on: Tensor) -> None:
        """Keep only the rows that go on (unchanged when all do)."""
        if bool(go_on.all()):
            return
        sel = go_on.nonzero().squeeze(1)  # (k,)
        on = sel.to(self.h.device)
        self.sample, self.h = self.sample[sel], self.h[on]
        self.state = tuple(s[:, on] for s in self.state)
        for name in ("offset", "left", "remaining", "restart", "tok"):
            setattr(self, name, getattr(self, name)[sel])


@dataclass
class Totals:
    """Per sample: its log-probability under the rule, whether --max-tokens cut it, and (length
    rule) the length it drew."""

    log_prob: Tensor  # (n,) float64
    cut: Tensor  # (n,) bool
    length: Tensor  # (n,) long; 0 where the rule draws no length

    @classmethod
    def zeros(cls, n: int) -> Totals:
        f64, b, long = torch.float64, torch.bool, torch.long
        return cls(torch.zeros(n, dtype=f64), torch.zeros(n, dtype=b), torch.zeros(n, dtype=long))

    def add(self, rows: Tensor, log_probs: Tensor) -> None:
        self.log_prob.index_add_(0, rows, log_probs.double())


class LengthIds:
    """The length input ids a sample reads, by table lookup: the bucket of a remaining length
    (length rule), or "unknown" at an offset in the unit (the others)."""

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


class StopRule:
    """What every rule does, unless it says otherwise."""

    stop: ClassVar[Stop]
    banned: ClassVar[tuple[int, ...]] = (PAD, SOS)  # tokens the rule never draws
    needs_heads: ClassVar[bool] = False  # reads the halt or length head
    ends: ClassVar[bool] = True  # ends a unit by itself (none does not)
    target: ClassVar[str | None] = None  # the Batch field that trains its head

    def mask(self, vocab_size: int, device: torch.device | str = "cpu") -> Tensor:
        """0 where the rule may draw a token, -inf where it never does. (V,)"""
        mask = torch.zeros(vocab_size, device=device)
        mask[list(self.banned)] = -math.inf
        return mask

    def check(self, model: RNNLM) -> None:
        """Refuse a model this rule cannot use."""
        if self.needs_heads and not model.config.stop_heads:
            raise ConfigError(
                "this model was trained without halt and length heads: use --stop eos"
            )

    # -- sampling: the hooks of Sampler.iter_tokens --

    def begin(
        self, model: RNNLM, rows: Rows, totals: Totals, config: SampleConfig, gen: torch.Generator
    ) -> None:
        """Before the first draw."""

    def drawn(self, rows: Rows, tok: Tensor, lp: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """The tokens drawn and their log-probs as the rule counts them, and which rows drew
        (None: all of them)."""
        return tok, lp, None

    def after_draw(self, rows: Rows) -> None:
        """After the draw, before the drawn tokens are read: drop the rows that end here."""

    def length_ids(self, ids: LengthIds, rows: Rows) -> Tensor:
        """The length input read with the drawn tokens."""
        return ids.at(rows.offset)

    def after_read(
        self, model: RNNLM, rows: Rows, totals: Totals, config: SampleConfig, gen: torch.Generator
    ) -> None:
        """After the drawn tokens were read (``rows.h`` holds the new features)."""

    # -- beam search: the hooks of beam.search --

    def beam_starts(
        self, model: RNNLM, h: Tensor, config: SampleConfig, width: int
    ) -> tuple[Tensor, Tensor]:
        """The hypotheses a search starts from, after reading the prompt (h: (1, H)): their
        remaining lengths (-1: none drawn) and log-probabilities. (k,) each"""
        return torch.tensor([-1]), torch.zeros(1, dtype=torch.float64)

    def beam_ends(self, tok: Tensor, remaining: Tensor) -> Tensor:
        """Which extensions (b,) end their hypothesis before being read."""
        return torch.zeros(tok.shape, dtype=torch.bool)

    def beam_halt(self, model: RNNLM, h: Tensor) -> Tensor | None:
        """Halt logits (b,) after a token is read, where the rule decides then; else None."""
        return None

    # -- scoring: a sentence as <sos> x1..xn <eos> --

    def score_inputs(self, model: RNNLM, lengths: np.ndarray, width: int) -> np.ndarray | None:
        """Length input ids (S, width) for the rows of a batch; None: unknown everywhere."""
        return None

    def score_context(self, model: RNNLM, h: Tensor, h_kept: Tensor) -> Any:
        """What the rule's own terms need from the features: h (S, L+1, H) of the whole rows,
        h_kept (N, H) at the positions scored."""
        return None

    def extra(self, ctx: Any, row: int, at: int, n: int, token_lp: list[float]) -> list[float]:
        """The rule's own log-probabilities for row ``row`` of n tokens, whose terms start at
        ``at`` in h_kept; ``token_lp`` holds the n token terms, then the <eos> prediction."""
        raise NotImplementedError

    def terms(
        self, tokenizer: Tokenizer, ids: list[int], token_lp: list[float], extra: list[float]
    ) -> list[Term]:
        """A sentence's terms in reading order."""
        raise NotImplementedError

    # -- training --

    def weight(self, config: TrainConfig) -> float:
        return 0.0

    def loss(self, model: RNNLM, h: Tensor, target: Tensor, norm: float) -> Tensor:
        """The loss that trains the rule's head, summed over the targets not -1, over norm."""
        raise NotImplementedError


class EndMarker(StopRule):
    stop = Stop.eos

    def after_draw(self, rows: Rows) -> None:
        if bool((rows.tok == EOS).any()):
            rows.keep(rows.tok != EOS)

    def beam_ends(self, tok: Tensor, remaining: Tensor) -> Tensor:
        return tok == EOS

    def extra(self, ctx: Any, row: int, at: int, n: int, token_lp: list[float]) -> list[float]:
        return token_lp[n:]  # the <eos> after the n tokens

    def terms(
        self, tokenizer: Tokenizer, ids: list[int], token_lp: list[float], extra: list[float]
    ) -> list[Term]:
        return [*_token_terms(tokenizer, ids, token_lp), Term("eos", "<eos>", extra[0])]


class HaltRule(StopRule):
    stop = Stop.halt
    banned = (PAD, SOS, EOS)
    needs_heads = True
    target = "halt"

    def after_read(
        self, model: RNNLM, rows: Rows, totals: Totals, config: SampleConfig, gen: torch.Generator
    ) -> None:
        h_logit = model.halt_logits(rows.h).cpu().double()  # (b,)
        p = torch.sigmoid(h_logit)
        if config.temperature == 0:
            halt = p >= 0.5
        else:
            halt = torch.rand(p.shape, generator=gen, dtype=torch.float64) < p
        totals.add(rows.sample, torch.where(halt, F.logsigmoid(h_logit), F.logsigmoid(-h_logit)))
        rows.keep(~halt)

    def beam_halt(self, model: RNNLM, h: Tensor) -> Tensor | None:
        return model.halt_logits(h).cpu().double()

    def score_context(self, model: RNNLM, h: Tensor, h_kept: Tensor) -> Any:
        z = model.halt_logits(h_kept).double().cpu()  # (N,)
        return F.logsigmoid(z).tolist(), F.logsigmoid(-z).tolist()

    def extra(self, ctx: Any, row: int, at: int, n: int, token_lp: list[float]) -> list[float]:
        halt, go_on = ctx  # "continue" after each token but the last, "halt" after it
        return go_on[at + 1 : at + n] + halt[at + n : at + n + 1]

    def terms(
        self, tokenizer: Tokenizer, ids: list[int], token_lp: list[float], extra: list[float]
    ) -> list[Term]:
        out = []
        for k, term in enumerate(_token_terms(tokenizer, ids, token_lp), start=1):
            out += [term, Term("halt" if k == len(ids) else "continue", "", extra[k - 1])]
        return out

    def weight(self, config: TrainConfig) -> float:
        return config.halt_weight

    def loss(self, model: RNNLM, h: Tensor, target: Tensor, norm: float) -> Tensor:
        logits = model.halt_logits(h).float()
        mask = (target >= 0).to(logits.dtype)
        loss = F.binary_cross_entropy_with_logits(
            logits, target.clamp(min=0).to(logits.dtype), weight=mask, reduction="sum"
        )
        return loss / norm


class LengthRule(StopRule):
    stop = Stop.length
    banned = (PAD, SOS, EOS)
    needs_heads = True
    target = "length"

    def begin(
        self, model: RNNLM, rows: Rows, totals: Totals, config: SampleConfig, gen: torch.Generator
    ) -> None:
        """Draw the number of tokens tau (or take --length) and its log-probability."""
        n = len(rows)
        log_p = model.length_log_probs(rows.h).cpu().double()  # (n, max_len + 1)
        if config.length is not None:
            tau = torch.full((n,), _asked_length(model, config.length), dtype=torch.long)
        elif config.temperature == 0:
            tau = log_p.argmax(-1)
        else:
            tau = torch.multinomial(log_p.exp().float(), 1, generator=gen).squeeze(-1)
        totals.length = tau
        totals.log_prob += log_p.gather(-1, tau[:, None]).squeeze(-1)
        rows.remaining = tau.clone()
        rows.keep(rows.remaining > 0)

    def beam_starts(
        self, model: RNNLM, h: Tensor, config: SampleConfig, width: int
    ) -> tuple[Tensor, Tensor]:
        log_p = model.length_log_probs(h).cpu().double()[0]  # (max_len + 1,)
        if config.length is not None:
            tau = torch.tensor([_asked_length(model, config.length)])
        else:
            tau = log_p.topk(min(width, len(log_p))).indices
        return tau, log_p[tau]

    def beam_ends(self, tok: Tensor, remaining: Tensor) -> Tensor:
        return remaining == 1  # the last of its tokens

    def after_draw(self, rows: Rows) -> None:
        rows.remaining = rows.remaining - 1
        rows.keep(rows.remaining > 0)

    def length_ids(self, ids: LengthIds, rows: Rows) -> Tensor:
        return ids.remaining(rows.remaining)

    def score_inputs(self, model: RNNLM, lengths: np.ndarray, width: int) -> np.ndarray | None:
        # x(t) is read with n - t tokens still to come; <sos> with "unknown"
        left = np.clip(lengths[:, None] - np.arange(width), 0, None)  # (S, width)
        buckets = model.length_buckets(left)
        buckets[:, 0] = model.unknown_at(0)
        return buckets

    def score_context(self, model: RNNLM, h: Tensor, h_kept: Tensor) -> Any:
        return model.length_log_probs(h[:, 0]).double().cpu().numpy()  # (S, max_len + 1)

    def extra(self, ctx: Any, row: int, at: int, n: int, token_lp: list[float]) -> list[float]:
        return [float(ctx[row, n]) if n < ctx.shape[1] else -math.inf]

    def terms(
        self, tokenizer: Tokenizer, ids: list[int], token_lp: list[float], extra: list[float]
    ) -> list[Term]:
        return [Term("length", str(len(ids)), extra[0]), *_token_terms(tokenizer, ids, token_lp)]

    def weight(self, config: TrainConfig) -> float:
        return config.length_weight

    def loss(self, model: RNNLM, h: Tensor, target: Tensor, norm: float) -> Tensor:
        logits = model.length_logits(h).float()
        loss = F.cross_entropy(
            logits.flatten(0, 1), target.flatten(), ignore_index=-1, reduction="sum"
        )
        return loss / norm


class NoStop(StopRule):
    """Draws --max-tokens tokens; scores nothing (a sentence's end is not its probability)."""

    stop = Stop.none
    ends = False

    def drawn(self, rows: Rows, tok: Tensor, lp: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        if not bool(rows.restart.any()):
            return tok, lp, None
        # these rows read <sos> at this step: their draw is dropped, with its log-prob
        rows.offset = rows.offset.masked_fill(rows.restart, 0)
        return tok.masked_fill(rows.restart, SOS), lp.masked_fill(rows.restart, 0.0), ~rows.restart

    def after_draw(self, rows: Rows) -> None:
        """A drawn <eos> starts a new unit at the next step (``after_read``)."""

    def after_read(
        self, model: RNNLM, rows: Rows, totals: Totals, config: SampleConfig, gen: torch.Generator
    ) -> None:
        rows.restart = rows.tok == EOS


RULES: dict[Stop, StopRule] = {
    Stop.eos: EndMarker(),
    Stop.halt: HaltRule(),
    Stop.length: LengthRule(),
    Stop.none: NoStop(),
}
ENDING = tuple(s for s, r in RULES.items() if r.ends)  # the rules the stop fit compares
TRAINED = tuple(r for r in RULES.values() if r.target)  # the rules with a head to train


def _asked_length(model: RNNLM, length: int) -> int:
    if length > model.config.max_len:
        raise ConfigError(
            f"--length {length} is beyond this model's longest unit ({model.config.max_len} tokens)"
        )
    return length


def rule(stop: Stop | str) -> StopRule:
    """The rule named ``stop`` (a Stop or its name); a ConfigError for any other name."""
    try:
        return RULES[Stop(stop)]
    except ValueError:
        *most, last = [s.value for s in Stop]
        raise ConfigError(f"unknown stop rule {stop!r}: use {', '.join(most)} or {last}") from None


def check_scoring(stop: Stop, model: RNNLM) -> StopRule:
    """The rule a sentence is scored under, or a ConfigError saying why it cannot be."""
    r = rule(stop)
    if not r.ends:
        raise ConfigError("score needs a stopping rule: --stop eos, halt or length")
    r.check(model)
    return r


def rule_mask(vocab_size: int, stop: Stop, device: torch.device | str = "cpu") -> Tensor:
    """0 where the rule may draw a token, -inf where it never does. (V,)"""
    return RULES[stop].mask(vocab_size, device)


def rule_logits(logits: Tensor, stop: Stop, mask: Tensor | None = None) -> Tensor:
    """Logits (float32) with the tokens the rule never draws set to -inf; ``mask`` is
    ``rule_mask``'s, passed in to save making it again."""
    if mask is None:
        mask = rule_mask(logits.shape[-1], stop, logits.device)
    return logits.float() + mask  # x + 0 is x exactly; x + -inf is -inf


def head_targets(batch: Batch) -> list[np.ndarray]:
    """The targets of the trained heads in a batch, in TRAINED's order (empty without heads)."""
    targets = [getattr(batch, r.target) for r in TRAINED if r.target]
    return targets if all(t is not None for t in targets) else []


def target_counts(batch: Batch) -> np.ndarray:
    """Targets each loss averages over: tokens, then each trained head's decisions."""
    counts = [np.count_nonzero(batch.y != PAD)]
    for r in TRAINED:
        t = getattr(batch, r.target) if r.target else None
        counts.append(0 if t is None else np.count_nonzero(t >= 0))
    return np.array(counts, dtype=np.float64)


def head_loss(
    model: RNNLM, h: Tensor, targets: list[Tensor], norm: np.ndarray, config: TrainConfig
) -> Tensor:
    """The weighted losses of the trained heads (norm: target_counts' share of this rank)."""
    losses = [
        r.weight(config) * r.loss(model, h, t, float(norm[k + 1]))
        for k, (r, t) in enumerate(zip(TRAINED, targets))
    ]
    total = losses[0]
    for loss in losses[1:]:
        total = total + loss
    return total


def _token_terms(tokenizer: Tokenizer, ids: list[int], token_lp: list[float]) -> list[Term]:
    return [Term("token", tokenizer.piece(t), lp, t == UNK) for t, lp in zip(ids, token_lp)]
