"""The command line: parse options, call the library, print. Nothing else lives here.

app.py        the Typer app; a user's mistake becomes one line on stderr
options.py    options shared by several commands, and building configs from them
tokenize.py, train.py, sample.py, score.py, runs.py, info.py    one module per command
format.py, heatmap.py, charts.py    how numbers, scores and loss curves are shown
"""

from __future__ import annotations

from charrnn.cli.app import app

__all__ = ["app", "main"]


def main(started: float | None = None) -> None:
    """Run the command line; ``started`` is when the process started (a time budget counts
    from it)."""
    # One program name whether started as `charrnn` or `python -m charrnn`: shell completion
    # registers for it and reads its _CHARRNN_COMPLETE variable.
    app(prog_name="charrnn", obj=started)
