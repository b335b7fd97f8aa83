"""A held-out text read whole, as the run was trained: the figures of ``charrnn eval``, static or
dynamic.

    text file -> the run's tokenizer and unit rule -> a scratch dataset on disk (bounded memory)
              -> windows of B streams x T tokens, the state carried across units (read_windows)
              -> summed token loss -> nats/token, perplexity, bits per char and per byte

Read with the run's window and training's 64 evaluation streams, a run's own validation text
gives the very figure training reported for it. Dynamic evaluation (``dynamic.py``) reads one
stream in short windows and learns from each after scoring it.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from charrnn.config import AdaptConfig, Unit
from charrnn.corpus import open_corpus
from charrnn.data import Split
from charrnn.data.dataset import cache_root, encoded_with
from charrnn.dynamic import adapt_windows
from charrnn.evaluate import LOG2, read_windows, window_count, window_loss
from charrnn.model import RNNLM
from charrnn.tokenizers import UNK, Tokenizer

EVAL_STREAMS = 64  # as training's evaluation reads its validation split
Progress = Callable[[str, int, int], None]  # (stage: "encode" or "read", done, total)


@dataclass
class TextEvaluation:
    """A model's figures on a whole text. ``tokens`` are the predictions scored (every
    unit's tokens and its end); ``targets`` all of the text's (the streams leave out fewer
    than one per stream at its end, as training's evaluation does)."""

    path: str
    level: str
    unit: str
    loss: float  # nats per scored token
    tokens: int
    targets: int
    unknown: int  # scored tokens that are <unk>
    units: int
    words: int  # whitespace-separated words
    chars: int  # characters, each unit's end counted as one
    bytes: int  # UTF-8 bytes, likewise
    seconds: float
    dynamic: AdaptConfig | None = None

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)

    @property
    def nats(self) -> float:
        """The whole text's nats, at the scored tokens' mean."""
        return self.loss * self.targets

    @property
    def word_perplexity(self) -> float:
        """Per whitespace-separated word and unit end (word_language_model's count)."""
        return math.exp(self.nats / max(1, self.words + self.units))

    @property
    def bits_per_char(self) -> float:
        return self.nats / LOG2 / max(1, self.chars)

    @property
    def bits_per_byte(self) -> float:
        return self.nats / LOG2 / max(1, self.bytes)

    @property
    def unknown_rate(self) -> float:
        return self.unknown / max(1, self.tokens - self.units)  # <eos> is never unknown

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "dynamic"}
        d.update(
            perplexity=self.perplexity,
            word_perplexity=self.word_perplexity,
            bits_per_char=self.bits_per_char,
            bits_per_byte=self.bits_per_byte,
            unknown_rate=self.unknown_rate,
            dynamic=None if self.dynamic is None else _adapt_dict(self.dynamic),
        )
        return d


def _adapt_dict(config: AdaptConfig) -> dict[str, Any]:
    return {**asdict(config), "rule": config.rule.value}


@torch.no_grad()
def _static(
    model: RNNLM, split: Split, seq_len: int, streams: int, progress: Progress | None
) -> tuple[float, int, int]:
    """Summed loss, tokens and <unk> tokens of one reading of ``split``, as training evaluates."""
    device = next(model.parameters()).device
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = unknown = 0
    n = window_count(split, seq_len, streams)
    for k, (b, h) in enumerate(read_windows(model, split, seq_len, streams, device=device)):
        loss, tokens = window_loss(model, b, h, device)
        total += loss.double()
        count += tokens
        unknown += int(np.count_nonzero(b.y == UNK))
        if progress:
            progress("read", k + 1, n)
    return float(total), count, unknown


def evaluate_text(
    model: RNNLM,
    tokenizer: Tokenizer,
    path: Path,
    unit: Unit,
    seq_len: int,
    adapt: AdaptConfig | None = None,
    errors: str = "strict",
    progress: Progress | None = None,
    what: str = "test file",
    streams: int = EVAL_STREAMS,
) -> TextEvaluation:
    """``model`` on the whole text at ``path``, encoded by ``tokenizer`` and cut into units
    by ``unit`` as the run's corpus was. Static: read in windows of ``seq_len`` by
    ``streams`` streams (the run's window and 64: as training evaluates). ``adapt``:
    dynamic evaluation, read as it says, which changes ``model``'s weights (the caller
    keeps a copy; ``Model.evaluate`` does)."""
    source = open_corpus(Path(path), errors, cache_root(), what)  # a pipe is read once
    started = time.monotonic()
    encoding = None if progress is None else (lambda done, total: progress("encode", done, total))
    with contextlib.closing(source), encoded_with(source, tokenizer, unit, errors, encoding) as ds:
        split, meta = ds.whole(), ds.meta
        if adapt is None:
            total, count, unknown = _static(model, split, seq_len, streams, progress)
        else:
            reading = None if progress is None else (lambda k, n: progress("read", k, n))
            total, count, unknown = adapt_windows(model, split, adapt, progress=reading)
    return TextEvaluation(
        path=str(path),
        level=tokenizer.level.value,
        unit=unit.value,
        loss=total / max(1, count),
        tokens=count,
        targets=len(split) - len(split.unit_starts),
        unknown=unknown,
        units=meta["n_units"],
        words=meta["n_words"],
        chars=meta["n_chars"],
        bytes=meta["n_bytes"],
        seconds=time.monotonic() - started,
        dynamic=adapt,
    )


def adapt_to(
    model: RNNLM,
    tokenizer: Tokenizer,
    path: Path,
    unit: Unit,
    config: AdaptConfig = AdaptConfig(),
    errors: str = "strict",
) -> TextEvaluation:
    """Change ``model``'s weights by one dynamic-evaluation pass over the text at ``path``
    ("write like this text"); returns the figures of that pass."""
    return evaluate_text(
        model, tokenizer, path, unit, config.window, config, errors, what="--adapt text"
    )
