"""Train and validation splits of an encoded corpus: which text validates a run."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from charrnn.config import SPREAD_SECTIONS, Holdout, SplitCut, Unit
from charrnn.text import split_units


class Pieces:
    """Stretches of a token stream read as one: position p of the joined stream is found in
    the piece that holds it. Indexed by integer arrays of any shape, as a memory map is."""

    def __init__(self, tokens: np.ndarray, pieces: list[tuple[int, int]]):
        self.tokens = tokens
        self.starts = np.array([lo for lo, _ in pieces], dtype=np.int64)
        self.at = np.cumsum([0] + [hi - lo for lo, hi in pieces])  # where each piece begins

    def __len__(self) -> int:
        return int(self.at[-1])

    def __getitem__(self, pos: np.ndarray) -> np.ndarray:
        pos = np.asarray(pos, dtype=np.int64)
        k = np.searchsorted(self.at, pos, side="right") - 1
        return self.tokens[self.starts[k] + pos - self.at[k]]


@dataclass
class Split:
    """The units of one side of a split, as one token stream: a stretch of the corpus's
    stream, or several read as one (``Pieces``)."""

    tokens: np.ndarray | Pieces  # (N,) uint16/uint32, usually a memory map
    unit_starts: np.ndarray  # (U,) int64, relative to this split
    n_chars: int
    n_bytes: int

    def __len__(self) -> int:
        return len(self.tokens)

    def unit_lengths(self) -> np.ndarray:
        """Tokens in each unit, <sos> and <eos> excluded."""
        ends = np.append(self.unit_starts[1:], len(self.tokens))
        return ends - self.unit_starts - 2

    def symbol_counts(self, vocab_size: int, chunk: int = 1 << 24) -> np.ndarray:
        """How often each symbol occurs (vocab_size,), read a chunk at a time (a memory map
        stays unread in memory)."""
        t = self.tokens
        stretches = (
            [(t.tokens, lo, lo + n) for lo, n in zip(t.starts, np.diff(t.at))]
            if isinstance(t, Pieces)
            else [(t, 0, len(t))]
        )
        counts = np.zeros(vocab_size, dtype=np.int64)
        for tokens, lo, hi in stretches:
            for k in range(lo, hi, chunk):
                counts += np.bincount(tokens[k : min(hi, k + chunk)], minlength=vocab_size)
        return counts


@dataclass(frozen=True)
class Text:
    """An encoded corpus as a split reads it: its token stream, its unit index (start, chars,
    bytes per unit) and its size in characters and bytes."""

    tokens: np.ndarray
    units: np.ndarray
    n_chars: int
    n_bytes: int


def split(
    text: Text,
    val_fraction: float,
    holdout: Holdout = Holdout.tail,
    cut: SplitCut = SplitCut.nearest,
) -> tuple[Split, Split]:
    """Train and validation splits; see ``Holdout`` and ``SplitCut``.

    Cuts are placed by the text's characters, so that models of every level are validated on
    the same text. ``spread`` falls back to ``tail`` when the corpus has too few units to
    leave both sides some.
    """
    if holdout is Holdout.spread:
        sections = np.arange(SPREAD_SECTIONS)[:, None] + [1.0 - val_fraction, 1.0]
        targets = sections.ravel() * text.n_chars / SPREAD_SECTIONS
        edges = _boundaries(text.units, targets, cut)[0]
        starts, ends = edges[0::2], edges[1::2]  # each section's validation units
        ends[-1] = len(text.units)
        train_from = np.concatenate([[0], ends[:-1]])
        if (ends > starts).any() and (starts > train_from).any():
            return _join(text, zip(train_from, starts)), _join(text, zip(starts, ends))
    if cut is SplitCut.unit_after:
        return _tail_after(text, val_fraction)
    return _tail(text, val_fraction)


# A boundary gives about the share asked for when the validation side's share is within this
# part of it; otherwise the tail is cut inside a unit.
SHARE_TOLERANCE = 0.5


def _join(text: Text, ranges: Iterable[tuple[int, int]]) -> Split:
    """The split made of the units in ``ranges`` (index ranges [a, b), in order)."""
    starts, n = text.units[:, 0], len(text.tokens)
    pieces, unit_starts, counts, at = [], [], np.zeros(2, np.int64), 0
    for a, b in ranges:
        if b <= a:
            continue
        lo, hi = int(starts[a]), int(starts[b]) if b < len(starts) else n
        pieces.append((lo, hi))
        unit_starts.append(starts[a:b] - lo + at)
        counts += text.units[a:b, 1:].sum(axis=0)
        at += hi - lo
    tokens = text.tokens[slice(*pieces[0])] if len(pieces) == 1 else Pieces(text.tokens, pieces)
    return Split(tokens, np.concatenate(unit_starts), *counts.tolist())


def _tail(text: Text, val_fraction: float) -> tuple[Split, Split]:
    """Train on the head, validate on the tail, cut at the unit boundary nearest to the share
    asked for; inside the unit that holds it when no boundary gives about that share (a text
    of few, long units)."""
    target = (1.0 - val_fraction) * text.n_chars
    (i,), (at,) = _boundaries(text.units, [target], SplitCut.nearest)
    share = (text.n_chars - at) / max(1, text.n_chars)
    if 0 < i < len(text.units) and abs(share - val_fraction) <= SHARE_TOLERANCE * val_fraction:
        return _join(text, [(0, int(i))]), _join(text, [(int(i), len(text.units))])
    return _cut_inside(text, target)


def _cut_inside(text: Text, target: float) -> tuple[Split, Split]:
    """The split at ``target`` characters, inside the unit that holds them: its tokens are
    shared in proportion, and so are its characters and bytes."""
    units, n = text.units, len(text.tokens)
    k, start = (int(x[0]) for x in _holding(units, [target]))
    k = min(k, len(units) - 1)
    lo = int(units[k, 0])
    hi = int(units[k + 1, 0]) if k + 1 < len(units) else n  # past the unit's <eos>
    frac = min(1.0, max(0.0, (target - start) / max(1, int(units[k, 1]))))
    pos = min(hi - 1, max(lo + 1, lo + 1 + round(frac * (hi - lo - 2))))  # after <sos>
    head_chars, head_bytes = units[:k, 1:].sum(axis=0).tolist()
    chars = head_chars + round(frac * int(units[k, 1]))
    nbytes = head_bytes + round(frac * int(units[k, 2]))
    train = Split(text.tokens[:pos], units[: k + 1, 0], chars, nbytes)
    val_starts = np.concatenate([[0], units[k + 1 :, 0] - pos])  # a piece of a unit, then units
    val = Split(text.tokens[pos:], val_starts, text.n_chars - chars, text.n_bytes - nbytes)
    return train, val


def _tail_after(text: Text, val_fraction: float) -> tuple[Split, Split]:
    """The tail split of runs of format 4 and before (SplitCut.unit_after): the first unit that
    starts at or after the share; by tokens, mid-unit, when none does."""
    n = len(text.tokens)
    target = int(round(n * (1.0 - val_fraction)))
    starts = text.units[:, 0]
    i = int(
        _boundaries(text.units, [(1.0 - val_fraction) * text.n_chars], SplitCut.unit_after)[0][0]
    )
    if not 0 < i < len(starts):
        i = int(np.searchsorted(starts, target))
    cut = int(starts[i]) if i < len(starts) else target
    if cut <= 0 or cut >= n:
        cut = target
    head, tail = text.units[:i], text.units[i:]
    train = Split(text.tokens[:cut], starts[:i], *head[:, 1:].sum(axis=0).tolist())
    val_starts = tail[:, 0] - cut
    if len(val_starts) == 0 or val_starts[0] != 0:
        # the tail starts mid-unit: it is its own first unit for length statistics
        val_starts = np.concatenate([[0], val_starts])
    val = Split(text.tokens[cut:], val_starts, *tail[:, 1:].sum(axis=0).tolist())
    if i == len(starts):  # the cut fell inside the last unit: share its characters
        frac = (n - cut) / n
        train.n_chars, val.n_chars = _share(text.n_chars, frac)
        train.n_bytes, val.n_bytes = _share(text.n_bytes, frac)
    return train, val


def _boundaries(units: np.ndarray, targets: Any, cut: SplitCut) -> tuple[np.ndarray, np.ndarray]:
    """For each of the ascending ``targets`` (characters into the text), the unit boundary that
    ``cut`` places there, as the index of the unit that starts at it, and its character."""
    k, start = _holding(units, targets)
    inside = k < len(units)
    length = np.zeros(len(k), dtype=np.int64)
    length[inside] = units[k[inside], 1]
    targets = np.asarray(targets, dtype=np.float64)
    if cut is SplitCut.unit_after:
        after = start < targets
    else:
        after = targets - start > start + length - targets
    return k + (after & inside), start + length * (after & inside)


def _holding(units: np.ndarray, targets: Any, step: int = 1 << 20) -> tuple[np.ndarray, np.ndarray]:
    """For each of the ascending ``targets``, the unit that holds that many characters into the
    text (``len(units)`` past the end) and the character it starts at. The index is read in
    steps, so a memory map is never copied whole."""
    targets = np.asarray(targets, dtype=np.float64)
    found = np.full(len(targets), len(units), dtype=np.int64)
    at = np.zeros(len(targets), dtype=np.int64)
    before, t = 0, 0  # characters before units[lo]; the first target not yet placed
    for lo in range(0, len(units), step):
        if t == len(targets):
            break
        ends = before + np.cumsum(units[lo : lo + step, 1])  # characters up to each unit's end
        k = np.searchsorted(ends, targets[t:])  # the unit holding each target, or past it
        k = k[k < len(ends)]
        found[t : t + len(k)] = lo + k
        at[t : t + len(k)] = ends[k] - units[lo + k, 1]
        t += len(k)
        before = int(ends[-1])
    at[t:] = before
    return found, at


def _share(total: int, frac: float) -> tuple[int, int]:
    tail = max(1, int(round(total * frac)))
    return max(1, total - tail), tail


# -- the text a split trains on, before it is encoded -------------------------------------

_SOS, _EOS = 0x110000, 0x110001  # past every code point


def trained_text(text: str, unit: Unit, val_fraction: float, holdout: Holdout) -> str:
    """The part of ``text`` that a run holding out ``val_fraction`` of it trains on, its units
    ended by line breaks: what a subword tokenizer may learn from. Found by ``split`` itself,
    on the text encoded one token per character, so it is the run's cut to the character."""
    units = split_units(text, unit)
    if not units:
        return ""
    lengths = np.fromiter(map(len, units), np.int64, len(units))
    at = np.cumsum(lengths) - lengths
    # <sos> before each unit's characters and <eos> after them, as an encoding has
    codes = np.frombuffer("".join(units).encode("utf-32-le", "surrogatepass"), np.uint32)
    marks = np.stack([at, at + lengths], axis=1).ravel()
    stream = np.insert(codes.astype(np.int32), marks, np.tile([_SOS, _EOS], len(units)))
    nbytes = [len(u.encode("utf-8", "surrogatepass")) for u in units]
    rows = np.stack([at + 2 * np.arange(len(units)), lengths + 1, np.add(nbytes, 1)], axis=1)
    whole = Text(stream, rows, int(rows[:, 1].sum()), int(rows[:, 2].sum()))
    tokens = split(whole, val_fraction, holdout)[0].tokens
    kept = tokens[np.arange(len(tokens))]  # a stretch of the stream, or Pieces read as one
    kept = np.where(kept == _EOS, ord("\n"), kept)[kept != _SOS]
    return kept.astype("<u4").tobytes().decode("utf-32-le", "surrogatepass")


def trained_spans(val_fraction: float, holdout: Holdout) -> list[tuple[float, float]]:
    """Where the text ``split`` trains on lies, as shares of the text: what a sample of a text
    too long to read whole is drawn from (placed by bytes, so only about the split's cuts)."""
    if holdout is Holdout.tail:
        return [(0.0, 1.0 - val_fraction)]
    return [
        (s / SPREAD_SECTIONS, (s + 1 - val_fraction) / SPREAD_SECTIONS)
        for s in range(SPREAD_SECTIONS)
    ]
