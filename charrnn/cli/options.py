"""Options shared by several commands, and turning them into configs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from charrnn import defaults
from charrnn.builtin import DEFAULT
from charrnn.checkpoint import DEFAULT_ROOT, list_runs
from charrnn.config import DataConfig, Level, Stop, Unit
from charrnn.job import Job, with_options

DATA, MODEL, TRAINING, RUN, SAMPLING, OUTPUT = (
    "Data",
    "Model",
    "Training",
    "Run",
    "Sampling",
    "Output",
)


@dataclass(frozen=True)
class Invocation:
    """How the program was started: when (a time budget counts from the process's start),
    and its arguments (``train --processes`` starts more processes with them)."""

    started: float
    args: tuple[str, ...]


def invocation(ctx: typer.Context) -> Invocation | None:
    """None when a command runs inside another program (a test's runner, say)."""
    return ctx.obj if isinstance(ctx.obj, Invocation) else None


CorpusArg = Annotated[
    Path | None,
    typer.Argument(
        help="A UTF-8 text file, a folder made by tokenize, or a built-in corpus (charrnn "
        f"corpora); default: the built-in {DEFAULT}.",
        show_default=False,
    ),
]


LevelOpt = Annotated[
    Level,
    typer.Option(
        help=defaults.level_help(),
        rich_help_panel=DATA,
    ),
]


UnitOpt = Annotated[
    Unit,
    typer.Option(
        help="What one <sos> ... <eos> unit is; auto = paragraph if the text has blank "
        "lines, else line.",
        rich_help_panel=DATA,
    ),
]


MinFreqOpt = Annotated[
    int, typer.Option(min=1, help="Rarer symbols become <unk>.", rich_help_panel=DATA)
]


MaxVocabOpt = Annotated[
    int | None,
    typer.Option(
        min=5, help="Keep at most this many symbols (specials included).", rich_help_panel=DATA
    ),
]


VocabSizeOpt = Annotated[
    int,
    typer.Option(
        min=0,
        help=f"Subword vocabulary size (bpe, unigram); 0 = {defaults.SUBWORD_VOCAB} (fewer where "
        "the text cannot fill them).",
        rich_help_panel=DATA,
    ),
]


SampleCharsOpt = Annotated[
    int,
    typer.Option(
        min=1,
        help="Subword levels: characters of the corpus (spread over it) that train the tokenizer.",
        rich_help_panel=DATA,
    ),
]


ReplaceErrorsOpt = Annotated[
    bool,
    typer.Option(help="Replace invalid UTF-8 bytes instead of stopping.", rich_help_panel=DATA),
]


def complete_runs(ctx: typer.Context, incomplete: str) -> list[str]:
    """Shell completion of run names, from --checkpoints if it is given."""
    root = Path(ctx.params.get("checkpoints") or DEFAULT_ROOT)
    return [r.name for r in list_runs(root) if r.name.startswith(incomplete)]


CheckpointOpt = Annotated[
    str | None,
    typer.Option(
        "--checkpoint",
        "-c",
        help="Run name or folder; default: the latest trained run.",
        autocompletion=complete_runs,
    ),
]


CheckpointsDirOpt = Annotated[
    Path, typer.Option("--checkpoints", help="Folder that holds the runs.", rich_help_panel=RUN)
]


StopOpt = Annotated[Stop, typer.Option(help="How a sample ends: eos, halt, length or none.")]


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.", rich_help_panel=OUTPUT)]


AdaptOpt = Annotated[
    Path | None,
    typer.Option(
        "--adapt",
        help="First adapt the model to this text: one pass of dynamic evaluation (see "
        "'charrnn eval --dynamic'), on a copy; the run is unchanged.",
        show_default=False,
    ),
]


DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")]


def data_config(**options: Any) -> DataConfig:
    """The data settings of a command's options, as ``charrnn.train`` reads them."""
    return with_options(Job(), options).data


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(h|m|s)?", re.IGNORECASE)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "none"
    if seconds % 3600 == 0:
        return f"{int(seconds) // 3600}h"
    return f"{int(seconds) // 60}m" if seconds % 60 == 0 else f"{seconds:g}s"


def parse_duration(text: str | None) -> float | None:
    """'150s', '10m', '1h30m' or plain seconds -> seconds."""
    if text is None or text.lower() in ("none", "off", ""):
        return None
    pos, total = 0, 0.0
    text = text.strip()
    while pos < len(text):
        m = _DURATION.match(text, pos)
        if not m:
            raise typer.BadParameter(f"{text!r} is not a duration like 150s, 10m or 1h30m")
        total += (
            float(m.group(1)) * {"h": 3600, "m": 60, "s": 1, None: 1}[(m.group(2) or "s").lower()]
        )
        pos = m.end()
    if total <= 0:
        raise typer.BadParameter("the time budget must be positive")
    return total


def unescape(text: str) -> str:
    """\\n, \\t and \\\\ as a line break, a tab and a backslash: typed on a command line or
    a terminal, they arrive as two characters."""
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t"}.get(m[1], "\\"), text)


def given(ctx: typer.Context, name: str) -> bool:
    """Whether an option was set by the user rather than left at its default."""
    source = ctx.get_parameter_source(name)  # Typer's own click: compare by name
    return source is not None and source.name != "DEFAULT"


RunArg = Annotated[
    str | None,
    typer.Argument(
        help="Run name or folder; default: the latest trained run.",
        autocompletion=complete_runs,
        show_default=False,
    ),
]
