"""The command line: parse options, call the library, print. Nothing else lives here."""

from __future__ import annotations

import functools
import json
import math
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from charrnn import __version__
from charrnn.checkpoint import DEFAULT_ROOT, load_run
from charrnn.data import DataConfig, describe, prepare
from charrnn.distributed import is_main_process, world_size
from charrnn.errors import CharRNNError
from charrnn.generate import SampleConfig, Sampler, Stop
from charrnn.model import Cell, ModelConfig, Nonlinearity
from charrnn.precision import Precision
from charrnn.score import SentenceScore, score
from charrnn.text import Unit
from charrnn.tokenizers import UNK, Level, TokenizerConfig
from charrnn.train import Callbacks, EvalStats, Job, StepStats, TrainConfig, TrainResult, train

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
LevelOpt = Annotated[Level, typer.Option(help="Token level.", rich_help_panel=DATA)]
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
    int, typer.Option(min=8, help="Subword vocabulary size (bpe, unigram).", rich_help_panel=DATA)
]
ReplaceErrorsOpt = Annotated[
    bool,
    typer.Option(help="Replace invalid UTF-8 bytes instead of stopping.", rich_help_panel=DATA),
]
CheckpointOpt = Annotated[
    str | None,
    typer.Option("--checkpoint", "-c", help="Run name or folder; default: the latest trained run."),
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
) -> DataConfig:
    tok = TokenizerConfig(
        level=level, min_freq=min_freq, max_vocab=max_vocab, vocab_size=vocab_size
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
    replace_errors: ReplaceErrorsOpt = _D.replace_errors,
    output: Annotated[
        Path | None, typer.Option("--out", "-o", help="Dataset folder; default: the shared cache.")
    ] = None,
) -> None:
    """Build the vocabulary and the encoded corpus that train would use."""
    config = _data_config(level, unit, min_freq, max_vocab, vocab_size, replace_errors)
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
        ("characters", f"{d['characters']:,}"),
        ("units", f"{d['units']:,}"),
        ("tokens", f"{d['tokens']:,}"),
        ("vocabulary", f"{d['vocabulary']:,}"),
        ("<unk> rate", f"{d['unk_rate']:.3%}"),
        ("mean unit length", f"{d['mean_unit_length']:.1f} tokens"),
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
            f"{info['parameters']:,} parameters, {info['level']} level, "
            f"{info['train_tokens']:,} train / {info['val_tokens']:,} val tokens, "
            f"on {info['device']}{resumed}"
        )

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
            f"ppl {e.perplexity:.2f}{mark}"
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
        ]
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
    replace_errors: ReplaceErrorsOpt = _D.replace_errors,
    cell: Annotated[Cell, typer.Option(help="Recurrent cell.", rich_help_panel=MODEL)] = _M.cell,
    nonlinearity: Annotated[
        Nonlinearity, typer.Option(help="Elman rnn cell only.", rich_help_panel=MODEL)
    ] = _M.nonlinearity,
    layers: Annotated[int, typer.Option(min=1, max=16, rich_help_panel=MODEL)] = _M.layers,
    hidden: Annotated[int, typer.Option(min=1, max=16384, rich_help_panel=MODEL)] = _M.hidden,
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
    lr: Annotated[float, typer.Option(min=1e-8, max=10.0, rich_help_panel=TRAINING)] = _T.lr,
    clip: Annotated[
        float, typer.Option(min=0.0, help="Gradient norm clip; 0 = off.", rich_help_panel=TRAINING)
    ] = _T.clip,
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
            min=0.0, max=1.0, help="Held-out tail of the corpus.", rich_help_panel=TRAINING
        ),
    ] = _T.val_fraction,
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
) -> None:
    """Train a model on a corpus (tokenizing it first, or reusing the cached encoding)."""
    started = time.monotonic()
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
            max_steps=max_steps,
            epochs=epochs,
            time_budget=parse_duration(time_budget),
            val_fraction=val_fraction,
            patience=patience,
            sample_every=sample_every,
            seed=seed,
            device=device,
            precision=precision.value,
            skip_nonfinite=skip_nonfinite,
        ),
        data=_data_config(level, unit, min_freq, max_vocab, vocab_size, replace_errors),
    )
    main = is_main_process()  # under torchrun, rank 0 alone shows progress
    with Progress(
        TextColumn("[bold]step {task.fields[step]}[/]"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[loss]}"),
        TextColumn("{task.fields[val]}"),
        TextColumn("{task.fields[speed]}"),
        TimeRemainingColumn(),
        console=out,
        disable=not main,
    ) as bar:
        view = _TrainView(bar)
        data_task = bar.add_task(
            "data", total=None, visible=False, loss="", val="", speed="", step=""
        )

        def on_data(done: int, total: int) -> None:
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
            )
    if not main:
        raise typer.Exit(130 if result.stopped_by == "interrupted" else 0)
    out.print(_summary(result, corpus))
    if result.stopped_by == "interrupted":
        again = "torchrun [options] -m charrnn -- train" if world_size() > 1 else "charrnn train"
        err.print(
            f"[yellow]interrupted at step {result.steps}; resume with:[/] {again} {corpus} "
            f"--run {result.run.name} --resume"
            + (f" --checkpoints {checkpoints}" if checkpoints != DEFAULT_ROOT else "")
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
    checkpoints: CheckpointsDirOpt = DEFAULT_ROOT,
) -> None:
    """Generate text from a trained model."""
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
    loaded = load_run(checkpoint, checkpoints)
    sampler = Sampler(loaded.model, loaded.tokenizer)
    prompt_ids = sampler.encode_prompt(prompt or "")[1:]
    if prompt_ids and all(t == UNK for t in prompt_ids):
        fail("--prompt has only symbols this model does not know")
    samples = sampler.sample(n, config, prompt or "")
    if as_json:
        payload = [
            {
                "text": s.text,
                "log_prob": s.log_prob,
                "tokens": len(s.tokens),
                "cut": s.cut,
                **({"length": s.length} if s.length is not None else {}),
            }
            for s in samples
        ]
        out.print_json(json.dumps(payload))
        return
    if samples and samples[0].unk_in_prompt:
        err.print(
            f"[yellow]note:[/] {samples[0].unk_in_prompt} prompt symbol(s) unknown to the "
            "model, read as <unk>"
        )
    for i, s in enumerate(samples):
        if i:
            out.print(Text("─" * 20, style="dim"))
        out.print(Text(s.text), soft_wrap=True)
        if s.cut:
            err.print(f"[yellow](cut at --max-tokens {max_tokens})[/]")


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
    if file is not None:
        if str(file) == "-":
            try:
                lines += [ln.rstrip("\n") for ln in sys.stdin]
            except UnicodeDecodeError as e:
                fail(f"standard input is not valid UTF-8 (byte {e.start})")
        else:
            if not file.is_file():
                fail(f"sentence file not found: {file}")
            try:
                lines += file.read_text(encoding="utf-8").splitlines()
            except UnicodeDecodeError as e:
                fail(f"sentence file is not valid UTF-8 at byte offset {e.start}: {file}")
        lines = [ln for ln in lines if ln.strip()] if file is not None else lines
    if not lines:
        fail("nothing to score: give sentences as arguments or --file")
    return lines


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
        bool, typer.Option(help="Show every term of each score.", rich_help_panel=OUTPUT)
    ] = False,
    as_json: JsonOpt = False,
    checkpoints: CheckpointsDirOpt = DEFAULT_ROOT,
) -> None:
    """Log-probability of each sentence as a unit <sos> ... <eos>; several are ranked."""
    lines = _read_sentences(sentences or [], file)
    loaded = load_run(checkpoint, checkpoints)
    results = score(loaded.model, loaded.tokenizer, lines, stop)
    if as_json:
        out.print_json(json.dumps([_score_json(r, per_token) for r in results]))
        return
    ranked = sorted(results, key=lambda r: -r.log_prob)
    table = Table(
        title=f"scores under --stop {stop.value} ({loaded.folder.name})", title_justify="left"
    )
    for col, justify in (
        ("#", "right"),
        ("sentence", "left"),
        ("log P (nats)", "right"),
        ("P", "right"),
        ("ppl", "right"),
        ("bits/char", "right"),
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
        )
    out.print(table)
    if per_token:
        for r in results:
            out.print(_per_token_view(r))


def _per_token_view(r: SentenceScore) -> Table:
    line = Text()
    for t in r.terms:
        if t.kind == "token":
            line.append(
                t.piece, style=_surprisal_style(-t.log_prob) + (" underline" if t.unk else "")
            )
    t = Table(title=Text("") + line, title_justify="left", show_edge=False)
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


def main() -> None:
    app()
