"""What machine the figures come from: CPU, cores, load, PyTorch, and two measured ceilings
(fp32 matrix multiply and memory copy)."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch


def sync(device: torch.device) -> None:
    """Wait for the device, so a timer reads finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Clock:
    """Wall time and this process's CPU time, read together. On a shared machine the CPU
    time of a one-thread run hardly depends on what else runs; wall time does."""

    def __init__(self, device: torch.device):
        self.device = device
        sync(device)
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def seconds(self) -> tuple[float, float]:
        """(wall, CPU) seconds since the clock was made."""
        sync(self.device)
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def _best_seconds(fn: Callable[[], None], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_gflops(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    a, b = (torch.randn(n, n, device=device) for _ in range(2))
    a @ b  # warm-up

    def run() -> None:
        a @ b
        sync(device)

    return 2 * n**3 / _best_seconds(run, repeats) / 1e9


def copy_gbs(device: torch.device, mib: int = 256, repeats: int = 5) -> float:
    src = torch.randn(mib * (1 << 20) // 4, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)

    def run() -> None:
        dst.copy_(src)
        sync(device)

    return 2 * src.numel() * 4 / _best_seconds(run, repeats) / 1e9  # read + write


def describe(device: torch.device) -> dict[str, str]:
    info = {
        "cpu": cpu_model(),
        "cores": f"{os.cpu_count()} (torch threads: {torch.get_num_threads()})",
        "torch": torch.__version__,
        "device": str(device),
        "load average at start": load_average(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    info["fp32 matmul"] = f"{matmul_gflops(device):.0f} GFLOP/s (2048x2048, best of 5)"
    info["memory copy"] = f"{copy_gbs(device):.1f} GB/s (256 MiB, read + write, best of 5)"
    return info
