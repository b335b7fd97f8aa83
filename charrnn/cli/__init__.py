"""The command line: parse options, call the library, print. Nothing else lives here.

app.py        the Typer app and its commands, in the order the help lists them
output.py     stdout and stderr; a user's mistake becomes one line on stderr
options.py    options shared by several commands, and building configs from them
tokenize.py, train.py, sample.py, score.py, runs.py, info.py, corpora.py
              one module per command
format.py, heatmap.py, charts.py    how numbers, scores and loss curves are shown
"""

from __future__ import annotations

import sys
import time

from charrnn.cli.app import app
from charrnn.cli.options import Invocation

__all__ = ["app", "main"]


def main(started: float | None = None) -> None:
    """Run the command line; ``started`` is when the process started (a time budget counts
    from it)."""
    args = sys.argv[1:]
    invocation = Invocation(time.monotonic() if started is None else started, tuple(args))
    # One program name whether started as `charrnn` or `python -m charrnn`: shell completion
    # registers for it and reads its _CHARRNN_COMPLETE variable.
    app(args=args, prog_name="charrnn", obj=invocation)
