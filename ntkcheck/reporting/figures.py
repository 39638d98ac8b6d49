"""The figures of a benchmark report, drawn as :class:`matplotlib.figure.Figure` objects.

They use these ``extra_info`` keys when present: ``family``, ``method``, ``n``,
``width``, ``dtype`` and ``throughput`` / ``throughput_unit`` (throughput against
n and against width, one line per method and fixed other parameters,
:func:`plot_throughput`); ``peak_memory_bytes`` (memory per method,
:func:`plot_memory`); ``widths``, ``errors``, ``slope``, ``intercept`` (error against
width, log-log, with the fitted line, :func:`plot_width`).  Against a baseline,
:func:`plot_ratios` draws each benchmark's median ratio.  Each returns None when the
run has nothing to draw.  matplotlib is imported by the drawing functions only.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ntkcheck.reporting.runs import Benchmark, Run, is_number

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ntkcheck.reporting.compare import Comparison

__all__ = ["plot_memory", "plot_ratios", "plot_throughput", "plot_width"]

_PARAMS = ("family", "method", "dtype", "n", "width", "d", "depth", "outputs")
_STYLES = ("o-", "s--", "^-.", "D:", "v-", "P--", "X-.", "*:")


def _series(benches: list[Benchmark], x: str) -> dict[str, list[tuple[float, float]]]:
    """Throughput against ``x``: one series per method and fixed other parameters, two points or more.

    Labels name only the parameters that vary among ``benches``.
    """
    varying = [p for p in _PARAMS if p != x and len({repr(b.extra.get(p)) for b in benches}) > 1]
    groups: dict[str, list[tuple[float, float]]] = {}
    for b in benches:
        e = b.extra
        if not (is_number(e.get(x)) and is_number(e.get("throughput"))):
            continue
        label = " ".join(str(e.get(p)) if p in ("family", "method", "dtype") else f"{p}={e.get(p)}" for p in varying)
        groups.setdefault(label or b.test, []).append((float(e[x]), float(e["throughput"])))
    return {k: sorted(v) for k, v in groups.items() if len({p[0] for p in v}) > 1}


def _throughput_panel(
    ax: Axes, test: str, x: str, series: dict[str, list[tuple[float, float]]], benches: list[Benchmark]
) -> None:
    """One panel: the throughput of ``test``'s series against ``x``, log-log."""
    from matplotlib import colormaps

    unit = next((str(b.extra["throughput_unit"]) for b in benches if b.extra.get("throughput_unit")), "")
    for i, (label, pts) in enumerate(sorted(series.items())):
        xs, ys = zip(*pts)
        ax.plot(xs, ys, _STYLES[i % len(_STYLES)], label=label, markersize=4, color=colormaps["tab20"](i % 20))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(unit)
    ax.set_title(f"{test.removeprefix('test_')}: throughput vs {x}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, loc="best")


def plot_throughput(run: Run) -> Figure | None:
    """Throughput against n and against width per method (series with at least two points); None if none."""
    by_test: dict[str, list[Benchmark]] = {}
    for b in run.benchmarks.values():
        if is_number(b.extra.get("throughput")) and is_number(b.extra.get("n")):
            by_test.setdefault(b.test, []).append(b)
    panels = [
        (test, x, _series(benches, x), benches) for test, benches in sorted(by_test.items()) for x in ("n", "width")
    ]
    panels = [p for p in panels if p[2]]
    if not panels:
        return None
    from matplotlib.figure import Figure

    cols = 2
    rows = (len(panels) + cols - 1) // cols
    fig = Figure(figsize=(13, 4.3 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (test, x, series, benches) in zip(axes.flat, panels):
        _throughput_panel(ax, test, x, series, benches)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def plot_memory(run: Run) -> Figure | None:
    """Peak memory of one call per benchmark, coloured by method; None if no benchmark recorded it."""
    benches = sorted(
        (b for b in run.benchmarks.values() if is_number(b.extra.get("peak_memory_bytes"))),
        key=lambda b: (b.test, str(b.extra.get("method")), b.param),
    )
    if not benches:
        return None
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    methods = sorted({str(b.extra.get("method", b.test)) for b in benches})
    colors = {m: colormaps["tab10"](i % 10) for i, m in enumerate(methods)}
    fig = Figure(figsize=(9, 0.22 * len(benches) + 1.2))
    ax = fig.subplots()
    ys = range(len(benches))
    ax.barh(
        ys,
        [max(b.extra["peak_memory_bytes"], 0) / 2**20 for b in benches],
        color=[colors[str(b.extra.get("method", b.test))] for b in benches],
    )
    ax.set_yticks(list(ys), [f"{b.test.removeprefix('test_')}[{b.param}]" for b in benches], fontsize=5.5)
    ax.invert_yaxis()
    ax.set_xlabel("peak memory of one call (MiB; CUDA allocator peak, or peak RSS growth on the CPU)")
    handles = [Rectangle((0, 0), 1, 1, color=colors[m]) for m in methods]
    ax.legend(handles, methods, fontsize=6, loc="lower right")
    ax.set_title("Memory per method", fontsize=9)
    fig.tight_layout()
    return fig


def plot_width(run: Run) -> Figure | None:
    """Error against width, log-log, with the fitted lines; None if no benchmark recorded a curve."""
    curves = [
        b
        for b in run.benchmarks.values()
        if isinstance(b.extra.get("widths"), list) and isinstance(b.extra.get("errors"), list)
    ]
    if not curves:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.subplots()
    for b in sorted(curves, key=lambda b: b.name):
        e = b.extra
        slope = e.get("slope")
        label = b.param + (f" (slope {slope:.3f})" if is_number(slope) else "")
        line = ax.loglog(e["widths"], e["errors"], "o-", label=label, markersize=4)[0]
        if is_number(slope) and is_number(e.get("intercept")):
            ax.loglog(
                e["widths"],
                [math.exp(e["intercept"]) * w**slope for w in e["widths"]],
                "--",
                color=line.get_color(),
                alpha=0.6,
            )
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
    from matplotlib.figure import Figure

    rows = cmp.timings
    fig = Figure(figsize=(9, 0.22 * len(rows) + 1.4))
    ax = fig.subplots()
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
