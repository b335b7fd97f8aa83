"""charrnn: recurrent language models on plain text, at char, word and subword level.

    import charrnn

    model = charrnn.load("tinyshakespeare")      # a trained run (None: the latest)
    print(model.sample(prompt="ROMEO:", temperature=0.8))
    print(model.score("To be, or not to be").log_prob)
    model = charrnn.train("corpus.txt", hidden=256, max_steps=500)

See ``charrnn.api`` for the whole API.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from charrnn.version import __version__

__all__ = ["Model", "__version__", "load", "train"]

if TYPE_CHECKING:
    from charrnn.api import Model, load, train


def __getattr__(name: str) -> Any:
    # Importing torch takes seconds: `import charrnn` (and `charrnn --version`) stay light,
    # and the API is imported when it is first used.
    if name in __all__ and name != "__version__":
        return getattr(importlib.import_module("charrnn.api"), name)
    raise AttributeError(f"module 'charrnn' has no attribute {name!r}")
