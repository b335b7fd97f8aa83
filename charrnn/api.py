"""The Python API: load a run, sample from it, score with it; train a new one.

    import charrnn

    model = charrnn.load("tinyshakespeare")               # a run name, a folder, or None: latest
    print(model.sample(prompt="ROMEO:", temperature=0.8, seed=1))
    print(model.score("To be, or not to be").log_prob)    # nats
    print(model.next_tokens("To be, or not to b", k=3))   # the likeliest next tokens

    model = charrnn.train("corpus.txt", hidden=256, max_steps=500)
    model = charrnn.train("letters.txt", base="tinyshakespeare")   # fine-tune a trained run

The command line is a thin layer over these calls. Everything raises ``charrnn.errors``
exceptions with a one-line message on a user's mistake.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, overload

import torch

from charrnn.checkpoint import DEFAULT_ROOT, LoadedRun, load_run
from charrnn.config import (
    Job,
    ModelConfig,
    SampleConfig,
    Stop,
    with_options,
)
from charrnn.errors import ConfigError
from charrnn.generate import Sample, Sampler
from charrnn.model import RNNLM, count_parameters
from charrnn.score import NextToken, SentenceScore, next_tokens, score
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

    def sample(
        self,
        prompt: str = "",
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        max_tokens: int = 2000,
        stop: Stop | str = Stop.eos,
        length: int | None = None,
        seed: int | None = None,
    ) -> str:
        """One sample's text (the prompt included). ``stop`` is eos, halt, length or none;
        ``length`` asks for exactly that many tokens with ``stop="length"``."""
        config = _sample_config(temperature, top_k, top_p, max_tokens, stop, length, seed)
        return self._sampler.sample(1, config, prompt)[0].text

    def samples(
        self,
        n: int,
        prompt: str = "",
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        max_tokens: int = 2000,
        stop: Stop | str = Stop.eos,
        length: int | None = None,
        seed: int | None = None,
        config: SampleConfig | None = None,
    ) -> list[Sample]:
        """``n`` samples drawn side by side, each with its tokens and log-probability.
        A ``config`` replaces the keywords."""
        config = config or _sample_config(temperature, top_k, top_p, max_tokens, stop, length, seed)
        return self._sampler.sample(_positive(n), config, prompt)

    def stream(
        self,
        prompt: str = "",
        *,
        n: int = 1,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        max_tokens: int = 2000,
        stop: Stop | str = Stop.eos,
        length: int | None = None,
        seed: int | None = None,
        config: SampleConfig | None = None,
    ) -> SampleStream:
        """Samples as they are drawn: iterate for text pieces (``.index``, ``.text``, ``.end``)
        in reading order; afterwards ``.samples`` holds them whole. A ``config`` replaces the
        keywords."""
        config = config or _sample_config(temperature, top_k, top_p, max_tokens, stop, length, seed)
        return SampleStream(self._sampler, _positive(n), config, prompt)

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


def _sample_config(
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    max_tokens: int,
    stop: Stop | str,
    length: int | None,
    seed: int | None,
) -> SampleConfig:
    return SampleConfig(temperature, top_k, top_p, max_tokens, rule(stop).stop, length, seed)


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
    base: str | Path | None = None,
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

    ``base`` (a run name under ``checkpoints``, or a run folder) fine-tunes that run on the
    corpus: a new run starts from its kept model and tokenizer, grown by the corpus's new
    symbols; options that would change its model or tokenizer are refused.
    """
    given = set(options) if job is None and base is not None else None
    job = with_options(job or Job(), options)
    result = _train(
        corpus,
        job,
        run=run,
        root=Path(checkpoints),
        resume=resume,
        callbacks=callbacks,
        overrides=given,
        base=base,
    )
    return Model(load_run(result.run, Path(checkpoints)), result)
