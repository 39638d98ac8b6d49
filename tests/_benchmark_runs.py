"""Synthetic pytest-benchmark JSON runs for the benchmark-report tests."""

from __future__ import annotations

import json
from pathlib import Path

KIND = "cpu-2core-x86_64"


def bench(
    param: str,
    median: float,
    *,
    iqr: float | None = None,
    rounds: int = 20,
    extra: dict | None = None,
    test: str = "test_speed",
    timer: str = "perf_counter",
) -> dict:
    """One entry of a pytest-benchmark JSON file (the fields it writes; times in seconds)."""
    iqr = 0.02 * median if iqr is None else iqr
    return {
        "group": None,
        "name": f"{test}[{param}]",
        "fullname": f"benchmarks/{test}.py::{test}[{param}]",
        "params": {"case": param},
        "param": param,
        "extra_info": extra or {},
        "options": {
            "disable_gc": False,
            "timer": timer,
            "min_rounds": 5,
            "max_time": 1.0,
            "min_time": 5e-06,
            "warmup": False,
        },
        "stats": {
            "min": 0.97 * median,
            "max": 1.05 * median,
            "mean": median,
            "stddev": iqr / 1.35,
            "rounds": rounds,
            "median": median,
            "iqr": iqr,
            "q1": median - iqr / 2,
            "q3": median + iqr / 2,
            "iqr_outliers": 0,
            "stddev_outliers": 0,
            "outliers": "0;0",
            "ld15iqr": 0.97 * median,
            "hd15iqr": 1.05 * median,
            "ops": 1 / median if median else 0.0,
            "total": rounds * median,
        },
    }


def run_json(benchmarks: list[dict], *, kind: str = KIND, threads: int = 1) -> dict:
    machine = {
        "device": "cpu",
        "size_set": "cpu",
        "torch": "2.13.0+cpu",
        "cuda": None,
        "gpu": None,
        "driver": None,
        "tf32_matmul": False,
        "cpu_threads": threads,
        "machine_kind": kind,
    }
    return {
        "machine_info": {
            "node": "host",
            "machine": "x86_64",
            "python_version": "3.11.9",
            "cpu": {"brand_raw": "Test CPU"},
            "ntkcheck": machine,
        },
        "commit_info": {"id": "0123456789abcdef", "dirty": False, "branch": "main"},
        "benchmarks": benchmarks,
        "datetime": "2026-11-23T10:00:00+00:00",
        "version": "5.3.1",
    }


def write(tmp_path: Path, name: str, data: object) -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def medians(n: int = 10) -> dict[str, float]:
    return {f"case{i}": 0.001 * (i + 1) for i in range(n)}
