"""The bare references: what a plain PyTorch script does, as in pytorch/examples'
word_language_model (model.py, main.py's train loop, generate.py's sampling loop).

    Embedding(V, E) -> nn.RNN / nn.GRU / nn.LSTM (E -> H, L layers) -> Linear(H, V)

No data loading (the tokens are already on the device), no extra heads, no logging: each
figure of charrnn is quoted as a ratio to one of these, measured in the same run.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.machine import Clock
from charrnn.config import DataConfig, Level, TokenizerConfig

# The benchmarks measure char-level models (the default level, auto, may choose bpe pieces).
CHARS = DataConfig(TokenizerConfig(level=Level.char))

_LAYERS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


class BareLM(nn.Module):
    def __init__(self, cell: str, vocab: int, embed: int, hidden: int, layers: int):
        super().__init__()
        self.cell = cell
        self.embed = nn.Embedding(vocab, embed)
        self.rnn = _LAYERS[cell](embed, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, x: Tensor, state: object = None) -> tuple[Tensor, object]:
        out, state = self.rnn(self.embed(x), state)  # (B, T, H)
        return self.head(out), state  # (B, T, V)


def _detach(state: object) -> object:
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach() if isinstance(state, Tensor) else state


class BareTrainer:
    """word_language_model's training step, with AdamW (PyTorch's default implementation)
    and gradient clipping; the hidden state carried across windows, detached."""

    def __init__(
        self,
        model: BareLM,
        batch: int,
        seq_len: int,
        device: torch.device,
        precision: str = "fp32",
    ):
        g = torch.Generator().manual_seed(0)
        vocab = model.head.out_features
        self.data = torch.randint(0, vocab, (8, batch, seq_len + 1), generator=g).to(device)
        self.model, self.device = model.to(device).train(), device
        self.opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.99))
        self.state: object = None
        self.k = 0
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.autocast = (
            torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def step(self) -> None:
        window = self.data[self.k % len(self.data)]  # (B, T+1)
        self.k += 1
        with self.autocast:
            logits, state = self.model(window[:, :-1], self.state)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), window[:, 1:].flatten())
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.state = _detach(state)

    def tokens_per_s(self, steps: int) -> tuple[float, float]:
        """Tokens per second of wall time and of CPU time, over ``steps`` steps."""
        clock = Clock(self.device)
        for _ in range(steps):
            self.step()
        tokens = steps * self.data[0, :, :-1].numel()
        wall, cpu = clock.seconds()
        return tokens / wall, tokens / cpu


@torch.no_grad()
def sample_tokens_per_s(
    model: BareLM, streams: int, tokens: int, device: torch.device
) -> tuple[float, float]:
    """word_language_model's generate.py loop: one token at a time through the whole model,
    temperature 1, ``torch.multinomial`` on the exponentiated logits."""
    model = model.to(device).eval()
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.ones(streams, 1, dtype=torch.long, device=device)  # (n, 1)
    state = None
    clock = Clock(device)
    for _ in range(tokens):
        logits, state = model(x, state)  # (n, 1, V)
        weights = logits[:, 0].exp()  # (n, V)
        x = torch.multinomial(weights, 1, generator=g)  # (n, 1)
        x.tolist()  # the tokens reach the host, as they must to be printed
    wall, cpu = clock.seconds()
    return streams * tokens / wall, streams * tokens / cpu


@torch.no_grad()
def forward_seconds(model: BareLM, tokens: Tensor, device: torch.device) -> tuple[float, float]:
    """One forward pass with log-softmax over tokens laid out as (B, T), as evaluation does."""
    model = model.to(device).eval()
    tokens = tokens.to(device)
    clock = Clock(device)
    logits, _ = model(tokens)  # (B, T, V)
    logits.float().log_softmax(-1)
    return clock.seconds()  # (wall, CPU)
