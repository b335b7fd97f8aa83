"""RNNLM: an embedding, a fused recurrent stack, and three output heads.

    x(t) = E[token(t)] + R[length input(t)]             the remaining length, by bucket, or
                                                         "unknown, j tokens of the unit read"
    h(t) = cell(h(t-1), x(t))                            nn.RNN / nn.GRU / nn.LSTM, stacked
    token head:   y^(t) = softmax((W_yh h(t) + b_y) / T) next token; T fitted on validation
                                                         text, 1 while training; symbols the
                                                         training text never holds share a
                                                         fixed chance evenly (set_unseen)
    halt head:    p(t)  = sigmoid(w_h . h(t) + b_h)      "the unit ends after this token"
    length head:  q(t)  = softmax(W_l h(t) + b_l)        remaining length, in buckets

The halt and length heads and the remaining-length input make the three stopping rules of
``generate`` possible from one model; ``stop_heads=False`` builds a plain language model.
Where the remaining length is unknown, the input says how far into its unit a token is: the
eos and halt rules must judge when a unit has gone on long enough, and counting hundreds of
tokens in the recurrent state is what a small or young network does worst.

    length input ids:   0 .. n-1     n remaining tokens shown, by bucket
                        n .. 2n-1    remaining unknown; the bucket of the token's offset in
                                     its unit (0 = <sos>)
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from charrnn.config import ModelConfig
from charrnn.errors import ConfigError
from charrnn.model.cells import CELLS, State
from charrnn.model.dropout import dropout
from charrnn.model.lengths import bucket_edges, bucket_widths, bucketize
from charrnn.tokenizers import EOS, SOS, UNK

LENGTH_INPUT_SCALE = 10.0  # the remaining-length rows learn this many times faster (_init_weights)


class RNNLM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = c = config
        self.check(c)
        self.embed = nn.Embedding(c.vocab_size, c.embed)
        self.cell = CELLS[c.cell]
        self.rnn = self.cell.stack(c)
        self.dropout = c.dropout or 0.0  # of the stack's input and output (set_dropout)
        # DropConnect rate training uses; a run that decides it as it goes sets it (Trainer)
        self.weight_drop = c.weight_drop or 0.0
        # Tied weights: the output layer reuses the embedding matrix, through a projection
        # when the hidden size differs from the embedding size.
        self.proj = (
            nn.Linear(c.hidden, c.embed, bias=False)
            if c.tie_weights and c.hidden != c.embed
            else None
        )
        self.head = None if c.tie_weights else nn.Linear(c.hidden, c.vocab_size)
        self.head_bias = nn.Parameter(torch.zeros(c.vocab_size)) if c.tie_weights else None
        self.edges = bucket_edges(c.max_len)
        self.n_buckets = len(self.edges)
        # The state a unit starts from when sampling or scoring: the mean state after <eos>
        # in training text (fit_start_state), not zeros. Training streams carry their state
        # across units, so <sos> is always read after an <eos>, never from h = 0.
        n_state = self.cell.state_size
        self.register_buffer("start_h", torch.zeros(n_state, c.layers, 1, c.hidden))
        # log T: a model trained past its text is surer of its guesses than held-out text bears
        # out; out of training its logits are divided by T (calibrate.fit_temperature)
        self.register_buffer("log_temperature", torch.zeros(1))
        # Symbols training never reads as a target (1; a word only the held-out text holds):
        # left out of training's softmax, where the optimizer would push them down at every
        # step without end; out of training they share unseen_share evenly (set_unseen).
        self.register_buffer("unseen", torch.zeros(c.vocab_size))
        self.register_buffer("unseen_share", torch.zeros(1))
        # ... and what a sampled token would otherwise derive from them at every step
        mask = torch.zeros(c.vocab_size, dtype=torch.bool)
        self.register_buffer("unseen_mask", mask, persistent=False)
        self.register_buffer("unseen_logit", torch.zeros(1), persistent=False)  # each one's
        self.note_unseen()  # and any_unseen, read where it changes, not at every call
        self.register_load_state_dict_post_hook(lambda m, _: m.note_unseen())
        if c.stop_heads:
            # Shifts of the <eos> logit and of the halt logit that make the chance of ending,
            # with the remaining length unknown, match training text (fit_end_bias): a model
            # trained for minutes ends units too rarely, and the eos and halt rules run long.
            self.register_buffer("end_bias", torch.zeros(2))
            self.len_embed = nn.Embedding(2 * self.n_buckets, c.embed)  # length input ids
            edges = torch.as_tensor(self.edges)
            self.register_buffer("edges_t", edges, persistent=False)  # rebuilt from the config
            self.halt = nn.Linear(c.hidden, 1)
            self.length = nn.Linear(c.hidden, self.n_buckets)
            scales = torch.full((2 * self.n_buckets, 1), LENGTH_INPUT_SCALE)
            scales[self.n_buckets :] = c.unknown_scale
            self.register_buffer("length_scales", scales, persistent=False)  # from the config
        self._init_weights()

    def _init_weights(self) -> None:
        if self.config.stop_heads:
            # Quiet at first, so the model starts as a plain language model; the remaining-length
            # rows then learn LENGTH_INPUT_SCALE times faster (docs/defaults.md, "Notes").
            with torch.no_grad():
                self.len_embed.weight.normal_(std=0.02).div_(self.length_scales)

    @staticmethod
    def check(c: ModelConfig) -> None:
        """Refuse a config no model can be made of (one not yet fitted to a corpus)."""
        if c.vocab_size < 5 or c.max_len < 1 or c.hidden < 1 or c.embed < 1:
            raise ConfigError(
                "model config needs vocab_size >= 5, max_len >= 1, hidden >= 1 and embed >= 1 "
                "(fit it to a corpus)"
            )

    def set_dropout(self, p: float) -> None:
        """Dropout of the stack's input and output, and between its layers (a run that
        decides it as it goes sets it: Trainer)."""
        self.dropout = p
        if self.config.layers > 1:
            self.rnn.dropout = p

    @property
    def unknown_length(self) -> int:
        """The first length input id meaning "remaining length unknown" (see the top)."""
        return self.n_buckets

    def unknown_at(self, offsets: np.ndarray | int) -> np.ndarray:
        """Length input ids for "remaining unknown" at these offsets in the unit (0 = <sos>)."""
        return self.n_buckets + self.length_buckets(offsets)

    def unknown_ids(self, tokens: Tensor) -> Tensor:
        """Length input ids for "remaining unknown" for tokens (B, T) that start a unit, or
        continue one from the row's start: offsets count from the last <sos>. (B, T)"""
        t = torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)  # (B, T)
        last_sos = torch.where(tokens == SOS, t, -1).cummax(dim=1).values
        offsets = torch.where(last_sos >= 0, t - last_sos, t).clamp(max=self.config.max_len)
        return self.n_buckets + torch.bucketize(offsets, self.edges_t, right=True) - 1

    def set_unseen(self, trained: np.ndarray, held: np.ndarray, kept: int = 0) -> None:
        """Mark the symbols the training text never holds but the held-out text does, from
        each one's count in them (V,); the first ``kept`` symbols (a base model's, grown)
        keep their mark unless the training text holds them. Their chance together is the
        Good-Turing estimate, the share of training tokens whose symbol occurs once there (at
        least one such token, at most a half)."""
        marked = torch.from_numpy(held > 0)
        marked[:kept] = self.unseen[:kept].cpu() > 0
        never = marked & torch.from_numpy(trained == 0)
        never[:UNK] = False  # <pad>, <sos> and <eos> are no symbol of a text
        ones = max(1, int(np.count_nonzero(trained[UNK:] == 1)))
        share = ones / max(1, int(trained[EOS:].sum())) if bool(never.any()) else 0.0
        self.unseen.copy_(never.float())
        self.unseen_share.fill_(min(share, 0.5))
        self.note_unseen()

    def note_unseen(self) -> None:
        """What with_unseen reads, from the buffers (where they are set or loaded)."""
        self.unseen_mask.copy_(self.unseen > 0)
        share = self.unseen_share.float()
        n = self.unseen_mask.sum().clamp(min=1)
        self.unseen_logit.copy_(share.log() - torch.log1p(-share) - n.log())
        self.any_unseen = bool(self.unseen_mask.any())

    def with_unseen(self, logits: Tensor) -> Tensor:
        """``logits`` (..., V), unseen symbols at -inf (head_logits), with each unseen symbol's
        logit set so that together they hold ``unseen_share`` and the others the rest in the
        same proportions as before."""
        if not self.any_unseen:
            return logits
        lse = torch.logsumexp(logits.float(), dim=-1, keepdim=True)  # the seen symbols'
        return torch.where(self.unseen_mask, (lse + self.unseen_logit).to(logits.dtype), logits)

    def start_state(self, batch: int) -> State:
        """The state a unit starts from, for ``batch`` rows."""
        return tuple(s.expand(-1, batch, -1).contiguous() for s in self.start_h)

    def init_state(self, batch: int) -> State:
        """Zero state on the parameters' device and dtype (training streams start here)."""
        p = self.embed.weight
        shape = (self.config.layers, batch, self.config.hidden)
        n = self.cell.state_size
        return tuple(torch.zeros(shape, device=p.device, dtype=p.dtype) for _ in range(n))

    def stop_head_parameters(self) -> list[nn.Parameter]:
        """The halting and length heads' parameters (none without stop heads)."""
        if not self.config.stop_heads:
            return []
        return [*self.halt.parameters(), *self.length.parameters()]

    def length_table(self) -> Tensor:
        """The vectors the length input adds to the token embedding, one row per id (2n, E)."""
        return self.length_scales * self.len_embed.weight

    def length_input(self, ids: Tensor) -> Tensor:
        """What the length input adds to the token embedding, for length input ids (...)."""
        return F.embedding(ids, self.length_table())  # (..., E)

    def features(
        self, tokens: Tensor, state: State | None = None, remaining: Tensor | None = None
    ) -> tuple[Tensor, State]:
        """Top-layer outputs (B, T, H) and the new state, for tokens (B, T).

        ``state`` None means the start of a unit (``start_state``). ``remaining`` holds
        length input ids (B, T); None means "unknown" everywhere, offsets counted from the
        last <sos> (``unknown_ids``).
        """
        x = self.embed(tokens)  # (B, T, E)
        if self.config.stop_heads:
            ids = self.unknown_ids(tokens) if remaining is None else remaining
            x = x + self.length_input(ids)
        x = dropout(x, self.dropout, self.training)
        if state is None:
            state = self.start_state(tokens.shape[0])
        out, new = self.recurrent(x, self.cell.pack(state))  # (B, T, H)
        return dropout(out, self.dropout, self.training), self.cell.unpack(new)

    def recurrent(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        """The fused recurrent stack; in training with weight drop, its hidden-to-hidden
        matrices dropped (DropConnect) once per window and handed to the same fused call."""
        p = self.weight_drop
        if not (self.training and p > 0):
            return self.rnn(x, state)
        names = [f"weight_hh_l{k}" for k in range(self.config.layers)]
        dropped = {n: dropout(getattr(self.rnn, n), p) for n in names}
        with warnings.catch_warnings():  # cuDNN copies weights that are not in one chunk
            warnings.filterwarnings("ignore", message="RNN module weights are not part")
            return torch.func.functional_call(self.rnn, dropped, (x, state))

    def token_logits(self, h: Tensor) -> Tensor:
        """Next-token logits (..., V) from features (..., H)."""
        if self.training and self.config.stop_heads:  # T is 1: the end shift joins the bias
            shift = self.end_bias.new_zeros(self.config.vocab_size)
            shift[EOS] = self.end_bias[0]
            return self.head_logits(h, shift)
        logits = self.calibrated(self.head_logits(h))
        return logits if self.training else self.with_unseen(logits)

    def head_logits(self, h: Tensor, shift: Tensor | None = None) -> Tensor:
        """The output layer's logits (..., V), before the calibrations; ``shift`` (V,) is added
        to its bias. The features are flattened so that the bias is added inside the matrix
        product, not in a pass of its own over the logits."""
        if self.head is not None:
            weight, bias = self.head.weight, self.head.bias
        else:
            weight, bias = self.embed.weight, self.head_bias
            h = h if self.proj is None else self.proj(h)
        bias = bias if shift is None else bias + shift
        if self.any_unseen:  # with_unseen gives them their share
            bias = bias.masked_fill(self.unseen_mask, -torch.inf)
        return F.linear(h.reshape(-1, h.shape[-1]), weight, bias).view(*h.shape[:-1], -1)

    def calibrated(self, z: Tensor, scale: Tensor | None = None) -> Tensor:
        """Logits from the output layer's ``z`` (..., V): times ``scale`` (default: 1 / T out
        of training, 1 in it), then the <eos> logit shifted by the end calibration."""
        if scale is None and not self.training:
            scale = torch.exp(-self.log_temperature)
        logits = z if scale is None else z * scale.to(z.dtype)
        if self.config.stop_heads:
            logits[..., EOS] += self.end_bias[0]
        return logits

    def halt_logits(self, h: Tensor) -> Tensor:
        """Logit of "the unit ends after this token" (...,)."""
        return self.halt(h).squeeze(-1) + self.end_bias[1]

    def length_logits(self, h: Tensor) -> Tensor:
        """Logits over remaining-length buckets (..., n_buckets)."""
        return self.length(h)

    def forward(
        self, tokens: Tensor, state: State | None = None, remaining: Tensor | None = None
    ) -> tuple[Tensor, State]:
        h, state = self.features(tokens, state, remaining)
        return self.token_logits(h), state  # (B, T, V)

    # -- lengths ---------------------------------------------------------------------------

    def length_buckets(self, lengths: np.ndarray | int) -> np.ndarray:
        return bucketize(np.minimum(lengths, self.config.max_len), self.edges)

    def length_log_probs(self, h: Tensor) -> Tensor:
        """log P(remaining = r) for r = 0..max_len (..., max_len + 1), each bucket's mass spread
        evenly over its lengths."""
        log_q = F.log_softmax(self.length_logits(h).float(), dim=-1)  # (..., n_buckets)
        widths = torch.as_tensor(bucket_widths(self.edges, self.config.max_len), device=h.device)
        per_length = log_q - widths.log()
        return per_length.repeat_interleave(widths, dim=-1)


def model_shapes(c: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The tensors of ``RNNLM(c).state_dict()`` and their shapes, without making the model
    (a config read from disk may ask for more memory than there is)."""
    cell = CELLS[c.cell]
    shapes = {"embed.weight": (c.vocab_size, c.embed)}
    shapes |= {f"rnn.{k}": v for k, v in cell.shapes(c).items()}
    if c.tie_weights:
        shapes |= {"proj.weight": (c.embed, c.hidden)} if c.hidden != c.embed else {}
        shapes["head_bias"] = (c.vocab_size,)
    else:
        shapes |= {"head.weight": (c.vocab_size, c.hidden), "head.bias": (c.vocab_size,)}
    shapes["start_h"] = (cell.state_size, c.layers, 1, c.hidden)
    shapes["log_temperature"] = (1,)
    shapes |= {"unseen": (c.vocab_size,), "unseen_share": (1,)}
    if c.stop_heads:
        n = len(bucket_edges(c.max_len))
        shapes |= {"end_bias": (2,), "len_embed.weight": (2 * n, c.embed)}
        shapes |= {"halt.weight": (1, c.hidden), "halt.bias": (1,)}
        shapes |= {"length.weight": (n, c.hidden), "length.bias": (n,)}
    return shapes


def detach_state(state: State) -> State:
    """Cut the graph between BPTT windows; the values carry on."""
    return tuple(s.detach() for s in state)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
