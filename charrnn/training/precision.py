"""Mixed precision on a GPU: autocast for the forward pass, a gradient scaler for fp16.

    fp32   everything in float32 (the default, and the only choice off CUDA)
    bf16   matmuls and recurrent layers in bfloat16 under autocast; same exponent range as
           float32, so no loss scaling
    fp16   float16 under autocast; the loss is scaled so small gradients do not underflow,
           and a step whose gradients overflow is skipped on the device (no host sync with
           a fused optimizer)

Weights, optimizer state and losses stay in float32 throughout.
"""

from __future__ import annotations

import contextlib

import torch

from charrnn.config import Precision
from charrnn.errors import ConfigError

_DTYPES = {Precision.bf16: torch.bfloat16, Precision.fp16: torch.float16}


def check_precision(name: str) -> Precision:
    try:
        return Precision(name)
    except ValueError:
        raise ConfigError(f"unknown --precision {name!r}: use fp32, bf16 or fp16") from None


class Amp:
    """Autocast and loss scaling for one device and precision; a no-op in fp32."""

    def __init__(self, precision: str, device: torch.device):
        self.precision = p = check_precision(precision)
        self.device = device
        if p is not Precision.fp32 and device.type != "cuda":
            raise ConfigError(
                f"--precision {p.value} needs a CUDA device; on {device.type} train in fp32"
            )
        if p is Precision.bf16 and not torch.cuda.is_bf16_supported():
            raise ConfigError("this GPU has no bfloat16 support: use --precision fp16")
        self.scaler = torch.amp.GradScaler(device.type, enabled=p is Precision.fp16)

    def autocast(self, cache: bool = True) -> contextlib.AbstractContextManager[object]:
        """``cache``: keep the weights' casts for the block (a CUDA graph cannot keep them)."""
        if self.precision is Precision.fp32:
            return contextlib.nullcontext()
        dtype = _DTYPES[self.precision]
        return torch.autocast(self.device.type, dtype=dtype, cache_enabled=cache)

    # -- exact resume: the scaler's state as tensors --

    def state_tensors(self) -> dict[str, torch.Tensor]:
        if not self.scaler.is_enabled():
            return {}
        s = self.scaler.state_dict()
        return {
            "scale": torch.tensor(s["scale"], dtype=torch.float64),
            "growth_tracker": torch.tensor(s["_growth_tracker"], dtype=torch.int64),
        }

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        if not self.scaler.is_enabled() or "scale" not in tensors:
            return  # a run that changes precision on resume starts a fresh scale
        s = self.scaler.state_dict()
        s["scale"] = float(tensors["scale"])
        s["_growth_tracker"] = int(tensors["growth_tracker"])
        self.scaler.load_state_dict(s)
