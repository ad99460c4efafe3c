"""Shared by the batched-vs-one-by-one benchmarks: wall time of device work, synchronised on CUDA."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from arelbo.core import allocator

# Time the work as a job runs it: with the allocator the `arelbo` command sets up (ARELBO_MALLOC=system
# in the environment times glibc's defaults instead)
allocator.configure()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def seconds(device: torch.device, work: Callable[[], object]) -> float:
    """Wall seconds of `work()`, its queued device work included."""
    sync(device)
    start = time.perf_counter()
    work()
    sync(device)
    return time.perf_counter() - start


def report_one_by_one_vs_batched(
    device: torch.device,
    what: str,
    steps: int,
    batch_size: int,
    one_by_one: Callable[[], object],
    batched: Callable[[], object],
) -> None:
    """Time K separate runs against one batched run of the same K, and print both and the ratio."""
    single_s = seconds(device, one_by_one)
    batched_s = seconds(device, batched)
    print(f"device {device}, {torch.get_num_threads()} threads; {what}, {steps} steps each (batch {batch_size})")
    print(f"one by one {single_s:.1f} s   batched {batched_s:.1f} s   speed-up {single_s / batched_s:.2f}x")
