"""Fine-tuning: a new run that starts from a trained run (its base) on new text.

    base run (read, never written)          new run (a folder of its own)
      best.safetensors  ------ grow ------>   the model: the base's, with rows for the new
      run.json: model config                  symbols and buckets for longer units
      tokenizer  ---- grown by the text ---->  the tokenizer: the base's + the new text's
                                               symbols it lacks (char, word; subword as is)
                                               run.json: "base" (where it started from)

The base's model config is kept: options that would change it are refused. The training
options are the user's, with defaults for fine-tuning (defaults.finetune_lr, FINETUNE_WARMUP).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch

from charrnn.checkpoint import LoadedRun, find_run, load_run, reading_run
from charrnn.config import Level, ModelConfig, TokenizerConfig
from charrnn.data import Dataset, Split
from charrnn.defaults import FINETUNE_WARMUP, finetune_lr, max_len_for
from charrnn.errors import CharRNNError, ConfigError
from charrnn.job import Job
from charrnn.model import RNNLM
from charrnn.model.grow import grow
from charrnn.tokenizers import Tokenizer

# Settings of the model and its tokenizer a fine-tuned run takes from its base.
SHAPE = ("cell", "nonlinearity", "layers", "hidden", "embed", "tie_weights", "stop_heads")


@dataclass
class Base:
    """The run a fine-tuned run starts from: its kept model and tokenizer."""

    loaded: LoadedRun

    @property
    def name(self) -> str:
        return self.loaded.folder.name

    @property
    def config(self) -> ModelConfig:
        return self.loaded.model.config

    @property
    def tokenizer(self) -> Tokenizer:
        return self.loaded.tokenizer

    def lineage(self, tokenizer: Tokenizer) -> dict[str, Any]:
        """What run.json records of the base (``tokenizer``: the new run's)."""
        meta = self.loaded.meta
        return {
            "name": self.name,
            "folder": str(self.loaded.folder.resolve()),
            "format_version": meta.get("format_version", 1),  # of the weights it started from
            "weights": self.loaded.which,
            "step": meta.get("step", meta.get("loop", {}).get("step")),
            "tokenizer_hash": self.tokenizer.fingerprint(),
            "vocab_size": self.tokenizer.vocab_size,
            "added_symbols": tokenizer.vocab_size - self.tokenizer.vocab_size,
            "max_len": self.config.max_len,
        }


def open_base(ref: str | Path, root: Path, device: torch.device) -> Base:
    """The base run's kept weights (best, else last), config and tokenizer, checked against
    each other; refused while a process trains it. Nothing in its folder is written."""
    try:
        folder = find_run(ref, root)
        with reading_run(folder):
            return Base(load_run(folder, root, which="best", device=device))
    except CharRNNError as e:  # say which run the problem is in: the base, not the new one
        raise type(e)(f"--from {ref}: {e}") from None


def fine_tune_job(job: Job, base: Base, given: Collection[str]) -> Job:
    """``job`` with the base's model and tokenizer settings, and the fine-tuning defaults
    where ``given`` (the settings the user gave) leaves them open."""
    _refuse_contradictions(job, base, given)
    mine = job.data.tokenizer
    kept = base.tokenizer.config
    tokenizer = replace(kept, min_freq=mine.min_freq, max_vocab=mine.max_vocab)
    dropout = job.model.dropout if "dropout" in given else base.config.dropout
    train = job.train
    if not train.lr:
        train = replace(train, lr=finetune_lr(base.tokenizer.config, base.config.hidden))
    if "warmup_steps" not in given:
        train = replace(train, warmup_steps=FINETUNE_WARMUP)
    return Job(
        replace(base.config, dropout=dropout),
        train,
        replace(job.data, tokenizer=tokenizer if not kept.subword else kept),
    )


def given_settings(job: Job, overrides: Collection[str] | None) -> set[str]:
    """The settings the user gave: ``overrides`` where the caller knows them, else those
    ``job`` sets otherwise than the defaults."""
    if overrides is not None:
        return set(overrides)
    default = Job()
    pairs = [(job.model, default.model), (job.train, default.train), (job.data, default.data)]
    pairs.append((job.data.tokenizer, default.data.tokenizer))
    return {
        f.name
        for mine, usual in pairs
        for f in fields(mine)
        if getattr(mine, f.name) != getattr(usual, f.name)
    }


def _refuse_contradictions(job: Job, base: Base, given: Collection[str]) -> None:
    """One line naming every given option that would change the base's model or tokenizer."""
    model, tok, kept = job.model, job.data.tokenizer, base.tokenizer.config
    wrong = [
        f"--{name.replace('_', '-')} {_shown(getattr(model, name))} (base: "
        f"{_shown(getattr(base.config, name))})"
        for name in SHAPE
        if name in given
        and getattr(model, name) != getattr(base.config, name)
        and getattr(model, name) is not None  # None, and 0 below: not chosen
        and not (name in ("hidden", "embed") and getattr(model, name) == 0)
    ]
    wrong += _tokenizer_contradictions(tok, kept, base.tokenizer.vocab_size, given)
    if wrong:
        raise ConfigError(
            f"{', '.join(wrong)}: a run fine-tuned from {base.name!r} keeps its model and "
            "tokenizer; leave these out"
        )


def _tokenizer_contradictions(
    tok: TokenizerConfig, kept: TokenizerConfig, symbols: int, given: Collection[str]
) -> list[str]:
    wrong = []
    if "level" in given and tok.level not in (Level.auto, kept.level):
        wrong.append(f"--level {tok.level.value} (base: {kept.level.value})")
    if kept.subword:  # the base's sentencepiece model is kept as it is
        if "vocab_size" in given and tok.vocab_size not in (0, kept.vocab_size):
            wrong.append(f"--vocab-size {tok.vocab_size} (base: {kept.vocab_size})")
        wrong += [
            f"--{name.replace('_', '-')} (a {kept.level.value} base keeps its tokenizer)"
            for name in ("min_freq", "max_vocab", "sample_chars")
            if name in given and getattr(tok, name) != getattr(kept, name)
        ]
        return wrong
    if "vocab_size" in given and tok.vocab_size:
        wrong.append(
            f"--vocab-size {tok.vocab_size} (a {kept.level.value} base grows, see --max-vocab)"
        )
    if tok.max_vocab is not None and tok.max_vocab < symbols:
        wrong.append(f"--max-vocab {tok.max_vocab} (base: {symbols:,} symbols, all kept)")
    return wrong


def _shown(value: Any) -> str:
    return str(getattr(value, "value", value)).lower()


def check_dataset(ds: Dataset, base: Base) -> None:
    """A dataset folder given as the corpus must have been encoded for this base: with its
    tokenizer, or with the one grown from it."""
    made_for = {ds.meta.get("grown_from"), ds.tokenizer.fingerprint()}
    if base.tokenizer.fingerprint() not in made_for:
        t = ds.tokenizer
        raise ConfigError(
            f"{ds.folder} was encoded with another tokenizer ({t.level.value} level, "
            f"{t.vocab_size:,} symbols) than the one run {base.name!r} was trained with; give "
            "the text itself to fine-tune on"
        )


def grown_model(base: Base, config: ModelConfig, ds: Dataset, train: Split) -> RNNLM:
    """The base's model with rows for the dataset's new symbols, and length buckets up to
    the longer units of the two texts (its max_len as training computes it, or the base's);
    ``config`` is the run's (the base's, with its own dropout). Its unseen symbols
    (RNNLM.set_unseen): its own, and those of the new text's held-out part that neither
    training text holds."""
    longest = int(train.unit_lengths().max()) if len(train.unit_starts) else 1
    max_len = max(base.config.max_len, max_len_for(longest))
    grown = replace(config, vocab_size=ds.tokenizer.vocab_size, max_len=max_len)
    model = grow(base.loaded.model, grown)
    model.set_unseen(*ds.symbol_counts(train), kept=base.config.vocab_size)
    return model
