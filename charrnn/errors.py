"""The library's own exceptions. Each message is one line a user can act on."""

import re


class CharRNNError(Exception):
    """Base class: the CLI prints the message and exits non-zero, no traceback."""


class CorpusError(CharRNNError):
    """The corpus cannot be read or is unusable (missing, empty, binary, bad UTF-8, too short)."""


class ConfigError(CharRNNError):
    """An option or a combination of options is out of range. ``field`` and ``problem`` name
    the setting and what is wrong with it, where one setting is (a file that holds the
    setting then names itself and the field: see ``schema.build``)."""

    def __init__(self, message: str, field: str | None = None, problem: str | None = None):
        super().__init__(message)
        self.field, self.problem = field, problem


class CheckpointError(CharRNNError):
    """A checkpoint is missing, unsafe, corrupt or inconsistent."""


class TokenizerError(CharRNNError):
    """Text cannot be tokenized, or a tokenizer file is invalid."""


class TrainingError(CharRNNError):
    """Training cannot go on (a non-finite loss, a locked run, a failed write)."""


def one_line(e: BaseException, limit: int = 200) -> str:
    """An exception's whole message on one line (its type where it has none), to quote in one
    of ours."""
    return " ".join(str(e).split())[:limit] or type(e).__name__


def first_line(e: BaseException, limit: int | None = 200) -> str:
    """The first line of an exception's message (its type where it has none)."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:limit]


def out_of_memory(e: BaseException) -> str | None:
    """Words for ``e`` if it says the machine (or the GPU) had no memory for what was asked
    ("not enough memory", and how much was asked for at once where torch says); else None."""
    text = str(e)
    if not isinstance(e, MemoryError) and not (
        isinstance(e, RuntimeError)
        and ("can't allocate memory" in text or "out of memory" in text.lower())
    ):
        return None
    asked = re.search(r"allocate (\d+) bytes|Tried to allocate ([\d.]+ [KMGT]iB)", text)
    if asked is None:
        return "not enough memory"
    size = f"{int(asked.group(1)) / 2**30:.1f} GiB" if asked.group(1) else asked.group(2)
    return f"not enough memory ({size} asked for at once)"
