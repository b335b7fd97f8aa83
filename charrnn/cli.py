"""The command line: parse options, call the library, print. Nothing else lives here."""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from charrnn import __version__
from charrnn.api import load
from charrnn.charts import loss_chart, save_loss_plot
from charrnn.checkpoint import DEFAULT_ROOT, find_run, list_runs
from charrnn.config import (
    SPREAD_SECTIONS,
    Cell,
    DataConfig,
    Holdout,
    Job,
    Level,
    ModelConfig,
    Nonlinearity,
    Precision,
    SampleConfig,
    Stop,
    TokenizerConfig,
    TrainConfig,
    Unit,
)
from charrnn.data import describe, prepare
from charrnn.defaults import in_force
from charrnn.errors import CharRNNError
from charrnn.generate import Sample
from charrnn.io import write_bytes_atomic
from charrnn.runs import RULES as STOP_RULES
from charrnn.runs import STOPFIT_HINT, RunDetails, RunSummary, details, summarize_all
from charrnn.score import HeatCell, NextToken, SentenceScore, surprisal_map
from charrnn.stream import SampleStream
from charrnn.tokenizers import UNK
from charrnn.training.callbacks import Callbacks, EvalStats, StepStats, TrainResult
from charrnn.training.distributed import is_main_process, world_size
from charrnn.training.run import train

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

F = TypeVar("F", bound=Callable[..., Any])

# Option defaults come from the config dataclasses, so the CLI and the library never disagree.
_M, _T, _D, _TOK, _S = ModelConfig, TrainConfig, DataConfig, TokenizerConfig, SampleConfig


# Typer may bundle its own copy of click: take its exception classes from Typer itself.
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class _OneLineErrors(TyperGroup):
    """A user's mistake on the command line is one line on stderr, never a usage box."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
            code = rv if isinstance(rv, int) else 0
        except _ClickException as e:
            hint = ""
            ctx = getattr(e, "ctx", None)
            if ctx is not None:
                hint = f" (see '{ctx.command_path} -h')"
            err.print(f"[red]error:[/] {_escape(e.format_message())}{hint}", soft_wrap=True)
            code = e.exit_code
        except typer.Abort:
            err.print("[red]aborted[/]")
            code = 130
        if standalone_mode:
            sys.exit(code)
        return code


# When the process started, set by ``python -m charrnn`` / the ``charrnn`` script, so that
# --time-budget counts the seconds spent importing too; None (in-process use): each command.
COMMAND_STARTED: float | None = None

app = typer.Typer(
    cls=_OneLineErrors,
    name="charrnn",
    help="Train recurrent language models on plain text, sample from them, score sentences.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _escape(s: str) -> str:
    return s.replace("[", r"\[")


def fail(message: str) -> None:
    err.print(f"[red]error:[/] {_escape(message)}", soft_wrap=True)
    raise typer.Exit(1)


def friendly(fn: F) -> F:
    """Library errors become one red line on stderr and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CharRNNError as e:
            fail(str(e))
        except OSError as e:
            where = f": {e.filename}" if getattr(e, "filename", None) else ""
            fail(f"{e.strerror or e}{where}")
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        out.print(f"charrnn {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """charrnn: char-, word- and subword-level RNN language models."""


# -- shared options -----------------------------------------------------------------------

DATA, MODEL, TRAINING, RUN, SAMPLING, OUTPUT = (
    "Data",
    "Model",
    "Training",
    "Run",
    "Sampling",
    "Output",
)

CorpusArg = Annotated[Path, typer.Argument(help="A UTF-8 text file, or a folder made by tokenize.")]
LevelOpt = Annotated[
    Level,
    typer.Option(
        help="Token level; auto = bpe for a training run on the CPU whose text holds at least "
        "3.5 KB per second of --time-budget, has at most 256 distinct characters and encodes "
        "in a tenth of the budget; otherwise char (in tokenize: char).",
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
        help="Subword vocabulary size (bpe, unigram); 0 = 2048 (fewer where the text cannot "
        "fill them).",
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


def _complete_runs(ctx: typer.Context, incomplete: str) -> list[str]:
    """Shell completion of run names, from --checkpoints if it is given."""
    root = Path(ctx.params.get("checkpoints") or DEFAULT_ROOT)
    return [r.name for r in list_runs(root) if r.name.startswith(incomplete)]


CheckpointOpt = Annotated[
    str | None,
    typer.Option(
        "--checkpoint",
        "-c",
        help="Run name or folder; default: the latest trained run.",
        autocompletion=_complete_runs,
    ),
]
CheckpointsDirOpt = Annotated[
    Path, typer.Option("--checkpoints", help="Folder that holds the runs.", rich_help_panel=RUN)
]
StopOpt = Annotated[Stop, typer.Option(help="How a sample ends: eos, halt, length or none.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.", rich_help_panel=OUTPUT)]


def _data_config(
    level: Level,
    unit: Unit,
    min_freq: int,
    max_vocab: int | None,
    vocab_size: int,
    replace_errors: bool,
    sample_chars: int = _TOK.sample_chars,
) -> DataConfig:
    tok = TokenizerConfig(
        level=level,
        min_freq=min_freq,
        max_vocab=max_vocab,
        vocab_size=vocab_size,
        sample_chars=sample_chars,
    )
    return DataConfig(tokenizer=tok, unit=unit, replace_errors=replace_errors)


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


# -- tokenize -----------------------------------------------------------------------------


@contextmanager
def _data_progress() -> Iterator[Callable[[int, int], None]]:
    with Progress(
        TextColumn("encoding"),
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task("encode", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


@app.command("tokenize")
@friendly
def tokenize_cmd(
    corpus: CorpusArg,
    level: LevelOpt = _TOK.level,
    unit: UnitOpt = _D.unit,
    min_freq: MinFreqOpt = _TOK.min_freq,
    max_vocab: MaxVocabOpt = None,
    vocab_size: VocabSizeOpt = _TOK.vocab_size,
    sample_chars: SampleCharsOpt = _TOK.sample_chars,
    replace_errors: ReplaceErrorsOpt = _D.replace_errors,
    output: Annotated[
        Path | None, typer.Option("--out", "-o", help="Dataset folder; default: the shared cache.")
    ] = None,
) -> None:
    """Build the vocabulary and the encoded corpus that train would use."""
    config = _data_config(
        level, unit, min_freq, max_vocab, vocab_size, replace_errors, sample_chars
    )
    t0 = time.monotonic()
    with _data_progress() as progress:
        ds, cached = prepare(corpus, config, progress=progress, out=output)
    seconds = time.monotonic() - t0
    d = describe(ds)
    table = Table(title=f"{corpus}", show_header=False, title_justify="left")
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
        ("dataset", str(ds.folder)),
        ("", "reused from cache" if cached else f"encoded in {seconds:.1f}s"),
    ]
    for k, v in rows:
        table.add_row(k, v)
    out.print(table)


# -- train --------------------------------------------------------------------------------


class _TrainView(Callbacks):
    """Rich progress bar, evaluation lines and samples while training."""

    def __init__(self, bar: Progress):
        self.bar = bar
        self.task = bar.add_task("train", total=1.0, loss="", val="", speed="", step=0)
        self.interrupted = False
        self.val = ""

    def on_start(self, info: dict[str, Any]) -> None:
        m = info["model"]
        resumed = f", resumed at step {info['resumed_from']}" if info["resumed_from"] else ""
        self.bar.console.print(
            f"run [bold]{info['run']}[/]: {m['cell']} {m['layers']}x{m['hidden']}, "
            f"{info['parameters']:,} parameters, {info['level']} level "
            f"({info['vocab_size']:,} symbols), "
            f"{info['train_tokens']:,} train / {info['val_tokens']:,} val tokens "
            f"({info['split']} split), "
            f"on {info['device']}{resumed}"
        )
        self.bar.start()

    def on_step(self, s: StepStats) -> None:
        done = s.progress if s.progress is not None else 0.0
        self.bar.update(
            self.task,
            completed=min(1.0, done),
            loss=f"loss {s.loss:.3f}",
            val=self.val,
            speed=f"{s.tokens_per_s:,.0f} tok/s",
            step=s.step,
        )

    def on_eval(self, e: EvalStats) -> None:
        self.val = f"val {e.loss:.3f}"
        mark = " [green]best[/]" if e.best and not e.full else ""
        what = "validation (whole split)" if e.full else "validation"
        self.bar.console.print(
            f"step {e.step:>6}  {what}: {e.loss:.4f} nats/token, {e.bpc:.3f} bits/char, "
            f"{e.bpb:.3f} bits/byte, ppl {e.perplexity:.2f}{mark}"
        )

    def on_sample(self, step: int, text: str) -> None:
        self.bar.console.print(f"[dim]--- sample at step {step} ---[/]")
        self.bar.console.print(Text(text.strip("\n")[:600]))
        self.bar.console.print("[dim]---[/]")

    def stop_requested(self) -> bool:
        return self.interrupted


@contextmanager
def _interruptible(view: _TrainView) -> Iterator[None]:
    """The first Ctrl-C (or SIGTERM) asks the loop to save and stop; a second one kills."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: Any) -> None:
        if view.interrupted:
            raise KeyboardInterrupt
        view.interrupted = True

    try:
        for s in previous:
            signal.signal(s, handler)
    except ValueError:  # not the main thread (a test runner): no handlers
        previous = {}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether an option was set by the user rather than left at its default."""
    source = ctx.get_parameter_source(name)  # Typer's own click: compare by name
    return source is not None and source.name != "DEFAULT"


def _summary(result: TrainResult, corpus: Path) -> Table:
    t = Table(title="training summary", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column(justify="right")
    rows = [
        ("run", str(result.run)),
        ("steps", f"{result.steps:,}"),
        ("tokens", f"{result.tokens:,}"),
        ("time", f"{result.elapsed:.0f}s"),
        ("throughput", f"{result.tokens_per_s:,.0f} tokens/s"),
        ("stopped by", result.stopped_by),
        ("last train loss", f"{result.train_loss:.4f} nats/token"),
    ]
    if result.val is not None:
        rows += [
            ("best step", f"{result.best_step:,}"),
            ("val loss", f"{result.val.loss:.4f} nats/token"),
            ("val perplexity", f"{result.val.perplexity:.2f}"),
            ("val bits/char", f"{result.val.bpc:.4f}"),
            ("val bits/byte", f"{result.val.bpb:.4f}"),
        ]
    if result.stop_fit is not None:
        f = result.stop_fit
        rows.append(
            (
                f"stop rules vs val lengths (KS, {f.n} samples)",
                "  ".join(f"{rule} {ks:.3f}" for rule, ks in f.ks.items()),
            )
        )
    for k, v in rows:
        t.add_row(k, v)
    return t


@app.command("train")
@friendly
def train_cmd(
    corpus: CorpusArg,
    level: LevelOpt = _TOK.level,
    unit: UnitOpt = _D.unit,
    min_freq: MinFreqOpt = _TOK.min_freq,
    max_vocab: MaxVocabOpt = None,
    vocab_size: VocabSizeOpt = _TOK.vocab_size,
    sample_chars: SampleCharsOpt = _TOK.sample_chars,
    replace_errors: ReplaceErrorsOpt = _D.replace_errors,
    cell: Annotated[Cell, typer.Option(help="Recurrent cell.", rich_help_panel=MODEL)] = _M.cell,
    nonlinearity: Annotated[
        Nonlinearity, typer.Option(help="Elman rnn cell only.", rich_help_panel=MODEL)
    ] = _M.nonlinearity,
    layers: Annotated[int, typer.Option(min=1, max=16, rich_help_panel=MODEL)] = _M.layers,
    hidden: Annotated[
        int,
        typer.Option(
            min=0,
            max=16384,
            help="Units per layer; 0 = sized from the time budget on a CPU (256 for 150s, "
            "448 for 10m, 512 for 15m or without a budget or on a GPU).",
            rich_help_panel=MODEL,
        ),
    ] = _M.hidden,
    embed: Annotated[int, typer.Option(min=1, max=16384, rich_help_panel=MODEL)] = _M.embed,
    dropout: Annotated[float, typer.Option(min=0.0, max=0.95, rich_help_panel=MODEL)] = _M.dropout,
    tie_weights: Annotated[
        bool, typer.Option(help="Share input and output embeddings.", rich_help_panel=MODEL)
    ] = _M.tie_weights,
    seq_len: Annotated[
        int, typer.Option(min=1, help="BPTT window.", rich_help_panel=TRAINING)
    ] = _T.seq_len,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Parallel streams.", rich_help_panel=TRAINING)
    ] = _T.batch_size,
    lr: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=10.0,
            help="Peak learning rate; 0 = fitted to the width (1e-2 at 256 units, as "
            "1/sqrt(hidden) above).",
            rich_help_panel=TRAINING,
        ),
    ] = _T.lr,
    clip: Annotated[
        float, typer.Option(min=0.0, help="Gradient norm clip; 0 = off.", rich_help_panel=TRAINING)
    ] = _T.clip,
    weight_decay: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            show_default=False,
            help="AdamW weight decay (times the learning rate each step); 0 = off. Default: "
            "from how much the run can memorize (its expected passes over the training text x "
            "its recurrent parameters per training token): 0.1 up to 3, 0.2 from 6.",
            rich_help_panel=TRAINING,
        ),
    ] = _T.weight_decay,
    min_lr_ratio: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            show_default=False,
            help="The learning rate decays to this x its peak by the end. Default: as "
            "--weight-decay's: 0.1 up to 3, 0 from 6.",
            rich_help_panel=TRAINING,
        ),
    ] = _T.min_lr_ratio,
    max_steps: Annotated[int | None, typer.Option(min=1, rich_help_panel=TRAINING)] = None,
    epochs: Annotated[float | None, typer.Option(min=0.0, rich_help_panel=TRAINING)] = None,
    time_budget: Annotated[
        str,
        typer.Option(
            help="Wall time for the whole command, e.g. 150s, 10m, 1h; 'none' = no limit.",
            rich_help_panel=TRAINING,
        ),
    ] = format_duration(_T.time_budget),
    val_fraction: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, help="Held-out share of the corpus.", rich_help_panel=TRAINING
        ),
    ] = _T.val_fraction,
    split: Annotated[
        Holdout,
        typer.Option(
            help="Which text is held out: the corpus's tail, or the tail of each of its "
            f"{SPREAD_SECTIONS} equal stretches (spread), so that validation samples the whole "
            "corpus.",
            rich_help_panel=TRAINING,
        ),
    ] = Holdout(_T.split),
    patience: Annotated[
        int,
        typer.Option(
            min=0,
            help="Stop after this many evaluations without improvement; 0 = never.",
            rich_help_panel=TRAINING,
        ),
    ] = _T.patience,
    sample_every: Annotated[
        int,
        typer.Option(
            min=0, help="Print a sample every N steps; 0 = never.", rich_help_panel=TRAINING
        ),
    ] = _T.sample_every,
    seed: Annotated[int, typer.Option(rich_help_panel=TRAINING)] = _T.seed,
    device: Annotated[
        str, typer.Option(help="auto, cpu, cuda or mps.", rich_help_panel=TRAINING)
    ] = _T.device,
    precision: Annotated[
        Precision,
        typer.Option(
            help="fp32, or bf16/fp16 mixed precision on a CUDA device.", rich_help_panel=TRAINING
        ),
    ] = Precision(_T.precision),
    skip_nonfinite: Annotated[
        bool,
        typer.Option(
            help="Skip a step whose loss is NaN or infinite instead of stopping.",
            rich_help_panel=TRAINING,
        ),
    ] = _T.skip_nonfinite,
    stop_fit: Annotated[
        int,
        typer.Option(
            min=0,
            help="Samples per stopping rule whose lengths are compared with the validation "
            "units at the end (stopfit.json); 0 = skip.",
            rich_help_panel=TRAINING,
        ),
    ] = _T.stop_fit,
    run: Annotated[
        str | None, typer.Option(help="Run name; default: the corpus name.", rich_help_panel=RUN)
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue --run (default: the latest run) from its last checkpoint.",
            rich_help_panel=RUN,
        ),
    ] = False,
    checkpoints: CheckpointsDirOpt = DEFAULT_ROOT,
    ctx: typer.Context = None,  # type: ignore[assignment]
) -> None:
    """Train a model on a corpus (tokenizing it first, or reusing the cached encoding)."""
    started = COMMAND_STARTED if COMMAND_STARTED is not None else time.monotonic()
    # A resume keeps the run's own settings except those given on this command line.
    overrides = {k for k in ctx.params if _given(ctx, k)}
    job = Job(
        model=ModelConfig(
            cell=cell,
            nonlinearity=nonlinearity,
            layers=layers,
            hidden=hidden,
            embed=embed,
            dropout=dropout,
            tie_weights=tie_weights,
        ),
        train=TrainConfig(
            seq_len=seq_len,
            batch_size=batch_size,
            lr=lr,
            clip=clip,
            weight_decay=weight_decay,
            min_lr_ratio=min_lr_ratio,
            max_steps=max_steps,
            epochs=epochs,
            time_budget=parse_duration(time_budget),
            val_fraction=val_fraction,
            split=split.value,
            patience=patience,
            sample_every=sample_every,
            seed=seed,
            device=device,
            precision=precision.value,
            skip_nonfinite=skip_nonfinite,
            stop_fit=stop_fit,
        ),
        data=_data_config(
            level, unit, min_freq, max_vocab, vocab_size, replace_errors, sample_chars
        ),
    )
    main = is_main_process()  # under torchrun, rank 0 alone shows progress
    bar = Progress(
        TextColumn("[bold]step {task.fields[step]}[/]"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[loss]}"),
        TextColumn("{task.fields[val]}"),
        TextColumn("{task.fields[speed]}"),
        TimeRemainingColumn(),
        console=out,
        disable=not main,
    )
    try:  # the bar starts with the first thing it shows: a refused run draws none
        view = _TrainView(bar)
        data_task = bar.add_task(
            "data", total=None, visible=False, loss="", val="", speed="", step=""
        )

        def on_data(done: int, total: int) -> None:
            if done < total:
                bar.start()
            bar.update(data_task, completed=done, total=total, visible=done < total)

        with _interruptible(view):
            result = train(
                corpus,
                job,
                run=run,
                root=checkpoints,
                resume=resume,
                callbacks=view,
                started=started,
                on_data=on_data,
                overrides=overrides,
            )
    finally:
        if bar.live.is_started:
            bar.stop()
    if not main:
        raise typer.Exit(130 if result.stopped_by == "interrupted" else 0)
    out.print(_summary(result, corpus))
    if result.stopped_by == "interrupted":
        again = "torchrun [options] -m charrnn -- train" if world_size() > 1 else "charrnn train"
        err.print(
            f"[yellow]interrupted at step {result.steps}; resume with:[/] {again} {corpus} "
            f"--run {result.run.name} --resume"
            + (f" --checkpoints {checkpoints}" if checkpoints != DEFAULT_ROOT else ""),
            soft_wrap=True,
        )
        raise typer.Exit(130)


# -- sample -------------------------------------------------------------------------------


@app.command("sample")
@friendly
def sample_cmd(
    checkpoint: CheckpointOpt = None,
    temp: Annotated[
        float,
        typer.Option("--temp", "-t", help="Temperature; 0 = greedy.", rich_help_panel=SAMPLING),
    ] = _S.temperature,
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
    ] = _S.max_tokens,
    n: Annotated[
        int, typer.Option("-n", "--num", min=1, max=100000, help="Number of samples.")
    ] = 1,
    seed: Annotated[int | None, typer.Option(help="Same seed, same text.")] = None,
    stop: StopOpt = _S.stop,
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
    prompt_ids = model.tokenizer.encode(prompt or "")
    if prompt_ids and all(t == UNK for t in prompt_ids):
        fail("--prompt has only symbols this model does not know")
    if as_json or output is not None:
        samples = model.samples(n, prompt or "", config=config)
        _write_samples(samples, output, as_json)
        return
    if prompt_ids.count(UNK):
        err.print(
            f"[yellow]note:[/] {prompt_ids.count(UNK)} prompt symbol(s) unknown to the "
            "model, read as <unk>"
        )
    try:
        _stream_samples(model.stream(prompt or "", n=n, config=config))
    except BrokenPipeError:  # the reader went away (charrnn sample | head): stop quietly
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _sample_json(samples: list[Sample]) -> str:
    return json.dumps(
        [
            {
                "text": s.text,
                "log_prob": s.log_prob,
                "tokens": len(s.tokens),
                "cut": s.cut,
                **({"length": s.length} if s.length is not None else {}),
            }
            for s in samples
        ],
        ensure_ascii=False,
        indent=2,
    )


def _write_samples(samples: list[Sample], output: Path | None, as_json: bool) -> None:
    """--json prints (or writes) JSON; --output writes the texts, one blank line apart."""
    if output is None:
        out.print_json(_sample_json(samples))
        return
    if as_json:
        data = _sample_json(samples) + "\n"
    else:
        data = "\n".join(s.text if s.text.endswith("\n") else s.text + "\n" for s in samples)
    write_bytes_atomic(output, data.encode("utf-8"))
    tokens = sum(len(s.tokens) for s in samples)
    cut = sum(s.cut for s in samples)
    note = f", {cut} cut at --max-tokens" if cut else ""
    err.print(f"wrote {len(samples)} sample(s), {tokens:,} tokens{note}, to {_escape(str(output))}")


def _stream_samples(stream: SampleStream) -> None:
    """Samples are drawn side by side; the terminal shows them one after another, each as it
    is drawn (the first live from the start, the next ones from what they already have)."""
    sink = out.file
    ends_line = True
    for piece in stream:
        if piece.text:
            sink.write(piece.text)
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


# -- score --------------------------------------------------------------------------------


def _prob_text(log_prob: float) -> str:
    if log_prob == -math.inf:
        return "0"
    exponent = math.floor(log_prob / math.log(10))
    mantissa = math.exp(log_prob - exponent * math.log(10))
    if mantissa >= 9.95:
        mantissa, exponent = mantissa / 10, exponent + 1
    return f"{mantissa:.1f}e{exponent:+d}" if exponent < -3 else f"{math.exp(log_prob):.4f}"


def _surprisal_style(nats: float) -> str:
    bits = nats / math.log(2)
    for limit, style in ((1, "green"), (3, "yellow"), (6, "dark_orange"), (math.inf, "red")):
        if bits < limit:
            return style
    return "red"


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
    """The lines of a UTF-8 file, or of standard input for ``-``; one error line otherwise."""
    stdin = str(file) == "-"
    name = "standard input" if stdin else f"sentence file {file}"
    try:
        if stdin:
            data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read()
        elif file.is_dir():
            fail(f"sentence file is a folder: {file}")
        elif not file.is_file():
            fail(f"sentence file not found: {file}")
        else:
            data = file.read_bytes()
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as e:
        fail(f"{name} is not valid UTF-8 at byte offset {e.start}")
    except KeyboardInterrupt:
        err.print(f"[red]error:[/] interrupted while reading {_escape(name)}", soft_wrap=True)
        raise typer.Exit(130) from None
    except OSError as e:
        fail(f"cannot read {name}: {e.strerror or e}")
    return text.removeprefix("\ufeff").splitlines()


@app.command("score")
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
    out.print(_score_table(results, f"scores under --stop {stop.value} ({model.name})"))
    if per_token:
        for r in results:
            out.print()
            out.print(_per_token_view(r, surprisal_map(model.tokenizer, r)))
    for line, candidates in zip(lines, nexts):
        out.print()
        out.print(_next_view(line, candidates))


def _score_table(results: list[SentenceScore], title: str) -> Table:
    ranked = sorted(results, key=lambda r: -r.log_prob)
    table = Table(title=title, title_justify="left")
    for col, justify in (
        ("#", "right"),
        ("sentence", "left"),
        ("log P (nats)", "right"),
        ("P", "right"),
        ("ppl", "right"),
        ("bits/char", "right"),
        ("bits/byte", "right"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for rank, r in enumerate(ranked, 1):
        flag = f" [yellow]({r.n_unk} <unk>)[/]" if r.n_unk else ""
        table.add_row(
            str(rank),
            Text(r.text) + Text.from_markup(flag),
            f"{r.log_prob:.2f}",
            _prob_text(r.log_prob),
            f"{r.perplexity:.2f}",
            f"{r.bits_per_char:.3f}",
            f"{r.bits_per_byte:.3f}",
        )
    return table


# Surprisal heatmap: background from pale (expected) to dark red (surprising), as in Karpathy's
# "visualizing predictions"; a fixed foreground keeps it readable on dark and light terminals.
_HEAT = (
    (1.0, "black on #fff5eb", "< 1"),
    (2.0, "black on #fdd0a2", "1-2"),
    (4.0, "black on #fd8d3c", "2-4"),
    (8.0, "white on #d94801", "4-8"),
    (math.inf, "white on #7f2704", "8+"),
)


def _heat_style(bits: float) -> str:
    return next(style for limit, style, _ in _HEAT if bits < limit)


def _heat_line(cells: list[HeatCell]) -> Text:
    """The sentence, each token on its surprisal's colour; the end marker as ⏎."""
    line = Text()
    for c in cells:
        text = "⏎" if c.kind == "eos" else c.text.replace("\n", "↵")
        lead = text[: len(text) - len(text.lstrip(" "))] if len(text.strip()) else ""
        line.append(lead)
        style = _heat_style(c.bits) + (" underline" if c.unk else "")
        line.append(text[len(lead) :], style=style)
    return line


def _heat_legend() -> Text:
    legend = Text("surprisal (bits): ", style="dim")
    for _, style, label in _HEAT:
        legend.append(f" {label} ", style=style)
    return legend


def _per_token_view(r: SentenceScore, cells: list[HeatCell]) -> Table:
    title = _heat_line(cells) + Text("\n") + _heat_legend()
    t = Table(title=title, title_justify="left", show_edge=False)
    for col in ("term", "symbol", "log P", "P", "surprisal (bits)"):
        t.add_column(col, justify="left" if col in ("term", "symbol") else "right")
    for term in r.terms:
        piece = term.piece.replace("\n", "\\n")
        sym = Text(piece + (" <unk>" if term.unk else ""), style=_surprisal_style(-term.log_prob))
        t.add_row(
            term.kind,
            sym,
            f"{term.log_prob:.3f}",
            _prob_text(term.log_prob),
            f"{-term.log_prob / math.log(2):.2f}",
        )
    return t


def _shown_piece(piece: str) -> str:
    """A token as it reads in P(token | context): spaces and line breaks made visible."""
    return piece.replace(" ", "␣").replace("\n", "⏎") or "''"


def _next_view(context: str, candidates: list[NextToken]) -> Table:
    ctx = context if len(context) <= 40 else "…" + context[-39:]
    t = Table(box=None, show_header=False, padding=(0, 1))
    t.add_column(justify="left")
    t.add_column(justify="right")
    t.add_column(justify="left", style="cyan")
    top = candidates[0].prob if candidates else 1.0
    for c in candidates:
        t.add_row(
            Text(f"P({_shown_piece(c.piece)} | {ctx})"),
            f"= {c.prob:.4f}" if c.prob >= 1e-4 else f"= {c.prob:.1e}",
            _bar(c.prob / top, 24),
        )
    return t


def _bar(fraction: float, width: int) -> str:
    """A horizontal bar in eighth-blocks."""
    eighths = round(max(0.0, min(1.0, fraction)) * width * 8)
    return "█" * (eighths // 8) + ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")[eighths % 8]


# -- runs and info ------------------------------------------------------------------------


def _size_text(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def _when_text(t: float, now: float | None = None) -> str:
    """'3 min ago' for the last week, a date before that."""
    if not t:
        return "-"
    ago = (time.time() if now is None else now) - t
    if 0 <= ago < 7 * 86400:
        for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
            if ago >= size:
                return f"{int(ago // size)}{unit} ago"
        return "just now"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def _duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    m, sec = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {sec:02d}s" if m else f"{sec}s"


def _num(x: float | int | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def _runs_table(rows: list[RunSummary], root: Path) -> Table:
    t = Table(
        title=f"runs in {_escape(str(root))}/",
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
        name = Text(s.name) + (Text(f" ({s.problem})", style="yellow") if s.problem else Text())
        t.add_row(
            name,
            s.level,
            model,
            _num(s.steps, ","),
            _num(s.val_loss, ".4f"),
            _num(s.val_bpc, ".3f"),
            _when_text(s.trained),
            _size_text(s.size_bytes),
        )
    return t


@app.command("runs")
@friendly
def runs_cmd(
    checkpoints: CheckpointsDirOpt = DEFAULT_ROOT,
    as_json: JsonOpt = False,
) -> None:
    """List the trained runs, most recent first: model, steps, best validation loss, size."""
    rows = summarize_all(checkpoints)
    if as_json:
        out.print_json(
            json.dumps([{**asdict(s), "folder": str(s.folder)} for s in rows], default=str)
        )
        return
    if not rows:
        err.print(f"no runs in {_escape(str(checkpoints))}/; train one: charrnn train CORPUS.txt")
        return
    out.print(_runs_table(rows, checkpoints))
    out.print(
        Text("val loss: nats/token of the kept (best) model; info RUN shows more", style="dim")
    )


RunArg = Annotated[
    str | None,
    typer.Argument(
        help="Run name or folder; default: the latest trained run.",
        autocompletion=_complete_runs,
        show_default=False,
    ),
]


@app.command("info")
@friendly
def info_cmd(
    run: RunArg = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            help="Also write the loss curves to this image (.png, .svg or .pdf); needs "
            "matplotlib: pip install 'charrnn[plot]'.",
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    as_json: JsonOpt = False,
    checkpoints: CheckpointsDirOpt = DEFAULT_ROOT,
) -> None:
    """Everything about one run: config, parameters, tokenizer, loss curves, stopping rules."""
    d = details(find_run(run, checkpoints))
    if plot is not None:
        c = d.curves
        save_loss_plot(
            plot,
            f"{d.summary.name}: loss",
            c.train_steps,
            c.train_loss,
            c.val_steps,
            c.val_loss,
            d.best.get("step"),
        )
    if as_json:
        out.print_json(json.dumps(d.to_json(), default=str))
    else:
        _print_info(d)
    if plot is not None:
        err.print(f"wrote the loss curves to {_escape(str(plot))}")


def _print_info(d: RunDetails) -> None:
    s, info = d.summary, d.info
    out.print(f"[bold]{_escape(s.name)}[/]  [dim]{_escape(str(s.folder))}[/]")
    out.print(
        f"created {_escape(str(info.get('created', '?')))} by charrnn "
        f"{_escape(str(info.get('charrnn_version', '?')))}; trained {_when_text(s.trained)}; "
        f"{_size_text(s.size_bytes)} on disk"
    )
    out.print(f"corpus {_escape(str(info.get('corpus', '?')))}")
    out.print()
    out.print(_progress_table(d))
    out.print()
    out.print(_config_table(d))
    out.print(_tokenizer_text(d.tokenizer))
    out.print()
    _print_curves(d)
    out.print()
    _print_stopfit(d)


def _progress_table(d: RunDetails) -> Table:
    t = Table(title="training", title_justify="left", show_header=False, box=None)
    t.add_column(style="bold")
    t.add_column()
    data, loop, best = d.info.get("data", {}), d.loop, d.best
    rows = [
        ("parameters", _num(d.parameters, ",")),
        ("steps", _num(loop.get("step"), ",")),
        ("tokens seen", _num(loop.get("tokens"), ",")),
        ("training time", _duration_text(loop.get("elapsed"))),
        (
            "split",
            f"{data.get('train_tokens', 0):,} train / {data.get('val_tokens', 0):,} val tokens "
            f"({d.info.get('train', {}).get('split', 'tail')})",
        ),
    ]
    if loop.get("passes") is not None:  # decided by the run where its config left it open
        given = d.info.get("train", {})
        wd, floor = in_force(
            (given.get("weight_decay"), given.get("min_lr_ratio")),
            (loop.get("weight_decay"), loop.get("min_lr_ratio")),
        )
        passes, pressure = loop["passes"], loop.get("pressure") or 0.0
        rows.append(
            (
                "regularization",
                f"weight decay {wd}, learning rate decayed to {floor} x peak (for {passes} "
                f"passes over the training text expected x {pressure / max(passes, 1e-9):.2f} "
                f"recurrent parameters per training token = {pressure})",
            )
        )
    if best:
        scope = "whole validation split" if best.get("full") else "validation sample"
        rows.append(
            (
                "kept model",
                f"step {best.get('step', 0):,}: {best.get('val_loss', math.nan):.4f} nats/token, "
                f"{best.get('val_bpc', math.nan):.3f} bits/char ({scope})",
            )
        )
    for k, v in rows:
        t.add_row(k, v)
    return t


def _config_table(d: RunDetails) -> Table:
    """The three configs side by side, every field."""
    configs = [
        ("model", d.info.get("model", {})),
        ("training", d.info.get("train", {})),
        ("data", _flat(d.info.get("data", {}).get("config", {}))),
    ]
    t = Table(title="config", title_justify="left")
    for name, _ in configs:
        t.add_column(name)
        t.add_column("", justify="right")
    items = [sorted(c.items()) for _, c in configs]
    for i in range(max(len(x) for x in items)):
        row: list[str] = []
        for x in items:
            k, v = x[i] if i < len(x) else ("", "")
            row += [k, _escape(str(v))]
        t.add_row(*row)
    return t


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out_: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out_.update(_flat(v, f"{prefix}{k}."))
        else:
            out_[prefix + k] = v
    return out_


def _tokenizer_text(tok: dict[str, Any]) -> Text:
    t = Text("tokenizer: ", style="bold")
    t.append(f"{tok.get('level', '?')} level, {tok.get('vocab_size', 0):,} symbols")
    t.append(" (<pad> <sos> <eos> <unk> and the corpus's own)", style="dim")
    commonest = tok.get("commonest")
    if commonest:
        t.append("\ncommonest: ", style="bold")
        t.append(" ".join(_shown_piece(p) for p in commonest))
    return t


def _print_curves(d: RunDetails) -> None:
    c = d.curves
    if not c.train_steps and not c.val_steps:
        out.print("[dim]no loss records yet (metrics.jsonl)[/]")
        return
    width = max(20, min(72, out.width - 12))
    rows = loss_chart(c.train_steps, c.train_loss, c.val_steps, c.val_loss, width, 10)
    styles = {"train": "cyan", "val": "bold magenta", "val+train": "bold magenta on cyan"}
    title = Text("loss (nats/token)   ", style="bold")
    title.append("█ train", style="cyan")
    title.append("   ● validation", style="bold magenta")
    out.print(title)
    for row in rows:
        line = Text()
        for text, tag in row:
            line.append(text, style=styles.get(tag, "dim" if tag == "axis" else ""))
        out.print(line, no_wrap=True, crop=False)
    if c.final_loss is not None:
        out.print(
            f"kept model on the whole validation split: {c.final_loss:.4f} nats/token, "
            f"{c.final_bpc:.3f} bits/char"
        )


def _print_stopfit(d: RunDetails) -> None:
    f = d.stopfit
    if d.stopfit_problem:
        out.print(f"[yellow]stopping rules: {_escape(d.stopfit_problem)}[/]")
        return
    if f is None:
        out.print(f"[dim]stopping rules: no fit for this run yet; {_escape(STOPFIT_HINT)}[/]")
        return
    t = Table(
        title=f"stopping rules: sample lengths against the validation units "
        f"({f.n:,} samples a rule at temperature {f.temperature:g}; validation mean "
        f"{f.val_mean_length:.1f} tokens)",
        title_justify="left",
    )
    for col in ("rule", "KS distance", "mean length"):
        t.add_column(col, justify="left" if col == "rule" else "right")
    for rule in [*[r for r in STOP_RULES if r in f.ks], *sorted(set(f.ks) - set(STOP_RULES))]:
        mean = f.mean_length.get(rule)
        t.add_row(rule, f"{f.ks[rule]:.3f}", "-" if mean is None else f"{mean:.1f}")
    out.print(t)
    out.print(Text("KS distance: 0 = the same length distribution, 1 = disjoint", style="dim"))


def main() -> None:
    # One program name whether started as `charrnn` or `python -m charrnn`: shell completion
    # registers for it and reads its _CHARRNN_COMPLETE variable.
    app(prog_name="charrnn")
