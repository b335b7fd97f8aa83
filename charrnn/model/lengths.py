"""Length buckets: how the model reads and predicts a number of remaining tokens.

Small lengths get a bucket each (the end of a unit is where exact counts matter); larger ones
share geometric buckets. A length distribution over buckets becomes one over integers by
spreading each bucket's mass evenly over the lengths it covers:

    P(r) = P(bucket(r)) / width(bucket(r))

    bucket:  0  1  2 ... 15 | 16    17     ...  n-1
    covers:  0  1  2 ... 15 | 16-17 18-20  ...  [e, max_len]
"""

from __future__ import annotations

import numpy as np

EXACT = 16
N_BUCKETS = 64


def bucket_edges(max_len: int, n_buckets: int = N_BUCKETS) -> np.ndarray:
    """Lower edges of the buckets over 0..max_len (int64, strictly increasing, edges[0] == 0)."""
    assert max_len >= 1 and n_buckets > EXACT
    if max_len < n_buckets:
        return np.arange(max_len + 1, dtype=np.int64)
    geometric = np.geomspace(EXACT, max_len + 1, n_buckets - EXACT + 1)[:-1]
    edges = np.unique(np.concatenate([np.arange(EXACT), np.round(geometric)]).astype(np.int64))
    return edges


def bucket_widths(edges: np.ndarray, max_len: int) -> np.ndarray:
    return np.diff(np.append(edges, max_len + 1))


def bucketize(lengths: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The bucket of each length (lengths above the last edge fall in the last bucket)."""
    lengths = np.clip(np.asarray(lengths), 0, None)
    return np.searchsorted(edges, lengths, side="right") - 1
