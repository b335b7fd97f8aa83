"""Corpora that ship inside charrnn, so that a fresh install trains with no file of its own.

A corpus argument names a file, a dataset folder, or a built-in corpus; a file or folder of
that name in the current directory wins over the built-in one.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path


@dataclass(frozen=True)
class Builtin:
    name: str
    file: str  # in charrnn/corpora/
    what: str
    licence: str

    @property
    def path(self) -> Path:
        return Path(str(resources.files("charrnn") / "corpora" / self.file))


BUILTIN = {
    b.name: b
    for b in (
        Builtin(
            "shakespeare",
            "shakespeare.txt",
            "tinyshakespeare, the char-rnn classic: 40,000 lines from Shakespeare's plays",
            "public domain",
        ),
    )
}
DEFAULT = "shakespeare"  # what `charrnn train` trains on without a corpus


@dataclass(frozen=True)
class Source:
    """What a corpus argument named: the path to read, and the built-in it is, if one."""

    path: Path
    builtin: str | None = None

    def label(self) -> str:
        """How the start of a run names it."""
        return f"built-in {self.builtin}" if self.builtin else shown_path(self.path)


def resolve_corpus(corpus: str | Path | None) -> Source:
    """The text a corpus argument names (None: the default built-in)."""
    if corpus is None:
        return Source(BUILTIN[DEFAULT].path, DEFAULT)
    path = Path(corpus)
    if path.exists() or str(corpus) not in BUILTIN:
        return Source(path)
    return Source(BUILTIN[str(corpus)].path, str(corpus))


def shown_path(path: Path) -> str:
    """A path as a person reads it: relative to the current folder when inside it, with ~ for
    the home folder, absolute otherwise."""
    path = Path(path).absolute()
    for base, prefix in ((Path.cwd(), ""), (Path.home(), "~/")):
        try:
            rel = path.relative_to(base)
        except ValueError:
            continue
        return prefix + str(rel) if str(rel) != "." else (prefix.rstrip("/") or ".")
    return str(path)
