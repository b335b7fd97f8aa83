"""`charrnn sample`: samples streamed to the terminal, or written whole to a file or as JSON."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from charrnn.api import load
from charrnn.checkpoint import DEFAULT_ROOT, check_not_in_run
from charrnn.cli.interactive import interactive_loop
from charrnn.cli.options import (
    OUTPUT,
    SAMPLING,
    AdaptOpt,
    CheckpointOpt,
    CheckpointsDirOpt,
    JsonOpt,
    StopOpt,
    unescape,
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
from charrnn.lines import read_prompt
from charrnn.stream import SampleStream
from charrnn.tokenizers import UNK

REPEATS, TOKENS, BEAMS = "Repetition", "Stop strings, bans and biases", "Beam search"


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
    min_p: Annotated[
        float | None,
        typer.Option(
            help="Draw from the tokens with at least this times the top token's probability.",
            rich_help_panel=SAMPLING,
        ),
    ] = None,
    prompt: Annotated[
        str | None, typer.Option("--prompt", "-p", help="Text to start from.")
    ] = None,
    prompt_file: Annotated[
        Path | None,
        typer.Option(
            help="Start from this file's text (- : standard input), read in one batched pass; "
            "only the text after it is shown.",
        ),
    ] = None,
    interactive: Annotated[
        bool,
        typer.Option(
            "--interactive",
            "-i",
            help="A loop: type text, the model continues it, the state is kept between turns.",
        ),
    ] = False,
    max_tokens: Annotated[
        int,
        typer.Option(
            help="Safety cap; the sample length in --stop none.", rich_help_panel=SAMPLING
        ),
    ] = SampleConfig.max_tokens,
    n: Annotated[
        int,
        typer.Option(
            "-n", "--num", min=1, max=MAX_SAMPLES, help="Number of samples (or best beams)."
        ),
    ] = 1,
    seed: Annotated[int | None, typer.Option(help="Same seed, same text.")] = None,
    stop: StopOpt = SampleConfig.stop,
    adapt: AdaptOpt = None,
    length: Annotated[
        int | None,
        typer.Option(help="--stop length: exactly this many tokens.", rich_help_panel=SAMPLING),
    ] = None,
    repeat_penalty: Annotated[
        float,
        typer.Option(
            help="llama.cpp's: a logit l of a token in the window becomes l/R (l > 0) or l*R.",
            rich_help_panel=REPEATS,
        ),
    ] = SampleConfig.repeat_penalty,
    repeat_window: Annotated[
        int,
        typer.Option(
            help="The last N tokens (the prompt's included) the penalties look at.",
            rich_help_panel=REPEATS,
        ),
    ] = SampleConfig.repeat_window,
    presence_penalty: Annotated[
        float,
        typer.Option(
            help="OpenAI's: minus P from the logit of a token in the window.",
            rich_help_panel=REPEATS,
        ),
    ] = SampleConfig.presence_penalty,
    frequency_penalty: Annotated[
        float,
        typer.Option(
            help="OpenAI's: minus F times the token's count in the window.",
            rich_help_panel=REPEATS,
        ),
    ] = SampleConfig.frequency_penalty,
    no_repeat_ngram: Annotated[
        int,
        typer.Option(
            help="Never draw an n-gram of N tokens a second time in a sample; 0 = off.",
            rich_help_panel=REPEATS,
        ),
    ] = SampleConfig.no_repeat_ngram,
    stop_at: Annotated[
        list[str] | None,
        typer.Option(
            metavar="TEXT",
            help="End a sample when its text ends with this (repeatable; \\n, \\t escapes).",
            rich_help_panel=TOKENS,
        ),
    ] = None,
    keep_stop: Annotated[
        bool,
        typer.Option(
            "--keep-stop",
            help="Keep the --stop-at string at the end (default: cut it).",
            rich_help_panel=TOKENS,
        ),
    ] = False,
    ban: Annotated[
        list[str] | None,
        typer.Option(
            metavar="TEXT",
            help="Never draw this token, or never complete this string of tokens (repeatable).",
            rich_help_panel=TOKENS,
        ),
    ] = None,
    bias: Annotated[
        list[str] | None,
        typer.Option(
            metavar="TOKEN=VALUE",
            help="TOKEN=VALUE: add VALUE to the token's logit, as in '<eos>=-2' (repeatable).",
            rich_help_panel=TOKENS,
        ),
    ] = None,
    beam: Annotated[
        int | None,
        typer.Option(
            help="Beam search with N beams: the likeliest text under --stop instead of a "
            "drawn one; -n K gives the K best.",
            rich_help_panel=BEAMS,
        ),
    ] = None,
    length_penalty: Annotated[
        float,
        typer.Option(
            help="Rank beams by log P / tokens ** this (0: by log P; > 0 favours long ones).",
            rich_help_panel=BEAMS,
        ),
    ] = SampleConfig.length_penalty,
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

    The controls (penalties, bans, biases, min-p, stop strings, beams) shape what is drawn
    only: a reported log-probability (--json) is the model's own under the stopping rule.
    """
    config = _config(dict(locals()))  # every option by name: most are SampleConfig's fields
    if interactive:
        _refuse_with_interactive(n, beam, as_json, output, prompt_file)
    text, from_file = _prompt(prompt, prompt_file)
    if interactive:
        session = load(checkpoint, checkpoints).session(config=config)
        interactive_loop(session, text)
        return
    model = load(checkpoint, checkpoints)
    if adapt is not None:
        model = model.adapt(adapt)
    if as_json or output is not None:
        if output is not None:
            check_not_in_run(output, model.folder, "--output")
        samples = model.samples(n, text, config=config)
        _write_samples(samples, output, as_json, continuation=from_file)
        return
    stream = model.stream(text, n=n, config=config, show_prompt=not from_file)
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


_NOT_SAMPLING = {
    "checkpoint",
    "prompt",
    "prompt_file",
    "interactive",
    "n",
    "as_json",
    "output",
    "adapt",
}


def _config(options: dict[str, Any]) -> SampleConfig:
    """The SampleConfig of the command's options (same names; escapes in the strings read)."""
    values = {k: v for k, v in options.items() if k not in _NOT_SAMPLING | {"checkpoints"}}
    values["temperature"] = values.pop("temp")
    for name in ("stop_at", "ban", "bias"):
        values[name] = tuple(unescape(s) for s in values[name] or ())
    return SampleConfig(**values)


def _prompt(prompt: str | None, prompt_file: Path | None) -> tuple[str, bool]:
    """The prompt's text, and whether it came from a file."""
    if prompt is not None and prompt_file is not None:
        fail("give --prompt or --prompt-file, not both")
    if prompt is not None and not prompt:
        fail("--prompt is empty; leave it out to start from the beginning of a unit")
    if prompt_file is None:
        return prompt or "", False
    try:
        return read_prompt(prompt_file), True
    except KeyboardInterrupt:
        err.print("[red]error:[/] interrupted while reading standard input", soft_wrap=True)
        raise typer.Exit(130) from None


def _refuse_with_interactive(
    n: int, beam: int | None, as_json: bool, output: Path | None, prompt_file: Path | None
) -> None:
    """--interactive draws one text at a time on the terminal, and reads the terminal."""
    for name, given in (("-n", n > 1), ("--beam", beam), ("--json", as_json), ("--output", output)):
        if given:
            fail(f"--interactive draws one text at a time on the terminal: leave out {name}")
    if str(prompt_file) == "-":
        fail("--interactive reads standard input itself: give --prompt-file a file, not -")


def _sample_json(samples: list[Sample], continuation: bool) -> list[dict]:
    return [
        {
            "text": s.continuation if continuation else s.text,
            "log_prob": s.log_prob,
            "tokens": len(s.tokens),
            "cut": s.cut,
            **({"length": s.length} if s.length is not None else {}),
            **({"stop_string": s.stop_string} if s.stop_string is not None else {}),
        }
        for s in samples
    ]


def _write_samples(
    samples: list[Sample], output: Path | None, as_json: bool, continuation: bool = False
) -> None:
    """--json prints (or writes) JSON; --output writes the texts, one blank line apart (the
    text after the prompt only, for a prompt from a file)."""
    if output is None:
        print_json(_sample_json(samples, continuation))
        return
    if as_json:
        data = json_text(_sample_json(samples, continuation), indent=2) + "\n"
    else:
        texts = [s.continuation if continuation else s.text for s in samples]
        data = "\n".join(t if t.endswith("\n") else t + "\n" for t in texts)
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
