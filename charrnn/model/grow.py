"""A trained model grown for new text: more symbols, longer units. What it computed on the
symbols and lengths it knew is kept.

    symbols (vocab V -> V')                 old rows copied, then for each new symbol:
      embedding row                         the mean of the old symbols' rows
      output row (untied)                   zeros
      output bias                           the lowest old bias - NEW_SYMBOL_MARGIN
    => the old symbols' logits are exactly what they were; a new symbol starts far less
       likely than any old one, and learns through its output row (its gradient is h)

    lengths (max_len L -> L', buckets n -> n')
      new bucket j, lower edge e'_j          copies the old bucket i that holds e'_j
                                             (lengths past L fall in the old last bucket)
      len_embed rows j and n' + j            <- old rows i and n + i (remaining / unknown)
      length head row j                      <- old row i
      length head bias j                     <- old bias i + log(width'_j / width_i)
    => per-length probabilities P(r) = P(bucket) / width stay about what they were
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from charrnn.config import ModelConfig
from charrnn.errors import ConfigError
from charrnn.model.lengths import bucket_edges, bucket_widths, bucketize
from charrnn.model.rnnlm import RNNLM
from charrnn.tokenizers import N_SPECIALS

NEW_SYMBOL_MARGIN = 5.0  # nats below the least likely old symbol's bias (docs/defaults.md)


def grow(model: RNNLM, config: ModelConfig) -> RNNLM:
    """A model of ``config`` holding ``model``'s weights, on its device. ``config`` is the
    model's own but for more symbols (vocab_size), longer units (max_len) and its dropout."""
    old = model.config
    same = replace(config, vocab_size=old.vocab_size, max_len=old.max_len, dropout=old.dropout)
    if same != old or config.vocab_size < old.vocab_size or config.max_len < old.max_len:
        raise ConfigError(
            f"a model grows by symbols and unit length only: {old} cannot become {config}"
        )
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    weights |= _grown_symbols(weights, old, config.vocab_size)
    if old.stop_heads:
        weights |= _grown_lengths(weights, old.max_len, config.max_len)
    grown = RNNLM(config).to(next(model.parameters()).device)
    grown.load_state_dict(weights, strict=True)
    return grown


def _grown_symbols(
    w: dict[str, torch.Tensor], old: ModelConfig, vocab_size: int
) -> dict[str, torch.Tensor]:
    """The tensors with a row per symbol, with rows for the new symbols."""
    n_new = vocab_size - old.vocab_size
    embed = w["embed.weight"]  # (V, E)
    mean = embed[N_SPECIALS:].mean(dim=0, keepdim=True)  # (1, E) the corpus's own symbols
    out = {"embed.weight": torch.cat([embed, mean.expand(n_new, -1)])}
    out["unseen"] = torch.cat([w["unseen"], w["unseen"].new_zeros(n_new)])
    bias_name = "head_bias" if old.tie_weights else "head.bias"
    bias = w[bias_name]  # (V,)
    low = bias[N_SPECIALS:].min() - NEW_SYMBOL_MARGIN
    out[bias_name] = torch.cat([bias, low.expand(n_new)])
    if not old.tie_weights:
        head = w["head.weight"]  # (V, H)
        out["head.weight"] = torch.cat([head, head.new_zeros(n_new, head.shape[1])])
    return out


def _grown_lengths(
    w: dict[str, torch.Tensor], old_len: int, new_len: int
) -> dict[str, torch.Tensor]:
    """The length input's rows and the length head over the buckets of ``new_len``."""
    old_edges, new_edges = bucket_edges(old_len), bucket_edges(new_len)
    src = torch.as_tensor(bucketize(new_edges, old_edges))  # (n',) old bucket of each new one
    n = len(old_edges)
    rows = w["len_embed.weight"]  # (2n, E): remaining by bucket, then unknown by offset
    ratio = bucket_widths(new_edges, new_len) / bucket_widths(old_edges, old_len)[src.numpy()]
    shift = torch.as_tensor(np.log(ratio), dtype=w["length.bias"].dtype)  # (n',)
    return {
        "len_embed.weight": torch.cat([rows[src], rows[n + src]]),
        "length.weight": w["length.weight"][src],
        "length.bias": w["length.bias"][src] + shift,
    }
