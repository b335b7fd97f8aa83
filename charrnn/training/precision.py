"""Mixed precision: autocast for the forward pass, a gradient scaler for fp16.

    auto   bf16 on a CPU that computes in bfloat16 in hardware (Intel AMX, AVX-512 BF16),
           fp32 elsewhere
    fp32   everything in float32
    bf16   matmuls and recurrent layers in bfloat16 under autocast; same exponent range as
           float32, so no loss scaling (a CUDA device, or a CPU: unmeasured without those)
    fp16   float16 under autocast, on CUDA; the loss is scaled so small gradients do not
           underflow, and a step whose gradients overflow is skipped on the device (no host
           sync with a fused optimizer)

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
        raise ConfigError(f"unknown --precision {name!r}: use auto, fp32, bf16 or fp16") from None


def cpu_has_bf16() -> bool:
    """Whether this CPU computes in bfloat16 in hardware: AMX tiles (Intel) or AVX-512's
    bfloat16 dot products (AMD Zen 4 and later): a bf16 step of the LSTM took 0.4-0.6 of
    fp32's time with either (AMX and Zen 5 measured; docs/defaults.md). A torch that cannot
    tell: no."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, bool)() for name in probes)


def resolve_precision(name: str, device: torch.device) -> Precision:
    """The precision a --precision names on ``device``; auto is decided here."""
    p = check_precision(name)
    if p is Precision.auto:
        cpu_bf16 = device.type == "cpu" and cpu_has_bf16()
        return Precision.bf16 if cpu_bf16 else Precision.fp32
    if p is Precision.fp16 and device.type != "cuda":
        raise ConfigError(f"--precision fp16 needs a CUDA device; on {device.type} use bf16")
    if p is Precision.bf16 and device.type == "mps":
        raise ConfigError("--precision bf16 is not supported on mps; train in fp32")
    if p is Precision.bf16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("this GPU has no bfloat16 support: use --precision fp16")
    return p


class Amp:
    """Autocast and loss scaling for one device and precision; a no-op in fp32."""

    def __init__(self, precision: str, device: torch.device):
        self.precision = p = resolve_precision(precision, device)
        self.device = device
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
