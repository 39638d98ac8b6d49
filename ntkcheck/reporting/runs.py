"""The pytest-benchmark JSON model of a benchmark report: runs, their benchmarks, their machines.

:func:`load_run` reads and checks a ``pytest --benchmark-json`` file; :func:`best_of`
combines several runs benchmark by benchmark, keeping the smallest median;
:func:`baseline_path` names the stored baseline of a run's machine kind, and
:func:`machine_differences` lists what makes two runs not like for like (machine
kind, device, size set, thread count, torch version, timer).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

__all__ = ["Benchmark", "Run", "baseline_path", "best_of", "is_number", "load_run", "load_runs", "machine_differences"]

# machine_info["ntkcheck"] fields whose difference makes a comparison not like for like
_MACHINE_FIELDS = ("machine_kind", "device", "size_set", "gpu", "cpu_threads", "torch", "tf32_matmul")


@dataclass(frozen=True)
class Benchmark:
    """One benchmark of a pytest-benchmark run: its timing statistics (seconds) and ``extra_info``."""

    fullname: str
    name: str
    group: str | None
    median: float
    iqr: float
    min: float
    rounds: int
    timer: str | None
    extra: dict[str, Any]

    @property
    def test(self) -> str:
        """The test function's name, without parameters."""
        return self.name.split("[", 1)[0]

    @property
    def param(self) -> str:
        """The parameters between the brackets of the name (the whole name when it has none)."""
        m = re.search(r"\[(.*)\]$", self.name)
        return m.group(1) if m else self.name


@dataclass(frozen=True)
class Run:
    """A pytest-benchmark run, or the best of several (see :func:`best_of`)."""

    paths: tuple[Path, ...]
    machine_info: dict[str, Any]
    commit_info: dict[str, Any]
    datetime: str | None
    benchmarks: dict[str, Benchmark]
    warnings: tuple[str, ...] = ()

    @property
    def machine(self) -> dict[str, Any]:
        """``machine_info["ntkcheck"]`` (written by benchmarks/conftest.py), or {}."""
        info = self.machine_info.get("ntkcheck")
        return info if isinstance(info, dict) else {}

    @property
    def machine_kind(self) -> str:
        """The machine kind the benchmarks recorded, else the CPU's brand, else the platform's machine name."""
        kind = self.machine.get("machine_kind")
        if kind:
            return str(kind)
        cpu = self.machine_info.get("cpu", {})
        brand = cpu.get("brand_raw") if isinstance(cpu, dict) else None
        return str(brand or self.machine_info.get("machine") or "unknown")

    @property
    def timers(self) -> set[str]:
        """The timers the benchmarks were measured with."""
        return {b.timer for b in self.benchmarks.values() if b.timer}


def _mapping(value: object) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def is_number(value: object) -> TypeGuard[float]:
    """``value`` is a finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def load_run(path: str | Path, argument: str = "RUN") -> Run:
    """Read a pytest-benchmark JSON file; ``ValueError`` naming ``argument`` when it is missing or malformed."""
    path = Path(path)
    where = f"{argument} ({path})"
    if not path.is_file():
        raise ValueError(f"{where}: no such file")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{where} is not a pytest-benchmark JSON file: not JSON ({exc})") from exc
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("benchmarks"), list)
        or not isinstance(data.get("machine_info"), dict)
    ):
        raise ValueError(
            f"{where} is not a pytest-benchmark JSON file: expected an object with a "
            "'benchmarks' list and a 'machine_info' object (write one with --benchmark-json)"
        )
    if not data["benchmarks"]:
        raise ValueError(f"{where} holds no benchmarks (was it written with --benchmark-disable?)")
    benchmarks = [_benchmark(b, i, where) for i, b in enumerate(data["benchmarks"])]
    commit = _mapping(data.get("commit_info"))
    return Run((path,), data["machine_info"], commit, data.get("datetime"), {b.fullname: b for b in benchmarks})


def _benchmark(b: object, i: int, where: str) -> Benchmark:
    """Entry ``i`` of a run's ``benchmarks`` list, checked for every field the report reads."""
    stats = b.get("stats") if isinstance(b, dict) else None
    if (
        not isinstance(b, dict)
        or not isinstance(stats, dict)
        or not isinstance(b.get("fullname"), str)
        or not all(is_number(stats.get(k)) for k in ("median", "iqr", "min", "rounds"))
    ):
        raise ValueError(
            f"{where}: benchmark {i} lacks a 'fullname' or 'stats' with numeric median, iqr, min and rounds"
        )
    label = f"{where}: benchmark {b['fullname']!r}"
    if stats["median"] <= 0:
        raise ValueError(f"{label} has median {stats['median']!r}; expected > 0")
    if stats["iqr"] < 0 or stats["min"] < 0:
        raise ValueError(f"{label} has iqr {stats['iqr']!r} and min {stats['min']!r}; expected >= 0")
    if stats["rounds"] < 1 or stats["rounds"] != int(stats["rounds"]):
        raise ValueError(f"{label} has rounds {stats['rounds']!r}; expected a whole number >= 1")
    name, group = b.get("name", b["fullname"]), b.get("group")
    if not isinstance(name, str) or not (group is None or isinstance(group, str)):
        raise ValueError(f"{label}: 'name' must be a string and 'group' a string or null, got {name!r}, {group!r}")
    timer = _mapping(b.get("options")).get("timer")
    if not (timer is None or isinstance(timer, str)):
        raise ValueError(f"{label}: options.timer must be a string, got {timer!r}")
    extra = _mapping(b.get("extra_info"))
    if "widths" in extra or "errors" in extra:
        widths, errors = extra.get("widths"), extra.get("errors")
        if not (
            isinstance(widths, list)
            and isinstance(errors, list)
            and widths
            and len(widths) == len(errors)
            and all(is_number(v) and v > 0 for v in widths + errors)
        ):
            raise ValueError(
                f"{label}: extra_info 'widths' and 'errors' must be lists of positive numbers of "
                f"the same length, got {widths!r} and {errors!r}"
            )
    return Benchmark(
        fullname=b["fullname"],
        name=name,
        group=group,
        median=float(stats["median"]),
        iqr=float(stats["iqr"]),
        min=float(stats["min"]),
        rounds=int(stats["rounds"]),
        timer=timer,
        extra=extra,
    )


def best_of(runs: list[Run]) -> Run:
    """Several runs of the same benchmarks as one: for each benchmark, the run with the smallest median.

    Contention on a shared machine only ever adds time, and it comes in bursts
    that can cover all rounds of one benchmark in one run; the least disturbed
    run is the best estimate.  Machine information is the first run's; runs on
    different machines give a warning.
    """
    if not runs:
        raise ValueError("best_of needs at least one run")
    first = runs[0]
    if len(runs) == 1:
        return first
    warnings = [
        f"{r.paths[0]} is not like {first.paths[0]}: {d}" for r in runs[1:] for d in machine_differences(first, r)
    ]
    benchmarks: dict[str, Benchmark] = {}
    for r in runs:
        for key, b in r.benchmarks.items():
            if key not in benchmarks or b.median < benchmarks[key].median:
                benchmarks[key] = b
    paths = tuple(p for r in runs for p in r.paths)
    return Run(
        paths,
        first.machine_info,
        first.commit_info,
        first.datetime,
        benchmarks,
        tuple(w for r in runs for w in r.warnings) + tuple(warnings),
    )


def baseline_path(directory: str | Path, run: Run) -> Path:
    """Where the baseline of ``run``'s machine kind is stored: ``<directory>/<machine kind, slugged>.json``."""
    slug = re.sub(r"[^a-z0-9_.]+", "-", run.machine_kind.lower()).strip("-.") or "unknown"
    return Path(directory) / f"{slug}.json"


def load_runs(paths: list[str | Path], argument: str = "RUN") -> Run:
    """:func:`load_run` of every path, combined by :func:`best_of`."""
    return best_of([load_run(p, argument) for p in paths])


def machine_differences(base: Run, run: Run) -> list[str]:
    """Human-readable differences in the machine information that make a comparison not like for like."""
    out = []
    if base.machine_kind != run.machine_kind:
        out.append(f"machine kind differs: baseline {base.machine_kind!r}, run {run.machine_kind!r}")
    for key in _MACHINE_FIELDS[1:]:
        a, b = base.machine.get(key), run.machine.get(key)
        if a != b:
            out.append(f"{key} differs: baseline {a!r}, run {b!r}")
    if base.timers != run.timers:
        out.append(f"timer differs: baseline {sorted(base.timers)}, run {sorted(run.timers)}")
    return out
