"""Timing and FLOP counting shared by the benchmark scripts."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode


class _NoModuleTracking:
    """Stands in for FlopCounterMode's module tracker, which fails on TensorDictParams (the Q ensemble's weights)."""

    parents = {"Global"}

    def __enter__(self) -> _NoModuleTracking:
        return self

    def __exit__(self, *args) -> None:
        return None


def count_flops(fn: Callable[[], Any]) -> int:
    """Matmul FLOPs of one call of ``fn`` (count after timing: compiled code is re-traced under the counter)."""
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _NoModuleTracking()
    with counter:
        fn()
    return counter.get_total_flops()


def time_calls(fn: Callable[[], Any], iters: int, device: str) -> list[float]:
    """Wall time of ``iters`` calls in ms (synchronising CUDA around each)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    times = []
    for _ in range(iters):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def memory_fields(device: str) -> dict[str, float]:
    """The process's peak GPU memory allocated by torch, in MiB, on a CUDA device (nothing elsewhere)."""
    if not device.startswith("cuda"):
        return {}
    return {"peak_gpu_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)}


def warmup_fields(warmup_ms: list[float]) -> dict[str, float]:
    """The untimed warm-up calls' wall time in seconds, compiling included when compiled (cold, or from inductor's
    cache if warm), so that a speed figure comes with what its compiling cost."""
    return {"warmup_s": round(sum(warmup_ms) / 1e3, 2)}


def timing_fields(ms: list[float], flops: int, unit: str) -> dict[str, float]:
    """Median/min/max ms, GFLOP per call and achieved GFLOP/s."""
    median = statistics.median(ms)
    return {
        "median_ms": round(median, 2),
        "min_ms": round(min(ms), 2),
        "max_ms": round(max(ms), 2),
        f"gflop_per_{unit}": round(flops / 1e9, 2),
        "gflops": round(flops / 1e9 / (median / 1e3), 1),
    }
