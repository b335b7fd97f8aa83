"""The Python API: load a run, sample from it, score with it; train a new one.

    import charrnn

    model = charrnn.load("tinyshakespeare")               # a run name, a folder, or None: latest
    print(model.sample(prompt="ROMEO:", temperature=0.8, seed=1))
    print(model.score("To be, or not to be").log_prob)    # nats
    print(model.next_tokens("To be, or not to b", k=3))   # the likeliest next tokens
    print(model.evaluate("test.txt").perplexity)          # a whole held-out text
    print(model.evaluate("test.txt", dynamic=True).bits_per_char)  # learning as it reads
    model.sample("ROMEO:", temperature=0.5, repeat_penalty=1.2, stop_at=".\n")
    model.samples(3, "ROMEO:", beam=5)                    # the 3 likeliest of 5 beams

    model = charrnn.train("corpus.txt", hidden=256, max_steps=500)
    model = charrnn.train("letters.txt", base="tinyshakespeare")   # fine-tune a trained run

The command line is a thin layer over these calls. Everything raises ``charrnn.errors``
exceptions with a one-line message on a user's mistake.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, overload

import torch

from charrnn import beam
from charrnn.checkpoint import DEFAULT_ROOT, LoadedRun, load_run
from charrnn.config import MAX_SAMPLES, AdaptConfig, BadLines, ModelConfig, SampleConfig, Stop, Unit
from charrnn.errors import ConfigError
from charrnn.generate import Sample, Sampler
from charrnn.heldout import EVAL_STREAMS, Progress, TextEvaluation, adapt_to, evaluate_text
from charrnn.job import Job, with_options
from charrnn.model import RNNLM, count_parameters
from charrnn.schema import Whole
from charrnn.score import (
    NextToken,
    ScoredLine,
    SentenceScore,
    check_range,
    next_tokens,
    score,
    score_lines,
)
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
        prompt = _text(prompt, "prompt")
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
        prompt = _text(prompt, "prompt")
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
        texts = [_text(t, "a sentence") for t in _items(text, "score")]
        return score(self.loaded.model, self.loaded.tokenizer, texts, rule(stop).stop)

    def next_tokens(self, text: str, k: int = 10, stop: Stop | str = Stop.eos) -> list[NextToken]:
        """The ``k`` likeliest tokens after ``text``, likeliest first, with their probability."""
        problem = Whole(1).problem(k)
        if problem:
            raise ConfigError(f"k {problem}")
        text = _text(text, "text")
        return next_tokens(self.loaded.model, self.loaded.tokenizer, text, k, rule(stop).stop)

    def score_lines(
        self,
        path: str | Path,
        stop: Stop | str = Stop.eos,
        *,
        min_ppl: float | None = None,
        max_ppl: float | None = None,
        on_bad_line: BadLines | str = BadLines.stop,
    ) -> Iterator[ScoredLine]:
        """Score every non-blank line of a sentence file (``-``: standard input) as it is
        read, in bounded memory and input order; with ``min_ppl``/``max_ppl`` only the lines
        whose perplexity lies within them. A line that is not valid UTF-8 raises a
        CorpusError naming it, or (``on_bad_line="skip"``) comes with its error and no score."""
        check_range(min_ppl, max_ppl)
        if on_bad_line not in ("stop", "skip"):
            raise ConfigError(f"on_bad_line must be stop or skip, not {on_bad_line!r}")
        return score_lines(
            self.loaded.model,
            self.loaded.tokenizer,
            _path(path, "path"),
            rule(stop).stop,
            (min_ppl, max_ppl),
            BadLines(on_bad_line),
        )

    # -- held-out text --

    def evaluate(
        self,
        path: str | Path,
        *,
        dynamic: bool | AdaptConfig = False,
        window: int | None = None,
        streams: int | None = None,
        replace_errors: bool = False,
        progress: Progress | None = None,
    ) -> TextEvaluation:
        """The model on a whole text read as the run was trained (its level, units and
        window; the state carried across units): nats/token, perplexity, bits per char.
        ``window`` and ``streams`` change how it is read (default: the run's window and 64
        streams, as training evaluates; dynamic: ``AdaptConfig``'s). ``dynamic`` (True, or
        an ``AdaptConfig``) learns from each window after scoring it (Krause et al.); the
        model itself, and the run's files, stay as they are."""
        model, errors = self.loaded.model, _errors(replace_errors)
        for name, value in (("--window", window), ("--streams", streams)):
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be at least 1")
        if dynamic is False:
            seq_len = window or int(self.loaded.info["train"]["seq_len"])
            return evaluate_text(
                model,
                self.tokenizer,
                _path(path, "path"),
                self.unit,
                seq_len,
                None,
                errors,
                progress,
                streams=streams or EVAL_STREAMS,
            )
        config = AdaptConfig() if dynamic is True else dynamic
        config = replace(config, window=window or config.window, streams=streams or config.streams)
        learner = copy_model(model)
        return evaluate_text(
            learner,
            self.tokenizer,
            _path(path, "path"),
            self.unit,
            config.window,
            config,
            errors,
            progress,
        )

    def adapt(
        self, path: str | Path, config: AdaptConfig | None = None, *, replace_errors: bool = False
    ) -> Model:
        """A copy of this model adapted to a text by one pass of dynamic evaluation, to score
        or sample "like this text"; this model and the run's files stay as they are."""
        adapted = copy_model(self.loaded.model)
        config = config or AdaptConfig()
        adapt_to(
            adapted, self.tokenizer, _path(path, "path"), self.unit, config, _errors(replace_errors)
        )
        return Model(replace(self.loaded, model=adapted), self.result)

    @property
    def unit(self) -> Unit:
        """What one unit of the run's corpus was (line, paragraph or document)."""
        return Unit(self.loaded.info["data"]["unit"])


def _errors(replace_errors: bool) -> str:
    return "replace" if replace_errors else "strict"


def copy_model(model: RNNLM) -> RNNLM:
    """A copy with weights of its own, on the same device, in eval mode."""
    return copy.deepcopy(model).eval()


def _text(value: Any, what: str) -> str:
    """A user's text, or a ConfigError for a value of another type (as the library's other
    refusals are, rather than a TypeError from deep inside)."""
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be text (str), not {type(value).__name__}")
    return value


def _items(value: Any, what: str) -> list[Any]:
    if isinstance(value, (bytes, bytearray)) or not isinstance(value, Sequence):
        raise ConfigError(f"{what} takes a sentence or a list of them, not {type(value).__name__}")
    return list(value)


def _path(value: Any, what: str) -> Path:
    if not isinstance(value, (str, Path)):
        raise ConfigError(f"{what} must be a path (str or Path), not {type(value).__name__}")
    return Path(value)


def _positive(n: int) -> int:
    problem = Whole(1, MAX_SAMPLES).problem(n)  # as sample -n
    if problem:
        raise ConfigError(f"the number of samples {problem}")
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
    run = None if run is None else _path(run, "run")
    return Model(load_run(run, _path(checkpoints, "checkpoints"), which=which, device=device))


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
    corpus, root = _path(corpus, "corpus"), _path(checkpoints, "checkpoints")
    if run is not None and not isinstance(run, str):
        raise ConfigError(f"run must be a name (str), not {type(run).__name__}")
    base = None if base is None else _path(base, "base")
    given = set(options) if job is None and base is not None else None
    job = with_options(job or Job(), options)
    result = _train(
        corpus,
        job,
        run=run,
        root=root,
        resume=resume,
        callbacks=callbacks,
        overrides=given,
        base=base,
    )
    return Model(load_run(result.run, root), result)
