"""Files of sentences and prompts, read as streams: a file, a FIFO, /dev/stdin or ``-``.

    iter_line_chunks(path)   the lines of a sentence file (``score --file``), in chunks as they
                             arrive: a line that is not UTF-8 is named by its number, and the
                             caller decides whether to go on
    read_prompt(path)        the whole text of a prompt file (``sample --prompt-file``)

A NUL byte, which text never holds, stops either at once (/dev/zero would never end).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from charrnn.errors import CorpusError


@dataclass(frozen=True)
class Line:
    """One line of a sentence file: its number (from 1), its text without the line break,
    or None where its bytes are not valid UTF-8 (``bad_at``: the file's byte offset of the
    first bad byte)."""

    number: int
    text: str | None
    bad_at: int = -1


LINE_READ_BYTES = 1 << 20  # at most this much is read at once: a batch of lines to score


def _name(path: Path | str, what: str) -> str:
    """What errors call a file of ``what`` (sentences, a prompt), or standard input (``-``)."""
    return "standard input" if str(path) == "-" else f"{what} {path}"


def _open_source(path: Path | str, what: str) -> BinaryIO | None:
    """The file opened (None for stdin). Any readable file that is not a folder (a FIFO,
    /dev/stdin, <(...)) is read as a stream."""
    if str(path) == "-":
        if sys.stdin is None:  # started with standard input closed (0<&-)
            raise CorpusError("cannot read standard input: it is closed")
        return None
    if os.path.isdir(path):
        raise CorpusError(f"{what} is a folder: {path}")
    try:
        return open(path, "rb")  # closed by the reader
    except (FileNotFoundError, NotADirectoryError):
        raise CorpusError(f"{what} not found: {path}") from None
    except OSError as e:
        raise CorpusError(f"cannot read {what} {path}: {e.strerror or e}") from None


def _stdin_reader() -> Callable[[int], bytes | str]:
    """What reads standard input: whatever is there now (``read1``), so that a pipe's lines
    are handed on as they come rather than when it closes."""
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:
        return sys.stdin.read  # a text stream (as some test harnesses give)
    return getattr(buffer, "read1", buffer.read)


def _read_chunks(path: Path | str, what: str, read_bytes: int) -> Iterator[bytes]:
    """The bytes of a file of ``what`` (or of standard input for ``-``) as they are read: at
    most ``read_bytes`` at a time, and for a pipe only what is there now. A NUL byte, which
    text never holds, stops it at once (/dev/zero would never end); so does a failed read,
    as a CorpusError naming the file."""
    name, f = _name(path, what), _open_source(path, what)
    read = f.read1 if f is not None else _stdin_reader()
    offset = 0
    try:
        while data := read(read_bytes):
            data = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
            nul = data.find(b"\x00")
            if nul >= 0:
                raise CorpusError(f"{name} is not text (NUL byte at offset {offset + nul})")
            offset += len(data)
            yield data
    except OSError as e:
        raise CorpusError(f"cannot read {name}: {e.strerror or e}") from None
    finally:
        if f is not None:
            f.close()


def iter_line_chunks(path: Path | str, read_bytes: int = LINE_READ_BYTES) -> Iterator[list[Line]]:
    """The lines of a UTF-8 file of sentences, or of standard input for ``-``, in chunks: the
    whole lines each read brings (at most ``read_bytes``, and for a pipe only what is there
    now), so memory is bounded by the longest line and a pipe is read as it is written.

    Lines end at "\\n" (a "\\r" before it is dropped); a byte-order mark at the start is
    dropped. A line that is not valid UTF-8 comes as ``Line(number, None, offset)``; the
    caller decides whether to go on. A folder, a missing file or a failed read is a
    CorpusError naming the file.
    """
    rest, number, offset = bytearray(), 0, 0  # offset: of ``rest`` in the file
    first = True
    for data in _read_chunks(path, "sentence file", read_bytes):
        rest += data
        if first and (len(rest) >= 3 or b"\n" in rest):
            first = False
            if rest.startswith(b"\xef\xbb\xbf"):
                del rest[:3]
                offset = 3
        cut = rest.rfind(b"\n") + 1
        if cut:
            chunk, number = _decode_lines(bytes(rest[:cut]), number, offset)
            del rest[:cut]
            offset += cut
            yield chunk
    if rest:
        yield _decode_lines(bytes(rest) + b"\n", number, offset)[0]


def _decode_lines(data: bytes, number: int, offset: int) -> tuple[list[Line], int]:
    """The lines of ``data`` (whole lines, each ending in "\\n"), numbered after ``number``;
    ``offset`` is where ``data`` starts in the file."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return _decode_each(data, number, offset)
    lines = text.split("\n")[:-1]
    out = [Line(number + i, ln.removesuffix("\r")) for i, ln in enumerate(lines, 1)]
    return out, number + len(lines)


def _decode_each(data: bytes, number: int, offset: int) -> tuple[list[Line], int]:
    """As ``_decode_lines``, line by line: a bad line is marked, the others kept."""
    out, at = [], 0
    for raw in data.split(b"\n")[:-1]:
        number += 1
        try:
            out.append(Line(number, raw.decode("utf-8").removesuffix("\r")))
        except UnicodeDecodeError as e:
            out.append(Line(number, None, offset + at + e.start))
        at += len(raw) + 1
    return out, number


def bad_line(path: Path | str, line: Line) -> CorpusError:
    """The error for a line that is not valid UTF-8."""
    return CorpusError(
        f"{_name(path, 'sentence file')} is not valid UTF-8 at line {line.number} "
        f"(byte offset {line.bad_at})"
    )


def read_prompt(path: Path | str) -> str:
    """The text of a prompt file (or of standard input for ``-``), as a corpus is read: UTF-8,
    a byte-order mark dropped, CRLF as LF; a CorpusError naming the file otherwise."""
    name = _name(path, "prompt file")
    data = b"".join(_read_chunks(path, "prompt file", LINE_READ_BYTES))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(f"{name} is not valid UTF-8 at byte offset {e.start}") from None
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    if not text:
        raise CorpusError(f"{name} is empty")
    return text
