"""What the sampling controls do to the logits before a token is drawn, in one place.

Each step the sampler has the rule-masked logits (b, V) of its rows on the host. The controls
act on them in this order (docs/sampling.md compares the definitions):

    1. penalties    over each row's last --repeat-window tokens (the prompt's included):
                    repeat (llama.cpp):  l / R if l > 0 else l * R, for tokens seen
                    presence, frequency (OpenAI):  l - count * F - (count > 0) * P
       bias         l + VALUE for the tokens named
       bans         -inf for a banned token; for the last token of a banned string whose
                    other tokens were just drawn; for a token that would repeat an n-gram
    2. temperature  l / T  (T = 0: the argmax of step 1's logits, and nothing below)
    3. top-k        the k likeliest
    4. top-p        the smallest set with top-p of the probability
    5. min-p        the tokens with at least min-p times the top token's probability
    then one Gumbel-max draw.

A sample's log-probability is read from the logits before step 1: the model's own. With no
penalty, bias or ban set the sampler makes no ``Controls`` and takes its plain path.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from charrnn.config import SampleConfig
from charrnn.errors import ConfigError
from charrnn.tokenizers import EOS, N_SPECIALS, PAD, SOS, SPECIALS, UNK, Tokenizer

_SPECIAL_IDS = {name: i for i, name in enumerate(SPECIALS)}
assert (_SPECIAL_IDS["<pad>"], _SPECIAL_IDS["<sos>"], _SPECIAL_IDS["<eos>"]) == (PAD, SOS, EOS)


def filter_logits(
    logits: Tensor, top_k: int | None, top_p: float | None, min_p: float | None = None
) -> Tensor:
    """Keep the top-k tokens, then the smallest set whose probability reaches top-p, then
    those with at least min-p times the top token's probability. (N, V)"""
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
    if min_p:
        # p >= min_p * p_max  <=>  l >= l_max + log(min_p), whatever the normalizer
        floor = logits.max(-1, keepdim=True).values + math.log(min_p)
        logits = logits.masked_fill(logits < floor, -math.inf)
    return logits


def draw(logits: Tensor, config: SampleConfig, gen: torch.Generator) -> Tensor:
    """One token per row from rule-masked (and shaped) logits (N, V) -> (N,).

    The Gumbel-max trick: argmax(logits / T + G), G = -log(-log U), draws a token with
    probability softmax(logits / T), as ``torch.multinomial`` would, in a few elementwise
    steps instead of its per-call work (which is most of a one-stream step's drawing). U = 0
    gives G = -inf, and U < 1, so G is never +inf: a masked token (-inf) is never drawn.
    """
    if config.temperature == 0:
        return logits.argmax(-1)
    if config.temperature != 1:
        logits = logits / config.temperature
    logits = filter_logits(logits, config.top_k, config.top_p, config.min_p)
    u = torch.rand(logits.shape, generator=gen, dtype=logits.dtype)
    return (logits - u.log_().neg_().log_()).argmax(-1)


def token_ids(tokenizer: Tokenizer, text: str, option: str) -> list[int]:
    """The tokens a string names: a special (``<eos>``), a piece of the vocabulary as it is
    written, or else the string's encoding; a ConfigError if the model cannot write it."""
    if text in _SPECIAL_IDS:
        return [_SPECIAL_IDS[text]]
    for i in range(N_SPECIALS, tokenizer.vocab_size):
        if tokenizer.piece(i) == text:
            return [i]
    ids = tokenizer.encode(text)
    if not ids or UNK in ids:
        raise ConfigError(f"{option} {text!r} has symbols this model does not know")
    return ids


def check(config: SampleConfig, tokenizer: Tokenizer | None, rule_mask: Tensor) -> None:
    """Refuse a ban or a bias this model makes wrong (the config checked the rest)."""
    if not (config.ban or config.bias):
        return
    if tokenizer is None:
        raise ConfigError("--ban and --bias need the model's tokenizer")
    for token, _ in config.bias:
        ids = token_ids(tokenizer, token, "--bias")
        if len(ids) != 1:
            level = tokenizer.level.value
            raise ConfigError(
                f"--bias {token!r} is {len(ids)} tokens at {level} level; a bias is for one token"
            )
    static = _static(config, tokenizer, rule_mask.shape[0])
    if not bool(torch.isfinite(rule_mask + static).any()):
        raise ConfigError("--ban leaves no token to draw")


def _static(config: SampleConfig, tokenizer: Tokenizer, vocab_size: int) -> Tensor:
    """The biases and the one-token bans, as one vector added to the logits. (V,)"""
    static = torch.zeros(vocab_size)
    for token, value in config.bias:
        static[token_ids(tokenizer, token, "--bias")[0]] += value
    for text in config.ban:
        ids = token_ids(tokenizer, text, "--ban")
        if len(ids) == 1:
            static[ids[0]] = -math.inf
    return static


class History:
    """Each row's latest tokens, oldest first: (rows, cap) ids, -1 before a row's first.

    ``keep`` bounds what is kept (the longest look-back of the controls); None keeps every
    token (--no-repeat-ngram looks at the whole sample). Capacity doubles as rows grow, and a
    bounded history drops its oldest tokens when it reaches twice ``keep``.
    """

    def __init__(self, rows: int, context: list[int], keep: int | None):
        self.keep = keep
        tail = context if keep is None else context[-keep:] if keep else []
        cap = max(64, 2 * len(tail))
        self.tokens = torch.full((rows, cap), -1, dtype=torch.long)
        self.tokens[:, : len(tail)] = torch.tensor(tail, dtype=torch.long)
        self.length = torch.full((rows,), len(tail), dtype=torch.long)

    def push(self, rows: Tensor, tok: Tensor) -> None:
        """Append ``tok`` (b,) to ``rows`` (b,)."""
        if int(self.length.max()) >= self.tokens.shape[1]:
            self._make_room()
        self.tokens[rows, self.length[rows]] = tok
        self.length[rows] += 1

    def last(self, rows: Tensor, k: int) -> Tensor:
        """The last k tokens of each of ``rows``, oldest first, -1 where there are fewer. (b, k)"""
        idx = self.length[rows, None] - k + torch.arange(k)  # (b, k)
        got = self.tokens[rows[:, None], idx.clamp(min=0)]
        return got.masked_fill(idx < 0, -1)

    def select(self, index: Tensor) -> None:
        """Row i becomes the old row ``index[i]`` (beam search keeps a hypothesis's parent's)."""
        self.tokens, self.length = self.tokens[index], self.length[index]

    def _make_room(self) -> None:
        rows, cap = self.tokens.shape
        if self.keep is not None and cap >= 2 * self.keep:
            keep = max(self.keep, 1)
            fresh = torch.full((rows, cap - keep), -1, dtype=torch.long)
            self.tokens = torch.cat([self.last(torch.arange(rows), keep), fresh], 1)
            self.length = self.length.clamp(max=keep)
            return
        self.tokens = torch.cat([self.tokens, torch.full_like(self.tokens, -1)], 1)


class Controls:
    """Penalties, biases and bans for a batch of rows, with each row's recent tokens."""

    def __init__(
        self, config: SampleConfig, tokenizer: Tokenizer, vocab: int, rows: int, context: list[int]
    ):
        self.config = c = config
        self.static = _static(c, tokenizer, vocab)  # (V,)
        self.long_bans = [ids for s in c.ban if len(ids := token_ids(tokenizer, s, "--ban")) > 1]
        self.penalize = c.repeat_penalty != 1 or c.presence_penalty or c.frequency_penalty
        looks = [len(b) - 1 for b in self.long_bans] + [c.repeat_window if self.penalize else 0]
        keep = None if c.no_repeat_ngram else max(looks)
        self.history = History(rows, context, keep)

    @classmethod
    def make(
        cls, config: SampleConfig, tokenizer: Tokenizer, vocab: int, rows: int, context: list[int]
    ) -> Controls | None:
        """The controls a config turns on; None when it turns none on."""
        return cls(config, tokenizer, vocab, rows, context) if config.shaping else None

    def apply(self, logits: Tensor, rows: Tensor) -> Tensor:
        """Shaped logits (b, V) for ``rows`` (b,), their indices in the history."""
        x = self._penalties(logits, rows) if self.penalize else logits
        x = x + self.static
        banned = self._banned(rows)
        if banned is not None:
            at_row, token = banned
            x = x.index_put((at_row, token), torch.tensor(-math.inf))
            # a row the bans leave nothing draws as if the sequence bans were off this once
            empty = torch.isneginf(x).all(-1)
            if bool(empty.any()):
                x[empty] = (logits + self.static)[empty]
        return x

    def push(self, rows: Tensor, tok: Tensor) -> None:
        if self.history.keep != 0:  # biases and one-token bans look at no history
            self.history.push(rows, tok)

    def _penalties(self, logits: Tensor, rows: Tensor) -> Tensor:
        c = self.config
        window = self.history.last(rows, c.repeat_window)  # (b, W)
        counted = window >= N_SPECIALS  # the end of a unit is not a repetition
        counts = torch.zeros_like(logits).scatter_add_(
            1, window.clamp(min=0), counted.to(logits.dtype)
        )  # (b, V)
        seen = counts > 0
        x = logits
        if c.repeat_penalty != 1:
            x = torch.where(seen, torch.where(x > 0, x / c.repeat_penalty, x * c.repeat_penalty), x)
        if c.presence_penalty or c.frequency_penalty:
            x = x - counts * c.frequency_penalty - seen.to(x.dtype) * c.presence_penalty
        return x

    def _banned(self, rows: Tensor) -> tuple[Tensor, Tensor] | None:
        """(row, token) pairs that a banned string or --no-repeat-ngram forbids."""
        at_row, token = [], []
        for ids in self.long_bans:
            prefix = torch.tensor(ids[:-1])
            hit = (self.history.last(rows, len(prefix)) == prefix).all(-1).nonzero().squeeze(1)
            at_row.append(hit)
            token.append(torch.full_like(hit, ids[-1]))
        if self.config.no_repeat_ngram:
            r, t = self._repeats(rows, self.config.no_repeat_ngram)
            at_row.append(r)
            token.append(t)
        if not at_row:
            return None
        return torch.cat(at_row), torch.cat(token)

    def _repeats(self, rows: Tensor, n: int) -> tuple[Tensor, Tensor]:
        """The tokens that would complete an n-gram each row has already drawn."""
        h = self.history
        width = int(h.length[rows].max())
        if width < n:
            empty = torch.zeros(0, dtype=torch.long)
            return empty, empty
        seq = h.tokens[rows, :width]  # (b, L)
        grams = seq.unfold(1, n, 1)  # (b, L - n + 1, n)
        prefix = h.last(rows, n - 1)[:, None, :]  # (b, 1, n - 1)
        match = (grams[..., :-1] == prefix).all(-1) & (grams[..., -1] >= 0)  # (b, L - n + 1)
        at_row, at = match.nonzero(as_tuple=True)
        return at_row, grams[at_row, at, -1]
