"""Every setting of charrnn as a frozen, typed config, and the enums its choices are.

A command builds these from its options, the library passes them down, and a run saves them
in run.json, so a run can be rebuilt and resumed from its folder alone. A value out of range
is a ConfigError when the config is made, whoever makes it (the CLI or the Python API).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, ClassVar

from charrnn.errors import ConfigError
from charrnn.schema import (
    Biases,
    Choice,
    Flag,
    Kind,
    Maybe,
    Nested,
    Real,
    Strings,
    Text,
    Whole,
    check,
    make,
)

# Ranges no option may leave, whoever gives it (the command line, the Python API, a run's files)
SUBWORD_MAX_VOCAB = 1_000_000  # sentencepiece counts pieces in an int32; more is never sensible
MAX_WIDTH = 16_384  # --hidden and --embed
MAX_LAYERS = 16
MAX_LEN = 10_000_000  # the longest unit the length head expresses (its tables are this long)
SEEDS = Whole(-(2**63), 2**64 - 1)  # what torch's generators take
MAX_STOP_FIT = 100_000  # samples per stopping rule in the fit at the end of training
MAX_TOKENS = 1_000_000  # tokens of one sample: beyond this a sample is a mistake, not a wish
MAX_SAMPLES = 100_000  # samples drawn side by side (sample -n)

# -- data: tokens, units, the validation split


class Level(str, Enum):
    auto = "auto"  # bpe or char, decided for a corpus and a time budget (resolve_level)
    char = "char"
    word = "word"
    bpe = "bpe"
    unigram = "unigram"


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


@dataclass(frozen=True)
class TokenizerConfig:
    level: Level = Level.auto
    min_freq: int = 1
    max_vocab: int | None = None  # including the four specials
    vocab_size: int = 0  # subword levels only; 0: SUBWORD_VOCAB
    sample_chars: int = 10_000_000  # subword levels: how much text trains the tokenizer
    # subword levels: the share and split a run validates on, which the pieces never read
    held_out: float = 0.0
    held_split: Holdout = Holdout.tail

    SPEC: ClassVar[dict[str, Kind]] = {
        "level": Choice(Level),
        "min_freq": Whole(1),
        "max_vocab": Maybe(Whole(5)),  # the four specials and one symbol
        "vocab_size": Whole(0, SUBWORD_MAX_VOCAB),
        "sample_chars": Whole(1),
        "held_out": Real(0.0, 1.0, open_hi=True),
        "held_split": Choice(Holdout),
    }

    def __post_init__(self) -> None:
        check(self)

    @property
    def subword(self) -> bool:
        return self.level in (Level.bpe, Level.unigram)

    @property
    def decided(self) -> bool:
        """Whether the level and (at a subword level) the vocabulary size are set, rather than
        left to the corpus (``resolve_level``)."""
        return self.level is not Level.auto and (bool(self.vocab_size) or not self.subword)

    def to_dict(self) -> dict[str, Any]:
        """As JSON; held_* left out at 0, as before they existed (old fingerprints stay)."""
        d = asdict(self)
        d["level"], d["held_split"] = self.level.value, self.held_split.value
        if not self.held_out:
            del d["held_out"], d["held_split"]
        return d

    def key(self) -> dict[str, Any]:
        """The settings that change the encoding at this level (what a cache is keyed by)."""
        d = self.to_dict()
        unused = ("min_freq", "max_vocab") if self.subword else ("vocab_size", "sample_chars")
        for k in unused + (() if self.subword else ("held_out", "held_split")):
            d.pop(k, None)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TokenizerConfig:
        return make(cls, d)


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

    SPEC: ClassVar[dict[str, Kind]] = {
        "tokenizer": Nested(TokenizerConfig),
        "unit": Choice(Unit),
        "replace_errors": Flag(),
    }

    def __post_init__(self) -> None:
        check(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tokenizer": self.tokenizer.to_dict(),
            "unit": self.unit.value,
            "replace_errors": self.replace_errors,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataConfig:
        return make(cls, d)

    def key(self) -> dict[str, Any]:
        """The settings an encoding depends on (those unused at its level left out)."""
        return {**self.to_dict(), "tokenizer": self.tokenizer.key()}


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
    embed: int = 0  # 0: from the level when training starts (embed_for)
    # Dropout of the recurrent stack's input and output (and between layers); None: the
    # level's (words) or, as the run goes, from how much it can memorize (defaults)
    dropout: float | None = None
    # DropConnect on the hidden-to-hidden weights (AWD-LSTM's weight drop), applied to the
    # weights before the fused kernel; None: from how much the run can memorize (defaults)
    weight_drop: float | None = None
    # The output layer reuses the embedding's rows; None: decided by the level when training
    # starts (tie_for), and untied in a model made of a config no training fitted
    tie_weights: bool | None = None
    stop_heads: bool = True  # halt and length heads, and the remaining-length input
    # How the length input's "unknown" rows are read: as they are (runs of format 3 and before
    # read them times LENGTH_INPUT_SCALE, as the remaining-length rows are; see _init_weights)
    unknown_scale: float = 1.0
    max_len: int = 0  # the longest length the length head expresses; 0: fit to the corpus

    SPEC: ClassVar[dict[str, Kind]] = {
        "vocab_size": Whole(0, 2**32 - 1),  # token files hold uint32 ids at most
        "cell": Choice(Cell),
        "nonlinearity": Choice(Nonlinearity),
        "layers": Whole(1, MAX_LAYERS),
        "hidden": Whole(0, MAX_WIDTH),
        "embed": Whole(0, MAX_WIDTH),
        "dropout": Maybe(Real(0.0, 1.0, open_hi=True)),
        "weight_drop": Maybe(Real(0.0, 1.0, open_hi=True)),
        "tie_weights": Maybe(Flag()),
        "stop_heads": Flag(),
        "unknown_scale": Real(0.0, open_lo=True),
        "max_len": Whole(0, MAX_LEN),
    }
    NAMES: ClassVar[dict[str, str]] = {
        k: k for k in ("vocab_size", "unknown_scale", "max_len", "stop_heads")
    }

    def __post_init__(self) -> None:
        check(self)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cell"], d["nonlinearity"] = self.cell.value, self.nonlinearity.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        return make(cls, d)


# -- training


class Optimizer(str, Enum):
    adamw = "adamw"
    muon = "muon"  # Muon on the recurrent matrices, AdamW on the rest (training/muon.py)


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


@dataclass(frozen=True)
class TrainConfig:
    seq_len: int = 64
    batch_size: int = 32
    lr: float = 0.0  # 0: fitted to the model's width and level when training starts (lr_for)
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
    precision: Precision = Precision.auto  # bf16 on a CPU with bfloat16 matrix units, else fp32
    optimizer: Optimizer = Optimizer.adamw
    halt_weight: float = 1.0
    length_weight: float = 1.0
    head_grad: bool = False  # let the halt and length losses shape the recurrent state
    skip_nonfinite: bool = False  # skip a step whose loss is NaN/inf instead of stopping
    stop_fit: int = 100  # samples per stopping rule compared with the validation lengths at the end
    # Evaluate and keep a power-function average of the weights: at step t, step s weighs
    # s^average (Karras et al., 2024), about the last 10% of the run at 7; 0: as trained
    average: float = 7.0
    # Decoupled decay of the embedding and output rows on top of weight_decay; None: from
    # how many times the run reads each row's worth of text (defaults.row_decay_for)
    row_decay: float | None = None
    # Added to the dropout after each evaluation no better than the best; None: the level's
    dropout_rise: float | None = None
    # Start the streams at another point of the text each pass (a pure function of the seed
    # and the pass), so a run that reads its text many times does not see the same windows
    shift_windows: bool = True
    # Divide the kept model's logits by a temperature fitted on the validation text at each
    # evaluation (training itself never sees it): a model that has read its text many times
    # is surer of its guesses than held-out text bears out
    calibrate: bool = True

    SPEC: ClassVar[dict[str, Kind]] = {
        "seq_len": Whole(1),
        "batch_size": Whole(1),
        "lr": Real(0.0),
        "min_lr_ratio": Maybe(Real(0.0, 1.0)),
        "warmup_steps": Whole(0),
        "weight_decay": Maybe(Real(0.0)),
        "clip": Real(0.0),
        "max_steps": Maybe(Whole(1)),
        "epochs": Maybe(Real(0.0, open_lo=True, finite=False)),  # inf: no limit
        "time_budget": Maybe(Real(0.0, open_lo=True, finite=False)),
        "val_fraction": Real(0.0, 1.0, open_lo=True, open_hi=True),
        "split": Choice(Holdout),
        "split_cut": Choice(SplitCut),
        "evals": Whole(1),
        "eval_every": Whole(1),
        "eval_tokens": Whole(0),
        "patience": Whole(0),
        "sample_every": Whole(0),
        "sample_tokens": Whole(1, MAX_TOKENS),
        "seed": SEEDS,
        "device": Text(),
        "precision": Choice(Precision),
        "optimizer": Choice(Optimizer),
        "halt_weight": Real(0.0),
        "length_weight": Real(0.0),
        "head_grad": Flag(),
        "skip_nonfinite": Flag(),
        "stop_fit": Whole(0, MAX_STOP_FIT),
        "average": Real(0.0),
        "row_decay": Maybe(Real(0.0)),
        "dropout_rise": Maybe(Real(0.0, 1.0)),
        "shift_windows": Flag(),
        "calibrate": Flag(),
    }
    NAMES: ClassVar[dict[str, str]] = {  # settings the command line has no option for
        k: k
        for k in (
            *("split_cut", "evals", "eval_every", "eval_tokens", "sample_tokens"),
            *("halt_weight", "length_weight", "head_grad", "warmup_steps", "shift_windows"),
        )
    }

    def __post_init__(self) -> None:
        check(self)

    def to_dict(self) -> dict[str, Any]:
        enums = {
            k: getattr(self, k).value for k in ("split", "split_cut", "precision", "optimizer")
        }
        return {**asdict(self), **enums}


# -- sampling


class Stop(str, Enum):
    eos = "eos"
    halt = "halt"
    length = "length"
    none = "none"


MAX_BEAM = 1000
_BEAM_NEEDS_END = "--beam needs a rule that ends a sample: --stop eos, halt or length"


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

    SPEC: ClassVar[dict[str, Kind]] = {
        "temperature": Real(0.0),  # 0: greedy
        "top_k": Maybe(Whole(1)),
        "top_p": Maybe(Real(0.0, 1.0, open_lo=True)),
        "max_tokens": Whole(1, MAX_TOKENS),
        "stop": Choice(Stop),
        "length": Maybe(Whole(1)),
        "seed": Maybe(SEEDS),
        "min_p": Maybe(Real(0.0, 1.0)),
        "repeat_penalty": Real(1.0),  # 1 is off
        "repeat_window": Whole(1, MAX_TOKENS),
        "presence_penalty": Real(0.0),
        "frequency_penalty": Real(0.0),
        "no_repeat_ngram": Whole(0),  # 0 is off
        "stop_at": Strings(),
        "keep_stop": Flag(),
        "ban": Strings(),
        "bias": Biases(),
        "beam": Maybe(Whole(1, MAX_BEAM)),
        "length_penalty": Real(),
    }
    NAMES: ClassVar[dict[str, str]] = {"temperature": "--temp"}

    def __post_init__(self) -> None:
        check(self)
        for ok, message in self._checks():
            if not ok:
                raise ConfigError(message)

    def _checks(self) -> list[tuple[bool, str]]:
        """What holds between the settings (each alone is held to SPEC)."""
        beam = self.beam
        return [
            (self.length is None or self.stop is Stop.length, "--length needs --stop length"),
            (all(self.stop_at), "--stop-at must not be empty: a sample would end before it began"),
            (not self.keep_stop or bool(self.stop_at), "--keep-stop needs --stop-at"),
            (all(self.ban), "--ban must not be empty"),
            (beam is None or self.stop is not Stop.none, _BEAM_NEEDS_END),
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


# -- scoring


class BadLines(str, Enum):
    """What a stream of sentences does at a line that is not valid UTF-8: stop there with an
    error naming it, or report it and go on."""

    stop = "stop"
    skip = "skip"


# -- evaluation


class AdaptRule(str, Enum):
    """How dynamic evaluation steps: plain SGD, or each gradient divided by its running RMS."""

    sgd = "sgd"
    rms = "rms"


@dataclass(frozen=True)
class AdaptConfig:
    """Dynamic evaluation (Krause et al.): after each window is scored, one step on its loss,

        theta <- theta - lr * g / (RMS(g) + eps)  +  decay * (theta_trained - theta)

    (g alone under ``sgd``). The defaults were measured: docs/defaults.md, "Dynamic evaluation".
    """

    lr: float = 1e-3
    decay: float = 0.002
    rule: AdaptRule = AdaptRule.rms
    window: int = 20  # tokens per stream per step: each is scored, then learned from
    streams: int = 1  # parallel streams; one reads the text in order, as the papers do
    eps: float = 1e-5  # in RMS(g) + eps

    SPEC: ClassVar[dict[str, Kind]] = {
        "lr": Real(0.0, open_lo=True),
        "decay": Real(0.0, 1.0, open_hi=True),
        "rule": Choice(AdaptRule),
        "window": Whole(1),
        "streams": Whole(1),
        "eps": Real(0.0, open_lo=True),
    }

    def __post_init__(self) -> None:
        check(self)
