"""A run folder: its file names, finding runs, the lock, the metrics log."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charrnn.errors import CheckpointError, ConfigError, TrainingError
from charrnn.io import write_bytes_atomic
from charrnn.schema import json_lines

RUN_JSON = "run.json"
BEST = "best.safetensors"
LAST = "last.safetensors"
METRICS = "metrics.jsonl"
LOCK = ".lock"
STARTING = ".starting"  # a run's first start, until its first checkpoint is in place
DEFAULT_ROOT = Path("checkpoints")
_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # the whole name (fullmatch)


# -- run folders --------------------------------------------------------------------------


def check_run_name(name: str) -> str:
    if not isinstance(name, str) or not _RUN_NAME.fullmatch(name):
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
    """Whether ``folder`` holds a run.json (of any kind: a damaged one makes a damaged run)."""
    path = Path(folder) / RUN_JSON
    return path.exists() and not path.is_dir()


def is_incomplete_run(folder: Path) -> bool:
    """A run folder whose first start was cut short (killed before its first checkpoint), as
    its STARTING mark says, holding nothing but files a start writes; or an empty folder.
    Starting the run again may replace it; never a folder that holds trained weights."""
    folder = Path(folder)
    if not folder.is_dir() or (folder / LAST).exists():
        return False
    entries = list(folder.iterdir())
    if not entries:
        return True
    ours = {RUN_JSON, LOCK, STARTING}
    return (folder / STARTING).is_file() and all(
        p.name in ours or p.name.startswith("tokenizer.") or _is_temp(p) for p in entries
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


def no_runs(root: Path) -> str:
    """What to say where a command finds no run: the same words for every command."""
    return f"no trained run found in {root}/; train one first: charrnn train [CORPUS.txt]"


def find_run(ref: str | Path | None, root: Path = DEFAULT_ROOT) -> Path:
    """A run folder from a name, a path, or (None) the most recently trained run."""
    if ref is None:
        runs = [r for r in list_runs(root) if (r / BEST).exists() or (r / LAST).exists()]
        if not runs:
            raise CheckpointError(no_runs(root))
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


def check_not_in_run(path: Path, folder: Path, option: str) -> None:
    """Refuse an output ``path`` that is a file of the run in ``folder`` (writing the samples
    of a model over its own weights destroys it)."""
    target = Path(os.path.realpath(path))
    if target.parent == Path(os.path.realpath(folder)) and target.exists():
        raise ConfigError(f"{option} {path} is a file of run {folder.name!r}; choose another path")


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
        _hold(fd, fcntl.LOCK_EX, folder, "wait for it or choose another --name")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        yield
    finally:
        os.close(fd)


def _hold(fd: int, mode: int, folder: Path, advice: str) -> None:
    """Take the run's lock in ``mode`` without waiting; while a trainer holds it, a
    TrainingError naming the process (as its lock file says) and what to do."""
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
        raise TrainingError(
            f"run {Path(folder).name!r} is being trained by {holder}; {advice}"
        ) from None


@contextlib.contextmanager
def reading_run(folder: Path) -> Iterator[None]:
    """Read a run that no one is training, writing nothing in its folder: a shared hold of
    its lock, which a trainer's (exclusive) refuses to share while the files are read."""
    path = Path(folder) / LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:  # never trained here since locks were kept: no one trains it
        yield
        return
    except OSError as e:
        raise CheckpointError(f"cannot read the lock of run {Path(folder).name!r}: {e}") from None
    try:
        _hold(fd, fcntl.LOCK_SH, folder, "wait for it to finish before starting from it")
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
        """The records, in bounded memory (a line that is not a JSON object is skipped); a
        CheckpointError if the log is not a regular file."""
        try:
            return [r for r in json_lines(self.path, CheckpointError) if isinstance(r, dict)]
        except FileNotFoundError:
            return []

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (they belong to training a resume will redo), and the
        final evaluation, which the resumed run will make again."""
        kept = [
            r
            for r in self.read()
            if isinstance(r.get("step"), int) and r["step"] <= step and "final_val_loss" not in r
        ]
        write_bytes_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept).encode())
