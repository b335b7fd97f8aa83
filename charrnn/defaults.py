"""Every "auto" decision and the measured constants behind it.

What a run leaves open (its level, width, learning rate, how hard to regularize, how long a
unit the length head must express) is decided here, and the --help texts read their numbers
from here. How each rule was found, with the figures: docs/defaults.md.
"""

from __future__ import annotations

import math
from dataclasses import replace

from charrnn.config import MAX_LEN, Level, TokenizerConfig

# -- the level (--level auto): bpe where a run is bound by its steps, char where by its text

AUTO_BYTES_PER_SECOND = 3500  # bpe from this much text per second of the time budget
AUTO_MAX_SYMBOLS = 256  # ... for a text with at most this many characters in its first MiB
AUTO_ENCODE_SHARE = 0.1  # ... that encodes in this share of the budget at SUBWORD_ENCODE_RATE
SUBWORD_ENCODE_RATE = 5e6  # bytes/s: a slow moment of the 2-core machine
SUBWORD_VOCAB = 2048  # pieces when none is given


def resolve_level(
    config: TokenizerConfig, n_bytes: int, head: str, time_budget: float | None = None
) -> TokenizerConfig:
    """The settings ``config`` stands for on a text of ``n_bytes`` bytes that begins with
    ``head`` (its first MiB), for a CPU run of ``time_budget`` seconds (None: no budget, or
    not on the CPU, where the rule was not measured): ``auto`` becomes bpe or char, and a
    subword vocabulary of size 0 gets SUBWORD_VOCAB pieces (fewer where the text cannot fill
    them)."""
    level = config.level
    if level is Level.auto:
        steps_bound = time_budget is not None and n_bytes >= AUTO_BYTES_PER_SECOND * time_budget
        fits = steps_bound and n_bytes / SUBWORD_ENCODE_RATE <= AUTO_ENCODE_SHARE * time_budget
        level = Level.bpe if fits and len(set(head)) <= AUTO_MAX_SYMBOLS else Level.char
    config = replace(config, level=level)
    return config if config.decided else replace(config, vocab_size=SUBWORD_VOCAB)


# -- the model's size and learning rate

HIDDEN_AT_150S = 256  # what a 150-second run on a 2-core CPU does best with
BUDGET_PER_DOUBLING = 6.0  # a budget this many times longer doubles the width
HIDDEN_UNSIZED = 512  # without a budget, or on a device the rule was not measured on
BF16_CPU_SPEEDUP = 2.5  # the width of a bf16 run on a CPU: an fp32 run this much longer
BF16_ROW_LOAD = 4.0  # ... unless its rows hold more parameters than this per training token
PEAK_LR, PEAK_LR_WIDTH = 1e-2, 256  # the peak learning rate up to this width; 1/sqrt(width) above
SUBWORD_LR = 1.5  # a subword level's rate: this many times a character model's of its width
EMBED, EMBED_SUBWORD = 128, 256  # the embedding's width; a piece stands for several characters
# Words: the output layer reuses the embedding's rows, and the stack's input and output drop
# this share of their features from the first step (a word model learns its rows by heart)
WORD_DROPOUT = 0.4
WORD_DROPOUT_RISE = 0.2  # ... raised by this after each evaluation no better than the best


def hidden_for_budget(
    time_budget: float | None, device_type: str = "cpu", speedup: float = 1.0
) -> int:
    """The hidden size for a run of ``time_budget`` seconds at ``speedup`` times fp32's pace:
    HIDDEN_AT_150S, doubled for each BUDGET_PER_DOUBLING times more time, rounded to 64 (128
    to 1024)."""
    if not time_budget or device_type != "cpu":
        return HIDDEN_UNSIZED
    hidden = HIDDEN_AT_150S * 2 ** math.log(time_budget * speedup / 150.0, BUDGET_PER_DOUBLING)
    return int(min(1024, max(128, 64 * round(hidden / 64))))


def bf16_speedup(vocab: int, embed: int, hidden: int, train_tokens: int) -> float:
    """The pace a bf16 run on a CPU is sized for (hidden_for_budget's ``speedup``):
    BF16_CPU_SPEEDUP, or fp32's where the embedding and output rows at the fp32 width
    ``hidden`` already hold more than BF16_ROW_LOAD parameters per training token (a text of
    thousands of symbols, or words: a wider model memorized more there)."""
    load = vocab * (embed + hidden) / max(1, train_tokens)
    return BF16_CPU_SPEEDUP if load <= BF16_ROW_LOAD else 1.0


def embed_for(tokenizer: TokenizerConfig) -> int:
    """The embedding's width for tokens of this level: wider for subword pieces."""
    return EMBED_SUBWORD if tokenizer.subword else EMBED


def tie_for(tokenizer: TokenizerConfig) -> bool:
    """Whether the output layer reuses the embedding's rows: for words and subword pieces."""
    return tokenizer.level is Level.word or tokenizer.subword


def level_dropout(tokenizer: TokenizerConfig) -> float | None:
    """The dropout tokens of this level train with from the first step (WORD_DROPOUT for
    words); None: decided as the run goes, from how much it can memorize (dropout_for)."""
    return WORD_DROPOUT if tokenizer.level is Level.word else None


def level_rise(tokenizer: TokenizerConfig) -> float:
    """What an evaluation no better than the best adds to the dropout of this level's run:
    WORD_DROPOUT_RISE for words (measured to help only there), none otherwise."""
    return WORD_DROPOUT_RISE if tokenizer.level is Level.word else 0.0


def lr_for(tokenizer: TokenizerConfig, hidden: int) -> float:
    """The peak learning rate for a model ``hidden`` units wide reading tokens of this level:
    wider layers take smaller steps, and a model of pieces larger ones."""
    scale = SUBWORD_LR if tokenizer.subword else 1.0
    return round(scale * PEAK_LR * min(1.0, math.sqrt(PEAK_LR_WIDTH / hidden)), 5)


# -- fine-tuning a trained run on new text (--from): a new model's rate, warmed up longer

FINETUNE_WARMUP = 100  # steps of linear warm-up (a new run: TrainConfig.warmup_steps)


def finetune_lr(tokenizer: TokenizerConfig, hidden: int) -> float:
    """The peak learning rate for fine-tuning a model ``hidden`` units wide: a new model's of
    that width and level (a lower one kept too much of a base far from the new text:
    docs/defaults.md)."""
    return lr_for(tokenizer, hidden)


def max_len_for(longest: int) -> int:
    """The longest length the length head expresses, for a corpus whose longest training unit
    has ``longest`` tokens: room for units twice as long (at most MAX_LEN)."""
    return min(MAX_LEN, max(64, 2 * longest))


# -- how hard to regularize, from how much a run can memorize: its pressure, the passes it will
#    make over its training text times its recurrent parameters per training token

LIGHT_BELOW, HEAVY_FROM = 3.0, 6.0  # light up to this pressure, heavy from this one
LIGHT, HEAVY = (0.1, 0.1), (0.2, 0.0)  # (weight decay, min_lr_ratio)
# Decided once DECIDE_AT of a time budget and DECIDE_AFTER steps have passed (the pace tells
# how many more there will be); at step DECIDE_AFTER where --max-steps or --epochs ends a run.
DECIDE_AT, DECIDE_AFTER = 0.1, 50
# Far past HEAVY_FROM a run learns its text by heart unless its recurrent weights are dropped
# as it trains: from DROP_FROM, up to WEIGHT_DROP from MEMORIZING_FROM (docs/defaults.md)
DROP_FROM, MEMORIZING_FROM, WEIGHT_DROP = 15.0, 45.0, 0.3
# Rows read many times over (thousands of symbols, or words) are learned by heart: by the row
# pressure, passes x those rows' parameters per training token, they decay harder from ROWS_FROM
ROWS_FROM, ROWS_FULL, ROW_DECAY = 200.0, 1000.0, 0.8
# Further still, a run that reads its text a hundred times over needs its features dropped too
DROPOUT_FROM, DROPOUT_FULL, DROPOUT = 100.0, 600.0, 0.3
# ... and an evaluation no better than the best adds TrainConfig.dropout_rise, up to this
DROPOUT_CAP = 0.7


def regularization(pressure: float | None) -> tuple[float, float]:
    """(weight decay, min_lr_ratio) for a run of this pressure: light, heavy, or on a straight
    line between; light where the run has no known end."""
    if pressure is None:
        return LIGHT
    s = min(1.0, max(0.0, (pressure - LIGHT_BELOW) / (HEAVY_FROM - LIGHT_BELOW)))
    wd, floor = (round(a + s * (b - a), 4) for a, b in zip(LIGHT, HEAVY))
    return wd, floor


def weight_drop_for(pressure: float | None) -> float:
    """DropConnect on the hidden-to-hidden weights for a run of this ``pressure``: none up to
    DROP_FROM, WEIGHT_DROP from MEMORIZING_FROM, a straight line in log pressure between."""
    return _log_ramp(pressure, DROP_FROM, MEMORIZING_FROM, WEIGHT_DROP)


def dropout_for(pressure: float | None, tied: bool = False) -> float:
    """Dropout of the recurrent stack's input and output for a run of this ``pressure``: none
    up to DROPOUT_FROM (DROP_FROM where the output reuses the embedding's rows, which a run
    learns by heart sooner), DROPOUT from DROPOUT_FULL, a straight line in log pressure between."""
    return _log_ramp(pressure, DROP_FROM if tied else DROPOUT_FROM, DROPOUT_FULL, DROPOUT)


def row_decay_for(row_pressure: float | None) -> float:
    """Extra decay of the embedding and output rows for a run of this ``row_pressure``: none
    up to ROWS_FROM, ROW_DECAY from ROWS_FULL, a straight line in log pressure between."""
    return _log_ramp(row_pressure, ROWS_FROM, ROWS_FULL, ROW_DECAY)


def _log_ramp(x: float | None, lo: float, hi: float, top: float) -> float:
    if x is None or x <= lo:
        return 0.0
    return round(min(1.0, math.log(x / lo) / math.log(hi / lo)) * top, 4)


def in_force(
    given: tuple[float | None, float | None], decided: tuple[float | None, float | None] | None
) -> tuple[float, float]:
    """(weight decay, min_lr_ratio) a run trains with: what its config gives, else what it
    decided (``decided``: None while undecided, light until then)."""
    wd, floor = (d if g is None else g for g, d in zip(given, decided or LIGHT))
    return wd, floor


def in_use(given: float | None, decided: float | None) -> float:
    """A drop or extra decay a run trains with: what its config gives, else what it decided
    (None while undecided, and in runs from before the rule: none)."""
    return (decided if given is None else given) or 0.0


def dropout_in_use(given: float | None, decided: float | None, raised: float | None) -> float:
    """The dropout a run trains with: what its config gives, else what it decided, plus what
    its evaluations no better than the best have added (``raised``), never past DROPOUT_CAP
    by them."""
    base = in_use(given, decided)
    return round(max(base, min(DROPOUT_CAP, base + (raised or 0.0))), 4)


def raised_dropout(base: float, raised: float, rise: float) -> float:
    """What the dropout's rises come to after one more (``rise``), never past DROPOUT_CAP."""
    return round(max(raised, min(DROPOUT_CAP - base, raised + rise)), 4)


# -- the shares of a time budget kept for measuring the model

EVAL_SHARE = 0.1  # the most the periodic evaluations may take together
STOP_FIT_SHARE = 0.05  # the most the stop fit at the end may take
STOP_FIT_MIN = 20  # fewer samples per rule than this measure nothing: the fit is skipped
TRUSTED_VAL_TOKENS = 2000  # a validation split with fewer tokens gets a warning


# -- the numbers above, as the --help texts give them


def level_help() -> str:
    return (
        f"Token level; auto = bpe for a training run on the CPU whose text holds at least "
        f"{AUTO_BYTES_PER_SECOND / 1000:g} KB per second of --time-budget, has at most "
        f"{AUTO_MAX_SYMBOLS} distinct characters and encodes in {AUTO_ENCODE_SHARE:.0%} of the "
        "budget; otherwise char (in tokenize: char)."
    )


def hidden_help() -> str:
    budgets = (("150s", 150), ("10m", 600), ("15m", 900))
    widths = ", ".join(f"{hidden_for_budget(s)} for {label}" for label, s in budgets)
    fast = BF16_CPU_SPEEDUP
    bf16 = ", ".join(f"{hidden_for_budget(s, speedup=fast)}" for _, s in budgets)
    return (
        f"Units per layer; 0 = sized from the time budget on a CPU ({widths}; {bf16} in bf16 "
        f"where the text has many tokens per symbol); {HIDDEN_UNSIZED} without a budget or "
        "on a GPU."
    )


def tie_weights_help() -> str:
    return "Share input and output embeddings. Default: shared at word and subword levels."


def embed_help() -> str:
    return f"Embedding size; 0 = {EMBED_SUBWORD} at a subword level, {EMBED} otherwise."


def lr_help() -> str:
    return (
        f"Peak learning rate; 0 = fitted to the width and level ({PEAK_LR:g} up to "
        f"{PEAK_LR_WIDTH} units, as 1/sqrt(hidden) above; x{SUBWORD_LR:g} at a subword level)."
    )


def weight_drop_help() -> str:
    return (
        "DropConnect on the hidden-to-hidden weights, applied before the fused recurrent "
        "kernel. Default: from how much the run can memorize (as --weight-decay): 0 up to "
        f"{DROP_FROM:g}, rising to {WEIGHT_DROP:g} at {MEMORIZING_FROM:g}."
    )


def dropout_help() -> str:
    return (
        "Dropout of the recurrent layers' input and output (and between layers). Default: "
        f"{WORD_DROPOUT:g} at word level; otherwise from how much the run can memorize (as "
        f"--weight-decay): 0 up to {DROPOUT_FROM:g} ({DROP_FROM:g} with tied embeddings), "
        f"rising to {DROPOUT:g} at {DROPOUT_FULL:g}."
    )


def dropout_rise_help() -> str:
    return (
        "Added to the dropout after each evaluation that is no better than the best so far "
        f"(up to {DROPOUT_CAP:g}): a run that has begun to learn its text by heart is held "
        f"back. Default: {WORD_DROPOUT_RISE:g} at word level, 0 (the dropout stays) otherwise."
    )


def row_decay_help() -> str:
    return (
        "Weight decay of the embedding and output rows on top of --weight-decay. Default: "
        "from the passes over the text x those rows' parameters per training token (a tied "
        "row counts twice): 0 up to "
        f"{ROWS_FROM:g}, rising to {ROW_DECAY:g} at {ROWS_FULL:g} (thousands of symbols, or "
        "words)."
    )


def regularization_help(which: int) -> str:
    """'0.1 up to 3, 0.2 from 6': weight decay (0) or min_lr_ratio (1) by pressure."""
    return f"{LIGHT[which]:g} up to {LIGHT_BELOW:g}, {HEAVY[which]:g} from {HEAVY_FROM:g}"
