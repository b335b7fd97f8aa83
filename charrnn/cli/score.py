"""`charrnn score`: sentences ranked by log-probability, per-token terms, likeliest next tokens."""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from charrnn.api import Model, load
from charrnn.checkpoint import DEFAULT_ROOT
from charrnn.cli.format import bar, prob_text, shown_piece
from charrnn.cli.heatmap import per_token_view
from charrnn.cli.options import (
    OUTPUT,
    AdaptOpt,
    CheckpointOpt,
    CheckpointsDirOpt,
    JsonOpt,
    StopOpt,
)
from charrnn.cli.output import err, escape, fail, friendly, json_text, out, print_json
from charrnn.config import BadLines, Stop
from charrnn.score import (
    NextToken,
    ScoredLine,
    SentenceScore,
    check_range,
    keep_in_range,
    surprisal_map,
)

FILTER = "Filter"


def _score_json(s: SentenceScore, per_token: bool, line: int | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {} if line is None else {"line": line}
    d.update(
        text=s.text,
        stop=s.stop.value,
        log_prob=s.log_prob,
        prob=s.prob,
        tokens=s.n_tokens,
        perplexity=s.perplexity,
        bits_per_char=s.bits_per_char,
        bits_per_byte=s.bits_per_byte,
        unknown=s.n_unk,
    )
    if per_token:
        d["terms"] = [
            {"kind": t.kind, "piece": t.piece, "log_prob": t.log_prob, "unk": t.unk}
            for t in s.terms
        ]
    return d


def _file_name(file: Path) -> str:
    return "standard input" if str(file) == "-" else str(file)


def _check_arguments(sentences: list[str], file: Path | None) -> None:
    for i, s in enumerate(sentences, 1):
        if not s.strip():
            fail(f"cannot score an empty sentence (argument {i})")
    if not sentences and file is None:
        fail("nothing to score: give sentences as arguments or --file")


def _scored(
    model: Model,
    sentences: list[str],
    file: Path | None,
    stop: Stop,
    ppl: tuple[float | None, float | None],
    bad_lines: BadLines,
) -> Iterator[ScoredLine]:
    """The arguments' scores (no line numbers), then those of --file's lines as they are read,
    each within the perplexity range."""
    if sentences:
        for s in keep_in_range(model.score(sentences, stop), *ppl):
            yield ScoredLine(0, s)
    if file is not None:
        try:
            yield from model.score_lines(
                file, stop, min_ppl=ppl[0], max_ppl=ppl[1], on_bad_line=bad_lines
            )
        except KeyboardInterrupt:
            if str(file) != "-":
                raise
            err.print("[red]error:[/] interrupted while reading standard input", soft_wrap=True)
            raise typer.Exit(130) from None


def _warn(line: ScoredLine) -> None:
    err.print(f"[yellow]skipped:[/] {escape(line.error or '')}", soft_wrap=True)


def _stream(lines: Iterator[ScoredLine], as_jsonl: bool, per_token: bool, nexts: NextFn) -> None:
    """Each line as it is scored: a JSON object (--jsonl), or the line itself (a filter)."""
    sink = out.file
    try:
        for line in lines:
            if line.score is None:
                _warn(line)
                continue
            if as_jsonl:
                d = _score_json(line.score, per_token, line.number or None)
                if nexts is not None:
                    d["next"] = _next_json(nexts(line.score.text))
                sink.write(json_text(d, indent=None) + "\n")
            else:
                sink.write(line.score.text + "\n")
            sink.flush()
    except BrokenPipeError:  # the reader went away (... | head): stop quietly
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _next_json(candidates: list[NextToken]) -> list[dict[str, Any]]:
    return [{"token": c.piece, "id": c.id, "prob": c.prob} for c in candidates]


NextFn = Callable[[str], list[NextToken]] | None


@friendly
def score_cmd(
    sentences: Annotated[list[str] | None, typer.Argument(help="Sentences to score.")] = None,
    checkpoint: CheckpointOpt = None,
    stop: StopOpt = Stop.eos,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="One sentence a line; - reads stdin.")
    ] = None,
    adapt: AdaptOpt = None,
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
    as_jsonl: Annotated[
        bool,
        typer.Option(
            "--jsonl",
            help="One JSON object a line, written as each line is scored (a filter for pipes).",
            rich_help_panel=OUTPUT,
        ),
    ] = False,
    min_ppl: Annotated[
        float | None,
        typer.Option(
            help="Keep only sentences of at least this perplexity; without --json or --jsonl, "
            "print the kept lines themselves.",
            rich_help_panel=FILTER,
        ),
    ] = None,
    max_ppl: Annotated[
        float | None,
        typer.Option(
            help="Keep only sentences of at most this perplexity (as --min-ppl).",
            rich_help_panel=FILTER,
        ),
    ] = None,
    bad_lines: Annotated[
        BadLines,
        typer.Option(
            help="A --file line that is not valid UTF-8: stop there (exit 1, naming it), or "
            "skip it (naming it on stderr) and go on.",
            rich_help_panel=FILTER,
        ),
    ] = BadLines.stop,
    checkpoints: CheckpointsDirOpt = DEFAULT_ROOT,
) -> None:
    """Log-probability of each sentence as a unit <sos> ... <eos>; several are ranked.

    With --jsonl or a perplexity range, --file is read as a stream and each line is written
    as it is scored (a filter for pipes), in bounded memory.
    """
    sentences = sentences or []
    _check_arguments(sentences, file)
    check_range(min_ppl, max_ppl)
    filtering = min_ppl is not None or max_ppl is not None
    if as_json and as_jsonl:
        fail("--json and --jsonl: choose one")
    if filtering and not (as_json or as_jsonl) and (per_token or next_k):
        fail("a perplexity filter prints the kept lines themselves: add --jsonl for their scores")
    model = load(checkpoint, checkpoints)
    if adapt is not None:
        model = model.adapt(adapt)
    lines = _scored(model, sentences, file, stop, (min_ppl, max_ppl), bad_lines)
    nexts = (lambda text: model.next_tokens(text, next_k, stop)) if next_k else None
    if as_jsonl or (filtering and not as_json):
        _stream(lines, as_jsonl, per_token, nexts)
        return
    scored = []
    for line in lines:
        if line.score is None:
            _warn(line)
        else:
            scored.append(line)
    if not scored and not filtering:
        fail(f"nothing to score: {_file_name(file or Path('-'))} has no sentences")
    _show(model, scored, stop, as_json, per_token, nexts)


def _show(
    model: Model,
    scored: list[ScoredLine],
    stop: Stop,
    as_json: bool,
    per_token: bool,
    nexts: NextFn,
) -> None:
    """All the scores at once: a JSON list, or the ranked table and the views asked for."""
    results = [line.score for line in scored if line.score is not None]
    _note_impossible(results, stop, model.config.max_len)
    candidates = [nexts(r.text) for r in results] if nexts else []
    if as_json:
        payload = [_score_json(r, per_token, ln.number or None) for r, ln in zip(results, scored)]
        for d, c in zip(payload, candidates):
            d["next"] = _next_json(c)
        print_json(payload)
        return
    title = f"scores under --stop {stop.value} ({escape(model.name)})"
    out.print(score_table(results, title, out.width))
    if per_token:
        for r in results:
            out.print()
            out.print(per_token_view(r, surprisal_map(model.tokenizer, r)))
    for r, c in zip(results, candidates):
        out.print()
        out.print(next_view(r.text, c))


def _note_impossible(results: list[SentenceScore], stop: Stop, max_len: int) -> None:
    """Say why a sentence has probability 0 (JSON writes its log P as null)."""
    zero = [str(i) for i, r in enumerate(results, 1) if r.log_prob == -math.inf]
    if zero and stop is Stop.length:
        err.print(
            f"[yellow]note:[/] sentence {', '.join(zero)} is longer than this model's longest "
            f"unit ({max_len} tokens): its probability under --stop length is 0"
        )


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
