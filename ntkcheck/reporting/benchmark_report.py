"""The benchmark report: ``<out>/<name>.md`` and its PNG figures, for a run alone or against a baseline.

``ntkcheck report RUN.json [RUN2.json ...] [--baseline BASELINE.json ...]`` loads the runs
(:mod:`ntkcheck.reporting.runs`), compares them (:mod:`ntkcheck.reporting.compare`) and
calls :func:`write_report`, which writes tables and the figures of
:mod:`ntkcheck.reporting.figures`.

**Side by side**: benchmarks that store ``case`` and ``library`` (ntkcheck, the torch.func
recipe, neural-tangents; ``benchmarks/test_family_kernels.py``, ``test_analytic_kernels.py``,
``test_neural_tangents.py``) get one table per case: each library's median, ntkcheck's speed-up
over it, the effective rate (``throughput``, ``fraction_of_matmul``), the share of the matmul
floor (``fraction_of_floor``), peak memory and ntkcheck's memory ratio; a benchmark's
``layers`` list (per parameter: ``name``, ``choice``, ``features_s``, ``gram_s`` and the cost
model's flops) becomes a per-layer table under its case.

Every figure is drawn before anything is written; the files are then written together with
:func:`ntkcheck._support.atomic.staged` (figures first, the Markdown last), so a failure or
an interruption leaves the previous report and its figures as they were.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from ntkcheck._support.atomic import check_out_folder, staged
from ntkcheck._support.markdown import bullets, code, document, heading, image, table
from ntkcheck.reporting.compare import MIN_FOR_SPREAD, NOTCH, Z_LIMIT, Comparison, MetricRow, metric_rows
from ntkcheck.reporting.figures import plot_memory, plot_ratios, plot_throughput, plot_width
from ntkcheck.reporting.runs import Benchmark, Run, is_number

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["report_text", "write_report"]

_LIBRARIES = {"ntkcheck": 0, "torch.func recipe": 1, "neural-tangents": 2}
_SIDE_BY_SIDE = (
    'Per case, every library\'s median on the same network and inputs in this run. "speed-up" is that '
    "median over ntkcheck's (above 1: ntkcheck is faster); \"memory ratio\" is ntkcheck's peak memory over "
    "that library's (below 1: ntkcheck uses less). \"rate\" is the benchmark's effective rate and, in "
    'brackets, its share of the square-matmul rate measured in the same run; "floor" is (full-square '
    "Gram flops / the measured rate of plain matmuls of the same shapes) / median: at or above 1 means at "
    "the single-matmul floor."
)


def _t(seconds: float) -> str:
    """A duration with three significant digits in s, ms, us or ns."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _g(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _rate(e: dict) -> str:
    """``throughput`` with its unit, or "-"."""
    return f"{e['throughput']:.4g} {e.get('throughput_unit', '')}".strip() if is_number(e.get("throughput")) else "-"


def _memory(e: dict) -> str:
    """``peak_memory_bytes`` in MiB, or "-"."""
    return f"{e['peak_memory_bytes'] / 2**20:.1f} MiB" if is_number(e.get("peak_memory_bytes")) else "-"


def _describe(run: Run) -> str:
    """One sentence on a run: its files, date, machine, timer, commit and size."""
    m = run.machine
    commit = run.commit_info.get("id")
    files = " + ".join(code(p) for p in run.paths)
    best = f" (best median of {len(run.paths)} runs per benchmark)" if len(run.paths) > 1 else ""
    parts = [files + best, f"{run.datetime or 'undated'}", f"machine kind {code(run.machine_kind)}"]
    parts += [f"{k} {m[k]}" for k in ("device", "size_set", "cpu_threads", "torch") if k in m]
    parts.append(f"timer {', '.join(sorted(run.timers)) or 'unknown'}")
    if commit:
        parts.append(f"commit {str(commit)[:10]}{' (dirty)' if run.commit_info.get('dirty') else ''}")
    return ", ".join(parts) + f"; {len(run.benchmarks)} benchmarks"


def _rule_text(cmp: Comparison) -> list[str]:
    """The regression rules with this comparison's numbers."""
    lines = [
        f"A timing regressed when (1) its median ratio exceeds 1 + threshold = {1 + cmp.threshold:.2f}, "
        f"(2) the medians' notches do not overlap (run median - baseline median > {NOTCH} (IQR_run/sqrt(rounds_run) "
        "+ IQR_base/sqrt(rounds_base)): the slowdown exceeds the noise of the rounds), and (3) its log-ratio stands "
        f"out from those of all benchmarks in common (modified z-score > {Z_LIMIT}: the slowdown exceeds the noise "
        "between runs)."
    ]
    if cmp.spread is None:
        lines.append(
            f"Rule 3 is off: fewer than {MIN_FOR_SPREAD} benchmarks in common, so the noise between runs "
            "is not estimated."
        )
    else:
        lines.append(
            f"Between runs: median ratio {cmp.median_ratio:.3f}, robust spread of log-ratios "
            f"{cmp.spread:.3f}, so the smallest slowdown this comparison can flag is a ratio of "
            f"{cmp.detectable:.2f}. The run regresses as a whole if the median ratio exceeds "
            f"{1 + cmp.threshold:.2f}."
        )
    return lines


def _timing_table(cmp: Comparison) -> list[str]:
    """One row per compared timing, regressions first."""
    rows = []
    for r in sorted(cmp.timings, key=lambda r: (not r.regressed, r.name)):
        z = "-" if r.z is None else f"{r.z:.1f}"
        noise = f"{r.base.iqr / r.base.median:.0%} / {r.run.iqr / r.run.median:.0%}"
        flag = "**REGRESSED**" if r.regressed else ("slower, within noise" if r.ratio > 1 + cmp.threshold else "no")
        rows.append(
            [
                code(r.name),
                f"{r.base.rounds}/{r.run.rounds}",
                _t(r.base.median),
                _t(r.run.median),
                f"{r.ratio:.2f}",
                noise,
                z,
                flag,
            ]
        )
    return table(
        [
            "benchmark",
            "rounds base/run",
            "baseline median",
            "run median",
            "ratio",
            "IQR/median base/run",
            "z",
            "flagged",
        ],
        rows,
    )


def _metric_table(metrics: list[MetricRow], with_base: bool) -> list[str]:
    """One row per tracked metric: with the baseline's value and the verdict, or the run's value alone."""
    rows = []
    for m in metrics:
        band = "-" if m.low is None else f"[{m.low:.4g}, {m.high:.4g}]"
        if with_base:
            rows.append([code(m.name), m.metric, _g(m.base), _g(m.run), band, "**REGRESSED**" if m.regressed else "no"])
        else:
            outside = m.low is not None and m.high is not None and not (m.low <= m.run <= m.high)
            rows.append(
                [code(m.name), m.metric, _g(m.run), band, "-" if m.low is None else ("yes" if outside else "no")]
            )
    if with_base:
        return table(["benchmark", "metric", "baseline", "run", "band", "flagged"], rows)
    return table(["benchmark", "metric", "value", "band", "outside band"], rows)


def _details_table(run: Run) -> list[str]:
    """Every benchmark of the run: rounds, median, minimum, throughput, peak memory."""
    rows = [
        [code(b.name), b.rounds, _t(b.median), _t(b.min), _rate(b.extra), _memory(b.extra)]
        for b in sorted(run.benchmarks.values(), key=lambda b: b.name)
    ]
    return table(["benchmark", "rounds", "median", "min", "throughput", "peak memory"], rows)


def _case_row(b: Benchmark, ours: Benchmark | None) -> list[object]:
    """One library's row of a side-by-side case, against ntkcheck's benchmark ``ours``."""
    e = b.extra
    speed = "-" if ours is None or b is ours else f"{b.median / ours.median:.3g}x"
    rate = _rate(e)
    if rate != "-" and is_number(e.get("fraction_of_matmul")):
        rate += f" ({e['fraction_of_matmul']:.0%})"
    floor = f"{e['fraction_of_floor']:.2f}" if is_number(e.get("fraction_of_floor")) else "-"
    ratio = "-"
    if (
        ours is not None
        and b is not ours
        and is_number(e.get("peak_memory_bytes"))
        and is_number(ours.extra.get("peak_memory_bytes"))
        and e["peak_memory_bytes"] > 0
    ):
        ratio = f"{ours.extra['peak_memory_bytes'] / e['peak_memory_bytes']:.3g}"
    return [e["library"], e.get("method", "-"), b.rounds, _t(b.median), speed, rate, floor, _memory(e), ratio]


def _side_by_side(run: Run) -> list[str]:
    """Per case (``extra_info["case"]``): every library's timing, ntkcheck's speed-up over it, rates, memory."""
    cases: dict[str, list[Benchmark]] = {}
    for b in run.benchmarks.values():
        if isinstance(b.extra.get("case"), str) and isinstance(b.extra.get("library"), str):
            cases.setdefault(b.extra["case"], []).append(b)
    if not cases:
        return []
    lines = [heading("Side by side"), "", _SIDE_BY_SIDE, ""]
    for case in sorted(cases):
        rows = sorted(cases[case], key=lambda b: (_LIBRARIES.get(b.extra["library"], 3), str(b.extra.get("method"))))
        ours = next((b for b in rows if b.extra["library"] == "ntkcheck"), None)
        lines += [heading(code(case), 3), ""]
        lines += table(
            [
                "library",
                "method",
                "rounds",
                "median",
                "speed-up of ntkcheck",
                "rate",
                "floor",
                "peak memory",
                "memory ratio",
            ],
            [_case_row(b, ours) for b in rows],
        )
        lines.append("")
        for b in rows:
            if isinstance(b.extra.get("layers"), list):
                lines += _layer_table(b)
    return lines


def _layer_table(b: Benchmark) -> list[str]:
    """The per-parameter rows a benchmark stored under ``extra_info["layers"]``."""
    rows = []
    for row in b.extra["layers"]:
        if not isinstance(row, dict):
            continue
        flops = [f"{row[k]:.3g}" if is_number(row.get(k)) else "-" for k in ("gram_of_grams_flops", "per_sample_flops")]
        shape = ", ".join(str(row[k]) for k in ("positions", "m", "k") if k in row) or "-"
        feats = _t(row["features_s"]) if is_number(row.get("features_s")) and row["features_s"] > 0 else "-"
        gram = _t(row["gram_s"]) if is_number(row.get("gram_s")) and row["gram_s"] > 0 else "-"
        rows.append([code(row.get("name")), row.get("choice"), feats, gram, flops[0], flops[1], shape])
    intro = (
        f"Per layer of {code(b.name)} (one profiled call: CPU seconds forming each parameter's features the way "
        "the cost model chose, and of its Gram; flops per pair of rows of the two contractions):"
    )
    header = ["parameter", "choice", "features", "Gram", "Gram-of-Grams flops", "per-sample flops", "positions S, m, k"]
    return [intro, ""] + table(header, rows) + [""]


def _comparison_lines(run: Run, cmp: Comparison) -> list[str]:
    """The baseline, the verdict, the coverage, the warnings and the timing table of a comparison."""
    n_bad = sum(r.regressed for r in cmp.timings)
    m_bad = sum(m.regressed for m in cmp.metrics)
    verdict = "**REGRESSED**" if cmp.regressed else ("**INCOMPLETE**" if cmp.incomplete else "no regression")
    lines = [f"Baseline: {_describe(cmp.base)}.", ""]
    lines += [
        f"Verdict: {verdict}: {n_bad} of {len(cmp.timings)} timings regressed"
        f"{', the run as a whole is slower' if cmp.run_wide else ''}; {m_bad} of {len(cmp.metrics)} "
        f"tracked metrics outside their bands; {len(cmp.new)} new, {len(cmp.missing)} missing "
        "benchmarks.",
        "",
    ]
    lines += [
        f"Coverage: {len(cmp.timings)} of the baseline's {cmp.baseline_count} benchmarks compared "
        f"({cmp.compared_share:.0%}); a complete comparison needs {cmp.min_compared:.0%} (--min-compared)"
        + (": this one is incomplete and cannot pass." if cmp.incomplete else "."),
        "",
    ]
    if cmp.warnings:
        lines += [heading("Warnings"), ""] + bullets(cmp.warnings) + [""]
    return lines + [heading("Timings"), ""] + _rule_text(cmp) + [""] + _timing_table(cmp) + [""]


def _metric_lines(metrics: list[MetricRow], cmp: Comparison | None) -> list[str]:
    """The tracked-metrics section (nothing when no benchmark tracks a metric)."""
    if not metrics:
        return []
    lines = [heading("Tracked metrics"), ""]
    if cmp is not None:
        lines += [
            "A metric regressed when the run's value lies outside its band: the band the benchmark "
            f"states, else baseline +- its stated tol, else baseline +- {cmp.threshold:.0%}.",
            "",
        ]
    return lines + _metric_table(metrics, cmp is not None) + [""]


def report_text(
    run: Run, *, name: str, comparison: Comparison | None = None, figures: dict[str, str] | None = None
) -> str:
    """The report's Markdown; ``figures`` maps each figure's caption to its file name."""
    cmp = comparison
    lines = [heading(f"Benchmark report: {name}", 1), "", f"Run: {_describe(run)}.", ""]
    if cmp is None:
        lines += ["No baseline: the run alone.", ""]
        if run.warnings:
            lines += [heading("Warnings"), ""] + bullets(run.warnings) + [""]
        lines += _metric_lines(metric_rows(run), None)
    else:
        lines += _comparison_lines(run, cmp) + _metric_lines(cmp.metrics, cmp)
    if cmp is not None and (cmp.new or cmp.missing):
        lines += [heading("New and missing benchmarks"), "", "Not compared.", ""]
        lines += bullets(
            [f"new (run only): {code(n)}" for n in cmp.new]
            + [f"missing (baseline only): {code(n)}" for n in cmp.missing]
        ) + [""]
    lines += _side_by_side(run)
    if figures:
        lines += [heading("Figures"), ""]
        for caption, file in figures.items():
            lines += [image(caption, file), ""]
    lines += [
        heading("Run details"),
        "",
        "Medians and minima of the run's rounds; throughput and memory as the benchmark recorded them in `extra_info`.",
        "",
    ] + _details_table(run)
    return document(lines)


def write_report(run: Run, *, out: str | Path, name: str, comparison: Comparison | None = None) -> Path:
    """Write ``<out>/<name>.md`` and its PNG figures for ``run`` (against ``comparison.base`` if given); return
    the Markdown's path.

    Everything is computed and drawn first; the files are then put in place together, figures
    first and the Markdown last (:func:`ntkcheck._support.atomic.staged`): an error or an interruption
    leaves the previous report and figures as they were.
    """
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise ValueError(f"name must be a file stem of letters, digits, '.', '_' or '-', got {name!r}")
    out = check_out_folder(Path(out), "out")
    drawn: dict[tuple[str, str], Figure | None] = {
        ("throughput", "throughput"): plot_throughput(run),
        ("memory", "memory"): plot_memory(run),
        ("error vs width", "width"): plot_width(run),
        ("timing ratios", "ratios"): plot_ratios(comparison) if comparison is not None else None,
    }
    figures = {key: fig for key, fig in drawn.items() if fig is not None}
    text = report_text(
        run, name=name, comparison=comparison, figures={caption: f"{name}-{suffix}.png" for caption, suffix in figures}
    )
    with staged(out) as stage:
        for (_, suffix), fig in figures.items():
            fig.savefig(stage.path(f"{name}-{suffix}.png"), dpi=110)
        return stage.write_text(f"{name}.md", text)
