"""What a run did, read from its folder without loading its weights: for ``runs`` and ``info``.

    run.json          configs, corpus figures           -> level, cell, sizes, tokens
    best.safetensors  metadata: step, val_loss, val_bpc -> the kept model
    last.safetensors  metadata: loop state              -> steps, tokens, training time
    metrics.jsonl     train and validation records      -> loss curves
    stopfit.json      how well each stopping rule's sample lengths fit the validation units

Every file is read through its checked schema (checkpoint.records), so what is shown has the
kind it should. A damaged or half-made run is summarised as far as it can be, with the problem
named: one bad folder never hides the others.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from charrnn.checkpoint import (
    BEST,
    DEFAULT_ROOT,
    LAST,
    METRICS,
    MetricsLog,
    last_trained,
    list_runs,
    read_meta,
    read_run_json,
)
from charrnn.checkpoint.load import model_config
from charrnn.checkpoint.records import check_stopfit, metrics_record
from charrnn.checkpoint.tensors import tensor_shapes
from charrnn.defaults import dropout_in_use, in_force, in_use
from charrnn.errors import CharRNNError, CheckpointError
from charrnn.schema import read_json

STOPFIT = "stopfit.json"


@dataclass
class RunSummary:
    """One row of ``charrnn runs``."""

    name: str
    folder: Path
    level: str = "?"
    cell: str = "?"
    layers: int = 0
    hidden: int = 0
    steps: int | None = None  # steps trained (from the resumable checkpoint)
    best_step: int | None = None
    val_loss: float | None = None  # nats/token of the kept model
    val_bpc: float | None = None
    trained: float = 0.0  # time of the last write, seconds since the epoch
    size_bytes: int = 0
    base: str | None = None  # the run a fine-tuned run started from
    problem: str | None = None  # why part of the summary is missing


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def summarize(folder: Path) -> RunSummary:
    folder = Path(folder)
    s = RunSummary(
        folder.name, folder, trained=last_trained(folder), size_bytes=folder_size(folder)
    )
    try:
        info = read_run_json(folder)  # checked, as the metadata below
        model = model_config(info, folder)
        s.level = info["data"].get("level", "?")
        s.base = base_name(info)
        s.cell, s.layers, s.hidden = model.cell.value, model.layers, model.hidden
        if _exists(folder / LAST):
            s.steps = read_meta(folder / LAST)["loop"].get("step")
        if _exists(folder / BEST):
            best = read_meta(folder / BEST)
            s.best_step, s.val_loss = best.get("step"), best.get("val_loss")
            s.val_bpc = best.get("val_bpc")
        elif s.steps is None:
            s.problem = "no checkpoint yet"
    except CharRNNError as e:
        s.problem = str(e)
    return s


def _exists(path: Path) -> bool:
    """Whether there is something at ``path``, a dangling link included (which reading then
    names as damaged, rather than as a file never written)."""
    return path.exists() or path.is_symlink()


def base_name(info: dict[str, Any]) -> str | None:
    """The name of the run a fine-tuned run started from (run.json's "base"), or None."""
    base = info.get("base")
    return str(base.get("name", "?")) if isinstance(base, dict) else None


def summarize_all(root: Path = DEFAULT_ROOT) -> list[RunSummary]:
    """Every run under ``root``, most recently trained first."""
    return [summarize(f) for f in list_runs(root)]


# -- one run in detail --------------------------------------------------------------------


@dataclass
class Curves:
    """Loss curves from metrics.jsonl, in nats per token."""

    train_steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_bpc: list[float] = field(default_factory=list)
    final_loss: float | None = None  # the kept model on the whole validation split
    final_bpc: float | None = None
    problem: str | None = None  # why there are none: metrics.jsonl cannot be read


def read_curves(folder: Path) -> Curves:
    """The curves of metrics.jsonl; a record of another shape (torn, damaged, from another
    version) is skipped."""
    c = Curves()
    try:
        records = MetricsLog(Path(folder) / METRICS).read()
    except CheckpointError as e:
        c.problem = str(e)
        return c
    for r in filter(None, map(metrics_record, records)):
        kind, f = r
        if kind == "train":
            c.train_steps.append(f["step"])
            c.train_loss.append(f["loss"])
        elif kind == "val":
            c.val_steps.append(f["step"])
            c.val_loss.append(f["val_loss"])
            c.val_bpc.append(math.nan if f["val_bpc"] is None else f["val_bpc"])
        else:
            c.final_loss, c.final_bpc = f["final_val_loss"], f["final_val_bpc"]
    return c


@dataclass(frozen=True)
class StopFit:
    """stopfit.json: Kolmogorov-Smirnov distance between the lengths of ``n`` samples drawn at
    ``temperature`` under each rule and the lengths of the validation split's units."""

    n: int
    temperature: float
    ks: dict[str, float]
    val_mean_length: float
    mean_length: dict[str, float]


def read_stopfit(folder: Path) -> StopFit | None:
    """The stopping-rule fit, or None when the run has none."""
    path = Path(folder) / STOPFIT
    try:
        d = check_stopfit(read_json(path, CheckpointError), path)
    except FileNotFoundError:
        return None
    ks = {k.value: v for k, v in d["ks"].items()}
    means = {k.value: v for k, v in d["mean_length"].items()}
    return StopFit(d["n"], d["temperature"], ks, d["val_mean_length"], means)


def checkpoint_parameters(path: Path, model: dict[str, Any]) -> int:
    """Parameters of the model in a checkpoint, from the tensor shapes in its header (buffers,
    such as the start state, are not parameters). ``model`` is run.json's model config."""
    names = _parameter_names(model)
    shapes = tensor_shapes(path, prefix="model.")
    return sum(math.prod(shape) for name, shape in shapes.items() if name in names)


def _parameter_names(model: dict[str, Any]) -> set[str]:
    """Which tensors of a model are parameters: they depend on the config's switches (cell,
    layers, tied weights, stop heads), not on its sizes, so a tiny twin tells."""
    from charrnn.config import ModelConfig
    from charrnn.model import RNNLM

    config = ModelConfig.from_dict(model)
    same = config.embed == config.hidden  # tied weights need a projection when they differ
    tiny = replace(config, vocab_size=8, hidden=2, embed=2 if same else 3, max_len=4)
    return {n for n, _ in RNNLM(tiny).named_parameters()}


STOPFIT_HINT = (
    f"training writes {STOPFIT} when it ends (charrnn train); runs trained before that have none"
)


@dataclass(frozen=True)
class Regularization:
    weight_decay: float
    min_lr_ratio: float  # the learning rate decays to this x its peak
    passes: float  # over the training text, expected when the run decided
    pressure: float  # passes x recurrent parameters per training token
    # weight drop, dropout and row decay in force, and the row pressure (passes x embedding and
    # output parameters per training token); row_pressure None: decided before the rule
    weight_drop: float = 0.0
    row_decay: float = 0.0
    row_pressure: float | None = None
    dropout: float = 0.0

    @property
    def per_token(self) -> float:
        """Recurrent parameters per training token."""
        return self.pressure / max(self.passes, 1e-9)


@dataclass
class RunDetails:
    """Everything ``charrnn info`` shows."""

    summary: RunSummary
    info: dict[str, Any]  # run.json
    tokenizer: dict[str, Any]  # level, vocabulary size, settings, the commonest pieces
    parameters: int | None
    loop: dict[str, Any]  # the loop state of the resumable checkpoint (steps, tokens, time)
    best: dict[str, Any]  # the kept checkpoint's metadata (step, validation loss)
    curves: Curves
    stopfit: StopFit | None
    stopfit_problem: str | None = None

    def regularization(self) -> Regularization | None:
        """The weight decay and learning-rate floor the run trains with, where it decided
        them itself (its config left them open); None until it has."""
        loop = self.loop
        if loop.get("passes") is None:
            return None
        given = self.info.get("train", {})
        wd, floor = in_force(
            (given.get("weight_decay"), given.get("min_lr_ratio")),
            (loop.get("weight_decay"), loop.get("min_lr_ratio")),
        )
        model = self.info.get("model", {})
        return Regularization(
            wd,
            floor,
            loop["passes"],
            loop.get("pressure") or 0.0,
            in_use(model.get("weight_drop"), loop.get("weight_drop")),
            in_use(given.get("row_decay"), loop.get("row_decay")),
            loop.get("row_pressure"),
            dropout_in_use(model.get("dropout"), loop.get("dropout"), loop.get("dropout_raised")),
        )

    def to_json(self) -> dict[str, Any]:
        s = self.summary
        return {
            "run": s.name,
            "folder": str(s.folder),
            "trained": s.trained,
            "size_bytes": s.size_bytes,
            "parameters": self.parameters,
            "steps": s.steps,
            "best": self.best,
            "loop": self.loop,
            "config": {k: self.info.get(k) for k in ("model", "train", "data")},
            "created": self.info.get("created"),
            "corpus": self.info.get("corpus"),
            "charrnn_version": self.info.get("charrnn_version"),
            "base": self.info.get("base"),
            "tokenizer": self.tokenizer,
            "curves": asdict(self.curves),
            "stopfit": asdict(self.stopfit) if self.stopfit else None,
            "stopfit_problem": self.stopfit_problem,
        }


def details(folder: Path) -> RunDetails:
    """Read a run folder for ``info``; a missing or damaged run.json is an error."""
    folder = Path(folder)
    info = read_run_json(folder)
    summary = summarize(folder)
    loop: dict[str, Any] = {}
    best: dict[str, Any] = {}
    parameters = None
    for name, meta_out in ((LAST, loop), (BEST, best)):
        if _exists(folder / name):
            meta = read_meta(folder / name)
            meta_out.update(meta.get("loop", meta) if name == LAST else meta)
            parameters = checkpoint_parameters(folder / name, info["model"])
    loop.pop("history", None)
    stopfit, problem = None, None
    try:
        stopfit = read_stopfit(folder)
    except CheckpointError as e:
        problem = str(e)
    return RunDetails(
        summary,
        info,
        tokenizer_summary(folder),
        parameters,
        loop,
        best,
        read_curves(folder),
        stopfit,
        problem,
    )


def tokenizer_summary(folder: Path, commonest: int = 24) -> dict[str, Any]:
    from charrnn.tokenizers import N_SPECIALS, load_tokenizer

    tok = load_tokenizer(folder)
    d = {**tok.summary(), "config": tok.config.to_dict()}
    pieces = getattr(tok, "pieces", None)
    if isinstance(pieces, list):  # char and word vocabularies are ranked by frequency
        d["commonest"] = pieces[N_SPECIALS : N_SPECIALS + commonest]
    return d
