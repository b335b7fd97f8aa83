"""Reading and normalising text, and cutting it into units.

Text is read as UTF-8 in chunks: a byte-order mark is dropped, CRLF and lone CR become LF,
and invalid bytes are an error naming the byte offset (or are replaced, on request).
A unit is what becomes one ``<sos> ... <eos>`` span in the token stream:

    line       each non-blank line
    paragraph  each block of lines between blank lines
    document   the whole text
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Iterator
from enum import Enum
from pathlib import Path

from charrnn.errors import CorpusError

CHUNK_BYTES = 1 << 24  # 16 MiB: large enough to amortise, small enough to bound memory
BINARY_PROBE_BYTES = 1 << 16


class Unit(str, Enum):
    auto = "auto"
    line = "line"
    paragraph = "paragraph"
    document = "document"


_BLANK_LINE = re.compile(r"\n[ \t\f\v]*\n")
# A run of blank lines between paragraphs; it must be followed by a non-blank character
# so that a run cut by a chunk boundary is never taken as complete.
_PARAGRAPH_SEP = re.compile(r"\n(?:[ \t\f\v]*\n)+(?=[ \t\f\v]*\S)")
_LINE_SEP = re.compile(r"\n(?:[ \t\f\v]*\n)*(?=[ \t\f\v]*\S)")
_LEADING_BLANK = re.compile(r"\A(?:[ \t\f\v]*\n)+")
_TRAILING_BLANK = re.compile(r"(?:\n[ \t\f\v]*)+\Z")


def check_corpus_path(path: Path) -> Path:
    """The corpus as a readable, non-empty, non-binary file; otherwise a CorpusError."""
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"corpus not found: {path}")
    if path.is_dir():
        raise CorpusError(f"corpus is a directory, not a text file: {path}")
    try:
        with path.open("rb") as f:
            head = f.read(BINARY_PROBE_BYTES)
    except OSError as e:
        raise CorpusError(f"cannot read corpus {path}: {e.strerror}") from None
    if not head.strip():
        raise CorpusError(f"corpus is empty: {path}")
    nul = head.find(b"\x00")
    if nul >= 0:
        raise CorpusError(f"corpus looks binary (NUL byte at offset {nul}): {path}")
    return path


def iter_text(path: Path, errors: str = "strict", chunk_bytes: int = CHUNK_BYTES) -> Iterator[str]:
    """Yield the normalised text of a file in chunks (bounded memory whatever the file size)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors=errors)
    offset = 0  # bytes handed to the decoder so far
    pending_cr = False  # a chunk ended in "\r": it may be half of a CRLF
    first = True
    with Path(path).open("rb") as f:
        while True:
            raw = f.read(chunk_bytes)
            final = not raw
            try:
                text = decoder.decode(raw, final=final)
            except UnicodeDecodeError as e:
                at = offset - len(decoder.getstate()[0]) + e.start
                raise CorpusError(
                    f"invalid UTF-8 at byte offset {at} of {path} "
                    "(pass --replace-errors to replace bad bytes)"
                ) from None
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
            if final:
                return


def read_text(path: Path, errors: str = "strict") -> str:
    """The whole normalised text of a file."""
    return "".join(iter_text(check_corpus_path(path), errors))


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


def iter_units(chunks: Iterable[str], unit: Unit) -> Iterator[list[str]]:
    """Cut a stream of text chunks into lists of complete units.

    A unit that straddles a chunk boundary is carried into the next chunk, so memory is
    bounded by the chunk size plus the longest unit.
    """
    assert unit is not Unit.auto, "resolve the unit first"
    sep = _separator(unit)
    carry = ""
    for chunk in chunks:
        buf = carry + chunk
        if sep is None:
            carry = buf
            continue
        last = None
        for last in sep.finditer(buf):  # noqa: B007 - we want the final match
            pass
        if last is None:
            carry = buf
            continue
        carry = buf[last.end() :]
        units = split_units(buf[: last.start()], unit)
        if units:
            yield units
    if carry:
        units = split_units(carry, unit)
        if units:
            yield units
