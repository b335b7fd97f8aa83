"""How well each stopping rule reproduces the lengths of real units.

For each rule (eos, halt, length), draw n samples from the start of a unit and compare their
lengths (tokens, the end marker excluded) with the lengths of the validation split's units by
the two-sample Kolmogorov–Smirnov distance:

    KS = max_x |F_samples(x) - F_val(x)|        F: empirical CDF; 0 = the same, 1 = disjoint

A sample that reaches the safety cap (the model's ``max_len``, twice the longest training
unit) counts as that long: the KS distance stays exact while no validation unit is longer.
The result is written to ``checkpoints/<run>/stopfit.json``:

    {"n": 500, "temperature": 1.0, "ks": {"eos": .., "halt": .., "length": ..},
     "val_mean_length": 152.4, "mean_length": {"eos": .., "halt": .., "length": ..}}
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from charrnn.checkpoint import DEFAULT_ROOT, LoadedRun, load_run
from charrnn.config import DataConfig, Holdout, SampleConfig, SplitCut, Stop
from charrnn.data import (
    Dataset,
    Split,
    prepare,
)
from charrnn.errors import CheckpointError, ConfigError, CorpusError
from charrnn.evaluate import eval_mode
from charrnn.generate import Sampler
from charrnn.io import file_hash, write_json_atomic
from charrnn.model import RNNLM
from charrnn.runs import STOPFIT, StopFit
from charrnn.stopping import ENDING
from charrnn.tokenizers import EOS, SOS, Tokenizer


def ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov–Smirnov statistic: the largest gap between the empirical CDFs."""
    a, b = np.sort(np.asarray(a)), np.sort(np.asarray(b))
    if not len(a) or not len(b):
        raise ConfigError("the KS distance needs at least one value on each side")
    x = np.concatenate([a, b])
    fa = np.searchsorted(a, x, side="right") / len(a)
    fb = np.searchsorted(b, x, side="right") / len(b)
    return float(np.abs(fa - fb).max())


def sample_lengths(
    model: RNNLM,
    tokenizer: Tokenizer,
    stop: Stop,
    n: int,
    temperature: float = 1.0,
    seed: int = 0,
    max_tokens: int | None = None,
) -> np.ndarray:
    """Lengths in tokens (the end marker excluded) of ``n`` samples drawn under ``stop``."""
    cap = max_tokens or model.config.max_len
    config = SampleConfig(temperature=temperature, max_tokens=cap, stop=stop, seed=seed)
    samples = Sampler(model, tokenizer).sample(n, config)
    ends = [1 if s.tokens and s.tokens[-1] == EOS and not s.cut else 0 for s in samples]
    return np.array([len(s.tokens) - e for s, e in zip(samples, ends)], dtype=np.int64)


def draw_lengths(
    model: RNNLM,
    tokenizer: Tokenizer,
    n: int,
    temperature: float = 1.0,
    seed: int = 0,
    max_tokens: int | None = None,
) -> dict[str, np.ndarray]:
    """Lengths of ``n`` samples under each rule (eos, halt, length)."""
    if not model.config.stop_heads:
        raise ConfigError("this model was trained without halt and length heads")
    with eval_mode(model):
        return {
            stop.value: sample_lengths(model, tokenizer, stop, n, temperature, seed + i, max_tokens)
            for i, stop in enumerate(ENDING)
        }


def summarize(lengths: dict[str, np.ndarray], reference: np.ndarray, temperature: float) -> StopFit:
    """KS distance to ``reference`` and mean length of each rule's sample lengths."""
    n = len(next(iter(lengths.values())))
    ks = {rule: round(ks_distance(v, reference), 4) for rule, v in lengths.items()}
    means = {rule: round(float(v.mean()), 2) for rule, v in lengths.items()}
    return StopFit(n, temperature, ks, round(float(np.mean(reference)), 2), means)


def fit_lengths(
    model: RNNLM,
    tokenizer: Tokenizer,
    reference: np.ndarray,
    n: int = 500,
    temperature: float = 1.0,
    seed: int = 0,
    max_tokens: int | None = None,
) -> StopFit:
    """KS distance and mean length of ``n`` samples per rule against ``reference`` lengths;
    ``max_tokens`` caps a sample (default: the model's longest length)."""
    lengths = draw_lengths(model, tokenizer, n, temperature, seed, max_tokens)
    return summarize(lengths, reference, temperature)


STEPS_PER_LENGTH = 4  # the time kept for the stop fit: steps per rule, in mean lengths


@torch.no_grad()
def estimate_seconds(model: RNNLM, n: int, mean_length: float) -> float:
    """A rough time for ``fit_lengths``: per rule, STEPS_PER_LENGTH times the mean length in
    one-token steps of n samples (finished samples leave the batch; a few run long; training
    caps them there, see ``train``). A step is timed as the sampler takes it, drawing
    included (with a large vocabulary the draw costs more than the recurrent step), after its
    first, which pays the sampler's setup once."""
    config = SampleConfig(temperature=1.0, stop=Stop.none, max_tokens=16, seed=0)
    info: dict[str, np.ndarray] = {}
    with eval_mode(model):
        steps = Sampler(model, None).iter_tokens(n, config, [SOS], info)  # type: ignore[arg-type]
        marks = [time.monotonic() for _ in steps]
    per_step = (marks[-1] - marks[0]) / max(1, len(marks) - 1)
    return len(ENDING) * per_step * STEPS_PER_LENGTH * mean_length


def sample_cap(estimate: float, mean_length: float, seconds_left: float, max_len: int) -> int:
    """The most tokens a sample of the stop fit may draw to end in ``seconds_left``, in steps
    of ``estimate_seconds``' figure (``estimate``, for samples of ``mean_length``); never more
    than the model's longest unit, the cap without a budget."""
    per_step = estimate / (len(ENDING) * STEPS_PER_LENGTH * mean_length)
    return max(1, min(max_len, int(seconds_left / (len(ENDING) * per_step))))


def open_dataset(info: dict[str, Any]) -> Dataset:
    """A run's dataset, from run.json: its cached folder, or rebuilt from the corpus when the
    folder is gone but the corpus is unchanged."""
    try:
        folder = Path(info["data"]["dataset"])
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"run.json does not say where its dataset is ({e})") from None
    try:
        return Dataset(folder)
    except (CorpusError, OSError):
        pass
    corpus = Path(info.get("corpus", ""))
    if not corpus.is_file() or file_hash(corpus) != info["data"].get("hash"):
        raise CorpusError(
            f"the run's dataset {folder} is missing and its corpus {corpus} is gone or has "
            "changed; the validation lengths cannot be recomputed"
        )
    ds, _ = prepare(corpus, DataConfig.from_dict(info["data"]["config"]))
    return ds


def run_splits(info: dict[str, Any], ds: Dataset | None = None) -> tuple[Split, Split]:
    """A run's training and validation splits, as it made them (from ``ds``, its dataset
    when already open)."""
    try:
        val_fraction = float(info["train"]["val_fraction"])
        holdout = Holdout(info["train"].get("split", "tail"))  # runs before --split: the tail
        cut = SplitCut(info["train"].get("split_cut", SplitCut.nearest))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"run.json has no validation split ({e})") from None
    return (ds or open_dataset(info)).split(val_fraction, holdout, cut)


def val_lengths(info: dict[str, Any]) -> np.ndarray:
    """Unit lengths (tokens) of a run's validation split."""
    return run_splits(info)[1].unit_lengths()


def measure_run(
    ref: str | Path | None = None,
    root: Path = DEFAULT_ROOT,
    n: int = 500,
    temperature: float = 1.0,
    seed: int = 0,
    loaded: LoadedRun | None = None,
) -> StopFit:
    """Fit the stopping rules of a run against its validation split; writes stopfit.json."""
    run = loaded or load_run(ref, root)
    fit = fit_lengths(run.model, run.tokenizer, val_lengths(run.info), n, temperature, seed)
    write_stopfit(run.folder, fit)
    return fit


def write_stopfit(folder: Path, fit: StopFit) -> None:
    """checkpoints/<run>/stopfit.json, written aside and renamed in (``runs.read_stopfit``
    reads it back)."""
    write_json_atomic(Path(folder) / STOPFIT, asdict(fit))
