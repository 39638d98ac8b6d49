"""Benchmark reports: a pytest-benchmark JSON run, alone or against a stored baseline.

``ntkcheck report RUN.json [RUN2.json ...] [--baseline BASELINE.json ...]`` writes
``<out>/<name>.md`` with tables and PNG figures drawn from what the benchmarks
store in ``extra_info``, and returns a non-zero exit status when the run regressed.
Several files on either side are combined benchmark by benchmark, keeping the
smallest median (:func:`best_of`); ``--baseline-dir DIR`` takes the baseline from
``DIR/<machine kind of the run>.json`` (:func:`baseline_path`) when it exists.

**Timings** are compared by their medians, benchmark by benchmark (matched by
``fullname``; benchmarks in only one of the files are listed as new or missing,
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
RUN file (the best of the two medians counts).  Since rule 3 is relative to the
median ratio, a shift of *every* benchmark is judged on its own: where rule 3 is
in force, the run regressed as a whole when the median ratio exceeds
``1 + threshold`` (a slower machine looks exactly like a slower library; the
report says so).

**Tracked metrics** are numbers a benchmark stores under ``extra_info["tracked"]``
as ``{name: value}`` or ``{name: {"value": v, "band": [lo, hi]}}`` or
``{name: {"value": v, "tol": t}}``.  A metric regressed when the run's value lies
outside its band: the explicit ``band``, else ``baseline +- tol``, else
``baseline +- threshold * |baseline|``; a NaN or infinite value is outside every
band.  Without a baseline only explicit bands are checked, and nothing fails.

**Figures** use these ``extra_info`` keys when present: ``family``, ``method``, ``n``,
``width``, ``dtype`` and ``throughput`` / ``throughput_unit`` (throughput against
n and against width, one line per method and fixed other parameters);
``peak_memory_bytes`` (memory per method); ``widths``, ``errors``, ``slope``,
``intercept`` (error against width, log-log, with the fitted line).

**Side by side**: benchmarks that store ``case`` and ``library`` (ntkcheck, the torch.func
recipe, neural-tangents; ``benchmarks/test_family_kernels.py``, ``test_analytic_kernels.py``,
``test_neural_tangents.py``) get one table per case: each library's median, ntkcheck's speed-up
over it, the effective rate (``throughput``, ``fraction_of_matmul``), the share of the matmul
floor (``fraction_of_floor``), peak memory and ntkcheck's memory ratio; a benchmark's
``layers`` list (per parameter: ``name``, ``choice``, ``features_s``, ``gram_s`` and the cost
model's flops) becomes a per-layer table under its case.

A warning is printed and written when the two runs' machine information differs
(machine kind, device, size set, thread count, torch version, timer): such a
comparison is not like for like.

**Coverage.**  A comparison only speaks for the benchmarks it compared: a run of
another benchmark set shares none with the baseline and would "pass" having
compared nothing.  The comparison is *incomplete* when fewer than
``min_compared`` (default :data:`MIN_COMPARED`) of the baseline's benchmarks
are in the run; ``ntkcheck report`` then exits with status 3 (1 on a regression,
which takes precedence) and lists the missing benchmarks.

Every input file is read and checked (:func:`load_run`) and every figure drawn
before anything is written; the files are then written together with
:func:`ntkcheck._support.atomic.staged` (figures first, the Markdown last), so a failure or
an interruption leaves the previous report and its figures as they were.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ntkcheck._support.atomic import check_out_folder, staged

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "MIN_COMPARED",
    "MIN_FOR_SPREAD",
    "Z_LIMIT",
    "Benchmark",
    "Comparison",
    "MetricRow",
    "Run",
    "TimingRow",
    "compare",
    "baseline_path",
    "best_of",
    "load_run",
    "load_runs",
    "machine_differences",
    "write_report",
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
        kind = self.machine.get("machine_kind")
        if kind:
            return str(kind)
        cpu = self.machine_info.get("cpu", {})
        brand = cpu.get("brand_raw") if isinstance(cpu, dict) else None
        return str(brand or self.machine_info.get("machine") or "unknown")

    @property
    def timers(self) -> set[str]:
        return {b.timer for b in self.benchmarks.values() if b.timer}


def _number(value: object) -> bool:
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
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list) \
            or not isinstance(data.get("machine_info"), dict):
        raise ValueError(f"{where} is not a pytest-benchmark JSON file: expected an object with a "
                         "'benchmarks' list and a 'machine_info' object (write one with --benchmark-json)")
    if not data["benchmarks"]:
        raise ValueError(f"{where} holds no benchmarks (was it written with --benchmark-disable?)")
    benchmarks = [_benchmark(b, i, where) for i, b in enumerate(data["benchmarks"])]
    commit = data.get("commit_info") if isinstance(data.get("commit_info"), dict) else {}
    return Run((path,), data["machine_info"], commit, data.get("datetime"), {b.fullname: b for b in benchmarks})


def _benchmark(b: object, i: int, where: str) -> Benchmark:
    """Entry ``i`` of a run's ``benchmarks`` list, checked for every field the report reads."""
    stats = b.get("stats") if isinstance(b, dict) else None
    if not isinstance(b, dict) or not isinstance(stats, dict) or not isinstance(b.get("fullname"), str) \
            or not all(_number(stats.get(k)) for k in ("median", "iqr", "min", "rounds")):
        raise ValueError(f"{where}: benchmark {i} lacks a 'fullname' or 'stats' with numeric "
                         "median, iqr, min and rounds")
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
    options = b.get("options") if isinstance(b.get("options"), dict) else {}
    timer = options.get("timer")
    if not (timer is None or isinstance(timer, str)):
        raise ValueError(f"{label}: options.timer must be a string, got {timer!r}")
    extra = b.get("extra_info") if isinstance(b.get("extra_info"), dict) else {}
    if "widths" in extra or "errors" in extra:
        widths, errors = extra.get("widths"), extra.get("errors")
        if not (isinstance(widths, list) and isinstance(errors, list) and widths and len(widths) == len(errors)
                and all(_number(v) and v > 0 for v in widths + errors)):
            raise ValueError(f"{label}: extra_info 'widths' and 'errors' must be lists of positive numbers of "
                             f"the same length, got {widths!r} and {errors!r}")
    return Benchmark(fullname=b["fullname"], name=name, group=group, median=float(stats["median"]),
                     iqr=float(stats["iqr"]), min=float(stats["min"]), rounds=int(stats["rounds"]), timer=timer,
                     extra=extra)


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
    warnings = [f"{r.paths[0]} is not like {first.paths[0]}: {d}"
                for r in runs[1:] for d in machine_differences(first, r)]
    benchmarks: dict[str, Benchmark] = {}
    for r in runs:
        for key, b in r.benchmarks.items():
            if key not in benchmarks or b.median < benchmarks[key].median:
                benchmarks[key] = b
    paths = tuple(p for r in runs for p in r.paths)
    return Run(paths, first.machine_info, first.commit_info, first.datetime, benchmarks,
               tuple(w for r in runs for w in r.warnings) + tuple(warnings))


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


# ---------------------------------------------------------------------------------------------
# comparison


@dataclass(frozen=True)
class TimingRow:
    name: str
    base: Benchmark
    run: Benchmark
    ratio: float
    beyond_rounds: bool  # rule 2: notches do not overlap
    z: float | None  # rule 3: modified z-score of log ratio (None: spread not estimated)
    regressed: bool


@dataclass(frozen=True)
class MetricRow:
    name: str
    metric: str
    base: float | None
    run: float
    low: float | None
    high: float | None
    regressed: bool


@dataclass
class Comparison:
    threshold: float
    min_compared: float = MIN_COMPARED
    timings: list[TimingRow] = field(default_factory=list)
    metrics: list[MetricRow] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    center: float | None = None  # median log-ratio
    spread: float | None = None  # robust sigma of log-ratios
    run_wide: bool = False  # median ratio beyond 1 + threshold

    @property
    def median_ratio(self) -> float | None:
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
    band = spec.get("band")
    if isinstance(band, (list, tuple)) and len(band) == 2 and all(_number(v) for v in band):
        return float(min(band)), float(max(band))
    if base is None:
        return None, None
    tol = spec.get("tol")
    width = float(tol) if _number(tol) else threshold * abs(base)
    return base - width, base + width


def _metric_rows(run: Run, base: Run | None, threshold: float) -> list[MetricRow]:
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


def compare(run: Run, base: Run, threshold: float = 0.10, min_compared: float = MIN_COMPARED) -> Comparison:
    """Compare ``run`` against ``base`` by the rules of the module docstring."""
    if not (_number(threshold) and threshold > 0):
        raise ValueError(f"threshold must be a positive number (0.10 = 10%), got {threshold!r}")
    if not (_number(min_compared) and 0 <= min_compared <= 1):
        raise ValueError(f"min_compared must be a fraction in [0, 1] (0.9 = 90%), got {min_compared!r}")
    cmp = Comparison(threshold=threshold, min_compared=min_compared)
    cmp.warnings = list(base.warnings) + list(run.warnings) + machine_differences(base, run)
    common = [k for k in run.benchmarks if k in base.benchmarks]
    cmp.new = sorted(run.benchmarks[k].name for k in run.benchmarks if k not in base.benchmarks)
    cmp.missing = sorted(base.benchmarks[k].name for k in base.benchmarks if k not in run.benchmarks)
    logs = {k: math.log(run.benchmarks[k].median / base.benchmarks[k].median) for k in common}
    if len(common) >= MIN_FOR_SPREAD:
        cmp.center = statistics.median(logs.values())
        mad = statistics.median(abs(v - cmp.center) for v in logs.values())
        cmp.spread = max(1.4826 * mad, SPREAD_FLOOR)
        cmp.run_wide = math.exp(cmp.center) > 1 + threshold
    for k in common:
        b, r = base.benchmarks[k], run.benchmarks[k]
        ratio = math.exp(logs[k])
        notch = NOTCH * (r.iqr / math.sqrt(r.rounds) + b.iqr / math.sqrt(b.rounds))
        beyond = r.median - b.median > notch
        z = None if cmp.spread is None else (logs[k] - cmp.center) / cmp.spread
        regressed = ratio > 1 + threshold and beyond and (z is None or z > Z_LIMIT)
        cmp.timings.append(TimingRow(r.name, b, r, ratio, beyond, z, regressed))
    cmp.metrics = _metric_rows(run, base, threshold)
    if cmp.run_wide:
        cmp.warnings.append(
            f"the whole run is slower: median ratio {cmp.median_ratio:.2f} over {len(common)} benchmarks exceeds "
            f"1 + threshold = {1 + threshold:.2f}; a loaded or slower machine cannot be told from a slower library")
    forced = sorted({str(b.extra["forced_method"]) for b in run.benchmarks.values() if "forced_method" in b.extra})
    if forced:
        cmp.warnings.append(f"the run was made with NTKCHECK_BENCH_FORCE_METHOD={', '.join(forced)} "
                            "(a deliberately changed run)")
    return cmp


# ---------------------------------------------------------------------------------------------
# figures


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


_PARAMS = ("family", "method", "dtype", "n", "width", "d", "depth", "outputs")


def _series(benches: list[Benchmark], x: str) -> dict[str, list[tuple[float, float]]]:
    """Throughput against ``x``: one series per method and fixed other parameters, two points or more.

    Labels name only the parameters that vary among ``benches``.
    """
    varying = [p for p in _PARAMS if p != x and len({repr(b.extra.get(p)) for b in benches}) > 1]
    groups: dict[str, list[tuple[float, float]]] = {}
    for b in benches:
        e = b.extra
        if not (_number(e.get(x)) and _number(e.get("throughput"))):
            continue
        label = " ".join(str(e.get(p)) if p in ("family", "method", "dtype") else f"{p}={e.get(p)}" for p in varying)
        groups.setdefault(label or b.test, []).append((float(e[x]), float(e["throughput"])))
    return {k: sorted(v) for k, v in groups.items() if len({p[0] for p in v}) > 1}


def plot_throughput(run: Run) -> Figure | None:
    """Throughput against n and against width per method (series with at least two points); None if none."""
    by_test: dict[str, list[Benchmark]] = {}
    for b in run.benchmarks.values():
        if _number(b.extra.get("throughput")) and _number(b.extra.get("n")):
            by_test.setdefault(b.test, []).append(b)
    panels = [(test, x, _series(benches, x), benches) for test, benches in sorted(by_test.items())
              for x in ("n", "width")]
    panels = [p for p in panels if p[2]]
    if not panels:
        return None
    plt = _plt()
    cols = 2
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(13, 4.3 * rows), squeeze=False)
    styles = ["o-", "s--", "^-.", "D:", "v-", "P--", "X-.", "*:"]
    for ax, (test, x, series, benches) in zip(axes.flat, panels):
        unit = next((str(b.extra["throughput_unit"]) for b in benches if b.extra.get("throughput_unit")), "")
        for i, (label, pts) in enumerate(sorted(series.items())):
            xs, ys = zip(*pts)
            ax.plot(xs, ys, styles[i % len(styles)], label=label, markersize=4,
                    color=plt.get_cmap("tab20")(i % 20))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(x)
        ax.set_ylabel(unit)
        ax.set_title(f"{test.removeprefix('test_')}: throughput vs {x}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def plot_memory(run: Run) -> Figure | None:
    """Peak memory of one call per benchmark, coloured by method; None if no benchmark recorded it."""
    benches = sorted((b for b in run.benchmarks.values() if _number(b.extra.get("peak_memory_bytes"))),
                     key=lambda b: (b.test, str(b.extra.get("method")), b.param))
    if not benches:
        return None
    plt = _plt()
    methods = sorted({str(b.extra.get("method", b.test)) for b in benches})
    colors = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    fig, ax = plt.subplots(figsize=(9, 0.22 * len(benches) + 1.2))
    ys = range(len(benches))
    ax.barh(ys, [max(b.extra["peak_memory_bytes"], 0) / 2**20 for b in benches],
            color=[colors[str(b.extra.get("method", b.test))] for b in benches])
    ax.set_yticks(list(ys), [f"{b.test.removeprefix('test_')}[{b.param}]" for b in benches], fontsize=5.5)
    ax.invert_yaxis()
    ax.set_xlabel("peak memory of one call (MiB; CUDA allocator peak, or peak RSS growth on the CPU)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[m]) for m in methods]
    ax.legend(handles, methods, fontsize=6, loc="lower right")
    ax.set_title("Memory per method", fontsize=9)
    fig.tight_layout()
    return fig


def plot_width(run: Run) -> Figure | None:
    """Error against width, log-log, with the fitted lines; None if no benchmark recorded a curve."""
    curves = [b for b in run.benchmarks.values()
              if isinstance(b.extra.get("widths"), list) and isinstance(b.extra.get("errors"), list)]
    if not curves:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for b in sorted(curves, key=lambda b: b.name):
        e = b.extra
        slope = e.get("slope")
        label = b.param + (f" (slope {slope:.3f})" if _number(slope) else "")
        line = ax.loglog(e["widths"], e["errors"], "o-", label=label, markersize=4)[0]
        if _number(slope) and _number(e.get("intercept")):
            ax.loglog(e["widths"], [math.exp(e["intercept"]) * w**slope for w in e["widths"]], "--",
                      color=line.get_color(), alpha=0.6)
    ax.set_xlabel("width m")
    ax.set_ylabel("relative Frobenius error, empirical vs analytic NTK")
    ax.set_title("Error vs width (dashed: log-log fit; theory slope -1/2)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_ratios(cmp: Comparison) -> Figure | None:
    """Run median over baseline median per compared benchmark, regressions in red; None if none compared."""
    if not cmp.timings:
        return None
    plt = _plt()
    rows = cmp.timings
    fig, ax = plt.subplots(figsize=(9, 0.22 * len(rows) + 1.4))
    ys = range(len(rows))
    ax.barh(ys, [r.ratio for r in rows], color=["tab:red" if r.regressed else "tab:gray" for r in rows])
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", lw=0.8)
    ax.axvline(1 + cmp.threshold, color="tab:orange", ls="--", lw=0.8, label=f"1 + threshold ({1 + cmp.threshold:.2f})")
    if cmp.detectable > 1 + cmp.threshold:
        ax.axvline(cmp.detectable, color="tab:red", ls=":", lw=0.8, label=f"smallest flaggable ({cmp.detectable:.2f})")
    ax.set_yticks(list(ys), [r.name.removeprefix("test_") for r in rows], fontsize=5.5)
    ax.invert_yaxis()
    ax.set_xlabel("run median / baseline median")
    ax.legend(fontsize=7)
    ax.set_title("Timing ratios (red: regressed)", fontsize=9)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# markdown


def _t(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _g(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _describe(run: Run) -> str:
    m = run.machine
    commit = run.commit_info.get("id")
    files = " + ".join(f"`{p}`" for p in run.paths)
    best = f" (best median of {len(run.paths)} runs per benchmark)" if len(run.paths) > 1 else ""
    parts = [files + best, f"{run.datetime or 'undated'}", f"machine kind `{run.machine_kind}`"]
    parts += [f"{k} {m[k]}" for k in ("device", "size_set", "cpu_threads", "torch") if k in m]
    parts.append(f"timer {', '.join(sorted(run.timers)) or 'unknown'}")
    if commit:
        parts.append(f"commit {str(commit)[:10]}{' (dirty)' if run.commit_info.get('dirty') else ''}")
    return ", ".join(parts) + f"; {len(run.benchmarks)} benchmarks"


def _rule_text(cmp: Comparison) -> list[str]:
    lines = [
        f"A timing regressed when (1) its median ratio exceeds 1 + threshold = {1 + cmp.threshold:.2f}, "
        f"(2) the medians' notches do not overlap (run median - baseline median > {NOTCH} (IQR_run/sqrt(rounds_run) "
        "+ IQR_base/sqrt(rounds_base)): the slowdown exceeds the noise of the rounds), and (3) its log-ratio stands "
        f"out from those of all benchmarks in common (modified z-score > {Z_LIMIT}: the slowdown exceeds the noise "
        "between runs)."
    ]
    if cmp.spread is None:
        lines.append(f"Rule 3 is off: fewer than {MIN_FOR_SPREAD} benchmarks in common, so the noise between runs "
                     "is not estimated.")
    else:
        lines.append(f"Between runs: median ratio {cmp.median_ratio:.3f}, robust spread of log-ratios "
                     f"{cmp.spread:.3f}, so the smallest slowdown this comparison can flag is a ratio of "
                     f"{cmp.detectable:.2f}. The run regresses as a whole if the median ratio exceeds "
                     f"{1 + cmp.threshold:.2f}.")
    return lines


def _timing_table(cmp: Comparison) -> list[str]:
    lines = ["| benchmark | rounds base/run | baseline median | run median | ratio | IQR/median base/run | z | flagged |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted(cmp.timings, key=lambda r: (not r.regressed, r.name)):
        z = "-" if r.z is None else f"{r.z:.1f}"
        noise = f"{r.base.iqr / r.base.median:.0%} / {r.run.iqr / r.run.median:.0%}"
        flag = "**REGRESSED**" if r.regressed else ("slower, within noise" if r.ratio > 1 + cmp.threshold else "no")
        lines.append(f"| `{r.name}` | {r.base.rounds}/{r.run.rounds} | {_t(r.base.median)} | {_t(r.run.median)} | "
                     f"{r.ratio:.2f} | {noise} | {z} | {flag} |")
    return lines


def _metric_table(rows: list[MetricRow], with_base: bool) -> list[str]:
    if with_base:
        lines = ["| benchmark | metric | baseline | run | band | flagged |", "|---|---|---|---|---|---|"]
    else:
        lines = ["| benchmark | metric | value | band | outside band |", "|---|---|---|---|---|"]
    for m in rows:
        band = "-" if m.low is None else f"[{m.low:.4g}, {m.high:.4g}]"
        outside = m.low is not None and not (m.low <= m.run <= m.high)
        if with_base:
            flag = "**REGRESSED**" if m.regressed else "no"
            lines.append(f"| `{m.name}` | {m.metric} | {_g(m.base)} | {_g(m.run)} | {band} | {flag} |")
        else:
            flag = "-" if m.low is None else ("yes" if outside else "no")
            lines.append(f"| `{m.name}` | {m.metric} | {_g(m.run)} | {band} | {flag} |")
    return lines


def _details_table(run: Run) -> list[str]:
    lines = ["| benchmark | rounds | median | min | throughput | peak memory |", "|---|---|---|---|---|---|"]
    for b in sorted(run.benchmarks.values(), key=lambda b: b.name):
        e = b.extra
        thr = f"{e['throughput']:.4g} {e.get('throughput_unit', '')}".strip() if _number(e.get("throughput")) else "-"
        mem = f"{e['peak_memory_bytes'] / 2**20:.1f} MiB" if _number(e.get("peak_memory_bytes")) else "-"
        lines.append(f"| `{b.name}` | {b.rounds} | {_t(b.median)} | {_t(b.min)} | {thr} | {mem} |")
    return lines


def _side_by_side(run: Run) -> list[str]:
    """Per case (``extra_info["case"]``): every library's timing, ntkcheck's speed-up over it, rates, memory."""
    cases: dict[str, list[Benchmark]] = {}
    for b in run.benchmarks.values():
        if isinstance(b.extra.get("case"), str) and isinstance(b.extra.get("library"), str):
            cases.setdefault(b.extra["case"], []).append(b)
    if not cases:
        return []
    lines = ["## Side by side", "",
             "Per case, every library's median on the same network and inputs in this run. \"speed-up\" is that "
             "median over ntkcheck's (above 1: ntkcheck is faster); \"memory ratio\" is ntkcheck's peak memory over "
             "that library's (below 1: ntkcheck uses less). \"rate\" is the benchmark's effective rate and, in "
             "brackets, its share of the square-matmul rate measured in the same run; \"floor\" is (full-square "
             "Gram flops / the measured rate of plain matmuls of the same shapes) / median: at or above 1 means at "
             "the single-matmul floor.", ""]
    order = {"ntkcheck": 0, "torch.func recipe": 1, "neural-tangents": 2}
    for case in sorted(cases):
        rows = sorted(cases[case], key=lambda b: (order.get(b.extra["library"], 3), str(b.extra.get("method"))))
        ours = next((b for b in rows if b.extra["library"] == "ntkcheck"), None)
        lines += [f"### `{case}`", "", "| library | method | rounds | median | speed-up of ntkcheck | rate | floor "
                  "| peak memory | memory ratio |", "|---|---|---|---|---|---|---|---|---|"]
        for b in rows:
            e = b.extra
            speed = "-" if ours is None or b is ours else f"{b.median / ours.median:.3g}x"
            rate = "-"
            if _number(e.get("throughput")):
                rate = f"{e['throughput']:.4g} {e.get('throughput_unit', '')}".strip()
                if _number(e.get("fraction_of_matmul")):
                    rate += f" ({e['fraction_of_matmul']:.0%})"
            floor = f"{e['fraction_of_floor']:.2f}" if _number(e.get("fraction_of_floor")) else "-"
            mem = f"{e['peak_memory_bytes'] / 2**20:.1f} MiB" if _number(e.get("peak_memory_bytes")) else "-"
            ratio = "-"
            if ours is not None and b is not ours and _number(e.get("peak_memory_bytes")) \
                    and _number(ours.extra.get("peak_memory_bytes")) and e["peak_memory_bytes"] > 0:
                ratio = f"{ours.extra['peak_memory_bytes'] / e['peak_memory_bytes']:.3g}"
            lines.append(f"| {e['library']} | {e.get('method', '-')} | {b.rounds} | {_t(b.median)} | {speed} | {rate} "
                         f"| {floor} | {mem} | {ratio} |")
        lines.append("")
        for b in rows:
            if isinstance(b.extra.get("layers"), list):
                lines += _layer_table(b)
    return lines


def _layer_table(b: Benchmark) -> list[str]:
    """The per-parameter rows a benchmark stored under ``extra_info["layers"]``."""
    lines = [f"Per layer of `{b.name}` (one profiled call: CPU seconds forming each parameter's features the way "
             "the cost model chose, and of its Gram; flops per pair of rows of the two contractions):", "",
             "| parameter | choice | features | Gram | Gram-of-Grams flops | per-sample flops | positions S, m, k |",
             "|---|---|---|---|---|---|---|"]
    for row in b.extra["layers"]:
        if not isinstance(row, dict):
            continue
        flops = [f"{row[k]:.3g}" if _number(row.get(k)) else "-" for k in ("gram_of_grams_flops", "per_sample_flops")]
        shape = ", ".join(str(row[k]) for k in ("positions", "m", "k") if k in row) or "-"
        feats = _t(row["features_s"]) if _number(row.get("features_s")) and row["features_s"] > 0 else "-"
        gram = _t(row["gram_s"]) if _number(row.get("gram_s")) and row["gram_s"] > 0 else "-"
        lines.append(f"| `{row.get('name')}` | {row.get('choice')} | {feats} | {gram} | {flops[0]} | {flops[1]} "
                     f"| {shape} |")
    return lines + [""]


def _markdown(run: Run, name: str, base: Run | None, cmp: Comparison | None, threshold: float,
              figures: dict[str, str]) -> str:
    """The report's Markdown; ``figures`` maps each figure's caption to its file name."""
    lines = [f"# Benchmark report: {name}", "", f"Run: {_describe(run)}.", ""]
    if cmp is None or base is None:
        lines += ["No baseline: the run alone.", ""]
        if run.warnings:
            lines += ["## Warnings", ""] + [f"- {w}" for w in run.warnings] + [""]
        metrics = _metric_rows(run, None, threshold)
    else:
        lines += [f"Baseline: {_describe(base)}.", ""]
        n_bad = sum(r.regressed for r in cmp.timings)
        m_bad = sum(m.regressed for m in cmp.metrics)
        verdict = "**REGRESSED**" if cmp.regressed else ("**INCOMPLETE**" if cmp.incomplete else "no regression")
        lines += [f"Verdict: {verdict}: {n_bad} of {len(cmp.timings)} timings regressed"
                  f"{', the run as a whole is slower' if cmp.run_wide else ''}; {m_bad} of {len(cmp.metrics)} "
                  f"tracked metrics outside their bands; {len(cmp.new)} new, {len(cmp.missing)} missing "
                  "benchmarks.", ""]
        lines += [f"Coverage: {len(cmp.timings)} of the baseline's {cmp.baseline_count} benchmarks compared "
                  f"({cmp.compared_share:.0%}); a complete comparison needs {cmp.min_compared:.0%} (--min-compared)"
                  + (": this one is incomplete and cannot pass." if cmp.incomplete else "."), ""]
        if cmp.warnings:
            lines += ["## Warnings", ""] + [f"- {w}" for w in cmp.warnings] + [""]
        lines += ["## Timings", ""] + _rule_text(cmp) + [""] + _timing_table(cmp) + [""]
        metrics = cmp.metrics
    if metrics:
        lines += ["## Tracked metrics", ""]
        if cmp is not None:
            lines += ["A metric regressed when the run's value lies outside its band: the band the benchmark "
                      f"states, else baseline +- its stated tol, else baseline +- {threshold:.0%}.", ""]
        lines += _metric_table(metrics, cmp is not None) + [""]
    if cmp is not None and (cmp.new or cmp.missing):
        lines += ["## New and missing benchmarks", "", "Not compared.", ""]
        lines += [f"- new (run only): `{n}`" for n in cmp.new] + [f"- missing (baseline only): `{n}`" for n in cmp.missing]
        lines += [""]
    lines += _side_by_side(run)
    if figures:
        lines += ["## Figures", ""] + [f"![{k}]({v})\n" for k, v in figures.items()]
    lines += ["## Run details", "", "Medians and minima of the run's rounds; throughput and memory as the benchmark "
              "recorded them in `extra_info`.", ""] + _details_table(run)
    return "\n".join(lines) + "\n"


def write_report(run: Run, out: str | Path, name: str, base: Run | None = None, threshold: float = 0.10,
                 min_compared: float = MIN_COMPARED) -> tuple[Path, Comparison | None]:
    """Write ``<out>/<name>.md`` and its PNG figures; return the path and the comparison (None without a baseline).

    Everything is computed and drawn first; the files are then put in place together, figures
    first and the Markdown last (:func:`ntkcheck._support.atomic.staged`): an error or an interruption
    leaves the previous report and figures as they were.
    """
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise ValueError(f"name must be a file stem of letters, digits, '.', '_' or '-', got {name!r}")
    out = check_out_folder(Path(out), "out")
    cmp = compare(run, base, threshold, min_compared) if base is not None else None
    drawn = {
        ("throughput", "throughput"): plot_throughput(run),
        ("memory", "memory"): plot_memory(run),
        ("error vs width", "width"): plot_width(run),
        ("timing ratios", "ratios"): plot_ratios(cmp) if cmp is not None else None,
    }
    drawn = {key: fig for key, fig in drawn.items() if fig is not None}
    try:
        text = _markdown(run, name, base, cmp, threshold,
                         {caption: f"{name}-{suffix}.png" for caption, suffix in drawn})
        with staged(out) as stage:
            for (_, suffix), fig in drawn.items():
                fig.savefig(stage.path(f"{name}-{suffix}.png"), dpi=110)
            path = stage.write_text(f"{name}.md", text)
    finally:
        if drawn:
            plt = _plt()
            for fig in drawn.values():
                plt.close(fig)
    return path, cmp
