"""The fixed-buffer training step (``charrnn.training.static``) trains as ``Trainer.step``
does: bit for bit the same parameters, state and counters on the CPU, through an epoch's end,
with and without the stop heads, row decay and averaged weights."""

import time
from pathlib import Path

import pytest
import torch

from charrnn.config import Cell, DataConfig, Level, ModelConfig, TokenizerConfig, TrainConfig
from charrnn.data import prepare
from charrnn.model import RNNLM
from charrnn.training.callbacks import Callbacks
from charrnn.training.loop import Trainer
from charrnn.training.run import fit_model_config
from charrnn.training.static import StaticStep

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def trainer(corpus: Path, folder: Path, device: str = "cpu", **kw) -> Trainer:
    ds, _ = prepare(corpus, DataConfig(TokenizerConfig(level=Level.char)))
    train_split, val = ds.split(0.1)
    stop_heads = kw.pop("stop_heads", True)
    config = TrainConfig(seq_len=16, batch_size=4, lr=1e-2, warmup_steps=3, device=device, **kw)
    model_config = ModelConfig(cell=Cell.lstm, layers=2, hidden=32, embed=16, stop_heads=stop_heads)
    torch.manual_seed(0)
    model = RNNLM(fit_model_config(model_config, ds, train_split)).to(device).train()
    folder.mkdir(exist_ok=True)
    dev = torch.device(device)
    return Trainer(model, ds, train_split, val, config, folder, Callbacks(), time.monotonic(), dev)


@pytest.mark.parametrize(
    "kw",
    [{}, {"stop_heads": False}, {"row_decay": 0.5, "average": 0.5, "clip": 0.0}],
)
def test_static_step_trains_as_trainer_step(corpus, tmp_path, kw):
    ref = trainer(corpus, tmp_path / "ref", **kw)
    fixed = trainer(corpus, tmp_path / "fixed", **kw)
    step = StaticStep(fixed)
    steps = len(ref.batches) + 3  # past the end of an epoch: the state starts again
    for _ in range(steps):
        want = ref.step()
        got = step.step()
        assert want is not None and torch.equal(got, want)
    assert fixed.loop.to_dict() == ref.loop.to_dict() and fixed.loop.epoch == 1
    for p, q in zip(fixed.model.parameters(), ref.model.parameters(), strict=True):
        assert torch.equal(p, q)
    for s, r in zip(fixed.state, ref.state, strict=True):
        assert torch.equal(s, r)
    assert fixed.state[0] is step.state[0]  # what a checkpoint saves is what the step carries


@cuda
def test_captured_step_trains_as_the_eager_one(corpus, tmp_path):
    eager = trainer(corpus, tmp_path / "eager", device="cuda")
    graphed = trainer(corpus, tmp_path / "graphed", device="cuda")
    plain_step, captured = StaticStep(eager), StaticStep(graphed)
    captured.capture(warmup=3)
    for _ in range(3):
        plain_step.step()
    losses = [(float(plain_step.step()), float(captured.step())) for _ in range(8)]
    for a, b in losses:
        assert b == pytest.approx(a, rel=1e-4)
    for p, q in zip(eager.model.parameters(), graphed.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
