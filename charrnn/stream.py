"""Samples handed out in reading order, as text, while they are drawn.

A sample is drawn token by token, but text is what a reader wants to see: ``decoding`` turns
tokens into the text they add (and holds back what may be the start of a stop string).

Several samples are drawn side by side as one batch, but a terminal shows one text at a time.
``SampleStream`` hands them out in turn: sample 1 as it is drawn; when it ends, what sample 2
has so far at once, then the rest of sample 2 as it comes, and so on. The batch is drawn once,
so streaming costs no more time than drawing the samples silently, and the same seed gives the
same samples either way. Beam search knows its best beams only at its end: they come whole.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from charrnn import beam
from charrnn.config import SampleConfig
from charrnn.decoding import IncrementalDecoder, TextWatch
from charrnn.generate import Sample, Sampler

__all__ = ["IncrementalDecoder", "Piece", "SampleStream"]


@dataclass(frozen=True)
class Piece:
    """Text one sample gained; ``end`` marks the last piece of that sample."""

    index: int
    text: str
    end: bool = False


class SampleStream:
    """Iterate for ``Piece``s in reading order; afterwards ``samples`` holds the finished samples
    (with their log-probabilities), exactly as ``Sampler.sample`` would have drawn them.

    ``flush_every`` (seconds) batches the decoding of a fast stream: a terminal does not need
    more than a few dozen updates a second, and decoding is what costs at word level.
    ``show_prompt=False`` hands out the text after the prompt only (a long prompt read from a
    file is not shown again).
    """

    def __init__(
        self,
        sampler: Sampler,
        n: int,
        config: SampleConfig,
        prompt: str = "",
        flush_every: float = 0.02,
        show_prompt: bool = True,
    ):
        self.sampler, self.n, self.config, self.prompt = sampler, n, config, prompt
        self.flush_every, self.show_prompt = flush_every, show_prompt
        self.samples: list[Sample] = []
        self.prompt_ids = sampler.encode_prompt(prompt)  # [<sos>, prompt tokens...]

    def __iter__(self) -> Iterator[Piece]:
        self.sampler.check(self.config)
        if self.config.beam:
            yield from self._beams()
            return
        n = self.n
        turns = _Turns([self._decoder() for _ in range(n)])
        tokens: list[list[int]] = [[] for _ in range(n)]
        info: dict[str, np.ndarray] = {}
        last_flush = 0.0
        for pairs, drawing in self.sampler.iter_tokens(n, self.config, self.prompt_ids, info):
            for i, t in pairs:
                tokens[i].append(t)
                turns.decoders[i].feed(t)
            turns.still_drawing(set(drawing))
            now = time.monotonic()
            if turns.current_done() or now - last_flush >= self.flush_every:
                last_flush = now
                yield from turns.flush()
        turns.still_drawing(set())
        yield from turns.flush()
        self.samples = self.sampler.finish(self.prompt_ids, tokens, info, self.config)

    def _decoder(self) -> IncrementalDecoder | TextWatch:
        tokenizer, c, prefix = self.sampler.tokenizer, self.config, self.prompt_ids[1:]
        if c.stop_at:
            return TextWatch(tokenizer, c.stop_at, c.keep_stop, prefix, self.show_prompt)
        return IncrementalDecoder(tokenizer, prefix, self.show_prompt)

    def _beams(self) -> Iterator[Piece]:
        self.samples = beam.search(self.sampler, self.n, self.config, self.prompt)
        for i, s in enumerate(self.samples):
            yield Piece(i, s.text if self.show_prompt else s.continuation, end=True)


class _Turns:
    """Which sample is being shown, and which have ended."""

    def __init__(self, decoders: list[IncrementalDecoder | TextWatch]):
        self.decoders = decoders
        self.done = [False] * len(decoders)
        self.current = 0

    def still_drawing(self, alive: set[int]) -> None:
        """A sample missing from a step has ended (one that drew nothing included)."""
        for i in range(self.current, len(self.done)):
            self.done[i] = self.done[i] or i not in alive

    def current_done(self) -> bool:
        return self.current < len(self.done) and self.done[self.current]

    def flush(self) -> Iterator[Piece]:
        """Pieces of the current sample, moving on to the next each time one is complete."""
        while self.current < len(self.decoders):
            i, end = self.current, self.done[self.current]
            text = self.decoders[i].take(final=end)
            if text or end:
                yield Piece(i, text, end)
            if not end:
                return
            self.current += 1
