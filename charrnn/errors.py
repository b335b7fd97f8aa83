"""The library's own exceptions. Each message is one line a user can act on."""


class CharRNNError(Exception):
    """Base class: the CLI prints the message and exits non-zero, no traceback."""


class CorpusError(CharRNNError):
    """The corpus cannot be read or is unusable (missing, empty, binary, bad UTF-8, too short)."""


class ConfigError(CharRNNError):
    """An option or a combination of options is out of range."""


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
