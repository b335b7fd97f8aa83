"""Starting a run or resuming one: its folder and run.json, its data and model, and the
settings a resume may change. ``train`` is the whole job; the loop is in ``loop``.

Under torchrun every process calls ``train`` and they train one model together (see
``distributed``); rank 0 alone writes the run and reports.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from charrnn.builtin import Source, resolve_corpus
from charrnn.checkpoint import (
    BEST,
    DEFAULT_ROOT,
    FORMAT_VERSION,
    LAST,
    RUN_JSON,
    STARTING,
    check_run_name,
    is_incomplete_run,
    is_run,
    new_run_name,
    remove_stale_temps,
    run_lock,
)
from charrnn.config import ModelConfig, Precision, TrainConfig
from charrnn.corpus import Corpus
from charrnn.data import (
    Dataset,
    Split,
    open_source,
    prepare,
    resolve_data,
)
from charrnn.defaults import (
    TRUSTED_VAL_TOKENS,
    bf16_speedup,
    embed_for,
    hidden_for_budget,
    level_dropout,
    lr_for,
    max_len_for,
    tie_for,
)
from charrnn.device import resolve_device
from charrnn.errors import (
    ConfigError,
    CorpusError,
    TrainingError,
    out_of_memory,
)
from charrnn.io import write_json_atomic
from charrnn.job import Job
from charrnn.model import RNNLM, count_parameters
from charrnn.tokenizers import Tokenizer, load_tokenizer
from charrnn.training.callbacks import Callbacks, Muted, TrainResult
from charrnn.training.distributed import Ranks, session
from charrnn.training.finetune import (
    Base,
    check_dataset,
    fine_tune_job,
    given_settings,
    grown_model,
    open_base,
)
from charrnn.training.loop import Trainer
from charrnn.training.precision import resolve_precision
from charrnn.training.resume import check_resume, resumed_run, run_corpus
from charrnn.version import __version__

# -- devices and models -------------------------------------------------------------------


def fit_model_config(
    model: ModelConfig,
    ds: Dataset,
    train: Split,
    config: TrainConfig | None = None,
    device: torch.device | None = None,
) -> ModelConfig:
    """Fill in what the corpus decides (vocabulary size, the longest length to predict) and,
    unless they were given, what the level decides (the embedding's width, tied rows, the
    dropout of words) and the hidden size the time budget and precision allow (``config``'s;
    none: 512)."""
    longest = int(train.unit_lengths().max()) if len(train.unit_starts) else 1
    budget = config.time_budget if config else None
    device, level = device or torch.device("cpu"), ds.tokenizer.config
    vocab = ds.tokenizer.vocab_size
    embed, hidden = model.embed or embed_for(level), model.hidden
    tie = tie_for(level) if model.tie_weights is None else model.tie_weights
    dropout = level_dropout(level) if model.dropout is None else model.dropout
    if not hidden:
        hidden = hidden_for_budget(budget, device.type)
        if config and resolve_precision(config.precision, device) is Precision.bf16:
            speedup = bf16_speedup(vocab, embed, hidden, len(train))
            hidden = hidden_for_budget(budget, device.type, speedup)
    max_len = max_len_for(longest)
    fitted = {"vocab_size": vocab, "max_len": max_len, "hidden": hidden, "embed": embed}
    return replace(model, **fitted, tie_weights=tie, dropout=dropout)


# -- the whole job ------------------------------------------------------------------------


def train(
    corpus: str | Path | None,
    job: Job = Job(),
    run: str | None = None,
    root: Path = DEFAULT_ROOT,
    resume: bool = False,
    callbacks: Callbacks | None = None,
    started: float | None = None,
    on_data: Callable[[int, int], None] | None = None,
    overrides: Collection[str] | None = None,
    base: str | Path | None = None,
) -> TrainResult:
    """Tokenize (or reuse) the corpus, then train a new run or resume one; with ``base`` (a
    run name or folder), a new run that starts from that run's model (see ``finetune``).

    ``corpus`` is a text file, a dataset folder, or the name of a built-in corpus (None: the
    default built-in, or for a resume the run's own; see ``builtin``).
    ``started`` is the monotonic time the time budget counts from (default: now). Under
    torchrun every process calls this and they train one model; rank 0 alone writes the run
    and calls the callbacks (the others only ask theirs whether to stop).
    ``overrides``: the settings the caller set explicitly. On a resume, those of
    ``job.train`` that replace the run's own (None: all those a resume may change); with a
    base, those that may not contradict it (None: those ``job`` sets otherwise than the
    defaults).
    """
    started = time.monotonic() if started is None else started
    with session(resolve_device(job.train.device)) as ranks:
        if not ranks.is_main:
            callbacks, on_data = Muted(callbacks), None
        source = None if corpus is None and resume else resolve_corpus(corpus)
        start = _base(base, Path(root), resume, ranks)
        if start is not None:
            job = fine_tune_job(job, start, given_settings(job, overrides))
        try:
            return _train(
                source,
                job,
                run,
                Path(root),
                resume,
                callbacks,
                started,
                on_data,
                ranks,
                overrides,
                start,
            )
        except (MemoryError, RuntimeError) as e:
            words = out_of_memory(e)
            if words is None:
                raise
            raise TrainingError(
                f"{words} to train this model; lower --hidden, --embed, --layers or --batch-size"
            ) from None


def _train(
    source: Source | None,
    job: Job,
    run: str | None,
    root: Path,
    resume: bool,
    callbacks: Callbacks | None,
    started: float,
    on_data: Callable[[int, int], None] | None,
    ranks: Ranks,
    overrides: Collection[str] | None = None,
    start: Base | None = None,
) -> TrainResult:
    cb = callbacks or Callbacks()
    main = ranks.is_main
    new_name = Path(source.path).stem if source else ""
    folder, job, info = (
        _open_run(new_name, job, run, root, resume, overrides)
        if main or resume
        else (root, job, {})
    )
    source = source or run_corpus(info)
    corpus = source.path
    folder = Path(ranks.from_main(str(folder)))  # the name rank 0 chose
    ranks.streams(job.train.batch_size)  # fail early if the ranks cannot share the streams
    grow_from = start.tokenizer if start else _own_tokenizer(folder, info)
    job, ds = _dataset(Path(corpus), job, ranks, on_data, grow_from, new=not resume)
    if start is not None:
        check_dataset(ds, start)
    lineage = start.lineage(ds.tokenizer) if start else info.get("base")
    if resume:
        check_resume(folder, info, ds)
    train_split, val = ds.split(job.train.val_fraction, job.train.split, job.train.split_cut)
    _check_sizes(train_split, val, job.train)
    job, model = _model(job, ds, train_split, resume, ranks.device, start)
    if main:
        _make_folder(folder, starting=not resume)
    with run_lock(folder) if main else contextlib.nullcontext(), _kept_if_started(folder, main):
        if main and not resume and (folder / LAST).exists():  # started meanwhile elsewhere
            raise ConfigError(f"run {folder.name!r} already exists in {root}/")
        if main:
            remove_stale_temps(folder)  # left by a writer that was killed
        trainer = Trainer(
            model, ds, train_split, val, job.train, folder, cb, started, ranks.device, ranks
        )
        if resume:
            trainer.restore()
        else:
            if main:
                run_info = _run_json(model.config, job, ds, train_split, val, source, lineage)
                _write_run_files(folder, ds, run_info)
            trainer.save_last()  # from here on, every moment of the run is resumable
            if main:
                (folder / STARTING).unlink(missing_ok=True)
        ranks.reseed(job.train.seed, trainer.loop.step)
        return _start(trainer, cb, ds, source, resume, lineage)


def _dataset(
    corpus: Path,
    job: Job,
    ranks: Ranks,
    on_data: Callable[[int, int], None] | None,
    grow_from: Tokenizer | None = None,
    new: bool = True,
) -> tuple[Job, Dataset]:
    """The encoded corpus (rank 0 encodes it, the others find it in the cache), and the job
    with the level and vocabulary the corpus and the budget decided. A fine-tuned run's text
    is encoded with ``grow_from``, grown by the symbols of the text it lacks; a ``new`` run's
    subword pieces are learned without its validation text."""
    budget = job.train.time_budget if ranks.device.type == "cpu" else None
    held = (job.train.val_fraction, job.train.split) if new and grow_from is None else None
    source = open_source(corpus, job.data)
    try:
        job = replace(job, data=resolve_data(source, job.data, budget, held))
        ds, _cached = ranks.main_first(
            lambda: prepare(source, job.data, progress=on_data, base=grow_from)
        )
    finally:
        if isinstance(source, Corpus):
            source.close()  # the copy of a stream, once encoded
    return job, ds


def _own_tokenizer(folder: Path, info: dict[str, Any]) -> Tokenizer | None:
    """A resumed fine-tuned run's own tokenizer, which its text is encoded with again (grown
    already by every symbol of the text: growing it again adds none)."""
    return load_tokenizer(folder) if info.get("base") else None


def _model(
    job: Job,
    ds: Dataset,
    train_split: Split,
    resume: bool,
    device: torch.device,
    start: Base | None = None,
) -> tuple[Job, RNNLM]:
    """The model a new run's corpus and budget size (a resumed run's is as it was; a
    fine-tuned run's its base's, grown), seeded, and the job with the learning rate its
    width takes where none was given."""
    torch.manual_seed(job.train.seed)
    np.random.seed(job.train.seed % 2**32)
    if start is not None and not resume:
        model = grown_model(start, job.model, ds, train_split)
        return replace(job, model=model.config), model
    config = (
        job.model if resume else fit_model_config(job.model, ds, train_split, job.train, device)
    )
    if not job.train.lr:
        job = replace(job, train=replace(job.train, lr=lr_for(ds.tokenizer.config, config.hidden)))
    model = RNNLM(config).to(device)
    if not resume:
        model.set_unseen(*ds.symbol_counts(train_split))
    return job, model


def _base(ref: str | Path | None, root: Path, resume: bool, ranks: Ranks) -> Base | None:
    """The run a new run starts from (every rank reads it), or None."""
    if ref is None:
        return None
    if resume:
        raise ConfigError(
            "--from starts a new run from a trained one, --resume goes on with a run: give "
            "one of them (a fine-tuned run resumes without --from)"
        )
    return open_base(ref, root, ranks.device)


def _make_folder(folder: Path, starting: bool) -> None:
    """The run folder; a first start marks it STARTING until its first checkpoint is in, so
    that a start cut short may be started again (is_incomplete_run)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if starting:
            (folder / STARTING).write_text(f"pid {os.getpid()}\n")
    except OSError as e:
        raise TrainingError(f"cannot create the run folder {folder}: {e.strerror or e}") from None


@contextlib.contextmanager
def _kept_if_started(folder: Path, main: bool) -> Iterator[None]:
    """A run that fails before its first checkpoint leaves no folder behind (it holds nothing
    worth keeping); one that has a checkpoint keeps it."""
    had_checkpoint = (folder / LAST).exists()
    try:
        yield
    except BaseException:
        if main and not had_checkpoint and not (folder / LAST).exists():
            shutil.rmtree(folder, ignore_errors=True)
        raise


def _write_run_files(folder: Path, ds: Dataset, run_info: dict[str, Any]) -> None:
    try:
        ds.tokenizer.save(folder)
        write_json_atomic(folder / RUN_JSON, run_info)
    except OSError as e:
        raise TrainingError(f"could not write the run folder {folder}: {e.strerror or e}") from None


def _start(
    trainer: Trainer,
    cb: Callbacks,
    ds: Dataset,
    source: Source,
    resume: bool,
    base: dict[str, Any] | None = None,
) -> TrainResult:
    model, c = trainer.model, trainer.config
    cb.on_start(
        {
            "run": trainer.folder.name,
            "corpus": source.label(),
            "corpus_bytes": ds.meta["n_bytes"],
            "time_budget": c.time_budget,
            "max_steps": c.max_steps,
            "epochs": c.epochs,
            "warnings": _split_warnings(trainer.val, ds),
            "folder": str(trainer.folder),
            "parameters": count_parameters(model),
            "device": str(trainer.device),
            "precision": trainer.amp.precision.value,
            "train_tokens": len(trainer.train_split),
            "val_tokens": len(trainer.val),
            "split": trainer.config.split.value,
            "steps_per_epoch": len(trainer.batches),
            "resumed_from": trainer.loop.step if resume else None,
            "dataset": str(ds.folder),
            "model": model.config.to_dict(),
            "level": ds.tokenizer.level.value,
            "vocab_size": ds.tokenizer.vocab_size,
            "base": base,  # where a fine-tuned run started from (its run.json's "base")
        }
    )
    return trainer.run()


def _open_run(
    name: str,
    job: Job,
    run: str | None,
    root: Path,
    resume: bool,
    overrides: Collection[str] | None = None,
) -> tuple[Path, Job, dict[str, Any]]:
    """The run folder, and for a resume the job as the run recorded it."""
    if resume:
        return resumed_run(job, run, root, overrides)
    if run is not None:
        check_run_name(run)
        folder = root / run
        if folder.exists() and not is_incomplete_run(folder):
            raise ConfigError(_taken(folder, root))
        return folder, job, {}
    return root / new_run_name(root, name), job, {}


def _taken(folder: Path, root: Path) -> str:
    """Why a new run cannot go into ``folder``: nothing that holds trained weights, or that
    charrnn did not make, is ever replaced."""
    if (folder / LAST).exists() and is_run(folder):
        return (
            f"run {folder.name!r} already exists in {root}/; pass --resume to continue it, "
            "or choose another --name"
        )
    if (folder / BEST).exists() and is_run(folder):
        return (
            f"run {folder.name!r} holds trained weights ({BEST}) but no {LAST} to resume "
            "from; they are kept: choose another --name"
        )
    return (
        f"{folder} exists and is not a run that was cut short at its start; choose another --name"
    )


def _split_warnings(val: Split, ds: Dataset) -> list[str]:
    """What a user should know about a validation split too small to trust."""
    if len(val) >= TRUSTED_VAL_TOKENS:
        return []
    share = len(val) / max(1, len(ds.tokens))
    return [
        f"the validation split holds only {len(val):,} tokens ({share:.1%} of the text): its "
        "losses are noisy, and so is the choice of the kept model; raise --val-fraction"
    ]


def _check_sizes(train: Split, val: Split, config: TrainConfig) -> None:
    need = config.batch_size * config.seq_len + 1
    if len(train) < need:
        raise CorpusError(
            f"corpus too short for one batch: {len(train)} training tokens, need "
            f"batch-size x seq-len + 1 = {need}; lower --batch-size or --seq-len"
        )
    if len(val) < 2:
        raise CorpusError("validation split is empty; raise --val-fraction or use a longer corpus")


def _where(corpus: str | Path) -> str:
    """The corpus as run.json records it: its whole path, or for a stream (/dev/stdin,
    <(...)) the name the user gave, which resolves to no file."""
    path = Path(corpus).resolve()
    return str(path) if path.exists() else str(corpus)


def _run_json(
    model: ModelConfig,
    job: Job,
    ds: Dataset,
    train: Split,
    val: Split,
    source: Source,
    base: dict[str, Any] | None = None,
) -> dict[str, Any]:
    val_lengths = val.unit_lengths()
    return {
        **({"base": base} if base else {}),  # the run a fine-tuned run started from
        "format_version": FORMAT_VERSION,
        "charrnn_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "corpus": _where(source.path),
        **({"builtin": source.builtin} if source.builtin else {}),
        "model": model.to_dict(),
        "train": job.train.to_dict(),
        "data": {
            "config": job.data.to_dict(),
            "hash": ds.meta["source"]["hash"],
            "dataset": str(ds.folder),
            "unit": ds.meta["unit"],
            "level": ds.tokenizer.level.value,
            "train_tokens": len(train),
            "val_tokens": len(val),
            "val_chars": val.n_chars,
            "val_bytes": val.n_bytes,
            "val_units": len(val.unit_starts),
            "val_unit_length_mean": float(val_lengths.mean()) if len(val_lengths) else 0.0,
        },
    }
