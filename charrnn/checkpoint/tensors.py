"""Safetensors files with our JSON metadata: written atomically, read without unpickling."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from charrnn.checkpoint.formats import FORMAT_VERSION, JSON_ERRORS
from charrnn.errors import CheckpointError, TrainingError, first_line
from charrnn.io import write_bytes_atomic

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


def read_meta(path: Path) -> dict[str, Any]:
    """The JSON metadata of a safetensors file, without reading its tensors."""
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file missing: {path}") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"not a valid safetensors file ({first_line(e)}): {path}") from None
    if raw is None:
        raise CheckpointError(f"safetensors file has no charrnn metadata: {path}")
    try:
        meta = json.loads(raw)
    except JSON_ERRORS:
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
        raise CheckpointError(f"checkpoint file is damaged ({first_line(e)}): {path}") from None


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
        raise CheckpointError(f"not a valid safetensors file ({first_line(e)}): {path}") from None
