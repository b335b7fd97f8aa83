"""Character level: Unicode code points, looked up through numpy tables."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from charrnn.config import Level, TokenizerConfig
from charrnn.errors import TokenizerError
from charrnn.text import UnitBlock, code_points
from charrnn.tokenizers.base import (
    EOS,
    N_SPECIALS,
    SPECIALS,
    UNIT_MARK,
    UNK,
    UNK_MARK,
    VocabTokenizer,
    frame_spans,
    frame_units,
    token_dtype,
)


class CharTokenizer(VocabTokenizer):
    """Unicode code points, looked up through a numpy table."""

    level = Level.char
    joins_exactly = True

    def __init__(self, config: TokenizerConfig, pieces: Sequence[str]):
        super().__init__(config, pieces)
        if any(len(p) != 1 for p in self.pieces[N_SPECIALS:]):
            raise TokenizerError("a char-level vocabulary entry is not a single character")
        self._lut: np.ndarray | None = None
        self._tables: dict[str, Any] = {}

    @staticmethod
    def _count(counts: Counter[str], text: str) -> None:
        counts.update(text.replace("<unk>", ""))

    @classmethod
    def fit(cls, config: TokenizerConfig, chunks: Iterable[str]) -> CharTokenizer:
        """Count code points with numpy; the same vocabulary as counting with a Counter."""
        counts = np.zeros(256, dtype=np.int64)
        for chunk in chunks:
            c = _histogram(code_points(chunk))
            if c[ord("<")]:  # a corpus's "<unk>" is one <unk>, not five characters
                literal = chunk.count("<unk>")
                for ch in "<unk>":
                    c[ord(ch)] -= literal
            if len(c) > len(counts):
                c, counts = counts, c
            counts[: len(c)] += c
        present = np.flatnonzero(counts >= config.min_freq)
        ranked = present[np.lexsort((present, -counts[present]))]
        if config.max_vocab is not None:
            ranked = ranked[: max(0, config.max_vocab - N_SPECIALS)]
        return cls(config, [*SPECIALS, *map(chr, ranked.tolist())])

    def _table(self) -> np.ndarray:
        if self._lut is None:
            lut = np.full(0x110000, UNK, dtype=np.int64)
            for i, p in enumerate(self.pieces[N_SPECIALS:], start=N_SPECIALS):
                lut[ord(p)] = i
            lut[ord(UNIT_MARK)] = -1
            self._lut = lut
        return self._lut

    def encode_units(self, units: Sequence[str]) -> np.ndarray:
        joined = UNIT_MARK.join(units).replace("<unk>", UNK_MARK)
        cps = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        ids = self._table()[cps]
        return frame_units(ids, ids < 0)

    def encode_block(self, block: UnitBlock) -> np.ndarray:
        ids = self._ids(block.codes)  # (len(text),) one id per character
        starts, ends = block.starts, block.ends
        if "<unk>" in block.text:
            ids, starts, ends = _collapse_literal_unk(ids, block.codes, starts, ends)
        return frame_spans(ids, starts, ends, not block.continues, not block.open)

    def _ids(self, codes: np.ndarray) -> np.ndarray:
        """Ids of code points: Latin-1 text through bytes.translate when every id of a Latin-1
        character fits a byte (the common case, several times faster), else a lookup table."""
        if codes.dtype == np.uint8:
            byte_table = self._cached("bytes", self._byte_table)
            if byte_table is not None:
                raw = codes.base if isinstance(codes.base, bytes) else codes.tobytes()
                return np.frombuffer(raw.translate(byte_table), dtype=np.uint8)
            return self._cached("latin1", lambda: self._lookup(256))[codes]
        return self._cached("unicode", lambda: self._lookup(0x110000))[codes]

    def _cached(self, name: str, make: Any) -> Any:
        if name not in self._tables:
            self._tables[name] = make()
        return self._tables[name]

    def _lookup(self, size: int) -> np.ndarray:
        lut = np.full(size, UNK, dtype=token_dtype(self.vocab_size))
        for i, p in enumerate(self.pieces[N_SPECIALS:], start=N_SPECIALS):
            if ord(p) < size:
                lut[ord(p)] = i
        return lut

    def _byte_table(self) -> bytes | None:
        lut = self._lookup(256)
        return lut.astype(np.uint8).tobytes() if lut.max() < 256 else None

    def decode(self, ids: Iterable[int]) -> str:
        out = []
        for i in ids:
            i = int(i)
            if i == EOS:
                out.append("\n")
            elif i >= UNK:
                out.append(self.pieces[i])
        return "".join(out)


def _histogram(codes: np.ndarray) -> np.ndarray:
    """How often each code point occurs (at least 256 bins)."""
    if codes.dtype != np.uint8:
        return np.bincount(codes, minlength=256)
    # count byte pairs: half the elements to count, and a table that still fits the cache
    n = len(codes) // 2 * 2
    pairs = np.bincount(codes[:n].view(np.uint16), minlength=1 << 16).reshape(256, 256)
    counts = pairs.sum(axis=0) + pairs.sum(axis=1)
    if n < len(codes):
        counts[codes[-1]] += 1
    return counts


def _collapse_literal_unk(
    ids: np.ndarray, codes: np.ndarray, starts: np.ndarray, ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each "<unk>" of the text becomes one <unk> id; spans move to match."""
    at = np.flatnonzero(codes[: max(0, len(codes) - 4)] == ord("<"))
    for k, ch in enumerate("unk>", start=1):
        at = at[codes[at + k] == ord(ch)]
    if not len(at):
        return ids, starts, ends
    ids = ids.copy()
    ids[at] = UNK
    keep = np.ones(len(ids), dtype=bool)
    keep[(at[:, None] + np.arange(1, 5)).ravel()] = False
    # "<unk>" never straddles a span edge: spans are whole lines
    return ids[keep], starts - 4 * np.searchsorted(at, starts), ends - 4 * np.searchsorted(at, ends)
