"""A whole training job: the model, training and data configs ``train`` takes besides the
corpus, and building one from options by name (``with_options``: the CLI and the Python API
both use it, so an option means the same wherever it is given)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass, replace
from enum import Enum
from typing import Any

from charrnn.config import DataConfig, ModelConfig, TokenizerConfig, TrainConfig
from charrnn.errors import ConfigError


@dataclass(frozen=True)
class Job:
    """Everything ``train`` needs besides the corpus."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)


# Fields the corpus or the run decides, or that other options already name.
_NOT_OPTIONS = {"vocab_size", "max_len", "tokenizer", "held_out", "held_split"}


def with_options(job: Job, options: dict[str, Any]) -> Job:
    """``job`` with each option set on the one config that has a field of that name (enum
    values may be given as their names); a ConfigError names an option no config has."""
    tok = {f.name for f in fields(TokenizerConfig)} - (_NOT_OPTIONS - {"vocab_size"})
    tokenizer_options = {k: v for k, v in options.items() if k in tok}  # vocab_size: subword
    rest = {k: v for k, v in options.items() if k not in tokenizer_options}
    parts: dict[str, Any] = {"model": job.model, "train": job.train, "data": job.data}
    for key, config in parts.items():
        names = {f.name for f in fields(config)} - _NOT_OPTIONS
        mine = {k: v for k, v in rest.items() if k in names}
        parts[key] = _replace(config, mine)
        rest = {k: v for k, v in rest.items() if k not in mine}
    if rest:
        valid = sorted(
            {
                f.name
                for c in (ModelConfig, TrainConfig, DataConfig, TokenizerConfig)
                for f in fields(c)
            }
            - (_NOT_OPTIONS - {"vocab_size"})
        )
        raise ConfigError(f"unknown option(s) {', '.join(sorted(rest))}; valid: {', '.join(valid)}")
    data: DataConfig = parts["data"]
    parts["data"] = replace(data, tokenizer=_replace(data.tokenizer, tokenizer_options))
    return Job(**parts)


def _replace(config: Any, values: dict[str, Any]) -> Any:
    """``dataclasses.replace`` that turns strings into the enum a field holds."""
    assert is_dataclass(config)
    current = {f.name: getattr(config, f.name) for f in fields(config)}
    converted = {}
    for name, value in values.items():
        kind = type(current[name])
        if isinstance(current[name], Enum) and not isinstance(value, kind):
            try:
                value = kind(value)
            except ValueError:
                choices = ", ".join(m.value for m in kind)
                raise ConfigError(f"{name}={value!r} is not one of: {choices}") from None
        converted[name] = value
    return replace(config, **converted)
