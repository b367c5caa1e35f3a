"""Timing and peak-memory helpers shared by the benchmarks (CPU: process RSS; CUDA: allocator peak)."""

from __future__ import annotations

import ctypes
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_free_heap_pages() -> None:
    """Hands the pages of freed heap chunks back to the OS (glibc malloc_trim), so that a run reusing
    them faults them in again and shows in its peak RSS, instead of hiding in memory an earlier run freed."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


@dataclass
class Timing:
    median_s: float
    runs_s: list[float]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_runs(run: Callable[[], object], repeats: int, device: torch.device,
               after_each: Callable[[], None] | None = None) -> Timing:
    """Returns the median wall time of `repeats` calls of run() (call it once before to warm up)."""
    runs = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        run()
        synchronize(device)
        runs.append(time.perf_counter() - start)
        if after_each is not None:
            after_each()
    return Timing(statistics.median(runs), runs)


def peak_added_mib(run: Callable[[], object], device: torch.device) -> float | None:
    """Returns the peak memory one call of run() adds: the CUDA allocator's peak, or on Linux the
    process's peak RSS (VmHWM) over the RSS before, with freed heap pages released first."""
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    _release_free_heap_pages()
    before = _status_kib("VmRSS")
    try:
        _CLEAR_REFS.write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        return None
    run()
    peak = _status_kib("VmHWM")
    return None if before is None or peak is None else (peak - before) / 1024


def first_call_seconds(run: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    run()
    synchronize(device)
    return time.perf_counter() - start


def write_json(path: Path, result: dict) -> None:
    """Writes a benchmark's result as indented JSON (creating its folder) and says where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
