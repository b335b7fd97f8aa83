"""The interface every tokenizer has, the four special symbols, and framing units with them."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from charrnn.config import Level, TokenizerConfig
from charrnn.errors import TokenizerError
from charrnn.io import write_json_atomic
from charrnn.schema import Doc, Items, Text
from charrnn.text import UnitBlock, check_text, has_surrogate

PAD, SOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<sos>", "<eos>", "<unk>")
N_SPECIALS = len(SPECIALS)
TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_MODEL = "tokenizer.model"  # sentencepiece's own model file (subword levels)
FORMAT_VERSION = 1

# Surrogate code points never occur in text decoded from valid UTF-8, so they are safe
# in-band markers: one joins units, one stands for a corpus's literal "<unk>".
UNIT_MARK = "\ud800"
UNK_MARK = "\ud801"


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


def trim_block(stream: np.ndarray, block: UnitBlock) -> np.ndarray:
    """A framed stream of a block's spans without the marks a piece of a unit must not have."""
    return stream[1 if block.continues else 0 : len(stream) - 1 if block.open else None]


class Tokenizer(ABC):
    """Text <-> token ids. Subclasses define the pieces and how text is cut into them."""

    level: ClassVar[Level]
    # decode(a + b) == decode(a) + decode(b) for every a, b: new tokens can be decoded alone
    joins_exactly: ClassVar[bool] = False

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

    def unsettled(self, ids: Sequence[int]) -> int:
        """How many of the last ``ids`` decode to text the next id may still change (their
        text is held back while a sample is shown as it is drawn)."""
        return 0

    @abstractmethod
    def _state(self) -> dict[str, Any]:
        """What besides the config rebuilds this tokenizer (JSON-safe)."""

    def encode_block(self, block: UnitBlock) -> np.ndarray:
        """The stream of a block's spans (a piece of a unit gets no <sos> or <eos> there)."""
        return trim_block(self.encode_units(block.units()), block)

    def encode(self, text: str, what: str = "text") -> list[int]:
        """Ids of one piece of a user's text (``what``, in an error), without
        ``<sos>``/``<eos>``."""
        if not text:
            return []
        return self.encode_units([check_text(text, what)])[1:-1].tolist()

    def encode_each(self, texts: Sequence[str], what: str = "sentence") -> list[list[int]]:
        """``[encode(t) for t in texts]`` from one batched encode: for many short texts the
        calls cost more than the encoding. ``what`` names text i as "what i" in an error."""
        if not texts:
            return []
        if has_surrogate("".join(texts)):  # one scan; the texts one by one only to say which
            for i, t in enumerate(texts, 1):
                check_text(t, f"{what} {i}")
        framed = self.encode_units(texts)  # <sos> t1 <eos> <sos> t2 <eos> ...
        starts, ends = np.flatnonzero(framed == SOS), np.flatnonzero(framed == EOS)
        return [framed[s + 1 : e].tolist() for s, e in zip(starts.tolist(), ends.tolist())]

    def save(self, folder: Path) -> None:
        payload = {"format_version": FORMAT_VERSION, "config": self.config.to_dict()}
        payload.update(self._state())
        write_json_atomic(Path(folder) / TOKENIZER_JSON, payload)

    def fingerprint(self) -> str:
        """A hash of what this tokenizer is (its settings and pieces; a sentencepiece model
        through the hash of its file): the weights and token files made with it carry it, so
        that another tokenizer is never put in its place."""
        what = json.dumps({"config": self.config.to_dict(), **self._state()}, sort_keys=True)
        return hashlib.blake2b(what.encode(), digest_size=16).hexdigest()

    def summary(self) -> dict[str, Any]:
        return {"level": self.level.value, "vocab_size": self.vocab_size}

    @classmethod
    @abstractmethod
    def from_state(cls, config: TokenizerConfig, state: Doc, folder: Path) -> Tokenizer:
        """Rebuild from ``_state()`` as tokenizer.json holds it (and any files of its own in
        ``folder``), each field checked."""


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
    def from_state(cls, config: TokenizerConfig, state: Doc, folder: Path) -> Tokenizer:
        pieces = state.get("pieces", Items(Text()))
        for i, p in enumerate(pieces[N_SPECIALS:], start=N_SPECIALS):
            if not p or has_surrogate(p):
                raise state.fail(f"pieces.{i}", "is not text (empty, or a lone surrogate)")
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

    def grown(self, ranked: Sequence[str], max_vocab: int | None = None) -> VocabTokenizer:
        """This vocabulary with the pieces of ``ranked`` it lacks added after its own, in their
        order, up to ``max_vocab`` symbols in all (its own count): every id it had keeps its
        meaning, so a model trained with it goes on with the grown one (fine-tuning)."""
        new = [p for p in ranked if p not in self.index]
        if max_vocab is not None:
            new = new[: max(0, max_vocab - self.vocab_size)]
        return type(self)(self.config, [*self.pieces, *new])

    @staticmethod
    @abstractmethod
    def _count(counts: Counter[str], text: str) -> None: ...
