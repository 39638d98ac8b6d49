"""Timing and memory helpers for the benchmarks: synchronised calls, peak memory, matmul rate."""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import torch
from torch.utils.benchmark import Timer


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synced(fn: Callable[[], object], device: torch.device) -> Callable[[], object]:
    """``fn`` followed by a device synchronisation, so a host timer sees the finished work."""

    def call() -> object:
        out = fn()
        synchronize(device)
        return out

    return call


def _rss_high_water() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM not found in /proc/self/status")


def _rss_now() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


def peak_memory(fn: Callable[[], object], device: torch.device) -> int:
    """Bytes of peak memory one call of ``fn`` adds: CUDA allocator peak, or peak RSS on the CPU.

    CPU: freed heap memory is first returned to the system (glibc ``malloc_trim``,
    where available), so that allocations the call makes show up as RSS growth
    rather than reuse of cached pages; then the kernel's high-water mark is reset
    through /proc/self/clear_refs (Linux >= 4.0), so the peak is that of this call
    alone.
    """
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        out = fn()
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        del out
        return int(peak)
    _malloc_trim()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _rss_now()
    out = fn()
    peak = _rss_high_water() - base
    del out
    return max(int(peak), 0)


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def matmul_rate(n: int, dtype: torch.dtype, device: torch.device, min_run_time: float = 0.2) -> float:
    """Measured flop rate (flop/s) of a square n x n x n matmul on the current thread count.

    The median time per matmul of :meth:`torch.utils.benchmark.Timer.blocked_autorange`
    (blocks of calls over at least ``min_run_time`` seconds, after a warm-up; CUDA
    synchronised).
    """
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, dtype=dtype, device=device, generator=gen)
    b = torch.randn(n, n, dtype=dtype, device=device, generator=gen)
    timer = Timer(stmt="a @ b", globals={"a": a, "b": b}, num_threads=torch.get_num_threads())
    return 2.0 * n**3 / timer.blocked_autorange(min_run_time=min_run_time).median


def calibrated_rounds(seconds_per_call: float, budget_s: float, min_rounds: int = 3, max_rounds: int = 30) -> int:
    """As many rounds as fit ``budget_s`` at ``seconds_per_call``, clipped to [min_rounds, max_rounds].

    At least 3 rounds, so that a benchmark's interquartile range (the noise that
    ``ntkcheck report`` weighs a slowdown against) is measured, not zero.
    """
    if seconds_per_call <= 0:
        return max_rounds
    return int(min(max_rounds, max(min_rounds, budget_s // seconds_per_call)))


def gram_flops(n1: int, n2: int, sizes: tuple[int, ...], n_out: int = 1) -> float:
    """Flops of the per-layer Gram products: sum over layers of 2 N1 N2 (fan_in + O^2 fan_out).

    For a scalar output this is the "effective" count of ANCHORS.md: A A^T and G G^T per layer.
    """
    return sum(2.0 * n1 * n2 * (a + n_out * n_out * b) for a, b in zip(sizes[:-1], sizes[1:]))
