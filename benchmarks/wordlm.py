"""pytorch/examples' word_language_model with its defaults, re-implemented as the reference for
word-level perplexity (main.py, model.py and data.py, in one file):

    2-layer LSTM, 200 embedding, 200 hidden, dropout 0.2, untied; batch 20, BPTT 35; plain SGD
    at lr 20 with gradients clipped to 0.25, the rate divided by 4 after an epoch whose
    validation loss did not improve; the state carried across windows; tested with 10 streams.

Three changes, so that both models predict the same tokens of the same text: the vocabulary is
built from the training text alone (the original builds it over train, valid and test, so a word
first seen in the test text is a class that was never trained), a word it lacks reads as <unk>
(as charrnn's vocabulary does), and blank lines are left out (charrnn's units never hold an
empty line; the original predicts an <eos> for each). Training stops after ``seconds`` of wall
time, mid-epoch if need be.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EOS, UNK = "<eos>", "<unk>"


def read_words(path: Path) -> list[list[str]]:
    """The non-blank lines of a text, each as its whitespace-separated words and <eos>."""
    with Path(path).open(encoding="utf-8") as f:
        return [[*line.split(), EOS] for line in f if line.strip()]


class Dictionary:
    def __init__(self, lines: list[list[str]]):
        self.words = [UNK, *sorted({w for line in lines for w in line} - {UNK})]
        self.index = {w: i for i, w in enumerate(self.words)}

    def ids(self, lines: list[list[str]]) -> Tensor:
        return torch.tensor([self.index.get(w, 0) for line in lines for w in line])


def batchify(data: Tensor, streams: int) -> Tensor:
    """(N,) -> (N // streams, streams): column b is stream b, as in the original."""
    n = data.numel() // streams
    return data[: n * streams].view(streams, n).t().contiguous()


class WordLM(nn.Module):
    """model.py's RNNModel (LSTM): dropout on the embeddings and the outputs."""

    def __init__(self, vocab: int, embed: int = 200, hidden: int = 200, layers: int = 2):
        super().__init__()
        self.drop = nn.Dropout(0.2)
        self.encoder = nn.Embedding(vocab, embed)
        self.rnn = nn.LSTM(embed, hidden, layers, dropout=0.2)
        self.decoder = nn.Linear(hidden, vocab)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple]:
        out, state = self.rnn(self.drop(self.encoder(x)), state)  # (T, B, H)
        return self.decoder(self.drop(out)), state  # (T, B, V)


@torch.no_grad()
def evaluate(model: WordLM, data: Tensor, bptt: int = 35) -> tuple[float, int]:
    """Mean loss (nats per token) and tokens, the state carried through ``data`` (T, B)."""
    model.eval()
    state, total, count = None, 0.0, 0
    for i in range(0, data.shape[0] - 1, bptt):
        x, y = data[i : i + bptt], data[i + 1 : i + 1 + bptt]
        logits, state = model(x[: len(y)], state)
        total += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
        count += y.numel()
    return total / max(1, count), count


@dataclass
class Trained:
    model: WordLM
    dictionary: Dictionary
    tokens: int  # tokens trained on
    seconds: float  # wall time of training, its held-out evaluations included
    epochs: float
    val_loss: float


def train(corpus: Path, seconds: float, val_fraction: float = 0.1, seed: int = 1111) -> Trained:
    """Train on the head of ``corpus`` for ``seconds``, the tail held out to anneal the rate."""
    torch.manual_seed(seed)
    lines = read_words(corpus)
    cut = int(len(lines) * (1 - val_fraction))
    dictionary = Dictionary(lines[:cut])
    data = batchify(dictionary.ids(lines[:cut]), 20)  # (N, 20)
    val = batchify(dictionary.ids(lines[cut:]), 10)
    model = WordLM(len(dictionary.words))
    lr, best, tokens, epoch, bptt = 20.0, math.inf, 0, 0.0, 35
    kept = copy.deepcopy(model.state_dict())
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        model.train()
        state = None  # each epoch starts from a zero state
        for i in range(0, data.shape[0] - 1, bptt):
            x, y = data[i : i + bptt], data[i + 1 : i + 1 + bptt]
            state = None if state is None else tuple(s.detach() for s in state)
            model.zero_grad()
            logits, state = model(x[: len(y)], state)
            F.cross_entropy(logits.flatten(0, 1), y.flatten()).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(p.grad, alpha=-lr)
            tokens += y.numel()
            epoch += y.shape[0] / data.shape[0]
            if time.monotonic() - started >= seconds:
                break
        val_loss, _ = evaluate(model, val)
        if val_loss < best:  # the best model is kept and tested, as the original does
            best, kept = val_loss, copy.deepcopy(model.state_dict())
        else:
            lr /= 4.0
    model.load_state_dict(kept)
    return Trained(model, dictionary, tokens, time.monotonic() - started, epoch, best)


def test_loss(trained: Trained, path: Path) -> tuple[float, int, float]:
    """Mean loss on a text (10 streams, as the original tests), its tokens, and the seconds."""
    t0 = time.monotonic()
    data = batchify(trained.dictionary.ids(read_words(path)), 10)
    loss, n = evaluate(trained.model, data)
    return loss, n, time.monotonic() - t0
