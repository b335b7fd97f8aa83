"""Reading and normalising text, and cutting it into units.

Text is read as UTF-8 in chunks: a byte-order mark is dropped, CRLF and lone CR become LF,
and invalid bytes are an error naming the byte offset (or are replaced, on request).
A unit is what becomes one ``<sos> ... <eos>`` span in the token stream:

    line       each non-blank line
    paragraph  each block of lines between blank lines
    document   the whole text

A blank line holds only whitespace (any Unicode whitespace: an ideographic space or a
no-break space counts). A unit runs from the first character of its first non-blank line
to the last character of its last one, so it keeps its own indentation and spaces.

Files of sentences and prompts are read apart, as streams (``charrnn.lines``).
"""

from __future__ import annotations

import codecs
import functools
import itertools
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from charrnn.config import Unit
from charrnn.errors import CorpusError, TokenizerError

CHUNK_BYTES = 1 << 24  # 16 MiB: large enough to amortise, small enough to bound memory
SAMPLE_WINDOW = 1 << 20  # a subword training sample is read in windows of this many bytes
HEAD_BYTES = 1 << 20  # the start of a corpus that decides its level and unit


# [^\S\n] is whitespace other than a line break.
_BLANK_LINE = re.compile(r"\n[^\S\n]*\n")
# A run of blank lines between paragraphs; it must be followed by a non-blank character
# so that a run cut by a chunk boundary is never taken as complete.
_PARAGRAPH_SEP = re.compile(r"\n(?:[^\S\n]*\n)+(?=[^\S\n]*\S)")
_LINE_SEP = re.compile(r"\n(?:[^\S\n]*\n)*(?=[^\S\n]*\S)")
_LEADING_BLANK = re.compile(r"\A(?:[^\S\n]*\n)+")
_TRAILING_BLANK = re.compile(r"(?:\n[^\S\n]*)+\Z")


_SURROGATE = re.compile("[\ud800-\udfff]")


def has_surrogate(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def check_text(text: str, what: str) -> str:
    """``text`` as a user gave it, refused if it holds a lone surrogate: what an undecodable
    byte of a command-line argument becomes (Python's surrogateescape), or a code point UTF-8
    cannot write (the tokenizers use such code points as marks of their own)."""
    m = _SURROGATE.search(text)
    if m is None:
        return text
    code, at = ord(m.group()), m.start()
    if 0xDC80 <= code <= 0xDCFF:
        offset = len(text[:at].encode("utf-8", "surrogateescape"))
        raise TokenizerError(
            f"{what} is not valid UTF-8 (byte 0x{code - 0xDC00:02x} at offset {offset})"
        )
    raise TokenizerError(
        f"{what} holds a lone surrogate (U+{code:04X} at character {at}), which is not text"
    )


def check_binary(raw: bytes, offset: int, name: Path | str, what: str = "corpus") -> None:
    """Refuse a NUL byte, which text never holds, giving its offset in the file."""
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise CorpusError(f"{what} looks binary (NUL byte at offset {offset + nul}): {name}")


def _bad_utf8(path: Path | str, at: int) -> CorpusError:
    return CorpusError(
        f"invalid UTF-8 at byte offset {at} of {path} (pass --replace-errors to replace bad bytes)"
    )


def iter_text(
    path: Path,
    errors: str = "strict",
    chunk_bytes: int = CHUNK_BYTES,
    name: Path | str | None = None,
    hasher: Any = None,
) -> Iterator[str]:
    """Yield the normalised text of a file in chunks (bounded memory whatever the file size);
    ``hasher`` (hashlib's) is fed every byte read, so that it hashes what was read. A NUL
    byte anywhere is a CorpusError (binary), as is bad UTF-8; both name the file as ``name``."""
    with Path(path).open("rb") as f:
        chunks = iter(lambda: f.read(chunk_bytes), b"")
        yield from decode_chunks(chunks, errors, name or path, hasher)


def decode_chunks(
    chunks: Iterable[bytes], errors: str, name: Path | str, hasher: Any = None, whole: bool = True
) -> Iterator[str]:
    """Normalised text of raw chunks: the BOM dropped, CRLF and CR made LF. ``whole``: the
    chunks are the whole text (else its end may cut a character, and is not decoded)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors=errors)
    offset = 0  # bytes handed to the decoder so far
    pending_cr = False  # a chunk ended in "\r": it may be half of a CRLF
    first = True
    for raw in itertools.chain(chunks, [b""] if whole else []):
        final = not raw
        check_binary(raw, offset, name)
        if hasher is not None:
            hasher.update(raw)
        try:
            text = decoder.decode(raw, final=final)
        except UnicodeDecodeError as e:
            raise _bad_utf8(name, offset - len(decoder.getstate()[0]) + e.start) from None
        offset += len(raw)
        if first and text:
            text = text.removeprefix("\ufeff")
            first = False
        if pending_cr:
            text = "\r" + text
        pending_cr = text.endswith("\r") and not final
        if pending_cr:
            text = text[:-1]
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if text:
            yield text


def iter_sample(
    path: Path,
    n_chars: int,
    errors: str = "strict",
    window: int = SAMPLE_WINDOW,
    spans: Sequence[tuple[float, float]] = ((0.0, 1.0),),
) -> Iterator[str]:
    """About ``n_chars`` characters of a file, in whole lines, from windows spread evenly over
    ``spans`` of it (shares of its bytes; the whole file when it is that small): what a
    subword tokenizer is trained on."""
    size = Path(path).stat().st_size
    bounds = [(int(lo * size), int(hi * size)) for lo, hi in spans]
    total = sum(hi - lo for lo, hi in bounds)
    if size <= n_chars and total >= size:
        yield from iter_text(path, errors)
        return
    window = max(1, min(window, n_chars, total))
    k = -(-min(n_chars, total) // window)
    with Path(path).open("rb") as f:
        for i in range(k):
            start, end = _placed(bounds, i * (total - window) // max(1, k - 1))
            f.seek(start)
            raw = f.read(min(window, end - start))
            lo = raw.find(b"\n") + 1 if start > 0 else 0  # from the first whole line
            hi = raw.rfind(b"\n") + 1 if start + len(raw) < size else len(raw)
            if (lo <= 0 and start > 0) or hi <= lo:
                continue  # no whole line in this window
            try:
                text = raw[lo:hi].decode("utf-8", errors)
            except UnicodeDecodeError as e:
                raise _bad_utf8(path, start + lo + e.start) from None
            if start == 0:
                text = text.removeprefix("\ufeff")
            yield text.replace("\r\n", "\n").replace("\r", "\n")


def _placed(bounds: list[tuple[int, int]], offset: int) -> tuple[int, int]:
    """The byte ``offset`` bytes into the stretches ``bounds`` read as one, and the end of
    the stretch that holds it."""
    for lo, hi in bounds:
        if offset < hi - lo:
            return lo + offset, hi
        offset -= hi - lo
    return bounds[-1][1], bounds[-1][1]


def resolve_unit(unit: Unit, sample: str) -> Unit:
    """``auto`` becomes ``paragraph`` when the text has blank lines, else ``line``."""
    if unit is not Unit.auto:
        return unit
    return Unit.paragraph if _BLANK_LINE.search(sample) else Unit.line


def _separator(unit: Unit) -> re.Pattern[str] | None:
    return {Unit.line: _LINE_SEP, Unit.paragraph: _PARAGRAPH_SEP}.get(unit)


def split_units(text: str, unit: Unit) -> list[str]:
    """Cut a whole text into its units; blank units are dropped."""
    assert unit is not Unit.auto, "resolve the unit first"
    sep = _separator(unit)
    parts = [text] if sep is None else sep.split(text)
    parts = [_TRAILING_BLANK.sub("", _LEADING_BLANK.sub("", p)) for p in parts]
    return [p for p in parts if p.strip()]


# -- streaming units ----------------------------------------------------------------------

# Whitespace other than "\n" (what str.isspace() accepts), for the vectorised line scan.
_INLINE_SPACES = "\t\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680" + "".join(
    chr(c) for c in (*range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F, 0x3000)
)
_LAST_SPACE = 0x3000
_SCAN_STEPS = 64  # leading spaces scanned in numpy; longer runs are finished by a regex
_INLINE_RUN = re.compile(r"[^\S\n]*")


@functools.cache
def _space_table() -> np.ndarray:
    table = np.zeros(_LAST_SPACE + 1, dtype=bool)
    table[[ord(c) for c in _INLINE_SPACES]] = True
    return table


def code_points(text: str) -> np.ndarray:
    """The code points of ``text``: uint8 when it is Latin-1 (the cheap case), else uint32."""
    if text.isascii():
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    try:
        return np.frombuffer(text.encode("latin-1"), dtype=np.uint8)
    except UnicodeEncodeError:
        return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


@dataclass
class UnitBlock:
    """Whole units (and at most one piece of an unfinished one at each end) of a text buffer.

    Span ``i`` is ``text[starts[i]:ends[i]]``. ``continues``: the first span goes on with the
    last span of the previous block; ``open``: the last span goes on in the next block. Pieces
    are cut only at the start of a non-blank line, so that encoding them one after the other
    gives the tokens of the whole unit (char and word levels; see the tokenizers).
    """

    text: str
    codes: np.ndarray  # (len(text),) code points, from code_points()
    starts: np.ndarray  # (U,) int64
    ends: np.ndarray  # (U,) int64
    continues: bool = False
    open: bool = False

    def __len__(self) -> int:
        return len(self.starts)

    def units(self) -> list[str]:
        return [self.text[s:e] for s, e in zip(self.starts.tolist(), self.ends.tolist())]

    def char_counts(self) -> np.ndarray:
        return self.ends - self.starts

    def byte_counts(self) -> np.ndarray:
        """UTF-8 bytes of each span."""
        chars = self.ends - self.starts
        if self.text.isascii() or not len(chars):
            return chars
        c = self.codes
        extra = np.zeros(len(c) + 1, dtype=np.uint8)  # bytes past the first of each char
        extra[:-1] = c >= 0x80
        if c.dtype != np.uint8:
            extra[:-1] += c >= 0x800
            extra[:-1] += c >= 0x10000
        edges = np.stack([self.starts, self.ends], axis=1).ravel()  # spans are never empty
        return chars + np.add.reduceat(extra, edges, dtype=np.int64)[::2]


@dataclass
class _Lines:
    """The lines of a buffer: where each starts and ends, and whether it has a non-space."""

    starts: np.ndarray  # (L,) int64
    ends: np.ndarray  # (L,) int64: the position of its "\n", or the end of the buffer
    content: np.ndarray  # (L,) bool

    @classmethod
    def scan(cls, text: str, codes: np.ndarray) -> _Lines:
        nl = np.flatnonzero(codes == 10)
        starts = np.concatenate([[0], nl + 1])
        ends = np.append(nl, len(codes))
        first = starts.copy()  # first character of the line that is not a space
        todo = np.flatnonzero(first < ends)
        small = codes.dtype == np.uint8
        table = _space_table()
        for _ in range(_SCAN_STEPS):
            c = codes[first[todo]]
            space = table[c] if small else (c <= _LAST_SPACE) & table[np.minimum(c, _LAST_SPACE)]
            todo = todo[space]
            first[todo] += 1
            todo = todo[first[todo] < ends[todo]]
            if not len(todo):
                break
        for i in todo.tolist():  # a very long run of leading spaces
            first[i] = min(ends[i], _INLINE_RUN.match(text, int(first[i])).end())
        return cls(starts, ends, first < ends)


def _unit_lines(lines: _Lines, lo: int, hi: int, unit: Unit) -> tuple[np.ndarray, np.ndarray]:
    """First and last line of each unit made of lines [lo, hi)."""
    content = lines.content[lo:hi]
    idx = np.flatnonzero(content) + lo
    if unit is Unit.line or not len(idx):
        return idx, idx
    if unit is Unit.document:
        return idx[:1], idx[-1:]
    # paragraphs: runs of consecutive non-blank lines
    new = np.flatnonzero(np.diff(idx) > 1)
    return np.append(idx[:1], idx[new + 1]), np.append(idx[new], idx[-1])


def _complete_lines(lines: _Lines, unit: Unit, final: bool) -> int:
    """How many leading lines hold only finished units (the rest is carried over)."""
    n = len(lines.starts)
    if final:
        return n
    if unit is Unit.line:
        return n - 1  # the last line may go on in the next chunk
    if unit is Unit.paragraph:
        blank = np.flatnonzero(~lines.content[: n - 1])  # a finished blank line ends one
        return int(blank[-1]) + 1 if len(blank) else 0
    return 0


def _open_piece(lines: _Lines, lo: int) -> tuple[int, int] | None:
    """Lines [first, last) of the unfinished unit in lines [lo, ...) that can be handed out
    now: up to its last non-blank line, which stays for the next chunk."""
    content = np.flatnonzero(lines.content[lo:]) + lo
    if len(content) < 2:
        return None
    return int(content[0]), int(content[-1])


def iter_unit_blocks(
    chunks: Iterable[str], unit: Unit, max_open: int | None = None
) -> Iterator[UnitBlock]:
    """Cut a stream of text chunks into blocks of units, exactly as ``split_units`` would.

    An unfinished unit is carried into the next chunk. Once the carried text is longer than
    ``max_open`` characters, the unit's finished lines are handed out as a piece of it (cut at
    the start of a non-blank line), so memory is bounded by the chunk size plus the longest
    line rather than the longest unit.
    """
    assert unit is not Unit.auto, "resolve the unit first"
    carry, continuing = "", False  # continuing: the carry is the rest of a unit handed out
    end = object()
    for chunk in itertools.chain(chunks, [end]):
        final = chunk is end
        text = carry if final else carry + chunk  # type: ignore[operator]
        if not text:
            continue
        codes = code_points(text)
        lines = _Lines.scan(text, codes)
        done = _complete_lines(lines, unit, final)
        first, last = _unit_lines(lines, 0, done, unit)
        starts, ends = lines.starts[first], lines.ends[last]
        keep = int(lines.starts[done]) if done < len(lines.starts) else len(text)
        block = UnitBlock(text, codes, starts, ends, continues=continuing and len(starts) > 0)
        continuing = continuing and not len(starts)
        piece = None
        if not final and max_open is not None and unit is not Unit.line:
            piece = _open_piece(lines, done) if len(text) - keep > max_open else None
        if piece is not None:
            begin, keep = int(lines.starts[piece[0]]), int(lines.starts[piece[1]])
            assert not continuing or begin == 0, "a carried piece starts the buffer"
            block.continues = block.continues or continuing
            block.starts, block.ends = np.append(starts, begin), np.append(ends, keep)
            block.open = continuing = True
        if len(block):
            yield block
        carry = text[keep:]


def iter_units(chunks: Iterable[str], unit: Unit) -> Iterator[list[str]]:
    """Cut a stream of text chunks into lists of complete units.

    A unit that straddles a chunk boundary is carried into the next chunk, so memory is
    bounded by the chunk size plus the longest unit.
    """
    for block in iter_unit_blocks(chunks, unit):
        yield block.units()
