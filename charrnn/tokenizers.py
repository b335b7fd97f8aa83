"""Char, word and subword tokenizers behind one interface.

Every vocabulary starts with the same four symbols, so their ids mean the same thing at
every level:

    0 <pad>   never in a stream; the ignore index of the loss
    1 <sos>   starts a unit
    2 <eos>   ends a unit
    3 <unk>   a symbol outside the vocabulary (and a corpus's literal "<unk>")

``encode_units`` turns a list of units into one stream ``<sos> u1 <eos> <sos> u2 <eos> ...``
with numpy, so that encoding runs at memory speed rather than Python-loop speed;
``encode_block`` does the same for a block of a streamed corpus (see ``text.UnitBlock``).
Subword levels are sentencepiece models, trained with the four symbols at the same ids and
byte fallback on, so that no input is unrepresentable.
"""

from __future__ import annotations

import functools
import hashlib
import io
import itertools
import json
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from charrnn.config import Level, TokenizerConfig
from charrnn.defaults import resolve_level
from charrnn.errors import TokenizerError
from charrnn.io import write_bytes_atomic, write_json_atomic
from charrnn.text import UnitBlock, code_points

PAD, SOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<sos>", "<eos>", "<unk>")
N_SPECIALS = len(SPECIALS)
TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_MODEL = "tokenizer.model"  # sentencepiece's own model file (subword levels)
FORMAT_VERSION = 1

# Surrogate code points never occur in text decoded from valid UTF-8, so they are safe
# in-band markers: one joins units, one stands for a corpus's literal "<unk>".
_UNIT_MARK = "\ud800"
_UNK_MARK = "\ud801"


def frame_units(ids: np.ndarray, is_mark: np.ndarray) -> np.ndarray:
    """Turn ``u1 MARK u2 MARK u3`` into ``<sos> u1 <eos> <sos> u2 <eos> <sos> u3 <eos>``.

    ``ids`` holds the token ids of units joined by one mark each; ``is_mark`` flags the marks.
    """
    ids = ids.astype(np.int64, copy=True)
    marks = np.flatnonzero(is_mark)
    ids[marks] = EOS
    ids = np.insert(ids, marks + 1, SOS)  # each mark becomes <eos> <sos>
    out = np.empty(len(ids) + 2, dtype=np.int64)
    out[0], out[1:-1], out[-1] = SOS, ids, EOS
    return out


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest unsigned type that holds every id of a vocabulary."""
    return np.dtype(np.uint16 if vocab_size <= np.iinfo(np.uint16).max else np.uint32)


def frame_spans(
    ids: np.ndarray, starts: np.ndarray, ends: np.ndarray, head: bool = True, tail: bool = True
) -> np.ndarray:
    """``<sos> ids[s0:e0] <eos> <sos> ids[s1:e1] <eos> ...`` in the dtype of ``ids``.

    ``head``/``tail`` False leave out the first <sos>/last <eos> (a piece of a unit). Spans are
    sorted and apart. The ids between two spans (at least one: a line break) become
    ``<eos> <sos>`` in place, so the usual case is one copy and no loop over units:

        ids:  a b c \n \n d e \n f      spans [0,3) [5,7) [8,9)
        out:  <sos> a b c <eos> <sos> d e <eos> <sos> f <eos>
                          (two in place)  (one inserted)
    """
    if not len(starts):
        return np.zeros(0, dtype=ids.dtype)
    lo, hi = int(starts[0]), int(ends[-1])
    out = np.empty(hi - lo + 2, dtype=ids.dtype)
    out[0], out[1:-1], out[-1] = SOS, ids[lo:hi], EOS
    at = ends[:-1] - lo + 1  # where each gap starts in out
    gap = starts[1:] - ends[:-1]
    out[at] = EOS
    out[at[gap >= 2] + 1] = SOS
    extra = np.maximum(gap - 2, 0)  # ids past the first two of a gap: dropped
    shift = np.cumsum(extra) - extra  # how many are dropped before each gap
    if extra.any():
        first = np.repeat(at + 2 - shift, extra)  # (sum(extra),) in dropped order
        drop = first + np.arange(len(first))
        keep = np.ones(len(out), dtype=bool)
        keep[drop] = False
        out = out[keep]
    if (gap == 1).any():
        out = np.insert(out, (at - shift)[gap == 1] + 1, SOS)
    return out[0 if head else 1 : len(out) if tail else -1]


def _trim(stream: np.ndarray, block: UnitBlock) -> np.ndarray:
    """A framed stream of a block's spans without the marks a piece of a unit must not have."""
    return stream[1 if block.continues else 0 : len(stream) - 1 if block.open else None]


class Tokenizer(ABC):
    """Text <-> token ids. Subclasses define the pieces and how text is cut into them."""

    level: ClassVar[Level]

    def __init__(self, config: TokenizerConfig):
        self.config = config

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @abstractmethod
    def piece(self, token_id: int) -> str:
        """The text a token stands for, for display."""

    @abstractmethod
    def encode_units(self, units: Sequence[str]) -> np.ndarray:
        """The stream ``<sos> u1 <eos> <sos> u2 <eos> ...`` (int64)."""

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """Text from ids; specials other than ``<unk>`` are dropped."""

    @abstractmethod
    def _state(self) -> dict[str, Any]:
        """What besides the config rebuilds this tokenizer (JSON-safe)."""

    def encode_block(self, block: UnitBlock) -> np.ndarray:
        """The stream of a block's spans (a piece of a unit gets no <sos> or <eos> there)."""
        return _trim(self.encode_units(block.units()), block)

    def encode(self, text: str) -> list[int]:
        """Ids of one piece of text, without ``<sos>``/``<eos>``."""
        if not text:
            return []
        return self.encode_units([text])[1:-1].tolist()

    def encode_each(self, texts: Sequence[str]) -> list[list[int]]:
        """``[encode(t) for t in texts]`` from one batched encode: for many short texts the
        calls cost more than the encoding."""
        framed = self.encode_units(texts)  # <sos> t1 <eos> <sos> t2 <eos> ...
        starts, ends = np.flatnonzero(framed == SOS), np.flatnonzero(framed == EOS)
        if len(starts) != len(texts) or len(ends) != len(texts):  # a unit mark in a text
            return [self.encode(t) for t in texts]
        return [framed[s + 1 : e].tolist() for s, e in zip(starts.tolist(), ends.tolist())]

    def save(self, folder: Path) -> None:
        payload = {"format_version": FORMAT_VERSION, "config": self.config.to_dict()}
        payload.update(self._state())
        write_json_atomic(Path(folder) / TOKENIZER_JSON, payload)

    def summary(self) -> dict[str, Any]:
        return {"level": self.level.value, "vocab_size": self.vocab_size}

    @classmethod
    @abstractmethod
    def from_state(cls, config: TokenizerConfig, state: dict[str, Any], folder: Path) -> Tokenizer:
        """Rebuild from ``_state()`` (and any files of its own in ``folder``)."""


class VocabTokenizer(Tokenizer):
    """A tokenizer with an explicit list of pieces (char and word levels)."""

    def __init__(self, config: TokenizerConfig, pieces: Sequence[str]):
        super().__init__(config)
        if tuple(pieces[:N_SPECIALS]) != SPECIALS:
            raise TokenizerError("tokenizer vocabulary does not start with the special symbols")
        if len(set(pieces)) != len(pieces):
            raise TokenizerError("tokenizer vocabulary has duplicate entries")
        self.pieces = list(pieces)
        self.index = {p: i for i, p in enumerate(self.pieces)}

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def piece(self, token_id: int) -> str:
        return self.pieces[token_id]

    def _state(self) -> dict[str, Any]:
        return {"pieces": self.pieces}

    @classmethod
    def from_state(cls, config: TokenizerConfig, state: dict[str, Any], folder: Path) -> Tokenizer:
        pieces = state["pieces"]
        if not isinstance(pieces, list) or not all(isinstance(p, str) for p in pieces):
            raise ValueError("pieces must be a list of strings")
        return cls(config, pieces)

    @classmethod
    def fit(cls, config: TokenizerConfig, chunks: Iterable[str]) -> VocabTokenizer:
        counts: Counter[str] = Counter()
        for chunk in chunks:
            cls._count(counts, chunk)
        counts.pop("<unk>", None)
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        kept = [p for p, c in ranked if c >= config.min_freq]
        if config.max_vocab is not None:
            kept = kept[: max(0, config.max_vocab - N_SPECIALS)]
        return cls(config, [*SPECIALS, *kept])

    @staticmethod
    @abstractmethod
    def _count(counts: Counter[str], text: str) -> None: ...


class CharTokenizer(VocabTokenizer):
    """Unicode code points, looked up through a numpy table."""

    level = Level.char

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
            lut[ord(_UNIT_MARK)] = -1
            self._lut = lut
        return self._lut

    def encode_units(self, units: Sequence[str]) -> np.ndarray:
        joined = _UNIT_MARK.join(units).replace("<unk>", _UNK_MARK)
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


# <unk>, WikiText's @-@ joiners, PTB-style clitics (do|n't, it|'s), words, line breaks and
# single punctuation marks. A hyphen, comma or period inside a word is written as WikiText
# writes it (well-known -> well @-@ known), so plain text and WikiText share one vocabulary.
# For speed (same matches): "(?=\S|\n)" skips spaces at once, and a plain word that no
# apostrophe follows is taken before the clitic alternatives are tried.
_CLITIC = r"(?:n't|['’](?:s|re|ve|ll|d|m))"
_WORD_RE = re.compile(
    rf"(?=\S|\n)(?:\w+(?![\w'’])|<unk>|@[-.,]@"
    rf"|(?i:\w+?(?=n't\b)|{_CLITIC}\b|\w+(?:['’]\w+)*?(?={_CLITIC}\b))"
    r"|\w+(?:['’]\w+)*|\n|[^\w\s])"
)
_INWORD_JOINER = re.compile(r"[-.,](?<=\w[-.,])(?=\w)")  # the mark first: a fast scan


def split_words(text: str) -> list[str]:
    return _WORD_RE.findall(_INWORD_JOINER.sub(r" @\g<0>@ ", text))


_NO_SPACE_BEFORE = {".", ",", ";", ":", "!", "?", ")", "]", "}", "%", "\n", "n't", "n’t", "…"}
_NO_SPACE_BEFORE |= {"”", "»", "’"}
_NO_SPACE_AFTER = {"(", "[", "{", "$", "\n", "#", "“", "«", "‘", "¿", "¡"}
_JOINERS = {"@-@": "-", "@.@": ".", "@,@": ","}
# words that a leading apostrophe shortens ('tis, 'em, 'twas): the apostrophe opens them
_ELISIONS = {"em", "tis", "twas", "twere", "twill", "twould", "gainst", "twixt", "tween", "fore"}
_ELISIONS |= {"neath", "n", "cause", "til", "round", "bout", "s", "t"}
_QUOTE_REACH = 8  # words within which a closing ' is looked for after an opening one


class _Lookup(dict):
    def __missing__(self, key: str) -> int:
        return UNK


class WordTokenizer(VocabTokenizer):
    """Words, numbers and single punctuation marks; line breaks are tokens too."""

    level = Level.word

    def __init__(self, config: TokenizerConfig, pieces: Sequence[str]):
        super().__init__(config, pieces)
        self._lookup = _Lookup(self.index)
        self._lookup["<unk>"] = UNK
        self._lookup[_UNIT_MARK] = -1

    @staticmethod
    def _count(counts: Counter[str], text: str) -> None:
        counts.update(split_words(text))

    def encode_units(self, units: Sequence[str]) -> np.ndarray:
        words = split_words(_UNIT_MARK.join(units))
        ids = np.fromiter(map(self._lookup.__getitem__, words), dtype=np.int64, count=len(words))
        return frame_units(ids, ids < 0)

    def decode(self, ids: Iterable[int]) -> str:
        words = []
        for i in ids:
            i = int(i)
            if i == EOS:
                words.append("\n")
            elif i >= UNK:
                words.append(self.pieces[i])
        return detokenize(words)


_LINE_CHUNK = "\ud802"  # a line break, as a chunk of its own (see _ChunkIds)


class _ChunkIds(dict):
    """Encodes text by chunks between whitespace, remembering each chunk's word ids.

    Words never span whitespace and split_words decides each one from its chunk alone, so
    splitting a text at whitespace and encoding chunk by chunk gives split_words(text). Text
    repeats itself: most chunks are found here (chunk -> row of a table of ids), and only new
    ones go through the regex. The rows of a batch are expanded to ids with numpy.
    """

    LIMIT = 1 << 19  # chunks remembered (some 60 MB); then the table starts afresh

    def __init__(self, lookup: dict[str, int]):
        super().__init__()
        self.lookup = lookup
        self._reset()

    def _reset(self) -> None:
        self.clear()
        self.flat = np.zeros(0, dtype=np.int64)  # the ids of every row, row after row
        self.offset = np.zeros(0, dtype=np.int64)  # (rows,) where a row's ids start
        self.length = np.zeros(0, dtype=np.int64)  # (rows,) how many ids it has
        self.new_ids: list[int] = []  # rows added since the arrays were last extended
        self.new_lengths: list[int] = []

    def __missing__(self, chunk: str) -> int:
        if chunk.isalnum():  # all \w: one word (the common case, without the regex)
            words = [chunk]
        else:
            words = ["\n"] if chunk == _LINE_CHUNK else split_words(chunk)
        self.new_ids.extend(map(self.lookup.__getitem__, words))
        self.new_lengths.append(len(words))
        self[chunk] = row = len(self)
        return row

    def _sync(self) -> None:
        if self.new_lengths:
            lengths = np.array(self.new_lengths, dtype=np.int64)
            n = len(self.flat)
            self.offset = np.concatenate([self.offset, n + np.cumsum(lengths) - lengths])
            self.length = np.concatenate([self.length, lengths])
            self.flat = np.concatenate([self.flat, np.array(self.new_ids, dtype=np.int64)])
            self.new_ids, self.new_lengths = [], []

    def encode(self, units: Sequence[str]) -> np.ndarray:
        """Ids of the units' words, one -1 between units (int64)."""
        if len(self) >= self.LIMIT:
            self._reset()
        text = f" {_UNIT_MARK} ".join(units).replace("\n", f" {_LINE_CHUNK} ")
        chunks = text.split()
        rows = np.fromiter(map(self.__getitem__, chunks), dtype=np.int64, count=len(chunks))
        self._sync()
        n, start = self.length[rows], self.offset[rows]
        if np.all(n == 1):
            return self.flat[start]
        first = np.cumsum(n) - n  # where each chunk's ids go
        return self.flat[np.repeat(start - first, n) + np.arange(int(n.sum()))]


class _FirstSight(dict):
    """Word -> id, giving each new word the next id."""

    next_id = N_SPECIALS

    def __missing__(self, key: str) -> int:
        self[key] = i = self.next_id
        self.next_id += 1
        return i


class WordVocabulary:
    """Builds a word-level vocabulary in the same pass that encodes the corpus.

    Each word gets an id when first seen and is counted; ``finish`` ranks the words as
    ``WordTokenizer.fit`` does and gives the table that maps these first-sight ids to the
    ranked ones, so the token file is rewritten once instead of splitting the text twice.
    """

    BATCH_CHARS = 1 << 20  # words of this much text at a time: bounds the list of strings

    def __init__(self, config: TokenizerConfig):
        self.config = config
        self._ids = _FirstSight({"<unk>": UNK, _UNIT_MARK: -1})
        self._chunks = _ChunkIds(self._ids)
        self._counts = np.zeros(0, dtype=np.int64)

    def encode_block(self, block: UnitBlock) -> np.ndarray:
        """The block's stream in first-sight ids (int64)."""
        units = block.units()
        ends = np.cumsum(block.char_counts())
        cuts = np.searchsorted(ends, np.arange(self.BATCH_CHARS, ends[-1], self.BATCH_CHARS))
        parts = []
        for lo, hi in itertools.pairwise([0, *np.unique(cuts + 1).tolist(), len(units)]):
            if lo >= hi:
                continue
            ids = self._chunks.encode(units[lo:hi])
            parts.append(frame_units(ids, ids < 0))
        stream = _trim(np.concatenate(parts), block)
        counts = np.bincount(stream, minlength=len(self._counts))
        counts[: len(self._counts)] += self._counts
        self._counts = counts
        return stream

    def finish(self) -> tuple[WordTokenizer, np.ndarray]:
        """The ranked tokenizer, and first-sight id -> its id (int64; dropped words -> <unk>)."""
        words = list(self._ids)[2:]  # after "<unk>" and the unit mark, in first-sight order
        counts = np.zeros(len(words), dtype=np.int64)
        seen = self._counts[N_SPECIALS : N_SPECIALS + len(words)]
        counts[: len(seen)] = seen
        n = counts.tolist()
        order = sorted(range(len(words)), key=lambda i: (-n[i], words[i]))
        kept = [i for i in order if n[i] >= self.config.min_freq]
        if self.config.max_vocab is not None:
            kept = kept[: max(0, self.config.max_vocab - N_SPECIALS)]
        remap = np.full(N_SPECIALS + len(words), UNK, dtype=np.int64)
        remap[:N_SPECIALS] = np.arange(N_SPECIALS)
        remap[np.asarray(kept, dtype=np.int64) + N_SPECIALS] = np.arange(len(kept)) + N_SPECIALS
        tokenizer = WordTokenizer(self.config, [*SPECIALS, *(words[i] for i in kept)])
        return tokenizer, remap


def detokenize(words: Sequence[str]) -> str:
    """Join words with spaces where a writer would put them.

    Punctuation attaches to the word before it, opening brackets and quotes to the word
    after. A straight quote '"' alternates between opening and closing; a lone "'" is read
    from its neighbours (see _single_quote).
    """
    out: list[str] = []
    glue = True  # no space before the next word
    double_open = single_open = False
    for k, w in enumerate(words):
        if w in _JOINERS:
            out.append(_JOINERS[w])
            glue = True
            continue
        if w == '"':
            double_open = not double_open
            before, after = double_open, not double_open
        elif w == "'":
            before, after, single_open = _single_quote(words, k, single_open)
        else:
            before = not (
                w.lower() in _NO_SPACE_BEFORE
                or (w[:1] in "'’" and len(w) > 1)  # a clitic: it's, we'll
                or (w == "-" and k > 0 and words[k - 1] == "-")  # a dash written --
            )
            after = w not in _NO_SPACE_AFTER
            single_open = single_open and w != "\n"
        out.append(" " + w if before and not glue else w)
        glue = not after
    return "".join(out)


def _is_word(w: str) -> bool:
    return w[:1].isalnum() or w == "<unk>"


def _single_quote(words: Sequence[str], k: int, is_open: bool) -> tuple[bool, bool, bool]:
    """For a lone "'" at ``words[k]``: (space before, space after, a quote is open after it).

    'tis and '90s open a word; o' the and i' the end one. Otherwise a quote opened earlier on
    the line closes after a word or a mark, and one opens when a closing "'" follows shortly
    (or nothing that could own it comes before); anything else is the possessive of a
    plural, cats' toys.
    """
    prev = words[k - 1] if k > 0 else ""
    nxt = words[k + 1] if k + 1 < len(words) else ""
    if nxt.lower() in _ELISIONS or nxt[:1].isdigit():
        return True, False, is_open
    if prev.lower() in ("o", "i", "th"):
        return False, True, is_open
    if is_open and (_is_word(prev) or prev in _NO_SPACE_BEFORE):
        return False, True, False
    ahead = itertools.takewhile(lambda x: x != "\n", words[k + 2 : k + 2 + _QUOTE_REACH])
    if _is_word(nxt) and (not _is_word(prev) or "'" in ahead):
        return True, False, True
    return False, True, is_open


# -- subwords -----------------------------------------------------------------------------

# Sentencepiece is asked to keep text exactly as it is (no normalisation, no dummy space at
# the start) so that decoding gives the text back, byte for byte. A line break is a symbol of
# its own, so a unit cut at a line start encodes as the whole unit does (bpe; unigram may
# differ by a piece inside very long units).
_SP_MAX_SENTENCE = 4096  # characters of one training sentence; longer lines are cut


def _sp_trainer_args(config: TokenizerConfig) -> dict[str, Any]:
    return {
        "model_type": config.level.value,
        "vocab_size": config.vocab_size,
        "pad_id": PAD,
        "bos_id": SOS,
        "eos_id": EOS,
        "unk_id": UNK,
        "pad_piece": SPECIALS[PAD],
        "bos_piece": SPECIALS[SOS],
        "eos_piece": SPECIALS[EOS],
        "unk_piece": SPECIALS[UNK],
        "user_defined_symbols": ["\n"],
        "byte_fallback": True,
        "normalization_rule_name": "identity",
        "remove_extra_whitespaces": False,
        "add_dummy_prefix": False,
        "allow_whitespace_only_pieces": True,
        "hard_vocab_limit": False,  # a small corpus gets the vocabulary it can fill
        "max_sentence_length": 4 * _SP_MAX_SENTENCE,  # bytes
        "num_threads": 2,
        "minloglevel": 2,
    }


def training_sentences(chunks: Iterable[str]) -> Iterator[str]:
    """Lines of text for sentencepiece: non-blank, cut at a literal "<unk>" (which is not text
    to learn pieces from), and at most _SP_MAX_SENTENCE characters."""
    for chunk in chunks:
        for line in chunk.split("\n"):
            for part in line.split("<unk>"):
                for i in range(0, len(part), _SP_MAX_SENTENCE):
                    piece = part[i : i + _SP_MAX_SENTENCE]
                    if piece and not piece.isspace():
                        yield piece


class SentencePieceTokenizer(Tokenizer):
    """bpe and unigram subwords through sentencepiece, with byte fallback.

    Ids 0-3 are sentencepiece's own pad/bos/eos/unk, so they mean what they mean at every
    level. The model is sentencepiece's model file (a protobuf: loading it runs nothing).
    """

    def __init__(self, config: TokenizerConfig, model: bytes, sample_chars: int = 0):
        super().__init__(config)
        import sentencepiece as spm

        self.model, self.sample_chars = model, sample_chars
        try:
            self.sp = spm.SentencePieceProcessor(model_proto=model)
        except (RuntimeError, OSError) as e:
            raise TokenizerError(f"sentencepiece model cannot be read ({e})") from None
        ids = (self.sp.pad_id(), self.sp.bos_id(), self.sp.eos_id(), self.sp.unk_id())
        if ids != (PAD, SOS, EOS, UNK):
            raise TokenizerError(f"sentencepiece model has special ids {ids}, not 0-3")

    @property
    def level(self) -> Level:  # type: ignore[override]
        return self.config.level

    @property
    def vocab_size(self) -> int:
        return int(self.sp.get_piece_size())

    @classmethod
    def train(
        cls, config: TokenizerConfig, sentences: Iterable[str], sample_chars: int = 0
    ) -> SentencePieceTokenizer:
        import sentencepiece as spm

        out = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(sentences), model_writer=out, **_sp_trainer_args(config)
            )
        except RuntimeError as e:
            raise TokenizerError(_training_error(config, str(e))) from None
        return cls(config, out.getvalue(), sample_chars)

    def piece(self, token_id: int) -> str:
        if token_id < N_SPECIALS:
            return SPECIALS[token_id]
        return str(self.sp.id_to_piece(token_id)).replace("\u2581", " ")

    def encode_units(self, units: Sequence[str]) -> np.ndarray:
        if "<unk>" not in "\n".join(units):  # one scan in C ("\n" is not in "<unk>")
            return self._ids(list(units), marks=True)
        # a literal "<unk>" is the <unk> id: encode the text around it, then put the ids in
        parts = [u.split("<unk>") for u in units]
        per_unit = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
        ids, lengths = self._ids(list(itertools.chain.from_iterable(parts)), False, True)
        seg_start = np.cumsum(lengths) - lengths  # where each segment's ids begin
        last = np.cumsum(per_unit) - 1  # last segment of each unit
        seg_unit = np.repeat(np.arange(len(units)), per_unit)
        # marks in reading order: <sos>/<unk> before each segment, <eos> after each unit
        seg_slot = np.arange(len(seg_unit)) + seg_unit
        eos_slot = last + np.arange(len(units)) + 1
        at = np.empty(len(seg_unit) + len(units), dtype=np.int64)
        what = np.empty_like(at)
        at[seg_slot], at[eos_slot] = seg_start, seg_start[last] + lengths[last]
        first = np.ones(len(seg_unit), dtype=bool)
        first[1:] = seg_unit[1:] != seg_unit[:-1]
        what[seg_slot], what[eos_slot] = np.where(first, SOS, UNK), EOS
        return np.insert(ids, at, what)

    def _ids(self, texts: list[str], marks: bool, lengths: bool = False) -> Any:
        """Batched sentencepiece encode, as one flat int64 array (with <sos>/<eos> when
        ``marks``), and optionally the number of ids of each text."""
        if self._buffers_work:  # one int32 buffer per text, joined as bytes: no Python ints
            buffers = self._buffers(texts, marks)
            flat = np.frombuffer(b"".join(buffers), dtype=np.int32).astype(np.int64)
            n = np.fromiter((memoryview(b).nbytes // 4 for b in buffers), np.int64, len(texts))
        else:  # lists of ints, joined by one fromiter
            lists = self.sp.encode(texts, out_type=int, add_bos=marks, add_eos=marks)
            n = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
            flat = np.fromiter(itertools.chain.from_iterable(lists), np.int64, int(n.sum()))
        return (flat, n) if lengths else flat

    def _buffers(self, texts: list[str], marks: bool) -> list[Any]:
        """sentencepiece's batched encode to raw int32 buffers (0.2.2 and later), which its
        public ``out_type="numpy"`` wraps one array at a time: the wrapping costs a tenth."""
        batch = self.sp._processor._EncodeAsBufferBatch
        # (texts, threads, pool, sampling, nbest, alpha, add_bos, add_eos, reverse)
        return batch(texts, -1, None, False, -1, 0.0, marks, marks, False)

    @functools.cached_property
    def _buffers_work(self) -> bool:
        """Whether ``_buffers`` exists here and gives exactly the ids of the public encode."""
        probe = ["a b\nc", "\u00e9\u4e2d\U0001f600 <x>", " "]
        try:
            got = [np.frombuffer(b, dtype=np.int32).tolist() for b in self._buffers(probe, True)]
        except Exception:  # an older sentencepiece: no such method, or another signature
            return False
        return got == self.sp.encode(probe, out_type=int, add_bos=True, add_eos=True)

    def decode(self, ids: Iterable[int]) -> str:
        out: list[str] = []
        run: list[int] = []
        for i in ids:
            i = int(i)
            if i > UNK:
                run.append(i)
                continue
            if run:
                out.append(self.sp.decode(run))
                run = []
            if i == EOS:
                out.append("\n")
            elif i == UNK:
                out.append(SPECIALS[UNK])
        if run:
            out.append(self.sp.decode(run))
        return "".join(out)

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "sample_chars": self.sample_chars}

    def _state(self) -> dict[str, Any]:
        return {
            "model_file": TOKENIZER_MODEL,
            "model_hash": hashlib.blake2b(self.model, digest_size=16).hexdigest(),
            "sample_chars": self.sample_chars,
        }

    def save(self, folder: Path) -> None:
        write_bytes_atomic(Path(folder) / TOKENIZER_MODEL, self.model)
        super().save(folder)

    @classmethod
    def from_state(cls, config: TokenizerConfig, state: dict[str, Any], folder: Path) -> Tokenizer:
        path = Path(folder) / TOKENIZER_MODEL
        try:
            model = path.read_bytes()
        except FileNotFoundError:
            raise TokenizerError(f"sentencepiece model missing: {path}") from None
        if hashlib.blake2b(model, digest_size=16).hexdigest() != state["model_hash"]:
            raise TokenizerError(f"{path} is not the model {TOKENIZER_JSON} was saved with")
        return cls(config, model, int(state.get("sample_chars", 0)))


def _training_error(config: TokenizerConfig, message: str) -> str:
    need = re.search(r"smaller than required_chars\. \d+ vs (\d+)", message)
    if need:
        return (
            f"--vocab-size {config.vocab_size} is too small for {config.level.value} on this "
            f"text: it needs at least {need.group(1)} (256 byte pieces, the special symbols "
            "and every common character)"
        )
    return f"sentencepiece could not train a {config.level.value} model ({message.strip()})"


TOKENIZERS: dict[Level, type[Tokenizer]] = {
    Level.char: CharTokenizer,
    Level.word: WordTokenizer,
    Level.bpe: SentencePieceTokenizer,
    Level.unigram: SentencePieceTokenizer,
}


def fit_tokenizer(config: TokenizerConfig, chunks: Iterable[str]) -> Tokenizer:
    """A tokenizer for the text of ``chunks`` (subword levels train on all of it)."""
    if not config.decided:
        chunks = list(chunks)
        n_bytes = sum(len(c.encode("utf-8", "surrogatepass")) for c in chunks)
        config = resolve_level(config, n_bytes, "".join(chunks)[: 1 << 20])
    if config.subword:
        return SentencePieceTokenizer.train(config, training_sentences(chunks))
    cls = TOKENIZERS[config.level]
    assert issubclass(cls, VocabTokenizer)
    return cls.fit(config, chunks)


def load_tokenizer(folder: Path) -> Tokenizer:
    """Rebuild a tokenizer saved by ``Tokenizer.save``; never executes anything."""
    path = Path(folder) / TOKENIZER_JSON
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        version = payload["format_version"]
        config = TokenizerConfig.from_dict(payload["config"])
    except FileNotFoundError:
        raise TokenizerError(f"tokenizer file missing: {path}") from None
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
        raise TokenizerError(f"tokenizer file is invalid ({_one_line(e)}): {path}") from None
    if type(version) is not int:
        raise TokenizerError(f"tokenizer file has no valid format version: {path}")
    if version > FORMAT_VERSION:
        raise TokenizerError(
            f"tokenizer format version {version} is newer than this charrnn reads "
            f"({FORMAT_VERSION}); upgrade charrnn: {path}"
        )
    cls = TOKENIZERS.get(config.level)
    if cls is None:
        raise TokenizerError(f"tokenizer level {config.level.value!r} is not available: {path}")
    try:
        return cls.from_state(config, payload, Path(folder))
    except (KeyError, TypeError, ValueError) as e:
        raise TokenizerError(f"tokenizer file is invalid ({_one_line(e)}): {path}") from None


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:200] or type(e).__name__
