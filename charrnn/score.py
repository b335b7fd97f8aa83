"""Scoring: log P of a sentence under a stopping rule, term by term.

A sentence x(1..n) is scored as one unit ``<sos> x(1..n) <eos>``. Its log-probability is the
sum of the rule's own terms:

    eos     sum_t log P(x(t) | x(<t))            + log P(<eos> | x(1..n))
    halt    sum_t log P'(x(t) | x(<t))           + sum_{t<n} log(1 - p(t)) + log p(n)
    length  log P(tau = n) + sum_t log P'(x(t) | x(<t), n - t remaining)

where P' is the softmax with <eos> masked out and p(t) the halting unit. Sentences are scored
in batches: sorted by length, right-padded (an RNN never looks ahead, so padding after a
sentence cannot change its score).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path

import numpy as np
import torch

from charrnn.config import BadLines, Stop
from charrnn.errors import ConfigError
from charrnn.lines import bad_line, iter_line_chunks
from charrnn.model import RNNLM
from charrnn.stopping import StopRule, Term, check_scoring, rule_logits, rule_mask
from charrnn.tokenizers import EOS, PAD, SOS, UNK, Tokenizer

LOG2 = math.log(2.0)


@dataclass
class SentenceScore:
    text: str
    stop: Stop
    log_prob: float  # nats: exactly math.fsum of the terms' log-probabilities
    n_tokens: int
    n_chars: int  # the sentence's characters plus one for its end
    n_unk: int = 0  # tokens that are <unk>
    n_bytes: int = 0  # its UTF-8 bytes plus one for its end
    make_terms: Callable[[], list[Term]] = field(default=list, repr=False, compare=False)

    @cached_property
    def terms(self) -> list[Term]:
        """The rule's own terms, in reading order; made when first asked for (most callers
        want the totals of many sentences, not one object per token)."""
        return self.make_terms()

    @property
    def prob(self) -> float:
        return math.exp(self.log_prob)

    @property
    def perplexity(self) -> float:
        """exp of the mean negative log-probability per predicted symbol (the end included)."""
        return math.exp(-self.log_prob / (self.n_tokens + 1))

    @property
    def bits_per_char(self) -> float:
        return -self.log_prob / LOG2 / self.n_chars

    @property
    def bits_per_byte(self) -> float:
        return -self.log_prob / LOG2 / self.n_bytes


@torch.no_grad()
def score(
    model: RNNLM,
    tokenizer: Tokenizer,
    sentences: Sequence[str],
    stop: Stop = Stop.eos,
    batch_tokens: int = 16384,
) -> list[SentenceScore]:
    """Score each sentence under ``stop``; the result keeps the input order."""
    rule = check_scoring(stop, model)
    if any(not s.strip() for s in sentences):
        raise ConfigError("cannot score an empty sentence")
    encoded = tokenizer.encode_each(sentences)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    results: list[SentenceScore | None] = [None] * len(encoded)
    i = 0
    while i < len(order):
        j = i + 1
        while j < len(order) and (j - i + 1) * (len(encoded[order[j]]) + 1) <= batch_tokens:
            j += 1
        group = order[i:j]
        for k, res in zip(group, _score_batch(model, tokenizer, [encoded[g] for g in group], rule)):
            res.text = sentences[k]
            res.n_chars = len(sentences[k]) + 1
            res.n_bytes = len(sentences[k].encode("utf-8", "surrogatepass")) + 1
            results[k] = res
        i = j
    return [r for r in results if r is not None]


def _score_batch(
    model: RNNLM, tokenizer: Tokenizer, batch: list[list[int]], rule: StopRule
) -> list[SentenceScore]:
    dev = next(model.parameters()).device
    n_rows = len(batch)
    lengths = np.array([len(b) for b in batch], dtype=np.int64)  # (S,)
    width = int(lengths.max()) + 1
    x = np.full((n_rows, width + 1), PAD, dtype=np.int64)  # (S, L+2): <sos> x1..xn <eos> pad
    x[:, 0] = SOS
    for r, ids in enumerate(batch):
        x[r, 1 : len(ids) + 1] = ids
        x[r, len(ids) + 1] = EOS
    inputs = rule.score_inputs(model, lengths, width)  # (S, L+1) or None
    remaining = None if inputs is None else torch.from_numpy(inputs).to(dev)
    h, _ = model.features(torch.from_numpy(x[:, :-1]).to(dev), None, remaining)  # (S, L+1, H)
    # Only the n + 1 predictions of each sentence are scored, not the padding after it.
    keep = np.arange(width) <= lengths[:, None]  # (S, L+1)
    flat = torch.from_numpy(np.flatnonzero(keep)).to(dev)  # (N,)
    h_kept = h.flatten(0, 1).index_select(0, flat)  # (N, H)
    targets = torch.from_numpy(x[:, 1:][keep]).to(dev)  # (N,)
    tok_lp = _target_log_probs(model, h_kept, targets, rule.stop).tolist()  # (N,)
    ctx = rule.score_context(model, h, h_kept)
    out = []
    row_start = np.concatenate([[0], np.cumsum(lengths + 1)]).tolist()  # each row's first term
    for r, ids in enumerate(batch):
        n, o = len(ids), row_start[r]
        lps = tok_lp[o : o + n + 1]  # the n tokens, then <eos> (scored under eos only)
        extra = rule.extra(ctx, r, o, n, lps)  # the rule's terms besides the tokens'
        total = math.fsum(itertools.chain(lps[:n], extra))  # as math.fsum over the terms
        make = partial(rule.terms, tokenizer, ids, lps[:n], extra)
        out.append(SentenceScore("", rule.stop, total, n, 0, ids.count(UNK), make_terms=make))
    return out


def _target_log_probs(
    model: RNNLM, h: torch.Tensor, targets: torch.Tensor, stop: Stop, max_logits: int = 1 << 22
) -> torch.Tensor:
    """log P(target) under the rule, for features (N, H) -> (N,) float64 on the CPU.

    The logits are made a slice of rows at a time: a word-level vocabulary times every token
    of a batch would not fit in memory."""
    mask = rule_mask(model.config.vocab_size, stop, h.device)  # (V,)
    rows = max(1, max_logits // model.config.vocab_size)
    parts = []
    for i in range(0, h.shape[0], rows):
        logits = rule_logits(model.token_logits(h[i : i + rows]), stop, mask)  # (rows, V)
        t = targets[i : i + rows, None]
        parts.append((logits.gather(-1, t) - logits.logsumexp(-1, keepdim=True)).squeeze(-1))
    return torch.cat(parts).double().cpu()


# -- pictures of a score ------------------------------------------------------------------


@dataclass(frozen=True)
class HeatCell:
    """One term of a score placed in the sentence: the text its token adds to the decoded
    sentence (a word keeps its leading space), and how surprising it was."""

    kind: str  # "token", or "eos" for the end marker (whose text is "")
    text: str
    bits: float  # surprisal, -log2 P
    unk: bool = False


def surprisal_map(tokenizer: Tokenizer, s: SentenceScore) -> list[HeatCell]:
    """The tokens of a scored sentence in reading order with their surprisal, then its end
    (eos rule only), as in Karpathy's "visualizing predictions"."""
    from charrnn.stream import IncrementalDecoder

    ids = tokenizer.encode(s.text)
    tokens = [t for t in s.terms if t.kind == "token"]
    assert len(ids) == len(tokens), "a score's tokens are the sentence's encoding"
    decoder = IncrementalDecoder(tokenizer)
    cells = [
        HeatCell("token", decoder.push(i), -t.log_prob / LOG2, t.unk) for i, t in zip(ids, tokens)
    ]
    rest = decoder.take(final=True)  # text a byte-level decoder held back, if any
    if rest and cells:
        last = cells[-1]
        cells[-1] = HeatCell(last.kind, last.text + rest, last.bits, last.unk)
    cells += [HeatCell("eos", "", -t.log_prob / LOG2) for t in s.terms if t.kind == "eos"]
    return cells


@dataclass(frozen=True)
class NextToken:
    id: int
    piece: str
    prob: float


@torch.no_grad()
def next_tokens(
    model: RNNLM, tokenizer: Tokenizer, text: str, k: int = 10, stop: Stop = Stop.eos
) -> list[NextToken]:
    """The ``k`` likeliest tokens after ``<sos> text``, likeliest first: P(token | text).

    Under ``eos`` the end marker competes with the tokens (its probability is that of the unit
    ending here); under ``halt`` and ``length`` it is masked, as those rules draw tokens.
    """
    if k < 1:
        raise ConfigError("--next must be at least 1")
    ids = [SOS, *tokenizer.encode(text)]
    dev = next(model.parameters()).device
    h, _ = model.features(torch.tensor([ids], device=dev))  # (1, P, H)
    logits = rule_logits(model.token_logits(h[:, -1]).float().cpu(), stop)  # (1, V)
    probs = logits.softmax(-1)[0]  # (V,)
    top = torch.topk(probs, min(k, int((probs > 0).sum())))
    return [
        NextToken(int(i), tokenizer.piece(int(i)), float(p))
        for p, i in zip(top.values.tolist(), top.indices.tolist())
    ]


# -- a stream of sentences ----------------------------------------------------------------


@dataclass
class ScoredLine:
    """A line of a sentence file: its number (from 1) and its score, or the error that
    kept it from being read (no score)."""

    number: int
    score: SentenceScore | None
    error: str | None = None


def check_range(min_ppl: float | None, max_ppl: float | None) -> None:
    """Refuse a perplexity range that no line can fall in."""
    for name, x in (("--min-ppl", min_ppl), ("--max-ppl", max_ppl)):
        if x is not None and not (x >= 1 or x == math.inf):
            raise ConfigError(f"{name} must be at least 1 (a perplexity), not {x:g}")
    if min_ppl is not None and max_ppl is not None and min_ppl > max_ppl:
        raise ConfigError(f"--min-ppl {min_ppl:g} is above --max-ppl {max_ppl:g}: no line can pass")


def _in_range(ppl: float, lo: float | None, hi: float | None) -> bool:
    return (lo is None or ppl >= lo) and (hi is None or ppl <= hi)


def keep_in_range(
    scores: list[SentenceScore], min_ppl: float | None = None, max_ppl: float | None = None
) -> list[SentenceScore]:
    """The scores whose perplexity is within [min_ppl, max_ppl] (None: open), in order."""
    return [s for s in scores if _in_range(s.perplexity, min_ppl, max_ppl)]


def score_lines(
    model: RNNLM,
    tokenizer: Tokenizer,
    path: Path | str,
    stop: Stop = Stop.eos,
    ppl_range: tuple[float | None, float | None] = (None, None),
    on_bad_line: BadLines = BadLines.stop,
) -> Iterator[ScoredLine]:
    """Every non-blank line of a sentence file (or stdin for ``-``) scored as it is read, in
    input order: the lines of each read are scored as one batch, so memory stays bounded and
    a pipe's lines come out as they go in. Only lines whose perplexity is within
    ``ppl_range`` (either end None: open) come out. A line that is not valid UTF-8 stops the
    stream with a CorpusError naming it, or (``skip``) comes out with its error."""
    check_scoring(stop, model)
    lo, hi = ppl_range
    for chunk in iter_line_chunks(path):
        lines = [ln for ln in chunk if ln.text is None or ln.text.strip()]
        texts = [ln.text for ln in lines if ln.text is not None]
        scores = iter(score(model, tokenizer, texts, stop) if texts else [])
        for line in lines:
            if line.text is None:
                error = bad_line(path, line)
                if on_bad_line is BadLines.stop:
                    raise error
                yield ScoredLine(line.number, None, str(error))
                continue
            s = next(scores)
            if _in_range(s.perplexity, lo, hi):
                yield ScoredLine(line.number, s)
