"""A corpus opened once: checked, its head read, a stream copied to a file of its own.

    open_corpus(path)   a regular file: checked (missing, a folder, empty, binary, bad UTF-8)
                        and its first MiB read, from which the level and the unit are decided;
                        a pipe (/dev/stdin, <(...)) or a device: read once, into a file in the
                        cache folder, hashed as it is copied (Corpus.close deletes the copy);
                        a named FIFO: refused (a writer may feed it again and again)

The passes that encode the corpus then read ``Corpus.path`` (text.iter_text), and the whole
text is checked as it is encoded: "empty" and "binary" are decided on all of it.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from charrnn.errors import CorpusError
from charrnn.text import CHUNK_BYTES, HEAD_BYTES, check_binary, decode_chunks, iter_text


def check_corpus_path(path: Path, errors: str = "strict") -> Path:
    """The corpus as a readable, non-empty, non-binary file; otherwise a CorpusError."""
    open_corpus(path, errors).close()
    return Path(path)


@dataclass
class Corpus:
    """A corpus opened once: the file its passes read (``path``; a stream is first copied to a
    file of its own), the name the user gave it, its size in bytes, its first MiB as normalised
    text (what the level and unit are decided from), and for a stream the content hash of what
    was copied."""

    path: Path
    name: Path
    size: int
    head: str = ""
    digest: str | None = None
    copied: bool = False

    def close(self) -> None:
        """Delete the copy of a stream (a file is left as it is)."""
        if self.copied:
            self.path.unlink(missing_ok=True)


def open_corpus(
    path: Path, errors: str = "strict", spool: Path | None = None, what: str = "corpus"
) -> Corpus:
    """The corpus at ``path``, checked and its head read. A stream (a FIFO, a pipe such as
    /dev/stdin or <(...), a device) is read once, into a file in ``spool`` (without one, it is
    refused); a CorpusError says what is wrong: missing, a folder, empty, binary, bad UTF-8
    (naming the file as ``what``: the corpus, or another text)."""
    path = Path(path)
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise CorpusError(f"{what} not found: {path}") from None
    except OSError as e:
        raise CorpusError(f"cannot read {what} {path}: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise CorpusError(f"{what} is a directory, not a text file: {path}")
    if stat.S_ISREG(st.st_mode):
        corpus, head = Corpus(path, path, st.st_size), _read_head(path)
    elif stat.S_ISFIFO(st.st_mode) and os.path.exists(os.path.realpath(path)):
        raise CorpusError(  # a pipe (/dev/stdin, <(...)) names no file: it is read once
            f"{what} {path} is a named FIFO, which a writer may feed again and again; "
            "save the text to a file first"
        )
    elif spool is not None:
        corpus, head = _copy_stream(path, spool)
    else:
        raise CorpusError(f"{what} {path} is not a regular file; save it to a file first")
    whole = corpus.size <= len(head)
    try:
        if whole and not head.strip():  # a longer text is checked as a whole when encoded
            raise CorpusError(f"{what} is empty: {path}")
        check_binary(head, 0, path, what)
        corpus.head = next(decode_chunks([head], errors, path, whole=whole), "")
    except BaseException:
        corpus.close()
        raise
    return corpus


def _read_head(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(HEAD_BYTES)
    except OSError as e:
        raise CorpusError(f"cannot read corpus {path}: {e.strerror or e}") from None


def _copy_stream(path: Path, folder: Path) -> tuple[Corpus, bytes]:
    """A stream copied once into a file of ``folder``, hashed as it goes; a NUL byte stops
    it at once (/dev/zero would never end)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".stream-", suffix=".txt", dir=folder)
    copy = Corpus(Path(name), path, 0, copied=True)
    h, head = hashlib.blake2b(digest_size=16), bytearray()
    try:
        with path.open("rb") as src, os.fdopen(fd, "wb") as dst:
            while chunk := src.read(CHUNK_BYTES):
                check_binary(chunk, copy.size, path)
                h.update(chunk)
                dst.write(chunk)
                copy.size += len(chunk)
                head += chunk[: max(0, HEAD_BYTES - len(head))]
    except BaseException as e:
        copy.close()
        if isinstance(e, OSError):
            raise CorpusError(f"cannot read corpus {path}: {e.strerror or e}") from None
        raise
    copy.digest = h.hexdigest()
    return copy, bytes(head)


def read_text(path: Path, errors: str = "strict") -> str:
    """The whole normalised text of a file."""
    return "".join(iter_text(check_corpus_path(path, errors), errors))
