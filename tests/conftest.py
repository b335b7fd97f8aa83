"""Shared fixtures: a private cache per test, small corpora, and one tiny trained run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from charrnn.config import Cell, DataConfig, Level, ModelConfig, TokenizerConfig, TrainConfig
from charrnn.job import Job
from charrnn.training.callbacks import Callbacks
from charrnn.training.run import train

# Tiny test models run fastest on one thread, and a busy machine does not stall them.
torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "corpora"

VERSES = """\
The cat sat on the mat.
The dog sat on the log.
A bird sang in the tree.

The sun rose over the hill.
The moon set behind the sea.

Rain fell on the quiet town.
Snow lay on the old roof.
"""


@pytest.fixture(autouse=True)
def _private_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHARRNN_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "verses.txt"
    path.write_text(VERSES * 20, encoding="utf-8")
    return path


def drifting_corpus(tmp_path, n_units=400):
    """Lines, each its own, that grow longer through the file: a tail split validates on the
    longest."""
    path = tmp_path / "drift.txt"
    lines = (f"{i:03d}" + "ab" * (1 + i // 20) + "\n" for i in range(n_units))
    path.write_text("".join(lines), encoding="utf-8")
    return path


def tiny_job(level: Level = Level.char, **train_overrides) -> Job:
    train_cfg = dict(
        seq_len=16,
        batch_size=4,
        lr=1e-2,
        max_steps=6,
        sample_every=0,
        evals=2,
        eval_tokens=256,
        device="cpu",
    )
    train_cfg.update(train_overrides)
    return Job(
        model=ModelConfig(cell=Cell.lstm, layers=1, hidden=32, embed=16),
        train=TrainConfig(**train_cfg),
        data=DataConfig(tokenizer=TokenizerConfig(level=level)),
    )


class StopAt(Callbacks):
    """Asks a run to stop (and save, to be resumed) once it has made ``step`` steps."""

    def __init__(self, step: int):
        self.step, self.seen = step, 0

    def on_step(self, stats) -> None:
        self.seen = stats.step

    def stop_requested(self) -> bool:
        return self.seen >= self.step


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small char-level run, trained once for the whole session."""
    import os

    root = tmp_path_factory.mktemp("runs")
    corpus = root / "verses.txt"
    corpus.write_text(VERSES * 20, encoding="utf-8")
    old = os.environ.get("CHARRNN_CACHE")
    os.environ["CHARRNN_CACHE"] = str(root / "cache")
    try:
        result = train(corpus, tiny_job(max_steps=40), run="verses", root=root / "checkpoints")
    finally:
        if old is None:
            os.environ.pop("CHARRNN_CACHE", None)
        else:
            os.environ["CHARRNN_CACHE"] = old
    return result.run
