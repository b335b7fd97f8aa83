"""What the files of a run hold, field by field, checked when they are read (``schema``).

    run.json             the configs (as ModelConfig, TrainConfig, DataConfig check them)
                         and the figures of the corpus and its split
    best.safetensors     metadata: the step, losses and tokenizer of the kept model
    last.safetensors     metadata: the loop's counters (see training.state.LoopState)
    stopfit.json         the stopping-rule fit (see stopfit)
    metrics.jsonl        one record a line: a training step or an evaluation

Whatever reads one of them gets values of the kind and range written here, or an error that
names the file and the field; nothing deeper ever meets a value of the wrong kind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from charrnn.config import DataConfig, Level, ModelConfig, Stop, TrainConfig, Unit
from charrnn.errors import CheckpointError
from charrnn.schema import Choice, Doc, Flag, Items, Kind, Maybe, Real, Table, Text, Whole

COUNT = Whole(0)
STEP = Whole(0, 2**53)  # a step in metrics.jsonl: the curves are drawn in floats
SIZE = Real(0.0)
RULE = Choice(Stop, but=("none",))

# The loop's counters in last.safetensors; a field a newer loop added may be missing.
LOOP: dict[str, Kind] = {
    "step": COUNT,
    "epoch": COUNT,
    "window": COUNT,
    "tokens": COUNT,
    "elapsed": SIZE,
    "best_loss": Maybe(Real(finite=False)),  # None: no evaluation yet
    "best_step": COUNT,
    "evals_since_best": COUNT,
    "last_eval_step": COUNT,
    "last_eval_progress": Real(0.0, 1.0),
    "history": Items(Real(finite=False)),  # validation losses
    "passes": Maybe(SIZE),
    "pressure": Maybe(SIZE),
    "weight_decay": Maybe(SIZE),
    "min_lr_ratio": Maybe(Real(0.0, 1.0)),
    "weight_drop": Maybe(Real(0.0, 1.0, open_hi=True)),
    "dropout": Maybe(Real(0.0, 1.0, open_hi=True)),
    "row_pressure": Maybe(SIZE),
    "row_decay": Maybe(SIZE),
    "dropout_raised": Real(0.0, 1.0),
}

# The kept model's figures in best.safetensors.
BEST: dict[str, Kind] = {
    "step": COUNT,
    "val_loss": Real(),
    "val_bpc": Real(),
    "val_bpb": Real(),
    "full": Flag(),
    "temperature": Real(0.0, open_lo=True),  # fitted on validation text (TrainConfig.calibrate)
}


def check_run_info(info: dict[str, Any], path: Path) -> dict[str, Any]:
    """run.json (of the current format) with every field checked; a CheckpointError names
    the first that is wrong."""
    doc = Doc(info, path, CheckpointError)
    doc.config("model", ModelConfig)
    doc.config("train", TrainConfig)
    data = doc.doc("data")
    data.config("config", DataConfig)
    data.get("hash", Maybe(Text()), None)
    for key in ("train_tokens", "val_tokens", "val_chars", "val_bytes", "val_units"):
        data.get(key, COUNT, None)
    data.get("val_unit_length_mean", SIZE, None)
    data.get("level", Choice(Level, but=("auto",)), None)
    data.get("unit", Choice(Unit, but=("auto",)), None)
    data.get("dataset", Text(), None)
    for key in ("corpus", "builtin", "created", "charrnn_version"):
        doc.get(key, Text(), None)
    if "base" in info:  # a fine-tuned run: the run it started from
        _check_base(doc.doc("base"))
    return info


def _check_base(base: Doc) -> None:
    for key in ("name", "folder", "weights", "tokenizer_hash"):
        base.get(key, Text(), None)
    for key in ("format_version", "vocab_size", "added_symbols", "max_len"):
        base.get(key, COUNT, None)
    base.get("step", Maybe(COUNT), None)


def check_meta(meta: dict[str, Any], path: Path, kind: str) -> dict[str, Any]:
    """The metadata of a best (the kept model's figures) or last (the loop's counters, all
    a resume reads) checkpoint, checked."""
    if kind == "last":
        where = f"{path}: invalid saved state"
        loop = Doc(meta, where, CheckpointError).doc("loop")
        loop.known(LOOP)
        for key, k in LOOP.items():
            loop.get(key, k, None)
    else:
        doc = Doc(meta, path, CheckpointError)
        for key, k in BEST.items():
            doc.get(key, k, None)
    Doc(meta, path, CheckpointError).get("tokenizer_hash", Text(), None)
    return meta


def check_stopfit(d: Any, path: Path) -> dict[str, Any]:
    """stopfit.json, checked: the samples a rule, their temperature, each rule's KS distance
    (0 to 1) and mean length."""
    doc = Doc(d, path, CheckpointError)
    return {
        "n": doc.get("n", Whole(1)),
        "temperature": doc.get("temperature", Real(0.0)),
        "ks": doc.get("ks", Table(RULE, Real(0.0, 1.0))),
        "val_mean_length": doc.get("val_mean_length", SIZE),
        "mean_length": doc.get("mean_length", Table(RULE, SIZE), {}),
    }


# A record of metrics.jsonl, by what it reports; one of another shape is skipped.
TRAIN_RECORD = {"step": STEP, "loss": Real()}
VAL_RECORD = {"step": STEP, "val_loss": Real(), "val_bpc": Maybe(Real())}
FINAL_RECORD = {"final_val_loss": Real(), "final_val_bpc": Maybe(Real())}


def metrics_record(r: Any) -> tuple[str, dict[str, Any]] | None:
    """("train" | "val" | "final", its checked fields), or None for a record to skip."""
    if not isinstance(r, dict):
        return None
    for name, spec, key in (
        ("final", FINAL_RECORD, "final_val_loss"),
        ("val", VAL_RECORD, "val_loss"),
        ("train", TRAIN_RECORD, "loss"),
    ):
        if key in r:
            values = {k: r.get(k) for k in spec}
            if any(kind.problem(values[k]) for k, kind in spec.items()):
                return None
            return name, {k: kind.convert(values[k]) for k, kind in spec.items()}
    return None
