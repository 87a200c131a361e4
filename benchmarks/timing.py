"""Timing helpers for benchmarks: interleaved medians, measured in one process."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_median_seconds(
    fns: Sequence[Callable[[], object]], device: torch.device, repeats: int = 7, warmup: int = 2
) -> list[float]:
    """Median wall time of each fn, run in rounds (f1, f2, ..., f1, f2, ...) so that drift in
    machine load hits every variant alike; ratios of the results are what to compare."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    sync(device)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def environment(device: torch.device) -> dict[str, object]:
    info: dict[str, object] = {"torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
