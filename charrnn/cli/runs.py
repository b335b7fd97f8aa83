"""`charrnn runs`: the trained runs, most recent first."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from rich import box
from rich.table import Table
from rich.text import Text

from charrnn.checkpoint import DEFAULT_ROOT, no_runs
from charrnn.cli.format import num, size_text, when_text
from charrnn.cli.options import (
    CheckpointsDirOpt,
    JsonOpt,
)
from charrnn.cli.output import escape, fail, friendly, out, print_json
from charrnn.runs import RunSummary, summarize_all


def runs_table(rows: list[RunSummary], root: Path) -> Table:
    t = Table(
        title=f"runs in {escape(str(root))}/",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    t.add_column("run", overflow="fold")  # the one column that may wrap
    for col, justify in (
        ("level", "left"),
        ("model", "left"),
        ("steps", "right"),
        ("val loss", "right"),
        ("bits/char", "right"),
        ("trained", "right"),
        ("size", "right"),
    ):
        t.add_column(col, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for s in rows:
        model = f"{s.cell} {s.layers}×{s.hidden}" if s.layers else "?"
        name = Text(s.name)
        if s.base:  # a fine-tuned run: where it started, under its name (80 columns hold it)
            name.append(f"\n  from {s.base}", style="dim")
        if s.problem:
            name.append(f" ({s.problem})", style="yellow")
        t.add_row(
            name,
            s.level,
            model,
            num(s.steps, ","),
            num(s.val_loss, ".4f"),
            num(s.val_bpc, ".3f"),
            when_text(s.trained),
            size_text(s.size_bytes),
        )
    return t


@friendly
def runs_cmd(
    checkpoints: CheckpointsDirOpt = DEFAULT_ROOT,
    as_json: JsonOpt = False,
) -> None:
    """List the trained runs, most recent first: model, steps, best validation loss, size."""
    rows = summarize_all(checkpoints)
    if as_json:
        print_json([{**asdict(s), "folder": str(s.folder)} for s in rows])
    if not rows:  # as for every command that finds no run: one line, exit status 1
        fail(no_runs(checkpoints))
    if as_json:
        return
    out.print(runs_table(rows, checkpoints))
    out.print(
        Text("val loss: nats/token of the kept (best) model; info RUN shows more", style="dim")
    )
