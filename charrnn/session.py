"""A session: text given in turns, each continued by the model, the recurrent state kept.

The session holds where the net stands after everything read so far (the state, the features
of the last token, its offset in the unit), so a turn costs only its own tokens: nothing said
before is read again. An RNN's state is a few vectors however long the session grows. The
terminal loop (``charrnn sample --interactive``) and a server drive the same object:

    session = model.session(temperature=0.8)
    with session.say("ROMEO:") as turn:      # read the text, then continue it
        for piece in turn:                   # text as it is drawn
            print(piece, end="")
    session.top(5)                           # the five likeliest next tokens
    session.choose(token_id)                 # read one of them; its text

A turn that the stopping rule ends ends its unit, as in training text: the next turn starts a
new unit after ``<eos> <sos>``, from the state the last one left. A turn cut short (Ctrl-C,
--max-tokens, a stop string) leaves the unit open, and the next text continues it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from charrnn.config import SampleConfig
from charrnn.decoding import IncrementalDecoder, TextWatch
from charrnn.errors import ConfigError
from charrnn.generate import Sample, Sampler, generator
from charrnn.prime import read
from charrnn.score import NextToken
from charrnn.stopping import rule_logits
from charrnn.tokenizers import EOS, PAD, SOS, UNK

RECENT = 4096  # tokens of the session kept as context (decoding, penalties)


class Session:
    """One conversation with a model; see the module's text."""

    def __init__(self, sampler: Sampler, config: SampleConfig):
        if config.beam:
            raise ConfigError("a session draws its turns: leave out --beam")
        sampler.check(config)
        self.sampler, self.config = sampler, config
        self.gen = generator(config.seed)  # one stream of random numbers for all turns
        self.reset()

    def reset(self) -> None:
        """Start over: a new unit, from the model's start state."""
        self.at = read(self.sampler.model, [SOS])
        self.recent: list[int] = []  # the last RECENT tokens read, <sos> and <eos> included

    def say(self, text: str = "") -> Turn:
        """Read ``text`` (nothing: go on from where the session is), then a turn that
        continues it."""
        ids = self.sampler.tokenizer.encode(text) if text else []
        if ids and all(t == UNK for t in ids):
            raise ConfigError("the text has only symbols this model does not know")
        self._read(ids)
        return Turn(self)

    @torch.inference_mode()
    def top(self, k: int = 10) -> list[NextToken]:
        """The ``k`` likeliest next tokens and their probabilities (the model's own, under the
        stopping rule), likeliest first."""
        if k < 1:
            raise ConfigError("k must be at least 1")
        model, tokenizer = self.sampler.model, self.sampler.tokenizer
        logits = rule_logits(model.token_logits(self.at.h).float().cpu(), self.config.stop)
        probs = logits.softmax(-1)[0]  # (V,)
        top = torch.topk(probs, min(k, int((probs > 0).sum())))
        return [
            NextToken(int(i), tokenizer.piece(int(i)), float(p))
            for p, i in zip(top.values.tolist(), top.indices.tolist())
        ]

    def choose(self, token: int) -> str:
        """Read ``token`` as if it had been drawn; the text it adds."""
        if not 0 <= token < self.sampler.model.config.vocab_size or token in (PAD, SOS):
            raise ConfigError(f"no token {token} to choose")
        decoder = IncrementalDecoder(self.sampler.tokenizer, self.recent, show_prefix=False)
        text = decoder.push(token) + decoder.take(final=True)
        self._read([token, SOS] if token == EOS else [token])
        return text

    def _read(self, ids: list[int]) -> None:
        if ids:
            self.at = read(self.sampler.model, ids, start=self.at)
            self.recent = (self.recent + ids)[-RECENT:]

    def _context(self) -> list[int]:
        """What the sampler takes as the prompt: <sos> and the recent tokens."""
        return [SOS, *self.recent]


class Turn:
    """The model's continuation in one turn. Iterate for its text as it is drawn; ``close``
    (at the end, on an interruption, or on leaving a ``with``) reads what was drawn into the
    session. Afterwards ``sample`` holds it whole, with its log-probability."""

    def __init__(self, session: Session):
        self.session = session
        self.tokens: list[int] = []
        self.sample: Sample | None = None
        self.ended = False  # the stopping rule ended it (not Ctrl-C, a cap or a stop string)
        self._closed = False
        self._info: dict[str, np.ndarray] = {}

    def __enter__(self) -> Turn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[str]:
        s = self.session
        sampler, config, context = s.sampler, s.config, s._context()
        text: IncrementalDecoder | TextWatch
        if config.stop_at:
            stops, keep = config.stop_at, config.keep_stop
            text = TextWatch(sampler.tokenizer, stops, keep, context[1:], show_prefix=False)
        else:
            text = IncrementalDecoder(sampler.tokenizer, context[1:], show_prefix=False)
        steps = sampler.iter_tokens(1, config, context, self._info, start=s.at, gen=s.gen)
        for pairs, _ in steps:
            for _, t in pairs:
                self.tokens.append(t)
                text.feed(t)
            piece = text.take()
            if piece:
                yield piece
        rest = text.take(final=True)
        if rest:
            yield rest
        self.sample = sampler.finish(context, [self.tokens], self._info, config)[0]
        self.ended = not (self.sample.cut or self.sample.stop_string)
        self.close()

    def close(self) -> None:
        """Read the tokens drawn into the session (once); a unit the rule ended is closed
        with <eos> and the next one opened with <sos>."""
        if self._closed:
            return
        self._closed = True
        ids: list[int] = []
        for t in self.tokens:
            ids += [t, SOS] if t == EOS else [t]
        if self.ended and (not ids or ids[-1] != SOS):
            ids += [EOS, SOS]  # halt and length end a unit without drawing <eos>
        self.session._read(ids)
