"""Runs on disk: save, load and find them. Nothing is ever pickled.

    checkpoints/<run>/
      run.json            format version, model / train / data configs, corpus figures
      tokenizer.json      (and tokenizer.model for sentencepiece levels)
      best.safetensors    weights of the best validation loss so far
      last.safetensors    weights + optimizer + loop state + RNG: exact resume
      metrics.jsonl       one JSON object per log line, appended
      .lock               held while a process trains the run

Every file is written aside, flushed to disk and renamed into place, so a crash leaves either
the old file or the new one, never half of one. Each checkpoint is one safetensors file whose
JSON metadata says what it holds, so its tensors and its loop state always agree.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from charrnn.errors import CheckpointError, TrainingError
from charrnn.io import write_bytes_atomic

FORMAT_VERSION = 4  # 2: the weights hold the state a unit starts from (model.start_h)
# 3: the length input says "unknown, j tokens into the unit" (one row per offset bucket, read
#    through model.LENGTH_INPUT_SCALE), and the weights hold the end calibration (end_bias)
# 4: the "unknown" rows are read as they are (ModelConfig.unknown_scale)
OLDEST_FORMAT = 1  # the oldest run format this charrnn still reads (through MIGRATIONS)
RUN_JSON = "run.json"
BEST = "best.safetensors"
LAST = "last.safetensors"
METRICS = "metrics.jsonl"
LOCK = ".lock"
META_KEY = "charrnn"
DEFAULT_ROOT = Path("checkpoints")
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_JSON_ERRORS = (ValueError, UnicodeDecodeError, RecursionError)  # RecursionError: deep nesting

# Upgrades of run.json, keyed by the format version they upgrade from: MIGRATIONS[v] turns a
# version-v run.json into a version v + 1 one (and says why not with a CheckpointError).
# Loading applies them in turn, so a run of any version from OLDEST_FORMAT on still loads.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {
    1: lambda info: info,  # 1 -> 2 changed the weights only: see ADDED_IN
    2: lambda info: info,  # 2 -> 3 changed the weights only: see ADDED_IN and _upgrade_weights
    3: lambda info: _with_model(info, unknown_scale=OLD_UNKNOWN_SCALE),
}
OLD_UNKNOWN_SCALE = 10.0  # how runs of format 3 and before read the length input's unknown rows


def _with_model(info: dict[str, Any], **settings: Any) -> dict[str, Any]:
    """``info`` with these settings in its model config (if it has one to add them to)."""
    model = info.get("model")
    return {**info, "model": {**model, **settings}} if isinstance(model, dict) else info


# Model tensors a newer format added, and the version that added them. A file of an older
# format loads without them; they keep the value that format implied (zeros: a unit started
# from h = 0 before start_h existed), so the model computes what it computed then.
ADDED_IN = {"start_h": 2, "end_bias": 3}


# -- checkpoint files -------------------------------------------------------------------


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """One safetensors file with our JSON metadata, written atomically."""
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {"format_version": FORMAT_VERSION, **meta}
    data = safetensors_bytes(flat, metadata={META_KEY: json.dumps(meta)})
    try:
        write_bytes_atomic(path, data)
    except OSError as e:
        raise TrainingError(
            f"could not write checkpoint {path}: {e.strerror or e}; the previous one is intact"
        ) from None


def read_meta(path: Path) -> dict[str, Any]:
    """The JSON metadata of a safetensors file, without reading its tensors."""
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file missing: {path}") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"not a valid safetensors file ({_first_line(e)}): {path}") from None
    if raw is None:
        raise CheckpointError(f"safetensors file has no charrnn metadata: {path}")
    try:
        meta = json.loads(raw)
    except _JSON_ERRORS:
        raise CheckpointError(f"checkpoint metadata is not valid JSON: {path}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint metadata is not a JSON object: {path}")
    version = meta.get("format_version", 1)  # files of format 1 may predate the field
    if type(version) is not int or version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint format version {version!r} is not one this charrnn reads "
            f"(at most {FORMAT_VERSION}); upgrade charrnn: {path}"
        )
    return meta


def load_tensors(path: Path, prefix: str = "") -> dict[str, torch.Tensor]:
    """Tensors whose names start with ``prefix`` (the prefix removed)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k[len(prefix) :]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}  # noqa: SIM118
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file missing: {path}") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint file is damaged ({_first_line(e)}): {path}") from None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


# -- run folders --------------------------------------------------------------------------


def check_run_name(name: str) -> str:
    if not _RUN_NAME.match(name):
        raise CheckpointError(
            f"invalid run name {name!r}: use letters, digits, '.', '_' and '-' (at most 100)"
        )
    return name


def new_run_name(root: Path, stem: str) -> str:
    """``stem``, or ``stem-2``, ``stem-3``... whichever does not exist yet."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "run"
    base = base[:90]
    name, n = base, 1
    while (Path(root) / name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


def is_run(folder: Path) -> bool:
    return (Path(folder) / RUN_JSON).is_file()


def is_incomplete_run(folder: Path) -> bool:
    """A run folder whose first start was cut short (killed before its first checkpoint):
    it holds nothing but files a start writes, so starting the run again may replace it."""
    folder = Path(folder)
    if not folder.is_dir() or (folder / LAST).exists():
        return False
    ours = {RUN_JSON, LOCK, METRICS, BEST}
    return all(
        p.name in ours or p.name.startswith("tokenizer.") or _is_temp(p) for p in folder.iterdir()
    )


def _is_temp(path: Path) -> bool:
    """A file write_bytes_atomic was writing: never a checkpoint, whatever it holds."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


def list_runs(root: Path = DEFAULT_ROOT) -> list[Path]:
    """Run folders under ``root``, most recently trained first."""
    root = Path(root)
    if not root.is_dir():
        if root.exists():
            raise CheckpointError(f"the checkpoints folder {root} is a file, not a folder")
        return []
    runs = [p for p in root.iterdir() if p.is_dir() and is_run(p)]
    return sorted(runs, key=last_trained, reverse=True)


def last_trained(folder: Path) -> float:
    times = [(folder / f).stat().st_mtime for f in (LAST, BEST, RUN_JSON) if (folder / f).exists()]
    return max(times, default=0.0)


def find_run(ref: str | Path | None, root: Path = DEFAULT_ROOT) -> Path:
    """A run folder from a name, a path, or (None) the most recently trained run."""
    if ref is None:
        runs = [r for r in list_runs(root) if (r / BEST).exists() or (r / LAST).exists()]
        if not runs:
            raise CheckpointError(
                f"no trained run found in {root}/; train one first: charrnn train CORPUS.txt"
            )
        return runs[0]
    path = Path(ref)
    candidates = (path, Path(root) / path)
    for candidate in candidates:  # a run wins over a same-named folder of something else
        if candidate.is_dir() and is_run(candidate):
            return candidate
        if candidate.is_file() and candidate.suffix == ".safetensors" and is_run(candidate.parent):
            return candidate.parent
    for candidate in candidates:
        if candidate.is_dir():
            raise CheckpointError(f"not a charrnn run folder (no {RUN_JSON}): {candidate}")
        if candidate.exists():
            raise CheckpointError(
                f"not a charrnn checkpoint (give a run folder or its .safetensors file): "
                f"{candidate}"
            )
    raise CheckpointError(f"no run named {str(ref)!r} (looked for {path} and {Path(root) / path})")


def read_run_json(folder: Path) -> dict[str, Any]:
    """run.json, upgraded to the current format version (or a CheckpointError saying why not)."""
    path = Path(folder) / RUN_JSON
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"not a charrnn run folder (no {RUN_JSON}): {folder}") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path} is a folder, not a file") from None
    except _JSON_ERRORS as e:
        raise CheckpointError(f"{path} is not valid JSON ({_first_line(e)})") from None
    if not isinstance(info, dict):
        raise CheckpointError(f"{path} is not a JSON object")
    return migrate(info, path)


def migrate(info: dict[str, Any], path: Path) -> dict[str, Any]:
    """Bring a run.json of an older format version up to FORMAT_VERSION, step by step."""
    version = info.get("format_version")
    if type(version) is not int:
        raise CheckpointError(f"{path} has no format version")
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


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete temporary files a killed writer left behind; call it holding the run's lock."""
    stale = [p for p in Path(folder).iterdir() if _is_temp(p) and p.is_file()]
    for p in stale:
        with contextlib.suppress(OSError):
            p.unlink()
    return stale


@contextlib.contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """Hold the run's lock while training; a second trainer is refused, not interleaved."""
    path = Path(folder) / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise TrainingError(f"cannot write in the run folder {folder}: {e.strerror or e}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            raise TrainingError(
                f"run {Path(folder).name!r} is being trained by {holder}; "
                "wait for it or choose another --run"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        yield
    finally:
        os.close(fd)


@dataclass
class MetricsLog:
    """Append-only JSON-lines log; a torn last line (after a crash) is skipped on read."""

    path: Path

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps({"time": round(time.time(), 3), **record}) + "\n"
        with contextlib.suppress(OSError), self.path.open("a", encoding="utf-8") as f:
            f.write(line)

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                rec = json.loads(line)
                if isinstance(rec, dict):
                    out.append(rec)
        return out

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (they belong to training a resume will redo), and the
        final evaluation, which the resumed run will make again."""
        kept = [
            r
            for r in self.read()
            if isinstance(r.get("step"), int) and r["step"] <= step and "final_val_loss" not in r
        ]
        write_bytes_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept).encode())


# -- loading a trained model --------------------------------------------------------------


@dataclass
class LoadedRun:
    folder: Path
    info: dict[str, Any]  # run.json
    model: Any  # RNNLM, in eval mode
    tokenizer: Any  # Tokenizer
    meta: dict[str, Any]  # the checkpoint's own metadata (step, validation loss...)
    which: str  # "best" or "last"


def load_run(
    ref: str | Path | None = None,
    root: Path = DEFAULT_ROOT,
    which: str = "best",
    device: str | torch.device = "cpu",
) -> LoadedRun:
    """Rebuild a trained model and its tokenizer from a run folder, checking that they agree."""
    from charrnn.errors import CharRNNError
    from charrnn.tokenizers import load_tokenizer

    folder = find_run(ref, root)
    info = read_run_json(folder)
    config = model_config(info, folder)
    try:
        tokenizer = load_tokenizer(folder)
    except CharRNNError as e:
        raise CheckpointError(str(e)) from None
    if tokenizer.vocab_size != config.vocab_size:
        raise CheckpointError(
            f"tokenizer has {tokenizer.vocab_size} symbols but the model expects "
            f"{config.vocab_size}: {folder}"
        )
    path = folder / (BEST if which == "best" else LAST)
    if which == "best" and not path.exists():
        path, which = folder / LAST, "last"
    if not path.exists():
        raise CheckpointError(f"run {folder.name!r} has no checkpoint yet ({BEST} or {LAST})")
    meta = read_meta(path)
    model = build_model(config, path)
    model.to(device).eval()
    return LoadedRun(folder, info, model, tokenizer, meta, which)


def model_config(info: dict[str, Any], folder: Path) -> Any:
    """The ModelConfig a run.json records."""
    from charrnn.config import ModelConfig
    from charrnn.errors import CharRNNError

    try:
        return ModelConfig.from_dict(info["model"])
    except (KeyError, TypeError, ValueError, AttributeError, CharRNNError) as e:
        raise CheckpointError(f"{folder / RUN_JSON} has an invalid model config ({e})") from None


def build_model(config: Any, path: Path) -> Any:
    """An RNNLM of ``config`` holding the weights of ``path``."""
    from charrnn.model import RNNLM

    check_shapes(config, path)
    model = RNNLM(config)
    load_weights(model, path)
    return model


def check_shapes(config: Any, path: Path) -> None:
    """Refuse weights whose names or shapes disagree with ``config``.

    The model is built on the meta device, so a config that disagrees with the weights (or
    asks for an absurd size) is refused before any memory is allocated.
    """
    from charrnn.errors import CharRNNError
    from charrnn.model import RNNLM

    try:
        with torch.device("meta"):
            want = {k: tuple(v.shape) for k, v in RNNLM(config).state_dict().items()}
    except CharRNNError as e:
        raise CheckpointError(f"invalid model config ({e}): {path.parent / RUN_JSON}") from None
    have = tensor_shapes(path, prefix="model.")
    for name in _implied(path, want.keys() - have.keys()):
        have[name] = want[name]
    old, new = have.get("len_embed.weight"), want.get("len_embed.weight")
    if old and new and old == (new[0] // 2 + 1, new[1]):  # format 2's, see _upgrade_weights
        have["len_embed.weight"] = new
    if want != have:
        diff = sorted(k for k in want.keys() | have.keys() if want.get(k) != have.get(k))
        detail = ", ".join(f"{k} {have.get(k)} vs {want.get(k)}" for k in diff[:3])
        raise CheckpointError(f"weights do not match the model config ({detail}): {path}")


def _upgrade_weights(weights: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, Any]:
    """Tensors of an older format in today's shape, computing what they computed then.

    Format 2's length input had one "unknown" row (the last) and was read as it is; format 3
    has an "unknown" row per offset bucket and reads the input times LENGTH_INPUT_SCALE. The
    old unknown row is repeated for every offset and everything is divided by the scale, so
    an old model's inputs are unchanged (up to float rounding)."""
    from charrnn.model import LENGTH_INPUT_SCALE

    old = weights.get("len_embed.weight")
    n = getattr(model, "n_buckets", None)
    if old is not None and n is not None and old.shape[0] == n + 1:
        rows = torch.cat([old[:n], old[n:].expand(n, -1)])  # (2n, E)
        weights["len_embed.weight"] = rows / LENGTH_INPUT_SCALE
    return weights


def _implied(path: Path, missing: Any) -> set[str]:
    """Of the ``missing`` tensor names, those the file's format predates (see ADDED_IN)."""
    version = read_meta(path).get("format_version", 1)
    return {n for n in missing if version < ADDED_IN.get(n, 0)}


def tensor_shapes(path: Path, prefix: str = "") -> dict[str, tuple[int, ...]]:
    """Shapes of the tensors whose names start with ``prefix``, read from the header only."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {
                k[len(prefix) :]: tuple(f.get_slice(k).get_shape())
                for k in f.keys()  # noqa: SIM118
                if k.startswith(prefix)
            }
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file missing: {path}") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"not a valid safetensors file ({_first_line(e)}): {path}") from None


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load ``model.*`` tensors strictly: every name and shape must match the config."""
    weights = _upgrade_weights(load_tensors(path, prefix="model."), model)
    expected = model.state_dict()
    for name in _implied(path, expected.keys() - weights.keys()):
        weights[name] = torch.zeros_like(expected[name])
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:300]
        raise CheckpointError(f"weights do not match the model config ({detail}): {path}") from None
