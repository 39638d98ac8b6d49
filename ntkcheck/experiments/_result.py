"""What every reproduction returns: measured quantities, verdicts against stated thresholds, figures.

A reproduction is a function ``run(config) -> Reproduction``; it computes and
draws but writes nothing.  :func:`write_report` turns the result into
``reports/reproduce-<name>.md`` plus its PNG figures, all or nothing
(:func:`ntkcheck._support.atomic.staged`: figures first, the Markdown last; an interrupted
write leaves the previous report whole).

A :class:`Verdict` is measured over several seeds: ``measured`` is the mean of
``values`` (one number per seed) and the report gives the spread next to it.  A
verdict ends in one of four states (:attr:`Verdict.status`):

* ``holds``: the mean meets the threshold;
* ``width effect: approaching``: it does not at the run's width, but the quantity
  was measured at several widths (:class:`WidthTrend`), falls (or rises) towards
  the threshold with width, and its fitted power law meets the threshold at the
  paper's width;
* ``information``: reported, not scored, for the reason it gives;
* ``did not hold``.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from ntkcheck._support.atomic import staged
from ntkcheck._support.fitting import loglog_fit
from ntkcheck._support.markdown import bullets, code, document, heading, image, table

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Mode = Literal["quick", "full"]
Comparison = Literal["<=", ">="]


def mode_of(config: Any) -> str:
    """``"quick"`` or ``"full"`` when ``config`` equals that preset of its class (ignoring a ``progress`` field),
    else ``"custom"``: what a report says about the sizes it ran at."""
    if any(f.name == "progress" for f in dataclasses.fields(config)):
        config = dataclasses.replace(config, progress=True)
    for name in ("quick", "full"):
        if config == getattr(type(config), name)(config.seed):
            return name
    return "custom"


def seed_list(seed: int, count: int) -> list[int]:
    """The ``count`` seeds a multi-seed reproduction runs: ``seed, seed + 1, ...``."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"config.seeds must be an int >= 1 (independent repetitions), got {count!r}")
    return [seed + i for i in range(count)]


def mean_spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value) of ``values``.

    A NaN among the values makes both NaN: a seed that failed is not averaged away.
    """
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0 or np.isnan(a).any():
        return math.nan, math.nan
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def spread_text(values: Sequence[float]) -> str:
    """``"mean ± std (k seeds: v1, v2, ...)"`` for a report."""
    mean, std = mean_spread(values)
    each = ", ".join(f"{v:.3g}" for v in values)
    return f"{mean:.4g} ± {std:.2g} ({len(values)} seeds: {each})"


def _holds(value: float, threshold: float, comparison: Comparison) -> bool:
    if math.isnan(value):
        return False
    return value <= threshold if comparison == "<=" else value >= threshold


@dataclass(frozen=True)
class WidthTrend:
    """A quantity measured at several widths, several seeds each, and its fitted power law ``q = c w^b``.

    ``values[i]`` holds the per-seed values at ``widths[i]``; the fit is least squares of
    ``log q`` on ``log w`` over every (width, seed) point, ``b`` with its standard error.
    ``paper_width`` is where the paper ran; :meth:`at` extrapolates the fit there.
    """

    widths: tuple[int, ...]
    values: tuple[tuple[float, ...], ...]
    paper_width: int
    note: str = ""

    def __post_init__(self) -> None:
        if len(self.widths) < 2 or len(self.widths) != len(self.values):
            raise ValueError(
                f"a width trend needs >= 2 widths with one tuple of values each, got widths "
                f"{self.widths} and {len(self.values)} tuples"
            )

    def fit(self) -> tuple[float, float, float]:
        """``(b, standard error of b, log c)``; NaN when a value is not positive and finite."""
        w = np.concatenate([np.full(len(v), float(wd)) for wd, v in zip(self.widths, self.values)])
        q = np.concatenate([np.asarray(v, dtype=np.float64) for v in self.values])
        if not (np.all(np.isfinite(q)) and np.all(q > 0)):
            return math.nan, math.nan, math.nan
        fitted = loglog_fit(w, q)
        return fitted.slope, fitted.slope_se, fitted.intercept

    def at(self, width: float) -> float:
        """The fitted power law at ``width``."""
        b, _, a = self.fit()
        return math.exp(a + b * math.log(width)) if math.isfinite(b) else math.nan

    def rows(self) -> list[dict[str, Any]]:
        """One table row per width (mean, spread, per-seed values) plus the fit's value at the paper's width."""
        out: list[dict[str, Any]] = []
        for wd, v in zip(self.widths, self.values):
            mean, std = mean_spread(v)
            out.append({"width": wd, "mean": mean, "spread (std)": std, "per seed": ", ".join(f"{x:.3g}" for x in v)})
        b, se, _ = self.fit()
        out.append(
            {
                "width": f"{self.paper_width} (paper, fitted)",
                "mean": self.at(self.paper_width),
                "spread (std)": "",
                "per seed": f"fit q ∝ w^({b:.3f} ± {se:.3f})",
            }
        )
        return out


@dataclass(frozen=True)
class Verdict:
    """One claim checked against a threshold: ``measured <= threshold`` (or ``>=``), with why that threshold.

    ``values`` are the per-seed measurements (``measured`` is their mean, see :func:`verdict`);
    ``information`` set makes the verdict reported but not scored, for that reason; ``trend``
    is the quantity's width sweep when the claim is a large-width statement.
    """

    claim: str
    measured: float
    threshold: float
    comparison: Comparison
    justification: str
    values: tuple[float, ...] = ()
    information: str | None = None
    trend: WidthTrend | None = None

    @property
    def holds(self) -> bool:
        """The mean meets the threshold (NaN never does)."""
        return _holds(self.measured, self.threshold, self.comparison)

    @property
    def spread(self) -> float:
        """Sample standard deviation over the seeds (0 for one seed, NaN without values)."""
        return mean_spread(self.values)[1] if self.values else math.nan

    @property
    def approaching(self) -> bool:
        """Misses at the run's width, but moves towards the threshold with width and its fit meets it at the paper's."""
        if self.holds or self.trend is None:
            return False
        b = self.trend.fit()[0]
        towards = b < 0 if self.comparison == "<=" else b > 0
        return bool(towards) and _holds(self.trend.at(self.trend.paper_width), self.threshold, self.comparison)

    @property
    def status(self) -> str:
        """``"information"``, ``"holds"``, ``"width effect: approaching"`` or ``"did not hold"``."""
        if self.information is not None:
            return "information"
        if self.holds:
            return "holds"
        return "width effect: approaching" if self.approaching else "did not hold"

    @property
    def passes(self) -> bool:
        """Everything but ``"did not hold"``."""
        return self.status != "did not hold"

    def measured_text(self) -> str:
        if len(self.values) > 1:
            return spread_text(self.values)
        return f"{self.measured:.4g}"

    def line(self) -> str:
        word = {"holds": "holds", "did not hold": "DID NOT HOLD"}.get(self.status, self.status)
        text = f"{self.claim}: measured {self.measured_text()} {self.comparison} {self.threshold:.4g}? {word}"
        if self.trend is not None:
            b, se, _ = self.trend.fit()
            text += (
                f" (widths {', '.join(map(str, self.trend.widths))}: fitted w^({b:.2f} ± {se:.2f}), "
                f"{self.trend.at(self.trend.paper_width):.3g} at the paper's width {self.trend.paper_width})"
            )
        return text


def verdict(
    claim: str,
    values: Sequence[float],
    threshold: float,
    comparison: Comparison,
    justification: str,
    *,
    information: str | None = None,
    trend: WidthTrend | None = None,
) -> Verdict:
    """A :class:`Verdict` on the mean of the per-seed ``values``."""
    vals = tuple(float(v) for v in values)
    return Verdict(claim, mean_spread(vals)[0], threshold, comparison, justification, vals, information, trend)


@dataclass
class Reproduction:
    """The outcome of one reproduction.

    ``tables`` maps a caption to rows (dicts with the same keys); ``figures``
    maps a file suffix to a matplotlib Figure; ``skipped`` is set (with the
    reason and the fix) when the experiment could not run, e.g. without mlxtend.
    """

    name: str
    title: str
    reference: str
    mode: str  # "quick", "full" or "custom" (see mode_of)
    device: str
    settings: dict[str, Any]
    verdicts: list[Verdict] = field(default_factory=list)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    figures: dict[str, Figure] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    skipped: str | None = None

    @property
    def holds(self) -> bool:
        """It ran and no verdict ended ``"did not hold"``."""
        return self.skipped is None and all(v.passes for v in self.verdicts)


class Stopwatch:
    """``with Stopwatch() as sw: ...; sw.seconds``: wall time of one long run, CUDA-synchronised when CUDA is in use.

    A reproduction reports how long it (or one training inside it) took, once: a single
    wall-clock measure with :func:`time.perf_counter`, not a repeated micro-benchmark
    (for those, :class:`torch.utils.benchmark.Timer`).
    """

    def __enter__(self) -> Stopwatch:
        self._sync()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sync()
        self.seconds = time.perf_counter() - self._start

    @staticmethod
    def _sync() -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()


def _value(v: Any) -> str:
    """A table value: floats to four significant digits, anything else as its text."""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _rows_table(rows: list[dict[str, Any]]) -> list[str]:
    """A table of dicts with the same keys: the keys as the header, one row per dict."""
    keys = list(rows[0])
    return table(keys, [[_value(r.get(k, "")) for k in keys] for r in rows])


def _verdict_table(verdicts: list[Verdict]) -> list[str]:
    """One row per verdict: the claim, the measured mean and spread, the threshold, the verdict and its reason."""
    rows = []
    for v in verdicts:
        word = {"holds": "holds", "did not hold": "**did not hold**"}.get(v.status, f"*{v.status}*")
        if v.information is not None:
            word += f": {v.information}"
        rows.append([v.claim, v.measured_text(), f"{v.comparison} {v.threshold:.4g}", word, v.justification])
    return table(["claim", "measured", "threshold", "verdict", "why this threshold"], rows)


def to_markdown(result: Reproduction, figure_names: dict[str, str]) -> str:
    """The report of ``result`` as Markdown; ``figure_names`` maps figure keys to their PNG file names."""
    lines = [
        heading(result.title, 1),
        "",
        f"Reference: {result.reference}. Mode {code(result.mode)}, device "
        f"{result.device}, torch {torch.__version__}, {result.seconds:.1f} s.",
        "",
    ]
    if result.skipped:
        return document([*lines, f"**Skipped:** {result.skipped}"])
    lines += [heading("Settings"), ""] + table(
        ["setting", "value"], [[k, _value(v)] for k, v in result.settings.items()]
    )
    lines += [
        "",
        heading("Verdicts"),
        "",
        "Measured values are means over seeds, ± the sample standard deviation, with each seed's value.",
        "",
    ]
    lines += _verdict_table(result.verdicts)
    for v in result.verdicts:
        if v.trend is not None:
            lines += ["", heading(f"Width sweep: {v.claim}", 3), ""]
            if v.trend.note:
                lines += [v.trend.note, ""]
            lines += _rows_table(v.trend.rows())
    for caption, rows in result.tables.items():
        if rows:
            lines += ["", heading(caption), ""] + _rows_table(rows)
    if result.notes:
        lines += ["", heading("Notes"), ""] + bullets(result.notes)
    if figure_names:
        lines += ["", heading("Figures"), ""] + [image(key, fname) for key, fname in figure_names.items()]
    return document(lines)


def _release(figures: list[Figure]) -> None:
    """Let go of figures drawn through pyplot (pyplot keeps them open until closed); others need nothing."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        for fig in figures:
            pyplot.close(fig)


def write_report(result: Reproduction, *, out: str | Path) -> Path:
    """Write ``out/reproduce-<name>.md`` and ``out/reproduce-<name>-<key>.png``; return the Markdown path.

    All or nothing: the files are staged and renamed into place together, the Markdown last; an
    exception (a full disk, a kill) leaves the previous report and figures as they were.
    """
    names = {key: f"reproduce-{result.name}-{key}.png" for key in result.figures}
    try:
        with staged(Path(out)) as stage:
            for key, fig in result.figures.items():
                fig.savefig(stage.path(names[key]), dpi=110)
            return stage.write_text(f"reproduce-{result.name}.md", to_markdown(result, names))
    finally:
        _release(list(result.figures.values()))
