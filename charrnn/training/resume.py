"""Resuming a run: the job its run.json recorded, the settings a resume may change, and the
checks that it goes on with the corpus it started on, through the tokenizer its weights were
trained with."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import fields
from pathlib import Path
from typing import Any

from charrnn.builtin import Source, resolve_corpus
from charrnn.checkpoint import (
    BEST,
    LAST,
    RUN_JSON,
    check_shapes,
    check_tokenizer,
    find_run,
    is_incomplete_run,
    read_meta,
    read_run_json,
)
from charrnn.config import DataConfig, ModelConfig, TrainConfig
from charrnn.data import Dataset
from charrnn.errors import CheckpointError, ConfigError
from charrnn.job import Job
from charrnn.schema import build
from charrnn.tokenizers import load_tokenizer


def resumed_run(
    job: Job, run: str | None, root: Path, overrides: Collection[str] | None
) -> tuple[Path, Job, dict[str, Any]]:
    """The folder of the run to resume, the job as it recorded it (with the settings a
    resume may change), and its run.json."""
    if run is not None and is_incomplete_run(root / run):
        raise CheckpointError(
            f"run {run!r} has no checkpoint to resume from (its first start was cut "
            "short); start it again without --resume"
        )
    folder = find_run(run, root)
    info = read_run_json(folder)  # checked: its configs are valid
    if not (folder / LAST).exists():
        kept = f"; its {BEST} is kept" if (folder / BEST).exists() else ""
        raise CheckpointError(f"run {folder.name!r} has no {LAST} to resume from{kept}")
    where = folder / RUN_JSON
    if info["data"].get("hash") is None:  # checked before the corpus is read
        raise CheckpointError(
            f"{where} has no corpus hash (data.hash): a resume cannot check that the corpus "
            "is the one the run started on"
        )
    saved = Job(
        build(ModelConfig, info["model"], where, CheckpointError, "model."),
        build(
            TrainConfig,
            {**info["train"], **_overridable(job.train, overrides)},
            where,
            CheckpointError,
            "train.",
        ),
        build(DataConfig, info["data"]["config"], where, CheckpointError, "data.config."),
    )
    changed = _changed_settings(job, saved, overrides or ())
    if changed:
        raise ConfigError(
            f"{_flags(changed)}: run {folder.name!r} started with other values, and a "
            f"resume keeps them (it may change {_flags(RESUMABLE)})"
        )
    check_shapes(saved.model, folder / LAST)
    return folder, saved, info


def check_resume(folder: Path, info: dict[str, Any], ds: Dataset) -> None:
    """A resume goes on with the corpus the run started on, read through the tokenizer its
    weights were trained with."""
    if info["data"]["hash"] != ds.meta["source"]["hash"]:
        raise ConfigError(
            f"the corpus has changed since run {folder.name!r} started; "
            "resume needs the same corpus"
        )
    tokenizer = load_tokenizer(folder)
    check_tokenizer(tokenizer, read_meta(folder / LAST), folder / LAST)
    if tokenizer.fingerprint() != ds.tokenizer.fingerprint():
        raise ConfigError(
            f"the tokenizer of {ds.folder} is not the one run {folder.name!r} was trained "
            "with; resume needs the same"
        )


# Settings a resume may change: how long to go on, and where. The others are the run's.
RESUMABLE = ("max_steps", "epochs", "time_budget", "device", "precision", "patience")
RESUMABLE += ("sample_every",)


def _changed_settings(given: Job, saved: Job, names: Collection[str]) -> list[str]:
    """The settings among ``names`` a resume cannot change that ``given`` sets otherwise than
    the run did (the same value given again is no change)."""
    configs = [given.data.tokenizer, given.data, given.model, given.train]  # tokenizer first:
    kept = [saved.data.tokenizer, saved.data, saved.model, saved.train]  # its vocab_size
    changed = []
    for name in sorted(set(names) - set(RESUMABLE)):
        for mine, theirs in zip(configs, kept):
            if name in {f.name for f in fields(mine)}:
                if getattr(mine, name) != getattr(theirs, name):
                    changed.append(name)
                break
    return changed


def _flags(names: Collection[str]) -> str:
    """Settings as the command line spells them: max_steps -> --max-steps."""
    return ", ".join("--" + name.replace("_", "-") for name in names)


def _overridable(train: TrainConfig, overrides: Collection[str] | None) -> dict[str, Any]:
    """The settings of ``train`` a resume takes: those in ``overrides`` (None: all)."""
    return {k: getattr(train, k) for k in RESUMABLE if overrides is None or k in overrides}


def run_corpus(info: dict[str, Any]) -> Source:
    """The corpus a run was trained on, as its run.json records it (a built-in by its name,
    so that a reinstalled charrnn finds it)."""
    builtin = info.get("builtin")
    if isinstance(builtin, str):
        return resolve_corpus(builtin)
    corpus = info.get("corpus")
    if not isinstance(corpus, str):
        raise CheckpointError("run.json does not say which corpus the run was trained on")
    return Source(Path(corpus))
