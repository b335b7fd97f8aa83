"""`charrnn train`: its options, and the library's training run under the live view (trainview)."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from charrnn import defaults
from charrnn.checkpoint import DEFAULT_ROOT
from charrnn.cli.options import (
    MODEL,
    RUN,
    TRAINING,
    CheckpointsDirOpt,
    CorpusArg,
    LevelOpt,
    MaxVocabOpt,
    MinFreqOpt,
    ReplaceErrorsOpt,
    SampleCharsOpt,
    UnitOpt,
    VocabSizeOpt,
    complete_runs,
    format_duration,
    given,
    invocation,
    parse_duration,
)
from charrnn.cli.output import err, friendly, out
from charrnn.cli.trainview import TrainView, summary_table
from charrnn.config import (
    MAX_LAYERS,
    MAX_WIDTH,
    SPREAD_SECTIONS,
    Cell,
    DataConfig,
    Holdout,
    ModelConfig,
    Nonlinearity,
    Optimizer,
    Precision,
    TokenizerConfig,
    TrainConfig,
)
from charrnn.job import Job, with_options
from charrnn.training.distributed import is_main_process, launch, world_size
from charrnn.training.run import train

_RUN_OPTIONS = (
    "run",
    "resume",
    "base",
    "checkpoints",
    "processes",
)  # where it goes, not how it trains


@contextmanager
def _interruptible(view: TrainView) -> Iterator[None]:
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


@friendly
def train_cmd(
    corpus: CorpusArg = None,
    level: LevelOpt = TokenizerConfig.level,
    unit: UnitOpt = DataConfig.unit,
    min_freq: MinFreqOpt = TokenizerConfig.min_freq,
    max_vocab: MaxVocabOpt = None,
    vocab_size: VocabSizeOpt = TokenizerConfig.vocab_size,
    sample_chars: SampleCharsOpt = TokenizerConfig.sample_chars,
    replace_errors: ReplaceErrorsOpt = DataConfig.replace_errors,
    cell: Annotated[
        Cell, typer.Option(help="Recurrent cell.", rich_help_panel=MODEL)
    ] = ModelConfig.cell,
    nonlinearity: Annotated[
        Nonlinearity, typer.Option(help="Elman rnn cell only.", rich_help_panel=MODEL)
    ] = ModelConfig.nonlinearity,
    layers: Annotated[
        int, typer.Option(min=1, max=MAX_LAYERS, rich_help_panel=MODEL)
    ] = ModelConfig.layers,
    hidden: Annotated[
        int,
        typer.Option(
            min=0,
            max=MAX_WIDTH,
            help=defaults.hidden_help(),
            rich_help_panel=MODEL,
        ),
    ] = ModelConfig.hidden,
    embed: Annotated[
        int,
        typer.Option(min=0, max=MAX_WIDTH, help=defaults.embed_help(), rich_help_panel=MODEL),
    ] = ModelConfig.embed,
    dropout: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=0.95,
            show_default=False,
            help=defaults.dropout_help(),
            rich_help_panel=MODEL,
        ),
    ] = ModelConfig.dropout,
    weight_drop: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=0.95,
            show_default=False,
            help=defaults.weight_drop_help(),
            rich_help_panel=MODEL,
        ),
    ] = ModelConfig.weight_drop,
    tie_weights: Annotated[
        bool | None,
        typer.Option(show_default=False, help=defaults.tie_weights_help(), rich_help_panel=MODEL),
    ] = ModelConfig.tie_weights,
    seq_len: Annotated[
        int, typer.Option(min=1, help="BPTT window.", rich_help_panel=TRAINING)
    ] = TrainConfig.seq_len,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Parallel streams.", rich_help_panel=TRAINING)
    ] = TrainConfig.batch_size,
    lr: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=10.0,
            help=defaults.lr_help(),
            rich_help_panel=TRAINING,
        ),
    ] = TrainConfig.lr,
    clip: Annotated[
        float, typer.Option(min=0.0, help="Gradient norm clip; 0 = off.", rich_help_panel=TRAINING)
    ] = TrainConfig.clip,
    weight_decay: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            show_default=False,
            help="AdamW weight decay (times the learning rate each step); 0 = off. Default: "
            "from how much the run can memorize (its expected passes over the training text x "
            f"its recurrent parameters per training token): {defaults.regularization_help(0)}.",
            rich_help_panel=TRAINING,
        ),
    ] = TrainConfig.weight_decay,
    min_lr_ratio: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            show_default=False,
            help="The learning rate decays to this x its peak by the end. Default: as "
            f"--weight-decay's: {defaults.regularization_help(1)}.",
            rich_help_panel=TRAINING,
        ),
    ] = TrainConfig.min_lr_ratio,
    row_decay: Annotated[
        float | None,
        typer.Option(
            min=0.0, show_default=False, help=defaults.row_decay_help(), rich_help_panel=TRAINING
        ),
    ] = TrainConfig.row_decay,
    dropout_rise: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            show_default=False,
            help=defaults.dropout_rise_help(),
            rich_help_panel=TRAINING,
        ),
    ] = TrainConfig.dropout_rise,
    average: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Evaluate and keep an average of the weights, step s weighed as s^N at step t "
            "(about the last 10% of the steps at 7); 0 = the weights as trained.",
            rich_help_panel=TRAINING,
        ),
    ] = TrainConfig.average,
    calibrate: Annotated[
        bool,
        typer.Option(
            help="Divide the kept model's logits by a temperature fitted on the validation "
            "text at each evaluation (training never sees it): a model trained past its text "
            "is surer than held-out text bears out.",
            rich_help_panel=TRAINING,
        ),
    ] = TrainConfig.calibrate,
    max_steps: Annotated[int | None, typer.Option(min=1, rich_help_panel=TRAINING)] = None,
    epochs: Annotated[float | None, typer.Option(min=0.0, rich_help_panel=TRAINING)] = None,
    time_budget: Annotated[
        str,
        typer.Option(
            help="Wall time for the whole command, e.g. 150s, 10m, 1h; 'none' = no limit.",
            rich_help_panel=TRAINING,
        ),
    ] = format_duration(TrainConfig.time_budget),
    val_fraction: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, help="Held-out share of the corpus.", rich_help_panel=TRAINING
        ),
    ] = TrainConfig.val_fraction,
    split: Annotated[
        Holdout,
        typer.Option(
            help="Which text is held out: the corpus's tail, or the tail of each of its "
            f"{SPREAD_SECTIONS} equal stretches (spread), so that validation samples the whole "
            "corpus.",
            rich_help_panel=TRAINING,
        ),
    ] = Holdout(TrainConfig.split),
    patience: Annotated[
        int,
        typer.Option(
            min=0,
            help="Stop after this many evaluations without improvement; 0 = never.",
            rich_help_panel=TRAINING,
        ),
    ] = TrainConfig.patience,
    sample_every: Annotated[
        int,
        typer.Option(
            min=0, help="Print a sample every N steps; 0 = never.", rich_help_panel=TRAINING
        ),
    ] = TrainConfig.sample_every,
    seed: Annotated[int, typer.Option(rich_help_panel=TRAINING)] = TrainConfig.seed,
    device: Annotated[
        str, typer.Option(help="auto, cpu, cuda or mps.", rich_help_panel=TRAINING)
    ] = TrainConfig.device,
    precision: Annotated[
        Precision,
        typer.Option(
            help="auto: bf16 on a CPU with bfloat16 arithmetic (Intel AMX, AVX-512 BF16), fp32 "
            "elsewhere; fp32; bf16 mixed precision (CUDA or CPU); fp16 (CUDA).",
            rich_help_panel=TRAINING,
        ),
    ] = Precision(TrainConfig.precision),
    optimizer: Annotated[
        Optimizer,
        typer.Option(
            help="adamw; muon: Muon on the recurrent layers' matrices, AdamW on the rest.",
            rich_help_panel=TRAINING,
        ),
    ] = Optimizer(TrainConfig.optimizer),
    skip_nonfinite: Annotated[
        bool,
        typer.Option(
            help="Skip a step whose loss is NaN or infinite instead of stopping.",
            rich_help_panel=TRAINING,
        ),
    ] = TrainConfig.skip_nonfinite,
    stop_fit: Annotated[
        int,
        typer.Option(
            min=0,
            help="Samples per stopping rule whose lengths are compared with the validation "
            "units at the end (stopfit.json); 0 = skip.",
            rich_help_panel=TRAINING,
        ),
    ] = TrainConfig.stop_fit,
    run: Annotated[
        str | None,
        typer.Option(
            "--name",
            "--run",
            help="Run name; default: the corpus name. (--run works too, but not under torchrun, "
            "whose own --run-path takes it.)",
            rich_help_panel=RUN,
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue --name (default: the latest run) from its last checkpoint, on the "
            "corpus it was trained on unless one is given.",
            rich_help_panel=RUN,
        ),
    ] = False,
    base: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Fine-tune a trained run (a name or a folder) on this corpus: a new run starts "
            "from its kept model and tokenizer, which grows by the corpus's new symbols "
            "(char and word levels). Model options that contradict it are refused.",
            rich_help_panel=RUN,
            autocompletion=complete_runs,
        ),
    ] = None,
    processes: Annotated[
        int,
        typer.Option(
            min=1,
            max=256,
            help="Train in this many processes on this machine (PyTorch's launcher, as torchrun "
            "--standalone); --batch-size is shared between them.",
            rich_help_panel=RUN,
        ),
    ] = 1,
    checkpoints: CheckpointsDirOpt = DEFAULT_ROOT,
    ctx: typer.Context = None,  # type: ignore[assignment]
) -> None:
    """Train a model on a corpus (tokenizing it first, or reusing the cached encoding)."""
    called = invocation(ctx)
    if processes > 1:
        raise typer.Exit(launch(processes, called.args if called else None))
    # the process's start when run as a program, so --time-budget counts imports
    started = called.started if called else time.monotonic()
    options = {k: v for k, v in ctx.params.items() if k not in ("corpus", *_RUN_OPTIONS)}
    job = with_options(Job(), {**options, "time_budget": parse_duration(time_budget)})
    # A resume keeps the run's own settings except those given on this command line.
    overrides = {k for k in ctx.params if given(ctx, k)}
    view = TrainView(shown=is_main_process())  # under torchrun, rank 0 alone shows progress
    with view.showing(), _interruptible(view):
        result = train(
            corpus,
            job,
            run=run,
            root=checkpoints,
            resume=resume,
            callbacks=view,
            started=started,
            on_data=view.on_data,
            overrides=overrides,
            base=base,
        )
    if not view.shown:
        raise typer.Exit(130 if result.stopped_by == "interrupted" else 0)
    out.print(summary_table(result, corpus))
    if result.stopped_by == "interrupted":
        again = "torchrun [options] -m charrnn train" if world_size() > 1 else "charrnn train"
        where = f" --checkpoints {checkpoints}" if checkpoints != DEFAULT_ROOT else ""
        err.print(
            f"[yellow]interrupted at step {result.steps}; resume with:[/] {again} "
            f"--name {result.run.name} --resume{where}",
            soft_wrap=True,
        )
        raise typer.Exit(130)
