"""Safetensors files with our JSON metadata: written atomically, read without unpickling."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from charrnn.checkpoint.formats import FORMAT_VERSION
from charrnn.checkpoint.layout import LAST
from charrnn.checkpoint.records import check_meta
from charrnn.errors import CheckpointError, TrainingError, first_line
from charrnn.io import write_bytes_atomic
from charrnn.schema import parse_json, regular

META_KEY = "charrnn"


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


def _checked(path: Path) -> str:
    """``path`` as safetensors opens it, once it is known to be a regular file (a FIFO would
    block the reader, a device never end)."""
    try:
        regular(path, CheckpointError)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file missing: {path}") from None
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None
    return str(path)


def read_meta(path: Path) -> dict[str, Any]:
    """The JSON metadata of a safetensors file, without reading its tensors, checked as its
    kind (best, or last: the loop's counters) holds it (``records.check_meta``)."""
    try:
        with safe_open(_checked(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"not a valid safetensors file ({first_line(e)}): {path}") from None
    if raw is None:
        raise CheckpointError(f"safetensors file has no charrnn metadata: {path}")
    try:
        meta = parse_json(raw, "", CheckpointError)
    except CheckpointError:
        raise CheckpointError(f"checkpoint metadata is not valid JSON: {path}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint metadata is not a JSON object: {path}")
    version = meta.get("format_version", 1)  # files of format 1 may predate the field
    if type(version) is not int or version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint format version {version!r} is not one this charrnn reads "
            f"(at most {FORMAT_VERSION}); upgrade charrnn: {path}"
        )
    kind = meta.get("kind") if meta.get("kind") in ("best", "last") else None
    return check_meta(meta, path, kind or ("last" if Path(path).name == LAST else "best"))


def load_tensors(path: Path, prefix: str = "") -> dict[str, torch.Tensor]:
    """Tensors whose names start with ``prefix`` (the prefix removed)."""
    try:
        with safe_open(_checked(path), framework="pt") as f:
            return {k[len(prefix) :]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint file is damaged ({first_line(e)}): {path}") from None


def tensor_shapes(path: Path, prefix: str = "") -> dict[str, tuple[int, ...]]:
    """Shapes of the tensors whose names start with ``prefix``, read from the header only."""
    try:
        with safe_open(_checked(path), framework="pt") as f:
            return {
                k[len(prefix) :]: tuple(f.get_slice(k).get_shape())
                for k in f.keys()  # noqa: SIM118
                if k.startswith(prefix)
            }
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"not a valid safetensors file ({first_line(e)}): {path}") from None


def check_tensors(tensors: dict[str, torch.Tensor], path: Path, prefix: str) -> None:
    """Refuse tensors (named ``prefix`` + name) that are not floating point, or hold a NaN
    or an infinity: weights and optimizer state that could only give NaN samples and losses."""
    for name, t in tensors.items():
        if not t.is_floating_point():
            kind = str(t.dtype).removeprefix("torch.")
            raise CheckpointError(f"{path}: tensor {prefix}{name} is {kind}, not floating point")
        if not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{path}: tensor {prefix}{name} holds NaN or infinite values")
