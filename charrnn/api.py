"""The Python API: load a run, sample from it, score with it; train a new one.

    import charrnn

    model = charrnn.load("tinyshakespeare")               # a run name, a folder, or None: latest
    print(model.sample(prompt="ROMEO:", temperature=0.8, seed=1))
    print(model.score("To be, or not to be").log_prob)    # nats
    print(model.next_tokens("To be, or not to b", k=3))   # the likeliest next tokens
    model.sample("ROMEO:", temperature=0.5, repeat_penalty=1.2, stop_at=".\n")
    model.samples(3, "ROMEO:", beam=5)                    # the 3 likeliest of 5 beams

    model = charrnn.train("corpus.txt", hidden=256, max_steps=500)

The command line is a thin layer over these calls. Everything raises ``charrnn.errors``
exceptions with a one-line message on a user's mistake.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, overload

import torch

from charrnn import beam
from charrnn.checkpoint import DEFAULT_ROOT, LoadedRun, load_run
from charrnn.config import Job, ModelConfig, SampleConfig, Stop, with_options
from charrnn.errors import ConfigError
from charrnn.generate import Sample, Sampler
from charrnn.model import RNNLM, count_parameters
from charrnn.score import NextToken, SentenceScore, next_tokens, score
from charrnn.session import Session
from charrnn.stopping import rule
from charrnn.stream import SampleStream
from charrnn.tokenizers import Tokenizer
from charrnn.training.callbacks import Callbacks, TrainResult
from charrnn.training.run import train as _train

__all__ = ["Model", "load", "train"]


class Model:
    """A trained run, ready to sample from and score with (weights in eval mode)."""

    def __init__(self, loaded: LoadedRun, result: TrainResult | None = None):
        self.loaded = loaded
        self.result = result  # what training reported, when this model was just trained
        self._sampler = Sampler(loaded.model, loaded.tokenizer)

    def __repr__(self) -> str:
        c = self.config
        return (
            f"<charrnn.Model {self.name!r}: {self.level} level, {c.cell.value} "
            f"{c.layers}x{c.hidden}, {self.n_parameters:,} parameters>"
        )

    # -- what it is --

    @property
    def name(self) -> str:
        return self.loaded.folder.name

    @property
    def folder(self) -> Path:
        return self.loaded.folder

    @property
    def config(self) -> ModelConfig:
        return self.loaded.model.config

    @property
    def level(self) -> str:
        return self.loaded.tokenizer.level.value

    @property
    def tokenizer(self) -> Tokenizer:
        return self.loaded.tokenizer

    @property
    def module(self) -> RNNLM:
        """The torch module itself."""
        return self.loaded.model

    @property
    def n_parameters(self) -> int:
        return count_parameters(self.loaded.model)

    # -- sampling --
    # The keywords of sample, samples, stream and session are SampleConfig's fields (the
    # options of `charrnn sample`, by the same names): temperature, top_k, top_p, min_p,
    # max_tokens, stop, length, seed, repeat_penalty, repeat_window, presence_penalty,
    # frequency_penalty, no_repeat_ngram, stop_at, keep_stop, ban, bias, beam, length_penalty.
    # A sample's log-probability is the model's own under the stopping rule, whatever they do.

    def sample(
        self, prompt: str = "", *, config: SampleConfig | None = None, **options: Any
    ) -> str:
        """One sample's text (the prompt included); with ``beam``, the best beam's.
        ``stop`` is eos, halt, length or none; ``length`` asks for exactly that many tokens
        with ``stop="length"``. A ``config`` replaces the keywords."""
        return self.samples(1, prompt, config=config, **options)[0].text

    def samples(
        self, n: int, prompt: str = "", *, config: SampleConfig | None = None, **options: Any
    ) -> list[Sample]:
        """``n`` samples drawn side by side (with ``beam``: the n best beams, best first), each
        with its tokens and log-probability. A ``config`` replaces the keywords."""
        config = config or _sample_config(**options)
        if config.beam:
            return beam.search(self._sampler, _positive(n), config, prompt)
        return self._sampler.sample(_positive(n), config, prompt)

    def stream(
        self,
        prompt: str = "",
        *,
        n: int = 1,
        config: SampleConfig | None = None,
        show_prompt: bool = True,
        **options: Any,
    ) -> SampleStream:
        """Samples as they are drawn: iterate for text pieces (``.index``, ``.text``, ``.end``)
        in reading order; afterwards ``.samples`` holds them whole. ``show_prompt=False``
        leaves the prompt's text out of the pieces. A ``config`` replaces the keywords."""
        config = config or _sample_config(**options)
        return SampleStream(self._sampler, _positive(n), config, prompt, show_prompt=show_prompt)

    def session(self, *, config: SampleConfig | None = None, **options: Any) -> Session:
        """A conversation: text given in turns (``say``), each continued by the model, the
        recurrent state kept between turns; ``top`` and ``choose`` pick the next token by hand."""
        return Session(self._sampler, config or _sample_config(**options))

    # -- scoring --

    @overload
    def score(self, text: str, stop: Stop | str = ...) -> SentenceScore: ...
    @overload
    def score(self, text: Sequence[str], stop: Stop | str = ...) -> list[SentenceScore]: ...

    def score(
        self, text: str | Sequence[str], stop: Stop | str = Stop.eos
    ) -> SentenceScore | list[SentenceScore]:
        """log P of a sentence (or of each of several) as one unit <sos> ... <eos>, under the
        stopping rule ``stop`` (eos, halt or length), term by term."""
        if isinstance(text, str):
            return score(self.loaded.model, self.loaded.tokenizer, [text], rule(stop).stop)[0]
        return score(self.loaded.model, self.loaded.tokenizer, list(text), rule(stop).stop)

    def next_tokens(self, text: str, k: int = 10, stop: Stop | str = Stop.eos) -> list[NextToken]:
        """The ``k`` likeliest tokens after ``text``, likeliest first, with their probability."""
        return next_tokens(self.loaded.model, self.loaded.tokenizer, text, k, rule(stop).stop)


def _positive(n: int) -> int:
    if n < 1:
        raise ConfigError("the number of samples must be at least 1")
    return n


_SAMPLE_OPTIONS = {f.name for f in fields(SampleConfig)}


def _sample_config(**options: Any) -> SampleConfig:
    """A SampleConfig from keywords named as its fields; a ConfigError names any other."""
    unknown = sorted(set(options) - _SAMPLE_OPTIONS)
    if unknown:
        valid = ", ".join(f.name for f in fields(SampleConfig))
        raise ConfigError(f"unknown sampling option(s) {', '.join(unknown)}; valid: {valid}")
    if "stop" in options:
        options["stop"] = rule(options["stop"]).stop
    return SampleConfig(**options)


def load(
    run: str | Path | None = None,
    checkpoints: str | Path = DEFAULT_ROOT,
    *,
    which: str = "best",
    device: str | torch.device = "cpu",
) -> Model:
    """A trained run: a run name (a folder under ``checkpoints``), a run folder, or None for
    the most recently trained run. ``which`` is "best" (lowest validation loss) or "last"."""
    return Model(load_run(run, Path(checkpoints), which=which, device=device))


def train(
    corpus: str | Path,
    *,
    run: str | None = None,
    checkpoints: str | Path = DEFAULT_ROOT,
    resume: bool = False,
    job: Job | None = None,
    callbacks: Callbacks | None = None,
    **options: Any,
) -> Model:
    """Train a model on a text file and return it, loaded from its best checkpoint.

    ``options`` are the fields of ``ModelConfig`` (cell, layers, hidden, ...), ``TrainConfig``
    (max_steps, time_budget in seconds, lr, device, ...), ``DataConfig`` (unit) and
    ``TokenizerConfig`` (level, min_freq, ...), by name; enum values may be given as strings
    (``cell="gru"``). They override ``job``, whose defaults are those of ``charrnn train``.
    The run goes to ``checkpoints/<run>`` (``run`` defaults to the corpus name).
    """
    job = with_options(job or Job(), options)
    result = _train(
        corpus, job, run=run, root=Path(checkpoints), resume=resume, callbacks=callbacks
    )
    return Model(load_run(result.run, Path(checkpoints)), result)
