"""`charrnn score`: sentences ranked by log-probability, per-token terms, likeliest next tokens."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from charrnn.api import load
from charrnn.checkpoint import DEFAULT_ROOT
from charrnn.cli.format import bar, prob_text, shown_piece
from charrnn.cli.heatmap import per_token_view
from charrnn.cli.options import (
    OUTPUT,
    CheckpointOpt,
    CheckpointsDirOpt,
    JsonOpt,
    StopOpt,
)
from charrnn.cli.output import err, escape, fail, friendly, out
from charrnn.config import (
    Stop,
)
from charrnn.score import NextToken, SentenceScore, surprisal_map
from charrnn.text import read_lines


def _score_json(s: SentenceScore, per_token: bool) -> dict[str, Any]:
    d: dict[str, Any] = {
        "text": s.text,
        "stop": s.stop.value,
        "log_prob": s.log_prob,
        "prob": s.prob,
        "tokens": s.n_tokens,
        "perplexity": s.perplexity,
        "bits_per_char": s.bits_per_char,
        "bits_per_byte": s.bits_per_byte,
        "unknown": s.n_unk,
    }
    if per_token:
        d["terms"] = [
            {"kind": t.kind, "piece": t.piece, "log_prob": t.log_prob, "unk": t.unk}
            for t in s.terms
        ]
    return d


def _read_sentences(sentences: list[str], file: Path | None) -> list[str]:
    """The sentences of the arguments, then those of --file; one error line if none."""
    lines = list(sentences)
    for i, s in enumerate(lines, 1):
        if not s.strip():
            fail(f"cannot score an empty sentence (argument {i})")
    if file is not None:
        lines += [ln for ln in _read_lines(file) if ln.strip()]
        if not lines:
            name = "standard input" if str(file) == "-" else str(file)
            fail(f"nothing to score: {name} has no sentences")
    if not lines:
        fail("nothing to score: give sentences as arguments or --file")
    return lines


def _read_lines(file: Path) -> list[str]:
    try:
        return read_lines(file)
    except KeyboardInterrupt:
        name = "standard input" if str(file) == "-" else f"sentence file {file}"
        err.print(f"[red]error:[/] interrupted while reading {escape(name)}", soft_wrap=True)
        raise typer.Exit(130) from None


@friendly
def score_cmd(
    sentences: Annotated[list[str] | None, typer.Argument(help="Sentences to score.")] = None,
    checkpoint: CheckpointOpt = None,
    stop: StopOpt = Stop.eos,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="One sentence a line; - reads stdin.")
    ] = None,
    per_token: Annotated[
        bool,
        typer.Option(
            help="Colour each token by its surprisal and show every term of each score.",
            rich_help_panel=OUTPUT,
        ),
    ] = False,
    next_k: Annotated[
        int | None,
        typer.Option(
            "--next",
            min=1,
            help="Also list the K likeliest next tokens after each sentence.",
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    as_json: JsonOpt = False,
    checkpoints: CheckpointsDirOpt = DEFAULT_ROOT,
) -> None:
    """Log-probability of each sentence as a unit <sos> ... <eos>; several are ranked."""
    lines = _read_sentences(sentences or [], file)
    model = load(checkpoint, checkpoints)
    results = model.score(lines, stop)
    nexts = [model.next_tokens(line, next_k, stop) for line in lines] if next_k else []
    if as_json:
        payload = [_score_json(r, per_token) for r in results]
        for d, candidates in zip(payload, nexts):
            d["next"] = [{"token": c.piece, "id": c.id, "prob": c.prob} for c in candidates]
        out.print_json(json.dumps(payload))
        return
    title = f"scores under --stop {stop.value} ({escape(model.name)})"
    out.print(score_table(results, title, out.width))
    if per_token:
        for r in results:
            out.print()
            out.print(per_token_view(r, surprisal_map(model.tokenizer, r)))
    for line, candidates in zip(lines, nexts):
        out.print()
        out.print(next_view(line, candidates))


WIDE = 100  # columns from which the table also shows P and bits/byte


def score_table(results: list[SentenceScore], title: str, width: int = WIDE) -> Table:
    """The sentences ranked, one row each (a long one ends in an ellipsis rather than wrap);
    narrower than WIDE, only the columns that read at 80: log P, ppl, bits/char."""
    wide = width >= WIDE
    ranked = sorted(results, key=lambda r: -r.log_prob)
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("#", justify="right", no_wrap=True, min_width=len(str(len(results))))
    columns = ["log P (nats)", *(["P"] if wide else []), "ppl", "bits/char"]
    room = width - 12 * (len(columns) + wide) - 10  # what the figures leave the sentence
    table.add_column("sentence", no_wrap=True, overflow="ellipsis", max_width=max(16, room))
    for col in [*columns, *(["bits/byte"] if wide else [])]:
        table.add_column(col, justify="right", no_wrap=True)
    for rank, r in enumerate(ranked, 1):
        flag = f" [yellow]({r.n_unk} <unk>)[/]" if r.n_unk else ""
        figures = [f"{r.log_prob:.2f}", *([prob_text(r.log_prob)] if wide else [])]
        figures += [f"{r.perplexity:.2f}", f"{r.bits_per_char:.3f}"]
        figures += [f"{r.bits_per_byte:.3f}"] if wide else []
        table.add_row(str(rank), Text(r.text) + Text.from_markup(flag), *figures)
    return table


def next_view(context: str, candidates: list[NextToken]) -> Table:
    ctx = context if len(context) <= 40 else "…" + context[-39:]
    t = Table(box=None, show_header=False, padding=(0, 1))
    t.add_column(justify="left")
    t.add_column(justify="right")
    t.add_column(justify="left", style="cyan")
    top = candidates[0].prob if candidates else 1.0
    for c in candidates:
        t.add_row(
            Text(f"P({shown_piece(c.piece)} | {ctx})"),
            f"= {c.prob:.4f}" if c.prob >= 1e-4 else f"= {c.prob:.1e}",
            bar(c.prob / top, 24),
        )
    return t
