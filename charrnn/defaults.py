"""Every "auto" decision and the measured constants behind it.

What a run leaves open (its level, width, learning rate, how hard to regularize) is decided
here, and the --help texts read their numbers from here. How each rule was found, with the
figures: docs/defaults.md.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from charrnn.config import Level, TokenizerConfig

# --level auto, the default: bpe pieces for a run bound by its steps, characters for one bound
# by its text. A bpe token is two to three characters, so a step reads more text: at 150 s on
# texts of 1.1-1.5 MB bpe beat char by 0.03 to 0.34 nats per character. Where the run reads
# its text many times, characters give more targets per byte and did as well or better:
# tinyshakespeare (1.1 MB) in 15 minutes (1.421 against bpe's 1.475), the first 250 KB of
# WikiText-2 in 150 s (0.036 better in one pair of runs, 0.018 worse in another). So bpe where
# the text holds at least AUTO_BYTES_PER_SECOND of the time budget (between the 1.7 KB/s that
# tied or lost and the 7.4 KB/s that won), and only on the CPU, where it was measured.
# docs/defaults.md, "Characters or pieces". Characters stay too where a text has more symbols
# than a small vocabulary holds (Chinese, say), and where encoding would eat the budget (bpe
# encodes at ~7.5 MB/s here, chars at ~120).
AUTO_BYTES_PER_SECOND = 3500


AUTO_MAX_SYMBOLS = 256  # distinct characters in the text's first MiB


AUTO_ENCODE_SHARE = 0.1  # of a time budget, at SUBWORD_ENCODE_RATE


SUBWORD_ENCODE_RATE = 5e6  # bytes/s: a slow moment of the 2-core machine


SUBWORD_VOCAB = 2048  # pieces when none is given (docs/defaults.md, "Characters or pieces")


def resolve_level(
    config: TokenizerConfig, n_bytes: int, head: str, time_budget: float | None = None
) -> TokenizerConfig:
    """The settings ``config`` stands for on a text of ``n_bytes`` bytes that begins with
    ``head`` (its first MiB), for a CPU run of ``time_budget`` seconds (None: no budget, or
    not on the CPU): ``auto`` becomes bpe or char, and a subword vocabulary of size 0 gets
    SUBWORD_VOCAB pieces (a text too small to fill them gets fewer)."""
    level = config.level
    if level is Level.auto:
        steps_bound = time_budget is not None and n_bytes >= AUTO_BYTES_PER_SECOND * time_budget
        fits = steps_bound and n_bytes / SUBWORD_ENCODE_RATE <= AUTO_ENCODE_SHARE * time_budget
        level = Level.bpe if fits and len(set(head)) <= AUTO_MAX_SYMBOLS else Level.char
    config = replace(config, level=level)
    return config if config.decided else replace(config, vocab_size=SUBWORD_VOCAB)


EVAL_SHARE = 0.1  # the most of a time budget the periodic evaluations may take together


STOP_FIT_SHARE = 0.05  # the most of a time budget the stop fit at the end may take


STOP_FIT_MIN = 20  # fewer samples per rule than this measure nothing: the fit is skipped


# The hidden size a 150-second run does best with on a 2-core CPU (docs/defaults.md), and
# the size used where no time budget is set, or on a device the rule was not measured on.
HIDDEN_AT_150S = 256


HIDDEN_UNSIZED = 512


# A budget this many times longer doubles the width: 256 does best at 150 s, and at 15
# minutes 512 beats 384 by 0.05 nats/char (docs/defaults.md). Compute-optimal scaling (the
# width as the fourth root of the budget) gave 384 there: it grows the model too slowly.
BUDGET_PER_DOUBLING = 6.0


def hidden_for_budget(time_budget: float | None, device: torch.device) -> int:
    """The hidden size for a run of ``time_budget`` seconds: HIDDEN_AT_150S, doubled for each
    BUDGET_PER_DOUBLING times more time, rounded to 64 (128 to 1024)."""
    if not time_budget or device.type != "cpu":
        return HIDDEN_UNSIZED
    hidden = HIDDEN_AT_150S * 2 ** math.log(time_budget / 150.0, BUDGET_PER_DOUBLING)
    return int(min(1024, max(128, 64 * round(hidden / 64))))


def lr_for_width(hidden: int) -> float:
    """The peak learning rate for a model ``hidden`` units wide: 1e-2 at 256, falling as
    1/sqrt(width), as wider layers take smaller steps (docs/defaults.md)."""
    return round(1e-2 * min(1.0, math.sqrt(256 / hidden)), 5)


# How hard to regularize, from how much a run can memorize: the passes it will make over its
# training text times its recurrent layers' parameters per training token (not the embedding
# and output rows, each trained only by its own token). Up to LIGHT_BELOW, weight decay 0.1
# with the rate decayed to 0.1 x peak did best; from HEAVY_FROM, weight decay 0.2 with the rate
# decayed to 0; in between, a straight line (docs/defaults.md, "How hard to regularize"). A
# run with no known end is light.
LIGHT_BELOW, HEAVY_FROM = 3.0, 6.0


LIGHT, HEAVY = (0.1, 0.1), (0.2, 0.0)  # (weight decay, min_lr_ratio)


# A run decides at step DECIDE_AFTER where --max-steps or --epochs ends it (a resumed run
# then decides alike), at its first step where they alone can end it. Where the time budget
# ends it, once DECIDE_AT of it has passed and DECIDE_AFTER steps of this session: the pace of
# those steps, samples included, tells how many more it will make.
DECIDE_AT, DECIDE_AFTER = 0.1, 50


def regularization(pressure: float | None) -> tuple[float, float]:
    """(weight decay, min_lr_ratio) for a run whose passes over its training text times its
    recurrent parameters per training token will be ``pressure``."""
    if pressure is None:
        return LIGHT
    s = min(1.0, max(0.0, (pressure - LIGHT_BELOW) / (HEAVY_FROM - LIGHT_BELOW)))
    wd, floor = (round(a + s * (b - a), 4) for a, b in zip(LIGHT, HEAVY))
    return wd, floor


def in_force(
    given: tuple[float | None, float | None], decided: tuple[float | None, float | None] | None
) -> tuple[float, float]:
    """(weight decay, min_lr_ratio) a run trains with: what its config gives, else what it
    decided (``decided``: None while undecided, light until then)."""
    wd, floor = (d if g is None else g for g, d in zip(given, decided or LIGHT))
    return wd, floor
