"""Streaming a corpus into token and unit files, in memory bounded by the chunk size.

    text file -> chunks (text.iter_text) -> blocks of units (text.iter_unit_blocks)
              -> ids (Tokenizer.encode_block) -> tokens.bin (raw uint16/uint32, written
                                                 by a thread while the next block encodes)
                                              -> unit rows -> units.npy

How each level gets its vocabulary:

    char      a first pass counts code points with numpy, then one pass encodes
    word      one pass gives each word an id when first seen and counts it; the token file
              is then rewritten once with the ranked ids (splitting words is the slow part,
              so it is done once)
    subword   sentencepiece is trained on a bounded sample of the corpus, then one pass
    grown     (fine-tuning) a base's char or word vocabulary and the symbols a first pass
              counts that it lacks, then one pass; a base's subword model as it is, one pass
"""

from __future__ import annotations

import hashlib
import os
import queue
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from charrnn.config import Level, TokenizerConfig, Unit
from charrnn.data.split import trained_spans, trained_text
from charrnn.errors import CorpusError
from charrnn.text import UnitBlock, iter_sample, iter_text, iter_unit_blocks
from charrnn.tokenizers import (
    N_SPECIALS,
    SOS,
    UNK,
    CharTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    VocabTokenizer,
    WordVocabulary,
    token_dtype,
    training_sentences,
)

TOKENS_BIN = "tokens.bin"
UNITS_NPY = "units.npy"
ENCODE_CHUNK = 1 << 22  # bytes of text at a time: arrays stay small and cache-friendly
REMAP_CHUNK = 1 << 22  # ids rewritten at a time in the word level's second step

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)
_END = np.array([0, 1, 1])  # a unit's row counts its end too: one character, one byte


class _Phases:
    """One progress bar over several passes: pass i covers [offset, offset + size)."""

    def __init__(self, progress: Progress | None, size: int, passes: float):
        self.progress, self.size, self.total = progress, size, max(1, int(size * passes))
        self.offset = 0

    def chunks(self, chunks: Iterable[str]) -> Iterator[str]:
        done = 0
        for chunk in chunks:
            yield chunk
            done += len(chunk)
            self.report(min(done, self.size))
        self.offset += self.size

    def report(self, done: int) -> None:
        if self.progress:
            self.progress(min(self.offset + done, self.total), self.total)


class _UnitIndex:
    """Unit rows [start, chars, bytes] streamed to a raw file, then saved as .npy.

    A unit handed out in pieces stays pending until its last piece; chars and bytes count one
    more for the unit's end (the line break that <eos> stands for).
    """

    def __init__(self, path: Path):
        self.path = path
        self.raw = path.with_suffix(".rows")
        self.file: BinaryIO = self.raw.open("wb")
        self.pending: np.ndarray | None = None  # (3,) the row of an unfinished unit
        self.n_rows = self.n_chars = self.n_bytes = 0

    def add(self, block: UnitBlock, sos: np.ndarray) -> None:
        """The rows of ``block``, whose new units start at ``sos`` (absolute positions)."""
        chars, nbytes = block.char_counts(), block.byte_counts()
        if block.continues:
            assert self.pending is not None
            self.pending[1:] += (chars[0], nbytes[0])
            chars, nbytes = chars[1:], nbytes[1:]
            if len(chars) or not block.open:  # the unit ends in this block
                self._write(self.pending[None] + _END)
                self.pending = None
        assert len(sos) == len(chars), "one <sos> per unit that starts in the block"
        rows = np.stack([sos, chars, nbytes], axis=1).astype(np.int64)
        if block.open and len(rows):
            self.pending, rows = rows[-1].copy(), rows[:-1]
        self._write(rows + _END)

    def _write(self, rows: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(rows, dtype=np.int64).tobytes())
        self.n_rows += len(rows)
        self.n_chars += int(rows[:, 1].sum())
        self.n_bytes += int(rows[:, 2].sum())

    def finish(self) -> None:
        """Write units.npy: the .npy header, then the rows as they are (no memory map, whose
        pages would count as this process's memory)."""
        assert self.pending is None, "the last unit was finished"
        self.file.close()
        header = {"descr": "<i8", "fortran_order": False, "shape": (self.n_rows, 3)}
        with self.path.open("wb") as out, self.raw.open("rb") as rows:
            np.lib.format.write_array_header_1_0(out, header)
            shutil.copyfileobj(rows, out, 1 << 22)
        self.raw.unlink()


class _Writer:
    """Appends arrays to a file from a thread of its own, so that encoding the next block
    overlaps writing the last (a write releases the GIL). At most ``depth`` arrays wait, so
    memory stays bounded; a failed write is raised in the caller at its next call."""

    def __init__(self, file: BinaryIO, depth: int = 2):
        self.file = file
        self.queue: queue.Queue[np.ndarray | None] = queue.Queue(depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="charrnn-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (array := self.queue.get()) is not None:
            if self.error is None:  # after a failure, only drain the queue
                try:
                    self.file.write(array.data)
                except BaseException as e:  # handed to the caller
                    self.error = e

    def write(self, array: np.ndarray) -> None:
        self._raise()
        self.queue.put(np.ascontiguousarray(array))

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.queue.put(None)
        self.thread.join()
        if exc[0] is None:
            self._raise()


def _stream(
    encode: Callable[[UnitBlock], np.ndarray],
    blocks: Iterable[UnitBlock],
    tokens: BinaryIO,
    index: _UnitIndex,
    dtype: np.dtype,
) -> dict[str, int]:
    """Encode each block, append its ids to ``tokens`` and its rows to ``index``."""
    n_tokens = n_unk = 0
    with _Writer(tokens) as writer:
        for block in blocks:
            stream = encode(block)
            index.add(block, np.flatnonzero(stream == SOS) + n_tokens)
            n_unk += int(np.count_nonzero(stream == UNK))
            writer.write(stream.astype(dtype, copy=False))
            n_tokens += len(stream)
    return {"n_tokens": n_tokens, "n_unk": n_unk}


def encode_corpus(
    corpus: Path,
    config: TokenizerConfig,
    unit: Unit,
    errors: str,
    folder: Path,
    progress: Progress | None = None,
    chunk_bytes: int = ENCODE_CHUNK,
    name: Path | None = None,
    base: Tokenizer | None = None,
) -> tuple[Tokenizer, dict[str, Any]]:
    """Write ``tokens.bin`` and ``units.npy`` for ``corpus`` (``name`` in errors) into
    ``folder``, with a tokenizer fitted to it, or with ``base``'s grown by the text's new
    symbols (``grow``).

    Returns the tokenizer (not yet saved) and the dataset's figures, with the content hash of
    the text that was encoded (``hash``: taken in the same pass, so the figures are those of
    the text the hash names, even if the file was rewritten meanwhile).
    """
    size, name = corpus.stat().st_size, name or corpus
    folder = Path(folder)
    index = _UnitIndex(folder / UNITS_NPY)
    encoded = hashlib.blake2b(digest_size=16)

    def text(hasher: Any) -> Iterator[str]:
        return iter_text(corpus, errors, chunk_bytes, name, hasher)

    def blocks(phases: _Phases) -> Iterator[UnitBlock]:
        return iter_unit_blocks(phases.chunks(text(encoded)), unit, max_open=chunk_bytes)

    extra: dict[str, Any] = {}
    before, counted = _identity(corpus), hashlib.blake2b(digest_size=16)
    if config.level is Level.word and base is None:
        phases = _Phases(progress, size, 1.1)
        tokenizer, stats = _encode_words(config, blocks(phases), folder, index, phases)
    else:
        if base is not None:
            phases = _Phases(progress, size, 1.0 if config.subword else 2.0)
            # grow reads one of these (by level), a pass of its own as fitting is
            counts = iter_unit_blocks(phases.chunks(text(counted)), unit, max_open=chunk_bytes)
            tokenizer = grow(base, config, phases.chunks(text(counted)), counts)
            extra["added_symbols"] = tokenizer.vocab_size - base.vocab_size
        elif config.subword:
            phases = _Phases(progress, size, 1.0)
            tokenizer = _train_subwords(config, corpus, unit, errors)
            extra["tokenizer_sample_chars"] = tokenizer.sample_chars
        else:
            phases = _Phases(progress, size, 2.0)
            tokenizer = CharTokenizer.fit(config, phases.chunks(text(counted)))
        dtype = token_dtype(tokenizer.vocab_size)
        with (folder / TOKENS_BIN).open("wb") as f:
            stats = _stream(tokenizer.encode_block, blocks(phases), f, index, dtype)
        stats["dtype"] = dtype.name
        # the vocabulary was fitted on a pass of its own: it must have read the same text
        same = counted.digest() == encoded.digest() if config.level is Level.char else None
        _check_unchanged(corpus, name, before, same)
    index.finish()
    stats.update(n_units=index.n_rows, n_chars=index.n_chars, n_bytes=index.n_bytes, **extra)
    return tokenizer, {**stats, "hash": encoded.hexdigest()}


def _check_unchanged(
    corpus: Path, name: Path, before: tuple[int, int, int], same_hash: bool | None
) -> None:
    """Refuse a corpus rewritten between its passes: by their hashes where both passes read
    it whole (``same_hash``), else by the file's identity before and after."""
    same = same_hash if same_hash is not None else _identity(corpus) == before
    if not same:
        raise CorpusError(f"corpus {name} changed while it was read; run again")


def _identity(path: Path) -> tuple[int, int, int]:
    """What tells that a file was rewritten (a sample read before the encoding pass, as a
    subword tokenizer's, cannot be hashed like the whole)."""
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ino


def grow(
    base: Tokenizer, config: TokenizerConfig, text: Iterable[str], blocks: Iterable[UnitBlock]
) -> Tokenizer:
    """``base`` with the symbols of a text it lacks (char and word levels), ranked and kept as
    fitting ranks them (``config.min_freq``), up to ``config.max_vocab`` symbols in all, the
    base's included. A subword base is kept as it is: byte fallback reads any text. Only the
    pass a level counts with is read: ``text`` (char) or ``blocks`` (word)."""
    if not isinstance(base, VocabTokenizer):
        return base
    own = replace(config, max_vocab=None)
    if config.level is Level.word:
        vocab = WordVocabulary(own)
        for block in blocks:
            vocab.encode_block(block)  # counts the words as it numbers them
        fitted: VocabTokenizer = vocab.finish()[0]
    else:
        fitted = CharTokenizer.fit(own, text)
    return base.grown(fitted.pieces[N_SPECIALS:], config.max_vocab)


def _train_subwords(
    config: TokenizerConfig, corpus: Path, unit: Unit, errors: str
) -> SentencePieceTokenizer:
    """A sentencepiece model learned from a sample of ``corpus``: the whole text when it is
    that small, else windows spread over it; never from the text ``config`` holds out."""
    held = config.held_out, config.held_split
    sample: Iterable[str]
    if config.held_out and corpus.stat().st_size <= config.sample_chars:
        sample = [trained_text("".join(iter_text(corpus, errors)), unit, *held)]
    else:
        sample = iter_sample(corpus, config.sample_chars, errors, spans=trained_spans(*held))
    seen = 0

    def counted(chunks: Iterable[str]) -> Iterator[str]:
        nonlocal seen
        for chunk in chunks:
            seen += len(chunk)
            yield chunk

    tokenizer = SentencePieceTokenizer.train(config, training_sentences(counted(sample)))
    tokenizer.sample_chars = seen
    return tokenizer


def _encode_words(
    config: TokenizerConfig,
    blocks: Iterable[UnitBlock],
    folder: Path,
    index: _UnitIndex,
    phases: _Phases,
) -> tuple[Tokenizer, dict[str, Any]]:
    vocab = WordVocabulary(config)
    first_sight = folder / "tokens.first-sight"
    with first_sight.open("wb") as f:
        stats = _stream(vocab.encode_block, blocks, f, index, np.dtype(np.uint32))
    tokenizer, remap = vocab.finish()
    dtype = token_dtype(tokenizer.vocab_size)
    table = remap.astype(dtype)
    n_unk, n = 0, stats["n_tokens"]
    with (folder / TOKENS_BIN).open("wb") as out:
        for lo in range(0, n, REMAP_CHUNK):
            ids = table[
                np.fromfile(first_sight, np.uint32, min(REMAP_CHUNK, n - lo), offset=lo * 4)
            ]
            n_unk += int(np.count_nonzero(ids == UNK))
            out.write(ids.tobytes())
            phases.report(int(phases.size * 0.1 * (lo + len(ids)) / max(1, n)))
    os.unlink(first_sight)
    return tokenizer, {"n_tokens": n, "n_unk": n_unk, "dtype": dtype.name}


def encode_with(
    corpus: Path,
    tokenizer: Tokenizer,
    unit: Unit,
    errors: str,
    folder: Path,
    progress: Progress | None = None,
    chunk_bytes: int = ENCODE_CHUNK,
) -> dict[str, Any]:
    """Write ``tokens.bin`` and ``units.npy`` for ``corpus`` into ``folder``, encoded by a
    tokenizer already made (a run's: its vocabulary, so unseen symbols become <unk>), in
    one pass. Returns the figures of the encoding."""
    phases = _Phases(progress, corpus.stat().st_size, 1.0)
    index = _UnitIndex(Path(folder) / UNITS_NPY)
    blocks = iter_unit_blocks(
        phases.chunks(iter_text(corpus, errors, chunk_bytes)), unit, max_open=chunk_bytes
    )
    dtype = token_dtype(tokenizer.vocab_size)
    words = 0

    def encode(block: UnitBlock) -> np.ndarray:
        nonlocal words  # whitespace-separated words: a per-word figure at every level
        words += sum(len(u.split()) for u in block.units())
        return tokenizer.encode_block(block)

    with (Path(folder) / TOKENS_BIN).open("wb") as f:
        stats: dict[str, Any] = _stream(encode, blocks, f, index, dtype)
    index.finish()
    stats.update(dtype=dtype.name, n_units=index.n_rows, n_chars=index.n_chars)
    stats.update(n_bytes=index.n_bytes, n_words=words)
    return stats
