"""`charrnn eval`: a run's model on a whole held-out text, static or dynamic."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from charrnn.api import load
from charrnn.checkpoint import DEFAULT_ROOT
from charrnn.cli.options import (
    CheckpointOpt,
    CheckpointsDirOpt,
    DeviceOpt,
    JsonOpt,
    ReplaceErrorsOpt,
    given,
)
from charrnn.cli.output import err, escape, fail, friendly, out, print_json
from charrnn.config import AdaptConfig, AdaptRule
from charrnn.device import resolve_device
from charrnn.heldout import EVAL_STREAMS, TextEvaluation
from charrnn.heldout import Progress as Reporting

DYNAMIC = "Dynamic evaluation"
READING = "Reading"
_DYNAMIC_OPTIONS = ("lr", "decay", "rule")


@contextmanager
def eval_progress() -> Iterator[Reporting]:
    """A bar on stderr for encoding the text, then for reading it; none when stderr is not
    a terminal (a log or a pipe)."""
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn())
    with Progress(
        *columns, TimeRemainingColumn(), console=err, transient=True, disable=not err.is_terminal
    ) as bar:
        tasks = {stage: bar.add_task(stage + "ing", total=None) for stage in ("encode", "read")}

        def update(stage: str, done: int, total: int) -> None:
            bar.update(tasks[stage], completed=done, total=total)

        yield update


def eval_table(e: TextEvaluation, run: str) -> Table:
    how = "static"
    if e.dynamic is not None:
        d = e.dynamic
        how = f"dynamic ({d.rule.value}, lr {d.lr:g}, decay {d.decay:g}, window {d.window})"
    t = Table(title=f"{escape(run)} on {escape(e.path)}", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column(justify="right")
    rows = [
        ("read as", f"{e.level} level, {e.unit} units, {how}"),
        ("tokens", f"{e.tokens:,} scored ({e.units:,} units, {e.words:,} words)"),
        ("<unk>", f"{e.unknown:,} ({e.unknown_rate:.2%})"),
        ("nats/token", f"{e.loss:.4f}"),
        ("perplexity", f"{e.perplexity:,.2f} per token, {e.word_perplexity:,.2f} per word"),
        ("bits/char", f"{e.bits_per_char:.4f}"),
        ("bits/byte", f"{e.bits_per_byte:.4f}"),
        ("time", f"{e.seconds:.1f}s ({e.tokens / max(1e-9, e.seconds):,.0f} tokens/s)"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    return t


@friendly
def eval_cmd(
    text: Annotated[
        Path, typer.Argument(help="A held-out UTF-8 text, read as the run read its corpus.")
    ],
    checkpoint: CheckpointOpt = None,
    dynamic: Annotated[
        bool,
        typer.Option(
            "--dynamic",
            help="Learn from each window after scoring it (dynamic evaluation, Krause et al.): "
            "later text is predicted better. The run's files are never changed.",
            rich_help_panel=DYNAMIC,
        ),
    ] = False,
    lr: Annotated[
        float,
        typer.Option(min=0.0, help="Dynamic: learning rate.", rich_help_panel=DYNAMIC),
    ] = AdaptConfig.lr,
    decay: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Dynamic: pull towards the trained weights per step.",
            rich_help_panel=DYNAMIC,
        ),
    ] = AdaptConfig.decay,
    rule: Annotated[
        AdaptRule,
        typer.Option(
            help="Dynamic: plain gradient steps (sgd), or each divided by its running RMS (rms).",
            rich_help_panel=DYNAMIC,
        ),
    ] = AdaptRule(AdaptConfig.rule),
    window: Annotated[
        int | None,
        typer.Option(
            min=1,
            show_default=False,
            help="Tokens per window (per step with --dynamic). Default: the run's --seq-len; "
            f"with --dynamic {AdaptConfig.window}.",
            rich_help_panel=READING,
        ),
    ] = None,
    streams: Annotated[
        int | None,
        typer.Option(
            min=1,
            show_default=False,
            help=f"Parallel streams through the text. Default: {EVAL_STREAMS}, as training "
            f"evaluates; with --dynamic {AdaptConfig.streams}, reading the text in order.",
            rich_help_panel=READING,
        ),
    ] = None,
    device: DeviceOpt = "auto",
    replace_errors: ReplaceErrorsOpt = False,
    as_json: JsonOpt = False,
    checkpoints: CheckpointsDirOpt = DEFAULT_ROOT,
    ctx: typer.Context = None,  # type: ignore[assignment]
) -> None:
    """Perplexity and bits per char of a run on a whole held-out text.

    The text is read as the run was trained (its level, units and window, the state carried
    across units), so a run's own validation text gives training's figure. --dynamic learns
    from each window after scoring it.
    """
    strays = [f"--{name}" for name in _DYNAMIC_OPTIONS if given(ctx, name)]
    if strays and not dynamic:
        fail(f"{', '.join(strays)}: for --dynamic only (add --dynamic, or leave it out)")
    adapt = AdaptConfig(lr, decay, rule) if dynamic else False
    model = load(checkpoint, checkpoints, device=resolve_device(device))
    with eval_progress() as progress:
        result = model.evaluate(
            text,
            dynamic=adapt,
            window=window,
            streams=streams,
            replace_errors=replace_errors,
            progress=progress,
        )
    if as_json:
        print_json({"run": model.name, **result.to_dict()})
        return
    out.print(eval_table(result, model.name))
