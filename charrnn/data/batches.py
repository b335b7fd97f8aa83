"""Batches for truncated BPTT: B parallel streams over a split, read in windows of T tokens, with
the stopping heads' targets."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from charrnn.data.split import Split
from charrnn.model.lengths import bucketize
from charrnn.tokenizers import EOS, PAD, SOS


@dataclass
class Batch:
    x: np.ndarray  # (B, T) input tokens
    y: np.ndarray  # (B, T) targets: <pad> (ignored) where the target is <sos>
    remaining: np.ndarray | None  # (B, T) length-bucket ids fed to the model
    halt: np.ndarray | None  # (B, T) 1 = the unit ends after x, 0 = it goes on, -1 = ignore
    length: np.ndarray | None  # (B, T) remaining-length bucket to predict, -1 = ignore


@dataclass(frozen=True)
class LengthPlan:
    """How remaining lengths are shown to the model during training.

    For each unit, independently and afresh each epoch: hidden throughout with probability
    ``p_hidden``; otherwise shown from its first token (probability ``p_from_start``) or from
    a point reached as after a prompt. The length head learns wherever the state has not yet
    seen the length.

    Where it is unknown, the input is ``unknown`` plus the bucket of the token's offset in
    its unit (0 = <sos>).

    Where the length is revealed never depends on the unit's own length: the "prompt" is a
    random prefix of another unit, picked at random, and may outlast this one. Were it drawn
    inside the unit (say uniformly over its length), "not shown yet" would hint "a long unit"
    (long units stay unshown for more tokens), and the rules that read the unknown-length
    state (eos, halt, and the length head itself) would learn lengths that are too long.
    """

    edges: np.ndarray
    unknown: int  # the first "unknown" input id (then + the bucket of the offset in the unit)
    p_hidden: float = 0.5
    p_from_start: float = 0.5
    seed: int = 0


NEVER = np.iinfo(np.int64).max


def _unit_random(seed: int, epoch: int, unit_ids: np.ndarray, salt: int) -> np.ndarray:
    """Uniform [0, 1) numbers, a pure function of (seed, epoch, unit, salt): splitmix64."""
    with np.errstate(over="ignore"):
        z = unit_ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z += np.uint64((seed * 1_000_003 + epoch * 7919 + salt) & 0xFFFFFFFFFFFFFFFF)
        z ^= z >> np.uint64(30)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(27)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def reveal_points(plan: LengthPlan, epoch: int, lengths: np.ndarray) -> np.ndarray:
    """For each unit, the offset (1 = its first token) from which its remaining length is
    shown in this epoch, or NEVER. A pure function of (seed, epoch, unit)."""
    ids = np.arange(len(lengths), dtype=np.int64)
    r_hide = _unit_random(plan.seed, epoch, ids, 1)
    r_start = _unit_random(plan.seed, epoch, ids, 2)
    r_pos = _unit_random(plan.seed, epoch, ids, 3)
    other = (_unit_random(plan.seed, epoch, ids, 4) * len(lengths)).astype(np.int64)
    prompt = 1 + np.floor(r_pos * lengths[other]).astype(np.int64)  # a prefix of another unit
    k = np.where(r_start < plan.p_from_start, 1, prompt)
    return np.where(r_hide < plan.p_hidden, NEVER, k)


def reading_streams(split: Split, batch_size: int, seq_len: int) -> int:
    """Streams that read a split once (evaluation): up to ``batch_size``, each at least one
    window of ``seq_len`` long."""
    return max(1, min(batch_size, (len(split) - 1) // max(1, seq_len)))


def windows_to_read(batches: StreamBatches, streams: int, max_tokens: int = 0) -> int:
    """Windows of ``batches`` to read: all of them (the last one short), or only the first
    ones, up to ``max_tokens`` over all ``streams`` (0 = all), a spread-out sample."""
    n = batches.n_windows(drop_last=False)
    return min(n, max(1, max_tokens // (streams * batches.T))) if max_tokens else n


class StreamBatches:
    """B parallel streams over a split, read in windows of T tokens.

    The split is cut into B equal streams that advance side by side; the hidden state of
    stream b carries from one window to the next:

        tokens:   a b c d e f g h i j k l m n o p q r
        B = 3:    stream 0: a b c d e f      window 0: [a b c]  window 1: [d e f]
                  stream 1: g h i j k l                [g h i]            [j k l]
                  stream 2: m n o p q r                [m n o]            [p q r]

    Targets are the same windows shifted by one token. ``rows`` keeps only some of the B
    streams (one process's share in data-parallel training); windows then have that many rows.
    With ``shift_seed``, every pass after the first starts the streams ``shift(epoch)`` tokens
    further on, the split read as a ring (it begins with <sos> and ends with <eos>): a run
    that reads its text many times meets other windows each time.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        seq_len: int,
        plan: LengthPlan | None = None,
        rows: range | None = None,
        shift_seed: int | None = None,
    ):
        self.split, self.B, self.T, self.plan = split, batch_size, seq_len, plan
        self.shift_seed = shift_seed
        self.stream_len = (len(split.tokens) - 1) // batch_size
        rows = range(batch_size) if rows is None else rows
        self.offsets = np.arange(rows.start, rows.stop, dtype=np.int64) * self.stream_len
        starts = split.unit_starts
        self.unit_ends = np.append(starts[1:] - 1, len(split.tokens) - 1)  # position of <eos>
        self.unit_lengths = self.unit_ends - starts - 1  # tokens in each unit
        self._reveal: tuple[int, np.ndarray] | None = None  # (epoch, reveal point per unit)
        if plan is not None:
            # a remaining length or an offset (up to <eos>'s) -> bucket, by table lookup
            self.bucket_of = bucketize(np.arange(int(self.unit_lengths.max()) + 2), plan.edges)

    def __len__(self) -> int:
        """Full windows per pass."""
        return self.stream_len // self.T

    def n_windows(self, drop_last: bool = True) -> int:
        return len(self) if drop_last else -(-self.stream_len // self.T)

    def window(self, k: int, epoch: int = 0) -> Batch:
        t0 = k * self.T
        t = min(self.T, self.stream_len - t0)
        pos = self.offsets[:, None] + t0 + np.arange(t + 1)  # (B, t+1) absolute positions
        if self.shift_seed is not None and epoch > 0:
            pos = (pos + self.shift(epoch)) % len(self.split.tokens)
        seq = np.asarray(self.split.tokens[pos], dtype=np.int64)
        x, y = seq[:, :-1], seq[:, 1:].copy()
        y[y == SOS] = PAD  # starting a unit after <eos> is certain: not worth a loss term
        if self.plan is None:
            return Batch(x, y, None, None, None)
        return Batch(x, y, *self._stop_targets(pos[:, :-1], x, y, epoch))

    def shift(self, epoch: int) -> int:
        """Where the streams start in ``epoch``: a pure function of (seed, epoch)."""
        assert self.shift_seed is not None
        r = _unit_random(self.shift_seed, epoch, np.zeros(1, np.int64), 5)[0]
        return int(r * len(self.split.tokens))

    def reveal(self, epoch: int) -> np.ndarray:
        """Reveal points of every unit for ``epoch`` (computed once per epoch)."""
        assert self.plan is not None
        if self._reveal is None or self._reveal[0] != epoch:
            self._reveal = (epoch, reveal_points(self.plan, epoch, self.unit_lengths))
        return self._reveal[1]

    def _stop_targets(
        self, pos: np.ndarray, x: np.ndarray, y: np.ndarray, epoch: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        plan = self.plan
        assert plan is not None
        starts = self.split.unit_starts
        # the unit of each position: that of the row's first one, plus the units begun since
        # (every <sos> in a split starts a unit); cheaper than a search per position
        is_sos = x == SOS
        first = np.searchsorted(starts, pos[:, 0], side="right") - 1  # (B,)
        u = first[:, None] + np.cumsum(is_sos, axis=1) - is_sos[:, :1]  # (B, T)
        u %= len(starts)  # a shifted window may run past the end into the first unit
        j = pos - starts[u]  # offset in the unit: 0 is <sos>
        in_unit = x != EOS
        remaining = np.maximum(self.unit_lengths[u] - j, 0)  # tokens still to come after x
        buckets = self.bucket_of[remaining]
        shown = j >= self.reveal(epoch)[u]
        remaining_in = np.where(in_unit & shown, buckets, plan.unknown + self.bucket_of[j])
        length_target = np.where(in_unit & ~shown, buckets, -1)
        halt = np.where(in_unit & ~is_sos, y == EOS, -1)
        return remaining_in, halt, length_target


def share(n: int, rank: int, world: int) -> range:
    """Rank ``rank``'s contiguous block of ``n`` items; blocks differ by at most one."""
    return range(n * rank // world, n * (rank + 1) // world)
