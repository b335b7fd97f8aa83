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
