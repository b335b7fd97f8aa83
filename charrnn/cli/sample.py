"""`charrnn sample`: samples streamed to the terminal, or written whole to a file or as JSON."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from charrnn.api import load
from charrnn.checkpoint import DEFAULT_ROOT, check_not_in_run
from charrnn.cli.options import (
    OUTPUT,
    SAMPLING,
    AdaptOpt,
    CheckpointOpt,
    CheckpointsDirOpt,
    JsonOpt,
    StopOpt,
)
from charrnn.cli.output import (
    err,
    escape,
    fail,
    friendly,
    json_text,
    out,
    print_json,
    visible,
)
from charrnn.config import MAX_SAMPLES, SampleConfig
from charrnn.generate import Sample
from charrnn.io import write_output
from charrnn.stream import SampleStream
from charrnn.tokenizers import UNK


@friendly
def sample_cmd(
    checkpoint: CheckpointOpt = None,
    temp: Annotated[
        float,
        typer.Option("--temp", "-t", help="Temperature; 0 = greedy.", rich_help_panel=SAMPLING),
    ] = SampleConfig.temperature,
    top_k: Annotated[
        int | None, typer.Option(help="Draw from the k likeliest tokens.", rich_help_panel=SAMPLING)
    ] = None,
    top_p: Annotated[
        float | None,
        typer.Option(
            help="Draw from the smallest set with this much probability.", rich_help_panel=SAMPLING
        ),
    ] = None,
    prompt: Annotated[
        str | None, typer.Option("--prompt", "-p", help="Text to start from.")
    ] = None,
    max_tokens: Annotated[
        int,
        typer.Option(
            help="Safety cap; the sample length in --stop none.", rich_help_panel=SAMPLING
        ),
    ] = SampleConfig.max_tokens,
    n: Annotated[
        int, typer.Option("-n", "--num", min=1, max=MAX_SAMPLES, help="Number of samples.")
    ] = 1,
    seed: Annotated[int | None, typer.Option(help="Same seed, same text.")] = None,
    stop: StopOpt = SampleConfig.stop,
    adapt: AdaptOpt = None,
    length: Annotated[
        int | None,
        typer.Option(help="--stop length: exactly this many tokens.", rich_help_panel=SAMPLING),
    ] = None,
    as_json: JsonOpt = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Write the samples to this file (whole, never half-written) instead of "
            "streaming them; with --json, write the JSON.",
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    checkpoints: CheckpointsDirOpt = DEFAULT_ROOT,
) -> None:
    """Generate text from a trained model, streamed to the terminal as it is drawn.

    Several samples (-n) are drawn side by side as one batch and shown one after another:
    the first as it is drawn, each next one from what it already has, then live.
    """
    if prompt is not None and not prompt:
        fail("--prompt is empty; leave it out to start from the beginning of a unit")
    config = SampleConfig(
        temperature=temp,
        top_k=top_k,
        top_p=top_p,
        max_tokens=max_tokens,
        stop=stop,
        length=length,
        seed=seed,
    )
    model = load(checkpoint, checkpoints)
    if adapt is not None:
        model = model.adapt(adapt)
    if as_json or output is not None:
        if output is not None:
            check_not_in_run(output, model.folder, "--output")
        samples = model.samples(n, prompt or "", config=config)
        _write_samples(samples, output, as_json)
        return
    stream = model.stream(prompt or "", n=n, config=config)
    unknown = stream.prompt_ids.count(UNK)
    if unknown:
        err.print(
            f"[yellow]note:[/] {unknown} prompt symbol(s) unknown to the model, read as <unk>"
        )
    try:
        _stream_samples(stream)
    except BrokenPipeError:  # the reader went away (charrnn sample | head): stop quietly
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _sample_json(samples: list[Sample]) -> list[dict]:
    return [
        {
            "text": s.text,
            "log_prob": s.log_prob,
            "tokens": len(s.tokens),
            "cut": s.cut,
            **({"length": s.length} if s.length is not None else {}),
        }
        for s in samples
    ]


def _write_samples(samples: list[Sample], output: Path | None, as_json: bool) -> None:
    """--json prints (or writes) JSON; --output writes the texts, one blank line apart."""
    if output is None:
        print_json(_sample_json(samples))
        return
    if as_json:
        data = json_text(_sample_json(samples), indent=2) + "\n"
    else:
        data = "\n".join(s.text if s.text.endswith("\n") else s.text + "\n" for s in samples)
    write_output(output, data.encode("utf-8"))
    tokens = sum(len(s.tokens) for s in samples)
    cut = sum(s.cut for s in samples)
    note = f", {cut} cut at --max-tokens" if cut else ""
    err.print(f"wrote {len(samples)} sample(s), {tokens:,} tokens{note}, to {escape(str(output))}")


def _stream_samples(stream: SampleStream) -> None:
    """Samples are drawn side by side; the terminal shows them one after another, each as it
    is drawn (the first live from the start, the next ones from what they already have)."""
    sink = out.file
    shown = visible if out.is_terminal else str  # text is data: raw into files and pipes
    ends_line = True
    for piece in stream:
        if piece.text:
            sink.write(shown(piece.text))
            sink.flush()
            ends_line = piece.text.endswith("\n")
        if piece.end:
            if not ends_line:
                sink.write("\n")
                ends_line = True
            if piece.index + 1 < stream.n:
                out.print(Text("─" * 20, style="dim"))
    cut = [i + 1 for i, s in enumerate(stream.samples) if s.cut]
    if cut:
        which = "" if stream.n == 1 else f"sample {', '.join(map(str, cut))} "
        err.print(f"[yellow]({which}cut at --max-tokens {stream.config.max_tokens})[/]")
