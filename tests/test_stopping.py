"""Each stopping rule learns the lengths of a corpus whose length distribution is known.

corpora/synthetic-lengths.txt (made by corpora/synthetic.py) has one unit a line, "abc...x.",
with lengths drawn from a fixed two-peaked distribution. A tiny model trained on it for a few
seconds must draw samples whose lengths follow that distribution, under every rule.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from charrnn.checkpoint import LoadedRun, load_run
from charrnn.config import (
    Cell,
    DataConfig,
    Holdout,
    ModelConfig,
    SampleConfig,
    Stop,
    TrainConfig,
    Unit,
)
from charrnn.errors import ConfigError, CorpusError
from charrnn.evaluate import evaluate
from charrnn.generate import Sampler
from charrnn.job import Job
from charrnn.model.stepper import Stepper
from charrnn.runs import STOPFIT, read_stopfit
from charrnn.score import score
from charrnn.stopfit import ks_distance, measure_run, open_dataset, sample_lengths, val_lengths
from charrnn.tokenizers import EOS
from charrnn.training.calibrate import end_logits, fit_end_bias, fit_temperature
from charrnn.training.run import train
from corpora import synthetic
from tests.conftest import tiny_job

SYNTHETIC = Path(synthetic.__file__).with_name("synthetic-lengths.txt")
GAP = range(10, 15)  # lengths the corpus never has


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory: pytest.TempPathFactory) -> LoadedRun:
    """A 1x48 LSTM trained for 100 steps on the synthetic corpus (a few seconds)."""
    root = tmp_path_factory.mktemp("synthetic")
    job = Job(
        model=ModelConfig(cell=Cell.lstm, layers=1, hidden=48, embed=16),
        train=TrainConfig(
            seq_len=64,
            batch_size=64,
            lr=3e-2,
            warmup_steps=10,
            max_steps=100,
            time_budget=None,
            sample_every=0,
            evals=1,
            device="cpu",
            seed=0,
            stop_fit=0,
        ),
        data=DataConfig(unit=Unit.line),
    )
    old = os.environ.get("CHARRNN_CACHE")
    os.environ["CHARRNN_CACHE"] = str(root / "cache")
    try:
        result = train(SYNTHETIC, job, run="synthetic", root=root / "checkpoints")
    finally:
        if old is None:
            os.environ.pop("CHARRNN_CACHE", None)
        else:
            os.environ["CHARRNN_CACHE"] = old
    return load_run(result.run)


def ks_to_known(lengths: np.ndarray) -> float:
    """Largest gap between the samples' CDF and the corpus's true length CDF."""
    xs = np.arange(0, int(lengths.max()) + 2)
    empirical = np.searchsorted(np.sort(lengths), xs, side="right") / len(lengths)
    return float(np.abs(empirical - synthetic.length_cdf(xs)).max())


def test_the_corpus_file_is_what_its_generator_writes():
    text = SYNTHETIC.read_text(encoding="utf-8")
    assert text == synthetic.make_text()
    lengths = np.array([len(line) for line in text.splitlines()])
    assert set(lengths) <= set(synthetic.LENGTH_WEIGHTS)
    assert SYNTHETIC.stat().st_size < 100_000
    # the file itself follows its distribution
    assert ks_to_known(lengths) < 0.03


@pytest.mark.parametrize("stop", [Stop.eos, Stop.halt, Stop.length])
def test_each_rule_learns_the_known_lengths(synthetic_run, stop):
    run = synthetic_run
    samples = Sampler(run.model, run.tokenizer).sample(400, SampleConfig(stop=stop, seed=1))
    assert not any(s.cut for s in samples)
    bodies = [[t for t in s.tokens if t != EOS] for s in samples]
    lengths = np.array([len(b) for b in bodies])
    true_mean = sum(k * p for k, p in synthetic.length_probabilities().items())
    assert ks_to_known(lengths) < 0.12
    assert abs(lengths.mean() - true_mean) < 1.0
    assert np.isin(lengths, GAP).mean() < 0.05  # both peaks, not a smear between them
    # and they end the way units end
    full_stop = run.tokenizer.encode(".")[0]
    assert np.mean([b[-1] == full_stop for b in bodies]) > 0.85
    # sample_lengths counts the same way
    again = sample_lengths(run.model, run.tokenizer, stop, 400, seed=1)
    assert np.array_equal(again, lengths)


@pytest.mark.parametrize("tau", [5, 18])
def test_a_given_length_ends_the_way_units_end(synthetic_run, tau):
    sampler = Sampler(synthetic_run.model, synthetic_run.tokenizer)
    samples = sampler.sample(40, SampleConfig(stop=Stop.length, length=tau, seed=2))
    assert all(len(s.tokens) == tau and not s.cut for s in samples)
    exact = [s.text == synthetic.unit_text(tau) for s in samples]
    assert np.mean(exact) >= 0.8


def test_stopfit_measures_a_run_and_writes_its_figures(synthetic_run):
    fit = measure_run(synthetic_run.folder, n=200, seed=3)
    written = json.loads((synthetic_run.folder / STOPFIT).read_text(encoding="utf-8"))
    assert written == asdict(fit)
    assert read_stopfit(synthetic_run.folder) == fit  # as charrnn info reads it
    assert set(written) == {"n", "temperature", "ks", "val_mean_length", "mean_length"}
    assert written["n"] == 200 and written["temperature"] == 1.0
    assert set(written["ks"]) == set(written["mean_length"]) == {"eos", "halt", "length"}
    assert all(0.0 <= v < 0.15 for v in written["ks"].values())
    assert written["val_mean_length"] == pytest.approx(
        val_lengths(synthetic_run.info).mean(), abs=0.005
    )
    assert not [p for p in synthetic_run.folder.iterdir() if p.name.endswith(".tmp")]


def test_val_lengths_come_back_when_the_dataset_cache_is_gone(synthetic_run, tmp_path):
    info = json.loads(json.dumps(synthetic_run.info))
    expected = val_lengths(info)
    corpus = tmp_path / "synthetic.txt"
    shutil.copy(SYNTHETIC, corpus)
    info["corpus"] = str(corpus)
    info["data"]["dataset"] = str(tmp_path / "gone")
    assert np.array_equal(val_lengths(info), expected)  # rebuilt from the unchanged corpus
    corpus.write_text("a changed corpus.\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="missing"):
        val_lengths(info)


def test_val_lengths_are_those_of_the_runs_own_split(synthetic_run):
    info = json.loads(json.dumps(synthetic_run.info))
    ds, fraction = open_dataset(info), info["train"]["val_fraction"]
    assert info["train"]["split"] == "tail"  # runs record their split
    tail, spread = (ds.split(fraction, h)[1].unit_lengths() for h in (Holdout.tail, Holdout.spread))
    assert not np.array_equal(tail, spread)
    info["train"]["split"] = "spread"
    assert np.array_equal(val_lengths(info), spread)
    del info["train"]["split"]  # a run from before --split validated on the tail
    assert np.array_equal(val_lengths(info), tail)


def test_training_ends_with_the_stop_fit(corpus, tmp_path):
    result = train(corpus, tiny_job(max_steps=4, stop_fit=20), root=tmp_path)
    assert result.stop_fit is not None and result.stop_fit.n == 20
    assert read_stopfit(result.run) == result.stop_fit
    skipped = train(corpus, tiny_job(max_steps=2, stop_fit=0), root=tmp_path)
    assert skipped.stop_fit is None and read_stopfit(skipped.run) is None


def test_a_long_budget_caps_the_stop_fit_samples_at_the_longest_unit(corpus, tmp_path):
    # the time left over a fast step once asked for more tokens than a sample may have
    long = train(corpus, tiny_job(max_steps=4, stop_fit=4, time_budget=1e8), root=tmp_path)
    assert long.stop_fit is not None and long.stop_fit.n == 4


def test_ks_distance():
    assert ks_distance(np.array([1, 2, 3]), np.array([3, 2, 1])) == 0.0
    assert ks_distance(np.array([1, 2]), np.array([3, 4])) == 1.0
    assert ks_distance(np.array([1, 2, 3, 4]), np.array([3, 4, 5, 6])) == 0.5
    with pytest.raises(ConfigError):
        ks_distance(np.array([]), np.array([1]))


def test_the_end_bias_matches_the_chance_of_ending_to_training_text(synthetic_run):
    model = copy.deepcopy(synthetic_run.model)
    train_split, _ = open_dataset(synthetic_run.info).split(0.1)
    model.end_bias.fill_(-8.0)  # a model that ends units far too rarely
    eos_logit, halt_logit, ends = end_logits(model, train_split, 64, max_tokens=4096)
    assert torch.sigmoid(eos_logit).sum() < 0.5 * ends.sum()
    shifts = fit_end_bias(model, train_split, 64, max_tokens=4096)
    assert shifts[0] > 1.0 and shifts[1] > 1.0
    # after the fit, the chances of ending over that text add up to its number of ends
    eos_logit, halt_logit, ends = end_logits(model, train_split, 64, max_tokens=4096)
    n = float(ends.sum())
    assert float(torch.sigmoid(eos_logit.double()).sum()) == pytest.approx(n, rel=1e-3)
    assert float(torch.sigmoid(halt_logit.double()).sum()) == pytest.approx(n, rel=1e-3)
    # and the sampler and the scorer read the same shifted logits: scores still equal samples
    sample = Sampler(model, synthetic_run.tokenizer).sample(1, SampleConfig(seed=4))[0]
    text = synthetic_run.tokenizer.decode([t for t in sample.tokens if t != EOS])
    (scored,) = score(model, synthetic_run.tokenizer, [text], Stop.eos)
    assert scored.log_prob == pytest.approx(sample.log_prob, abs=1e-4)


def test_the_temperature_is_the_one_held_out_text_prefers(synthetic_run):
    """A model made three times too sure of itself gets T near 3 back from validation text, and
    the loss there is lower at the fitted T than a little either side of it."""
    model = copy.deepcopy(synthetic_run.model)
    _, val = open_dataset(synthetic_run.info).split(0.1)
    with torch.no_grad():
        model.head.weight *= 3.0
        model.head.bias *= 3.0
    log_t, n = fit_temperature(model, val, 64)
    assert n == evaluate(model, val, 64)[1] and 2.0 < math.exp(log_t) < 4.5  # all of it

    def loss_at(t: float) -> float:
        model.log_temperature.fill_(t)
        return evaluate(model, val, 64)[0]

    best = loss_at(log_t)
    assert best < loss_at(0.0) and best < loss_at(log_t - 0.05) and best < loss_at(log_t + 0.05)


def test_training_never_sees_the_temperature_and_sampling_sees_it_as_scoring_does(synthetic_run):
    model = copy.deepcopy(synthetic_run.model)
    h = torch.randn(3, model.config.hidden)
    model.log_temperature.fill_(0.0)
    plain = model.token_logits(h)
    model.log_temperature.fill_(math.log(2.0))
    assert torch.allclose(
        model.token_logits(h), model.calibrated(model.head_logits(h), torch.tensor(0.5))
    )
    assert not torch.allclose(model.token_logits(h), plain)
    assert torch.allclose(Stepper(model).token_logits(h), model.token_logits(h), atol=1e-5)
    model.train()
    assert torch.equal(model.token_logits(h), model.calibrated(model.head_logits(h), None))
    assert torch.allclose(
        model.token_logits(h), model.calibrated(model.head_logits(h), torch.tensor(1.0))
    )


def test_every_rule_and_cell_is_one_registry_entry():
    """A rule is a StopRule in stopping.RULES, a cell an entry in model.cells.CELLS: the rest
    of the package reads them from there (docs/architecture.md)."""
    from charrnn.config import Cell
    from charrnn.model.cells import CELLS
    from charrnn.stopping import ENDING, RULES, TRAINED

    assert set(RULES) == set(Stop) and all(RULES[s].stop is s for s in Stop)
    assert (Stop.eos, Stop.halt, Stop.length) == ENDING  # none never ends a unit by itself
    assert [r.target for r in TRAINED] == ["halt", "length"]  # the heads that train
    assert set(CELLS) == set(Cell)
    assert {c: k.state_size for c, k in CELLS.items()} == {Cell.rnn: 1, Cell.gru: 1, Cell.lstm: 2}
