"""Every setting of charrnn as a frozen, typed config, and the enums its choices are.

A command builds these from its options, the library passes them down, and a run saves them
in run.json, so a run can be rebuilt and resumed from its folder alone. A value out of range
is a ConfigError when the config is made, whoever makes it (the CLI or the Python API).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from enum import Enum
from typing import Any

from charrnn.errors import ConfigError

# -- data: tokens, units, the validation split


class Level(str, Enum):
    auto = "auto"  # bpe or char, decided for a corpus and a time budget (resolve_level)
    char = "char"
    word = "word"
    bpe = "bpe"
    unigram = "unigram"


@dataclass(frozen=True)
class TokenizerConfig:
    level: Level = Level.auto
    min_freq: int = 1
    max_vocab: int | None = None  # including the four specials
    vocab_size: int = 0  # subword levels only; 0: SUBWORD_VOCAB
    sample_chars: int = 10_000_000  # subword levels: how much text trains the tokenizer

    @property
    def subword(self) -> bool:
        return self.level in (Level.bpe, Level.unigram)

    @property
    def decided(self) -> bool:
        """Whether the level and (at a subword level) the vocabulary size are set, rather than
        left to the corpus (``resolve_level``)."""
        return self.level is not Level.auto and (bool(self.vocab_size) or not self.subword)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["level"] = self.level.value
        return d

    def key(self) -> dict[str, Any]:
        """The settings that change the encoding at this level (what a cache is keyed by)."""
        d = self.to_dict()
        unused = ("min_freq", "max_vocab") if self.subword else ("vocab_size", "sample_chars")
        for k in unused:
            d.pop(k)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TokenizerConfig:
        return cls(**{**d, "level": Level(d["level"])})


class Unit(str, Enum):
    auto = "auto"
    line = "line"
    paragraph = "paragraph"
    document = "document"


@dataclass(frozen=True)
class DataConfig:
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    unit: Unit = Unit.auto
    replace_errors: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "tokenizer": self.tokenizer.to_dict(),
            "unit": self.unit.value,
            "replace_errors": self.replace_errors,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataConfig:
        return cls(TokenizerConfig.from_dict(d["tokenizer"]), Unit(d["unit"]), d["replace_errors"])

    def key(self) -> dict[str, Any]:
        """The settings an encoding depends on (those unused at its level left out)."""
        return {**self.to_dict(), "tokenizer": self.tokenizer.key()}


class Holdout(str, Enum):
    """Which text validates a run.

    ``tail``: the last part of the corpus, as nanoGPT and char-rnn split a stream.
    ``spread``: the last part of each of ``SPREAD_SECTIONS`` equal stretches of the text, so
    that validation samples the whole corpus; fit for a corpus of many units whose kind
    drifts through the file (speeches, songs, posts by date).
    """

    tail = "tail"
    spread = "spread"


SPREAD_SECTIONS = 20


class SplitCut(str, Enum):
    """Where a split's cut falls near the share asked for.

    ``nearest``: at the unit boundary nearest to it, or inside a unit where no boundary is
    near (a text of few, long units). ``unit-after``: at the first unit that starts at or after
    it (runs of format 4 and before, which keep their split).
    """

    nearest = "nearest"
    unit_after = "unit-after"


# -- the model


class Cell(str, Enum):
    rnn = "rnn"
    gru = "gru"
    lstm = "lstm"


class Nonlinearity(str, Enum):
    tanh = "tanh"
    relu = "relu"


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 0  # 0: taken from the tokenizer when training starts
    cell: Cell = Cell.lstm
    nonlinearity: Nonlinearity = Nonlinearity.tanh  # Elman rnn only
    layers: int = 1
    hidden: int = 0  # 0: sized from the time budget when training starts (hidden_for_budget)
    embed: int = 128
    dropout: float = 0.0
    tie_weights: bool = False
    stop_heads: bool = True  # halt and length heads, and the remaining-length input
    # How the length input's "unknown" rows are read: as they are (runs of format 3 and before
    # read them times LENGTH_INPUT_SCALE, as the remaining-length rows are; see _init_weights)
    unknown_scale: float = 1.0
    max_len: int = 0  # the longest length the length head expresses; 0: fit to the corpus

    def __post_init__(self) -> None:
        checks = [
            (self.vocab_size >= 0, "vocab_size must be >= 0"),
            (self.layers >= 1, "--layers must be at least 1"),
            (self.hidden >= 0, "--hidden must be at least 1 (or 0: sized from the time budget)"),
            (self.embed >= 1, "--embed must be at least 1"),
            (0.0 <= self.dropout < 1.0, "--dropout must be in [0, 1)"),
            (self.max_len >= 0, "max_len must be >= 0"),
            (self.unknown_scale > 0, "unknown_scale must be positive"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cell"], d["nonlinearity"] = self.cell.value, self.nonlinearity.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        return cls(
            **{**d, "cell": Cell(d["cell"]), "nonlinearity": Nonlinearity(d["nonlinearity"])}
        )


# -- training


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


@dataclass(frozen=True)
class TrainConfig:
    seq_len: int = 64
    batch_size: int = 32
    lr: float = 0.0  # 0: fitted to the model's width when training starts (lr_for_width)
    # None: from how much the run can memorize, decided as it goes (see regularization)
    min_lr_ratio: float | None = None  # the learning rate decays to lr * this by the end
    warmup_steps: int = 20
    weight_decay: float | None = None  # AdamW's decoupled decay, times the learning rate per step
    clip: float = 1.0  # gradient norm; 0 turns clipping off
    max_steps: int | None = None
    epochs: float | None = None
    time_budget: float | None = 900.0  # seconds, counted from the command's start
    val_fraction: float = 0.1
    split: Holdout = Holdout.tail  # which text validates
    split_cut: SplitCut = SplitCut.nearest
    evals: int = 8  # evaluations per run when its end is known
    eval_every: int = 500  # steps between evaluations when it is not
    eval_tokens: int = 16384  # tokens of the validation split per evaluation (0 = all)
    patience: int = 0  # stop after this many evaluations without improvement; 0 = never
    sample_every: int = 250  # steps between samples printed while training; 0 = never
    sample_tokens: int = 160
    seed: int = 1337
    device: str = "auto"
    precision: Precision = Precision.fp32  # bf16 and fp16: autocast, on CUDA only
    halt_weight: float = 1.0
    length_weight: float = 1.0
    head_grad: bool = False  # let the halt and length losses shape the recurrent state
    skip_nonfinite: bool = False  # skip a step whose loss is NaN/inf instead of stopping
    stop_fit: int = 100  # samples per stopping rule compared with the validation lengths at the end

    def __post_init__(self) -> None:
        _coerce(self, "split", Holdout, "--split must be tail or spread")
        _coerce(self, "precision", Precision, "--precision must be fp32, bf16 or fp16")
        _coerce(self, "split_cut", SplitCut, "split_cut must be nearest or unit-after")
        checks = [
            (self.seq_len >= 1, "--seq-len must be at least 1"),
            (self.batch_size >= 1, "--batch-size must be at least 1"),
            (self.lr >= 0 and math.isfinite(self.lr), "--lr must be a positive number (or 0)"),
            (self.clip >= 0, "--clip must be >= 0"),
            (
                self.weight_decay is None
                or (self.weight_decay >= 0 and math.isfinite(self.weight_decay)),
                "--weight-decay must be >= 0",
            ),
            (
                self.min_lr_ratio is None or 0 <= self.min_lr_ratio <= 1,
                "--min-lr-ratio must be in [0, 1]",
            ),
            (self.max_steps is None or self.max_steps >= 1, "--max-steps must be at least 1"),
            (self.epochs is None or self.epochs > 0, "--epochs must be positive"),
            (self.time_budget is None or self.time_budget > 0, "--time-budget must be positive"),
            (0.0 < self.val_fraction < 1.0, "--val-fraction must be in (0, 1)"),
            (self.patience >= 0, "--patience must be >= 0"),
            (self.stop_fit >= 0, "--stop-fit must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def to_dict(self) -> dict[str, Any]:
        enums = {k: getattr(self, k).value for k in ("split", "split_cut", "precision")}
        return {**asdict(self), **enums}


# -- sampling


MAX_TOKENS = 1_000_000  # beyond this a sample is a mistake, not a wish


class Stop(str, Enum):
    eos = "eos"
    halt = "halt"
    length = "length"
    none = "none"


@dataclass(frozen=True)
class SampleConfig:
    """How samples are drawn. The controls after ``seed`` shape the draw only: a sample's
    reported log-probability stays the model's own under the stopping rule (``controls``
    says in which order they act)."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    max_tokens: int = 2000  # a safety cap in every mode; the draw length in "none" mode
    stop: Stop = Stop.eos
    length: int | None = None  # length mode: exactly this many tokens
    seed: int | None = None
    min_p: float | None = None  # keep tokens with at least min_p times the top token's probability
    repeat_penalty: float = 1.0  # llama.cpp's: logits of tokens in the window / R (or x R if < 0)
    repeat_window: int = 64  # the last N tokens (prompt included) the penalties look at
    presence_penalty: float = 0.0  # OpenAI's: minus this once for a token in the window
    frequency_penalty: float = 0.0  # OpenAI's: minus this times its count in the window
    no_repeat_ngram: int = 0  # never complete an n-gram of this many tokens twice; 0: off
    stop_at: tuple[str, ...] = ()  # a sample ends when its text ends with one of these
    keep_stop: bool = False  # keep the stop string at the end of the text (else cut it)
    ban: tuple[str, ...] = ()  # never draw these (a string of several tokens: never complete it)
    bias: tuple[tuple[str, float], ...] = ()  # (token, value): value added to the token's logit
    beam: int | None = None  # beam search with this many beams instead of drawing
    length_penalty: float = 0.0  # beams ranked by log P / tokens ** this; 0: by log P

    def __post_init__(self) -> None:
        _coerce(self, "stop", Stop, "--stop must be eos, halt, length or none")
        for name in ("stop_at", "ban"):
            object.__setattr__(self, name, _strings(getattr(self, name)))
        object.__setattr__(self, "bias", _biases(self.bias))
        for ok, message in self._checks():
            if not ok:
                raise ConfigError(message)

    def _checks(self) -> list[tuple[bool, str]]:
        t, beam = self.temperature, self.beam
        return [
            (not math.isnan(t) and t >= 0, "--temp must be a number >= 0 (0 means greedy)"),
            (math.isfinite(t), "--temp must be finite"),
            (self.top_k is None or self.top_k >= 1, "--top-k must be at least 1"),
            (self.top_p is None or 0.0 < self.top_p <= 1.0, "--top-p must be in (0, 1]"),
            (self.min_p is None or 0.0 <= self.min_p <= 1.0, "--min-p must be in [0, 1]"),
            (self.max_tokens >= 1, "--max-tokens must be at least 1"),
            (self.max_tokens <= MAX_TOKENS, f"--max-tokens must be at most {MAX_TOKENS:,}"),
            (self.length is None or self.length >= 1, "--length must be at least 1"),
            (self.length is None or self.stop is Stop.length, "--length needs --stop length"),
            (
                _finite(self.repeat_penalty) and self.repeat_penalty >= 1,
                "--repeat-penalty must be a number >= 1 (1 is off; below 1 favours repeats)",
            ),
            (
                1 <= self.repeat_window <= MAX_TOKENS,
                f"--repeat-window must be in [1, {MAX_TOKENS:,}]",
            ),
            (
                _finite(self.presence_penalty) and self.presence_penalty >= 0,
                "--presence-penalty must be a number >= 0 (0 is off; --bias favours tokens)",
            ),
            (
                _finite(self.frequency_penalty) and self.frequency_penalty >= 0,
                "--frequency-penalty must be a number >= 0 (0 is off; --bias favours tokens)",
            ),
            (self.no_repeat_ngram >= 0, "--no-repeat-ngram must be >= 0 (0 is off)"),
            (all(self.stop_at), "--stop-at must not be empty: a sample would end before it began"),
            (not self.keep_stop or bool(self.stop_at), "--keep-stop needs --stop-at"),
            (all(self.ban), "--ban must not be empty"),
            (beam is None or beam >= 1, "--beam must be at least 1"),
            (beam is None or beam <= MAX_BEAM, f"--beam must be at most {MAX_BEAM}"),
            (beam is None or self.stop is not Stop.none, _BEAM_NEEDS_END),
            (_finite(self.length_penalty), "--length-penalty must be a finite number"),
        ]

    @property
    def shaping(self) -> bool:
        """Whether a control changes the logits before the draw (penalties, n-grams, bans,
        biases): when none does, the sampler takes its plain path."""
        return bool(
            self.repeat_penalty != 1
            or self.presence_penalty
            or self.frequency_penalty
            or self.no_repeat_ngram
            or self.ban
            or self.bias
        )


MAX_BEAM = 1000
_BEAM_NEEDS_END = "--beam needs a rule that ends a sample: --stop eos, halt or length"


def _finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _strings(value: Any) -> tuple[str, ...]:
    """One string or several, as a tuple (a lone string is one item, not its characters)."""
    if isinstance(value, str):
        return (value,)
    items = tuple(value)
    if not all(isinstance(s, str) for s in items):
        raise ConfigError("--stop-at and --ban take strings")
    return items


def _biases(value: Any) -> tuple[tuple[str, float], ...]:
    """``{token: value}``, ``"TOKEN=VALUE"`` strings or (token, value) pairs, as pairs."""
    if isinstance(value, str):
        value = (value,)
    items = value.items() if isinstance(value, dict) else value
    out = []
    for item in items:
        if isinstance(item, str):
            token, eq, number = item.rpartition("=")
            if not eq or not token:
                raise ConfigError(f"--bias {item!r}: write TOKEN=VALUE, as in 'e=-2'")
            item = (token, number)
        token, number = item
        try:
            number = float(number)
        except (TypeError, ValueError):
            raise ConfigError(f"--bias {token}={number}: the value must be a number") from None
        if not token or not math.isfinite(number):
            raise ConfigError(f"--bias {token}={number}: give a token and a finite value")
        out.append((str(token), number))
    return tuple(out)


# -- a whole training job, from options by name


@dataclass(frozen=True)
class Job:
    """Everything ``train`` needs besides the corpus."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)


# Fields the corpus decides, or that other options already name.
_NOT_OPTIONS = {"vocab_size", "max_len", "tokenizer"}


def with_options(job: Job, options: dict[str, Any]) -> Job:
    """``job`` with each option set on the one config that has a field of that name (enum
    values may be given as their names); a ConfigError names an option no config has."""
    tok = {f.name for f in fields(TokenizerConfig)}
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


def _coerce(config: Any, name: str, kind: type[Enum], message: str) -> None:
    """An enum field given its value (as run.json and the Python API give it) holds the enum."""
    value = getattr(config, name)
    if not isinstance(value, kind):
        try:
            object.__setattr__(config, name, kind(value))
        except ValueError:
            raise ConfigError(message) from None
