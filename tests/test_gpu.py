"""The GPU path: mixed precision, no host synchronisation per training step, the fast sampler
on the device. Everything but the CPU refusal skips without CUDA (bf16 on the CPU:
test_precision.py)."""

import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from charrnn.checkpoint import LAST, load_tensors
from charrnn.config import Cell, DataConfig, ModelConfig, SampleConfig, Stop, TrainConfig
from charrnn.data import prepare
from charrnn.errors import ConfigError
from charrnn.generate import Sampler
from charrnn.model import RNNLM
from charrnn.training.callbacks import Callbacks
from charrnn.training.loop import Trainer
from charrnn.training.run import fit_model_config, train
from tests.conftest import StopAt, tiny_job

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_precision_is_checked():
    with pytest.raises(ConfigError, match="--precision"):
        TrainConfig(precision="fp8")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal off CUDA")
def test_fp16_needs_cuda(corpus, tmp_path):
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        train(corpus, tiny_job(precision="fp16"), root=tmp_path)


@cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_training_on_cuda_resumes(corpus, tmp_path, precision):
    job = tiny_job(max_steps=20, evals=2, device="cuda", precision=precision)
    straight = train(corpus, job, run="straight", root=tmp_path)
    assert straight.val is not None and math.isfinite(straight.val.loss)
    train(corpus, job, run="split", root=tmp_path, callbacks=StopAt(10))
    scaler = load_tensors(tmp_path / "split" / LAST, "scaler.")
    assert ("scale" in scaler) == (precision == "fp16")
    resumed = train(corpus, job, run="split", root=tmp_path, resume=True)
    assert resumed.steps == 20
    # cuDNN does not promise bit-equal sums from run to run: equal to rounding
    assert resumed.train_loss == pytest.approx(straight.train_loss, rel=1e-4)


def _cuda_trainer(corpus: Path, tmp_path: Path, precision: str) -> Trainer:
    ds, _ = prepare(corpus, DataConfig())
    train_split, val = ds.split(0.1)
    config = TrainConfig(seq_len=16, batch_size=4, device="cuda", precision=precision)
    model_config = ModelConfig(cell=Cell.lstm, layers=2, hidden=32, embed=16)
    device = torch.device("cuda")
    model = RNNLM(fit_model_config(model_config, ds, train_split)).to(device)
    return Trainer(
        model, ds, train_split, val, config, tmp_path, Callbacks(), time.monotonic(), device
    )


@cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_a_training_step_never_waits_for_the_gpu(corpus, tmp_path, precision):
    trainer = _cuda_trainer(corpus, tmp_path, precision)
    losses = [trainer.step() for _ in range(2)]  # the first steps set up lazily
    torch.cuda.set_sync_debug_mode("error")  # any synchronising call raises
    try:
        losses += [trainer.step() for _ in range(3)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(loss is not None and math.isfinite(float(loss)) for loss in losses)
    assert trainer.loop.step == 5


@cuda
@pytest.mark.parametrize("cell", list(Cell))
def test_fast_sampler_on_cuda_gives_the_reference_samples(cell):
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=30, cell=cell, layers=2, hidden=64, embed=16, max_len=50)
    model = RNNLM(config).cuda().eval()
    for stop in (Stop.eos, Stop.halt, Stop.length):
        cfg = SampleConfig(temperature=0.9, seed=3, stop=stop, max_tokens=40)
        runs = []
        for fast in (True, False):
            info: dict[str, np.ndarray] = {}
            steps = list(Sampler(model, None, fast=fast).iter_tokens(5, cfg, [1, 9], info))  # type: ignore[arg-type]
            runs.append((steps, info["log_prob"]))
        assert runs[0][0] == runs[1][0]
        # a sample's log-prob sums 40 terms: cuDNN's and the stepper's float32 sums differ in
        # order, so the sum is compared relatively (measured on an H100: 4e-6 at most)
        np.testing.assert_allclose(runs[0][1], runs[1][1], rtol=2e-5, atol=1e-4)
