"""Char, word and subword tokenizers behind one interface.

Every vocabulary starts with the same four symbols, so their ids mean the same thing at
every level:

    0 <pad>   never in a stream; the ignore index of the loss
    1 <sos>   starts a unit
    2 <eos>   ends a unit
    3 <unk>   a symbol outside the vocabulary (and a corpus's literal "<unk>")

``encode_units`` turns a list of units into one stream ``<sos> u1 <eos> <sos> u2 <eos> ...``
with numpy, so that encoding runs at memory speed rather than Python-loop speed.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from charrnn.errors import TokenizerError

PAD, SOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<sos>", "<eos>", "<unk>")
N_SPECIALS = len(SPECIALS)
TOKENIZER_JSON = "tokenizer.json"
FORMAT_VERSION = 1

# Surrogate code points never occur in text decoded from valid UTF-8, so they are safe
# in-band markers: one joins units, one stands for a corpus's literal "<unk>".
_UNIT_MARK = "\ud800"
_UNK_MARK = "\ud801"


class Level(str, Enum):
    char = "char"
    word = "word"
    bpe = "bpe"
    unigram = "unigram"


@dataclass(frozen=True)
class TokenizerConfig:
    level: Level = Level.char
    min_freq: int = 1
    max_vocab: int | None = None  # including the four specials
    vocab_size: int = 4000  # subword levels only
    sample_chars: int = 10_000_000  # subword levels: how much text trains the tokenizer

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["level"] = self.level.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TokenizerConfig:
        return cls(**{**d, "level": Level(d["level"])})


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

    def encode(self, text: str) -> list[int]:
        """Ids of one piece of text, without ``<sos>``/``<eos>``."""
        if not text:
            return []
        return self.encode_units([text])[1:-1].tolist()

    def save(self, folder: Path) -> None:
        from charrnn.checkpoint import write_json_atomic

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

    @staticmethod
    def _count(counts: Counter[str], text: str) -> None:
        counts.update(text.replace("<unk>", ""))

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

    def decode(self, ids: Iterable[int]) -> str:
        out = []
        for i in ids:
            i = int(i)
            if i == EOS:
                out.append("\n")
            elif i >= UNK:
                out.append(self.pieces[i])
        return "".join(out)


# <unk>, WikiText's @-@ joiners, PTB-style clitics (do|n't, it|'s), words, line breaks and
# single punctuation marks. A hyphen, comma or period inside a word is written as WikiText
# writes it (well-known -> well @-@ known), so plain text and WikiText share one vocabulary.
_CLITIC = r"(?:n't|['’](?:s|re|ve|ll|d|m))"
_WORD_RE = re.compile(
    rf"<unk>|@[-.,]@|(?i:\w+?(?=n't\b)|{_CLITIC}\b|\w+(?:['’]\w+)*?(?={_CLITIC}\b))"
    r"|\w+(?:['’]\w+)*|\n|[^\w\s]"
)
_INWORD_JOINER = re.compile(r"(?<=\w)([-.,])(?=\w)")


def split_words(text: str) -> list[str]:
    return _WORD_RE.findall(_INWORD_JOINER.sub(r" @\1@ ", text))


_NO_SPACE_BEFORE = {".", ",", ";", ":", "!", "?", ")", "]", "}", "%", "\n", "n't", "n’t"}
_NO_SPACE_AFTER = {"(", "[", "{", "$", "\n", "#"}
_JOINERS = {"@-@": "-", "@.@": ".", "@,@": ","}


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


def detokenize(words: Sequence[str]) -> str:
    """Join words with spaces where a writer would put them."""
    out: list[str] = []
    glue = True  # no space before the next word
    quote_open = False
    for w in words:
        if w in _JOINERS:
            out.append(_JOINERS[w])
            glue = True
            continue
        if w == '"':
            quote_open = not quote_open
            if quote_open:
                out.append("" if glue else " ")
                out.append(w)
                glue = True
            else:
                out.append(w)
                glue = False
            continue
        attach = glue or w.lower() in _NO_SPACE_BEFORE or (w.startswith("'") and len(w) > 1)
        out.append(w if attach else " " + w)
        glue = w in _NO_SPACE_AFTER
    return "".join(out)


TOKENIZERS: dict[Level, type[Tokenizer]] = {Level.char: CharTokenizer, Level.word: WordTokenizer}


def fit_tokenizer(config: TokenizerConfig, chunks: Iterable[str]) -> Tokenizer:
    cls = TOKENIZERS.get(config.level)
    if cls is None or not issubclass(cls, VocabTokenizer):
        raise TokenizerError(f"level {config.level.value!r} is not available")
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
