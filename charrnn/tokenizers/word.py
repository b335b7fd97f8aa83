"""Word level: words, numbers and punctuation marks, split as WikiText writes them, and joined
back into readable text."""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from charrnn.config import Level, TokenizerConfig
from charrnn.text import UnitBlock
from charrnn.tokenizers.base import (
    EOS,
    N_SPECIALS,
    SPECIALS,
    UNIT_MARK,
    UNK,
    VocabTokenizer,
    frame_units,
    trim_block,
)

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
        self._lookup[UNIT_MARK] = -1

    @staticmethod
    def _count(counts: Counter[str], text: str) -> None:
        counts.update(split_words(text))

    def encode_units(self, units: Sequence[str]) -> np.ndarray:
        words = split_words(UNIT_MARK.join(units))
        ids = np.fromiter(map(self._lookup.__getitem__, words), dtype=np.int64, count=len(words))
        return frame_units(ids, ids < 0)

    def unsettled(self, ids: Sequence[int]) -> int:
        """A joiner last: whether it is written as its mark depends on the next word."""
        return int(bool(ids) and ids[-1] >= UNK and self.pieces[ids[-1]] in _JOINERS)

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
        text = f" {UNIT_MARK} ".join(units).replace("\n", f" {_LINE_CHUNK} ")
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
        self._ids = _FirstSight({"<unk>": UNK, UNIT_MARK: -1})
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
        stream = trim_block(np.concatenate(parts), block)
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
        if w in _JOINERS and _joins(words, k):
            out.append(_JOINERS[w])
            glue = True
            continue  # (one without a word on each side stays as written, to read back)
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


_WORD_CHAR = re.compile(r"\w")


def _joins(words: Sequence[str], k: int) -> bool:
    """Whether the joiner ``words[k]`` (@-@) stands between two words, where it is written as
    its mark (well @-@ known -> well-known), which splitting reads back as the joiner."""
    prev = words[k - 1][-1:] if k > 0 else ""
    nxt = words[k + 1][:1] if k + 1 < len(words) else ""
    return bool(_WORD_CHAR.match(prev)) and bool(_WORD_CHAR.match(nxt))


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
