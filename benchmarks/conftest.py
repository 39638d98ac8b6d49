"""Benchmark configuration: device, size set, machine info.

``NTKCHECK_DEVICE`` (cpu|cuda, default cuda when available) chooses the device;
``NTKCHECK_BENCH_SIZES`` (smoke|cpu|gpu, default by device) the size set.  The
``smoke`` set is what CI runs (with ``--benchmark-disable``) to keep the files working;
the ``cpu`` set ran the whole directory in about 12 minutes on 2 shared cores (load ~3; the family
kernels at N = 1024 and the CNTK of 32 images take most of it).

``NTKCHECK_BENCH_THREADS`` (a positive integer, unset by default) sets torch's
intra-op thread count for the session (recorded as ``cpu_threads`` in the
machine info).

``NTKCHECK_BENCH_FORCE_METHOD`` (layerwise|jacobian|ntvp, unset by default) makes
the NTK benchmarks compute every kernel with that method while keeping their
names: a deliberately slowed (or sped-up) run, to check that ``ntkcheck report``
flags a regression.  Runs made with it record ``forced_method`` in ``extra_info``.

Rounds are calibrated per benchmark (:func:`rounds_for`): as many as fit the
size set's time budget per benchmark, at least 3, so the median and the
interquartile range that ``ntkcheck report`` compares are defined.
"""

from __future__ import annotations

import os
import platform
import subprocess

import pytest
import torch
from _measure import calibrated_rounds, matmul_rate


def bench_device() -> torch.device:
    name = os.environ.get("NTKCHECK_DEVICE", "cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def size_set() -> str:
    default = "gpu" if bench_device().type == "cuda" else "cpu"
    name = os.environ.get("NTKCHECK_BENCH_SIZES", default)
    if name not in ("smoke", "cpu", "gpu"):
        raise ValueError(f"NTKCHECK_BENCH_SIZES must be smoke, cpu or gpu, got {name!r}")
    return name


def _set_threads() -> None:
    value = os.environ.get("NTKCHECK_BENCH_THREADS")
    if value is None or value == "":
        return
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"NTKCHECK_BENCH_THREADS must be a positive integer, got {value!r}")
    torch.set_num_threads(int(value))


_set_threads()


def forced_method() -> str | None:
    """The kernel method every NTK benchmark uses instead of its own (``NTKCHECK_BENCH_FORCE_METHOD``)."""
    name = os.environ.get("NTKCHECK_BENCH_FORCE_METHOD") or None
    if name is not None and name not in ("layerwise", "jacobian", "ntvp"):
        raise ValueError(f"NTKCHECK_BENCH_FORCE_METHOD must be layerwise, jacobian or ntvp, got {name!r}")
    return name


ROUND_BUDGET_S = {"smoke": 0.0, "cpu": 1.0, "gpu": 2.0}


def rounds_for(seconds_per_call: float) -> int:
    """Timed rounds for a call of this duration: the size set's budget, clipped to [3, 30]."""
    return calibrated_rounds(seconds_per_call, ROUND_BUDGET_S[size_set()])


@pytest.fixture(scope="session")
def device() -> torch.device:
    dev = bench_device()
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("NTKCHECK_DEVICE=cuda but no CUDA device is available")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return dev


_RATES: dict[tuple[str, torch.dtype], float] = {}


@pytest.fixture(scope="session")
def matmul_rate_of(device):
    """The square-matmul rate (flop/s) for a dtype, measured once in this run."""

    def rate(dtype: torch.dtype) -> float:
        key = (str(device), dtype)
        if key not in _RATES:
            n = {"gpu": 8192, "cpu": 1024, "smoke": 256}[size_set()]
            _RATES[key] = matmul_rate(n, dtype, device)
        return _RATES[key]

    return rate


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
        return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def pytest_benchmark_update_machine_info(config, machine_info):
    dev = bench_device()
    machine_info["ntkcheck"] = {
        "device": str(dev),
        "size_set": size_set(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" and torch.cuda.is_available() else None,
        "driver": _nvidia_driver() if dev.type == "cuda" else None,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "cpu_threads": torch.get_num_threads(),
        "machine_kind": (
            torch.cuda.get_device_name(dev)
            if dev.type == "cuda" and torch.cuda.is_available()
            else f"cpu-{os.cpu_count()}core-{platform.machine()}"
        ),
    }
