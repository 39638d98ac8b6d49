"""A benchmark run against a stored baseline: timing regressions, tracked metrics, coverage.

**Timings** are compared by their medians, benchmark by benchmark (matched by
``fullname``; benchmarks in only one of the runs are listed as new or missing,
never compared).  A timing *regressed* when all three hold:

1. the ratio ``r = run median / baseline median`` exceeds ``1 + threshold``;
2. the slowdown exceeds the noise of the rounds: the medians' notches do not
   overlap, ``m_run - m_base > 1.58 (IQR_run / sqrt(n_run) + IQR_base / sqrt(n_base))``
   (McGill, Tukey & Larsen 1978: roughly a 95% test that two medians differ);
3. the slowdown exceeds the noise between runs: with at least
   :data:`MIN_FOR_SPREAD` benchmarks in common, the log-ratios of all of them give
   a robust spread ``s = 1.4826 MAD`` about their median ``c``, and
   ``(log r - c) / s`` (the modified z-score, Iglewicz & Hoaglin 1993) exceeds
   :data:`Z_LIMIT`.  The report states the smallest ratio this lets through.

Rule 3 exists because a shared machine changes speed between runs far more than
within one (other jobs, memory bandwidth, a busy sibling hyperthread): on a
2-core machine shared with other jobs, unchanged reruns moved single medians by
up to 55% while their interquartile ranges were a few percent, because a burst
of contention can cover every round of one benchmark.  Such a burst can still
push one benchmark past rule 3; the remedy is a second run, given as a second
RUN file (the best of the two medians counts, :func:`ntkcheck.reporting.runs.best_of`).
Since rule 3 is relative to the median ratio, a shift of *every* benchmark is judged
on its own: where rule 3 is in force, the run regressed as a whole when the median
ratio exceeds ``1 + threshold`` (a slower machine looks exactly like a slower
library; the report says so).

**Tracked metrics** are numbers a benchmark stores under ``extra_info["tracked"]``
as ``{name: value}`` or ``{name: {"value": v, "band": [lo, hi]}}`` or
``{name: {"value": v, "tol": t}}``.  A metric regressed when the run's value lies
outside its band: the explicit ``band``, else ``baseline +- tol``, else
``baseline +- threshold * |baseline|``; a NaN or infinite value is outside every
band.  Without a baseline only explicit bands are checked, and nothing fails.

A warning is given when the two runs' machine information differs
(:func:`ntkcheck.reporting.runs.machine_differences`): such a comparison is not like
for like.

**Coverage.**  A comparison only speaks for the benchmarks it compared: a run of
another benchmark set shares none with the baseline and would "pass" having
compared nothing.  The comparison is *incomplete* when fewer than
``min_compared`` (default :data:`MIN_COMPARED`) of the baseline's benchmarks
are in the run; ``ntkcheck report`` then exits with status 3 (1 on a regression,
which takes precedence) and lists the missing benchmarks.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from ntkcheck.reporting.runs import Benchmark, Run, is_number, machine_differences

__all__ = [
    "MIN_COMPARED",
    "MIN_FOR_SPREAD",
    "NOTCH",
    "Z_LIMIT",
    "Comparison",
    "MetricRow",
    "TimingRow",
    "compare",
    "metric_rows",
]

MIN_COMPARED = 0.9
"""Share of the baseline's benchmarks a comparison must compare to be complete (see Coverage above)."""
MIN_FOR_SPREAD = 8
"""Benchmarks in common needed to estimate the between-run spread (rule 3)."""
Z_LIMIT = 3.5
"""Modified z-score above which a log-ratio stands out from the between-run spread (Iglewicz & Hoaglin)."""
NOTCH = 1.58
"""McGill, Tukey & Larsen's notch half-width factor: median +- 1.58 IQR / sqrt(n)."""
SPREAD_FLOOR = 0.005
"""Smallest between-run spread assumed (0.5%): identical runs would otherwise flag any difference."""


@dataclass(frozen=True)
class TimingRow:
    """One benchmark's timing in the baseline and in the run, and whether it regressed."""

    name: str
    base: Benchmark
    run: Benchmark
    ratio: float
    beyond_rounds: bool  # rule 2: notches do not overlap
    z: float | None  # rule 3: modified z-score of log ratio (None: spread not estimated)
    regressed: bool


@dataclass(frozen=True)
class MetricRow:
    """One tracked metric of a benchmark: the baseline's and the run's value, its band, whether it regressed."""

    name: str
    metric: str
    base: float | None
    run: float
    low: float | None
    high: float | None
    regressed: bool


@dataclass(frozen=True)
class Comparison:
    """A run compared against ``base`` by the rules of the module docstring."""

    base: Run
    threshold: float
    min_compared: float
    timings: list[TimingRow]
    metrics: list[MetricRow]
    new: list[str]
    missing: list[str]
    warnings: list[str]
    center: float | None = None  # median log-ratio
    spread: float | None = None  # robust sigma of log-ratios
    run_wide: bool = False  # median ratio beyond 1 + threshold

    @property
    def median_ratio(self) -> float | None:
        """The median of the run-over-baseline ratios (None when the spread is not estimated)."""
        return None if self.center is None else math.exp(self.center)

    @property
    def detectable(self) -> float:
        """The smallest ratio the rules can flag (ignoring rule 2, which depends on each benchmark's rounds)."""
        limit = 1 + self.threshold
        if self.center is not None and self.spread is not None:
            limit = max(limit, math.exp(self.center + Z_LIMIT * self.spread))
        return limit

    @property
    def regressed(self) -> bool:
        """The run as a whole, a timing or a tracked metric regressed."""
        return self.run_wide or any(r.regressed for r in self.timings) or any(m.regressed for m in self.metrics)

    @property
    def baseline_count(self) -> int:
        """Benchmarks in the baseline: those compared and those missing from the run."""
        return len(self.timings) + len(self.missing)

    @property
    def compared_share(self) -> float:
        """The share of the baseline's benchmarks that were compared."""
        return len(self.timings) / self.baseline_count if self.baseline_count else 0.0

    @property
    def incomplete(self) -> bool:
        """Fewer than ``min_compared`` of the baseline's benchmarks were compared: the comparison cannot pass."""
        return self.compared_share < self.min_compared


def _tracked(extra: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The tracked metrics of a benchmark's ``extra_info``, each as a spec with a numeric ``value``."""
    tracked = extra.get("tracked")
    if not isinstance(tracked, dict):
        return {}
    out = {}
    for key, spec in tracked.items():
        spec = spec if isinstance(spec, dict) else {"value": spec}
        value = spec.get("value")
        if isinstance(value, (int, float)) and not isinstance(value, bool):  # NaN and inf included: they fail
            out[str(key)] = spec
    return out


def _band(spec: dict[str, Any], base: float | None, threshold: float) -> tuple[float | None, float | None]:
    """A metric's band: the stated one, else ``base +- tol``, else ``base +- threshold |base|`` (None without base)."""
    band = spec.get("band")
    if isinstance(band, (list, tuple)) and len(band) == 2 and all(is_number(v) for v in band):
        return float(min(band)), float(max(band))
    if base is None:
        return None, None
    tol = spec.get("tol")
    width = float(tol) if is_number(tol) else threshold * abs(base)
    return base - width, base + width


def metric_rows(run: Run, base: Run | None = None, threshold: float = 0.10) -> list[MetricRow]:
    """Every tracked metric of ``run`` with its band; without ``base`` only stated bands, and none regresses."""
    rows = []
    for key, b in run.benchmarks.items():
        base_b = base.benchmarks.get(key) if base is not None else None
        base_tracked = _tracked(base_b.extra) if base_b is not None else {}
        for metric, spec in _tracked(b.extra).items():
            value = float(spec["value"])
            ref = float(base_tracked[metric]["value"]) if metric in base_tracked else None
            low, high = _band(spec, ref if ref is not None and math.isfinite(ref) else None, threshold)
            outside = low is not None and high is not None and not (low <= value <= high)
            rows.append(MetricRow(b.name, metric, ref, value, low, high, regressed=outside and base is not None))
    return rows


def _check_limits(threshold: float, min_compared: float) -> None:
    if not (is_number(threshold) and threshold > 0):
        raise ValueError(f"threshold must be a positive number (0.10 = 10%), got {threshold!r}")
    if not (is_number(min_compared) and 0 <= min_compared <= 1):
        raise ValueError(f"min_compared must be a fraction in [0, 1] (0.9 = 90%), got {min_compared!r}")


def _spread(logs: list[float]) -> tuple[float | None, float | None]:
    """Median and robust sigma (1.4826 MAD, at least :data:`SPREAD_FLOOR`) of the log-ratios; None if too few."""
    if len(logs) < MIN_FOR_SPREAD:
        return None, None
    center = statistics.median(logs)
    mad = statistics.median(abs(v - center) for v in logs)
    return center, max(1.4826 * mad, SPREAD_FLOOR)


def _timing_row(
    b: Benchmark, r: Benchmark, log_ratio: float, center: float | None, spread: float | None, threshold: float
) -> TimingRow:
    """One benchmark's timing judged by rules 1 to 3."""
    ratio = math.exp(log_ratio)
    notch = NOTCH * (r.iqr / math.sqrt(r.rounds) + b.iqr / math.sqrt(b.rounds))
    beyond = r.median - b.median > notch
    z = None if center is None or spread is None else (log_ratio - center) / spread
    regressed = ratio > 1 + threshold and beyond and (z is None or z > Z_LIMIT)
    return TimingRow(r.name, b, r, ratio, beyond, z, regressed)


def compare(run: Run, base: Run, threshold: float = 0.10, min_compared: float = MIN_COMPARED) -> Comparison:
    """Compare ``run`` against ``base`` by the rules of the module docstring."""
    _check_limits(threshold, min_compared)
    warnings = list(base.warnings) + list(run.warnings) + machine_differences(base, run)
    common = [k for k in run.benchmarks if k in base.benchmarks]
    logs = {k: math.log(run.benchmarks[k].median / base.benchmarks[k].median) for k in common}
    center, spread = _spread(list(logs.values()))
    median_ratio = None if center is None else math.exp(center)
    run_wide = median_ratio is not None and median_ratio > 1 + threshold
    if run_wide:
        warnings.append(
            f"the whole run is slower: median ratio {median_ratio:.2f} over {len(common)} benchmarks exceeds "
            f"1 + threshold = {1 + threshold:.2f}; a loaded or slower machine cannot be told from a slower library"
        )
    forced = sorted({str(b.extra["forced_method"]) for b in run.benchmarks.values() if "forced_method" in b.extra})
    if forced:
        warnings.append(
            f"the run was made with NTKCHECK_BENCH_FORCE_METHOD={', '.join(forced)} (a deliberately changed run)"
        )
    return Comparison(
        base=base,
        threshold=threshold,
        min_compared=min_compared,
        timings=[
            _timing_row(base.benchmarks[k], run.benchmarks[k], logs[k], center, spread, threshold) for k in common
        ],
        metrics=metric_rows(run, base, threshold),
        new=sorted(run.benchmarks[k].name for k in run.benchmarks if k not in base.benchmarks),
        missing=sorted(base.benchmarks[k].name for k in base.benchmarks if k not in run.benchmarks),
        warnings=warnings,
        center=center,
        spread=spread,
        run_wide=run_wide,
    )
