"""Files written whole or not at all, and content hashes. The ground floor: imports nothing of ours.

A write goes to a temporary file beside the target, is flushed to disk and renamed into place,
so a reader (or a crash) sees the old file or the whole new one, never half of one. What a
user names as an output is written where the user means it (``write_output``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any


def write_bytes_atomic(path: Path, data: bytes, like: os.stat_result | None = None) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one; the
    new file gets the mode (and, for root, the owner) of ``like``, the file it replaces."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes 0600; a new file is normally 0666 - umask, a replaced one keeps its own
        os.fchmod(fd, _new_file_mode() if like is None else stat.S_IMODE(like.st_mode))
        if like is not None and os.geteuid() == 0:
            os.fchown(fd, like.st_uid, like.st_gid)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def write_output(path: Path, data: bytes) -> None:
    """Write ``data`` where a user's ``path`` means it, as a shell's ``>`` does: through a
    symlink to its target (the link stays), into a FIFO or a device as a stream, in place into
    a file that has other hard links. A regular file is written aside and renamed over, keeping
    its mode. An OSError names ``path``, never a temporary file."""
    try:
        target = Path(os.path.realpath(path))  # a dangling link: the file it names
        try:
            st: os.stat_result | None = os.stat(target)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        if st is not None and (not stat.S_ISREG(st.st_mode) or st.st_nlink > 1):
            with open(target, "wb") as f:  # a FIFO waits for its reader, as `>` does
                f.write(data)
            return
        write_bytes_atomic(target, data, like=st)
    except OSError as e:
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None


def _new_file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_json_atomic(path: Path, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def file_hash(path: Path, chunk: int = 1 << 24) -> str:
    h = hashlib.blake2b(digest_size=16)
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
