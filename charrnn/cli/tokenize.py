"""`charrnn tokenize`: encode a corpus once and show what it holds."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from charrnn.builtin import resolve_corpus, shown_path
from charrnn.cli.options import (
    CorpusArg,
    LevelOpt,
    MaxVocabOpt,
    MinFreqOpt,
    ReplaceErrorsOpt,
    SampleCharsOpt,
    UnitOpt,
    VocabSizeOpt,
    data_config,
)
from charrnn.cli.output import err, escape, friendly, out
from charrnn.config import DataConfig, TokenizerConfig
from charrnn.data import describe, prepare


@contextmanager
def data_progress() -> Iterator[Callable[[int, int], None]]:
    with Progress(
        TextColumn("encoding"),
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,  # no bar frames in a log
    ) as bar:
        task = bar.add_task("encode", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


@friendly
def tokenize_cmd(
    corpus: CorpusArg = None,
    level: LevelOpt = TokenizerConfig.level,
    unit: UnitOpt = DataConfig.unit,
    min_freq: MinFreqOpt = TokenizerConfig.min_freq,
    max_vocab: MaxVocabOpt = None,
    vocab_size: VocabSizeOpt = TokenizerConfig.vocab_size,
    sample_chars: SampleCharsOpt = TokenizerConfig.sample_chars,
    replace_errors: ReplaceErrorsOpt = DataConfig.replace_errors,
    output: Annotated[
        Path | None, typer.Option("--out", "-o", help="Dataset folder; default: the shared cache.")
    ] = None,
) -> None:
    """Build the vocabulary and the encoded corpus that train would use."""
    config = data_config(
        level=level,
        unit=unit,
        min_freq=min_freq,
        max_vocab=max_vocab,
        vocab_size=vocab_size,
        sample_chars=sample_chars,
        replace_errors=replace_errors,
    )
    source = resolve_corpus(corpus)
    t0 = time.monotonic()
    with data_progress() as progress:
        ds, cached = prepare(source.path, config, progress=progress, out=output)
    seconds = time.monotonic() - t0
    d = describe(ds)
    table = Table(title=escape(source.label()), show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    rows = [
        ("level", d["level"]),
        ("unit", d["unit"]),
        ("characters", f"{d['characters']:,} ({d['bytes']:,} bytes)"),
        ("units", f"{d['units']:,}"),
        ("tokens", f"{d['tokens']:,}"),
        ("vocabulary", f"{d['vocabulary']:,}"),
        ("<unk> rate", f"{d['unk_rate']:.3%}"),
        ("mean unit length", f"{d['mean_unit_length']:.1f} tokens"),
        *([("tokenizer sample", f"{d['sample_chars']:,} characters")] if d["sample_chars"] else []),
        ("dataset", escape(shown_path(ds.folder))),
        ("", "reused from cache" if cached else f"encoded in {seconds:.1f}s"),
    ]
    for k, v in rows:
        table.add_row(k, v)
    out.print(table)
