"""Which device to run on, and getting batches there."""

from __future__ import annotations

import numpy as np
import torch

from charrnn.errors import ConfigError

DEVICES = "auto, cpu, cuda (or cuda:N) or mps"


def resolve_device(name: str | torch.device) -> torch.device:
    """The device a --device option (or the Python API's ``device``) names, or a ConfigError
    saying why there is none."""
    if isinstance(name, torch.device):
        name = str(name)
    if not isinstance(name, str):
        raise ConfigError(f"unknown --device {name!r}: use {DEVICES}")
    kind, colon, index = name.partition(":")
    if kind == "cuda" and colon:
        return _cuda(name, index)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but no CUDA device is available")
    if name == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ConfigError("--device mps asked for, but MPS is not available")
    if name not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unknown --device {name!r}: use {DEVICES}")
    return torch.device(name)


def _cuda(name: str, index: str) -> torch.device:
    if not index.isdigit():
        raise ConfigError(f"unknown --device {name!r}: use {DEVICES}")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if int(index) >= count:
        raise ConfigError(f"--device {name} asked for, but there are {count} CUDA devices")
    return torch.device(name)


def to_device(arrays: list[np.ndarray], device: torch.device) -> list[torch.Tensor]:
    """Host arrays of one shape and dtype -> tensors on ``device``, in one copy.

    On a GPU the copy goes from pinned memory and does not wait: the host goes on preparing
    the next window while the device works. On the CPU the arrays are used in place."""
    if device.type == "cpu":
        return [torch.from_numpy(a) for a in arrays]
    stacked = torch.from_numpy(np.stack(arrays))  # (K, ...)
    if device.type == "cuda":
        stacked = stacked.pin_memory()
    return list(stacked.to(device, non_blocking=True).unbind(0))
