"""Run format versions: what each one changed, and the upgrades that let older runs load."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from charrnn.checkpoint.layout import RUN_JSON
from charrnn.checkpoint.records import check_run_info
from charrnn.errors import CheckpointError
from charrnn.schema import read_json

FORMAT_VERSION = 10  # 2: the weights hold the state a unit starts from (model.start_h)
# 3: the length input says "unknown, j tokens into the unit" (one row per offset bucket, read
#    through model.LENGTH_INPUT_SCALE), and the weights hold the end calibration (end_bias)
# 4: the "unknown" rows are read as they are (ModelConfig.unknown_scale)
# 5: the validation split is cut at the unit boundary nearest its share (TrainConfig.split_cut)
# 6: the weights name the tokenizer they were trained with (tokenizer_hash in their metadata,
#    as dataset.json names the one its tokens were encoded with), checked at load and resume;
#    runs of format 5 and before have none and load unchecked, computing what they did;
#    a run may keep an average of its weights (TrainConfig.average; last.safetensors holds it
#    as average.*), drop hidden-to-hidden weights (ModelConfig.weight_drop) and decay its
#    embedding and output rows harder (TrainConfig.row_decay)
# 7: the streams start at another point of the text each pass (TrainConfig.shift_windows), and
#    a run may decide its dropout as it goes (ModelConfig.dropout None)
# 8: the weights hold a temperature fitted on validation text (log_temperature), fitted where
#    a run calibrates (TrainConfig.calibrate)
# 9: the weights mark the symbols the training text never holds and hold their chance
#    (unseen, unseen_share: RNNLM.set_unseen); runs before it have none marked
# 10: an evaluation no better than the best raises the dropout (TrainConfig.dropout_rise)
OLDEST_FORMAT = 1  # the oldest run format this charrnn still reads (through MIGRATIONS)


# Upgrades of run.json, keyed by the format version they upgrade from: MIGRATIONS[v] turns a
# version-v run.json into a version v + 1 one (and says why not with a CheckpointError).
# Loading applies them in turn, so a run of any version from OLDEST_FORMAT on still loads.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {
    1: lambda info: info,  # 1 -> 2 changed the weights only: see ADDED_IN
    2: lambda info: info,  # 2 -> 3 changed the weights only: see ADDED_IN and _upgrade_weights
    3: lambda info: _with_model(info, unknown_scale=OLD_UNKNOWN_SCALE),
    4: lambda info: _with(info, "train", split_cut="unit-after"),  # the run keeps its split
    # 5 -> 6 added the weights' tokenizer_hash (see TOKENIZER_HASHED), and BEFORE_6's settings
    5: lambda info: _with(_with(info, "model", **BEFORE_6["model"]), "train", **BEFORE_6["train"]),
    6: lambda info: _with(info, "train", **BEFORE_7["train"]),
    7: lambda info: _with(info, "train", **BEFORE_8["train"]),  # and ADDED_IN
    8: lambda info: info,  # 8 -> 9 changed the weights only: see ADDED_IN
    9: lambda info: _with(info, "train", **BEFORE_10["train"]),
}

# How runs before format 6 trained, where today's defaults differ: no weight drop, no
# averaged weights, no extra decay of the rows
BEFORE_6: dict[str, dict[str, Any]] = {
    "model": {"weight_drop": 0.0},
    "train": {"average": 0.0, "row_decay": 0.0},
}
# ... and before format 7: the streams started at the same points every pass (every run
# before it saved its dropout as a number, so that needs no upgrade)
BEFORE_7: dict[str, dict[str, Any]] = {"train": {"shift_windows": False}}
# ... and before format 8: no temperature was fitted
BEFORE_8: dict[str, dict[str, Any]] = {"train": {"calibrate": False}}
# ... and before format 10: the dropout stayed as it was
BEFORE_10: dict[str, dict[str, Any]] = {"train": {"dropout_rise": 0.0}}


OLD_UNKNOWN_SCALE = 10.0  # how runs of format 3 and before read the length input's unknown rows


def _with_model(info: dict[str, Any], **settings: Any) -> dict[str, Any]:
    return _with(info, "model", **settings)


def _with(info: dict[str, Any], config: str, **settings: Any) -> dict[str, Any]:
    """``info`` with these settings in one of its configs (if it has it to add them to)."""
    part = info.get(config)
    return {**info, config: {**part, **settings}} if isinstance(part, dict) else info


# Model tensors a newer format added, and the version that added them. A file of an older
# format loads without them; they keep the value that format implied (zeros: a unit started
# from h = 0 before start_h existed; T = 1 before log_temperature; no symbol marked before
# unseen), so the model computes what it computed then.
ADDED_IN = {"start_h": 2, "end_bias": 3, "log_temperature": 8, "unseen": 9, "unseen_share": 9}
TOKENIZER_HASHED = 6  # weights of this format on name their tokenizer (load.check_tokenizer)


def read_run_json(folder: Path) -> dict[str, Any]:
    """run.json, upgraded to the current format version and every field checked (or a
    CheckpointError saying what is wrong)."""
    path = Path(folder) / RUN_JSON
    try:
        info = read_json(path, CheckpointError)
    except FileNotFoundError:
        raise CheckpointError(f"not a charrnn run folder (no {RUN_JSON}): {folder}") from None
    if not isinstance(info, dict):
        raise CheckpointError(f"{path} is not a JSON object")
    return check_run_info(migrate(info, path), path)


def migrate(info: dict[str, Any], path: Path) -> dict[str, Any]:
    """Bring a run.json of an older format version up to FORMAT_VERSION, step by step."""
    version = info.get("format_version")
    if version is None or isinstance(version, bool):
        raise CheckpointError(f"{path} has no format version")
    if type(version) is not int:
        raise CheckpointError(f"{path}: format_version must be a whole number, not {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"run format version {version} is newer than this charrnn understands "
            f"({FORMAT_VERSION}); upgrade charrnn"
        )
    if version < OLDEST_FORMAT:
        raise CheckpointError(
            f"run format version {version} is older than any this charrnn reads "
            f"({OLDEST_FORMAT} to {FORMAT_VERSION}); train the run again"
        )
    while version < FORMAT_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise CheckpointError(
                f"run format version {version} cannot be upgraded to {FORMAT_VERSION} "
                "(no migration); train the run again"
            )
        info = step(dict(info))
        version += 1
        info["format_version"] = version
    return info
