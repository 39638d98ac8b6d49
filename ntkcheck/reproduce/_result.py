"""What every reproduction returns: measured quantities, verdicts against stated thresholds, figures.

A reproduction is a function ``run(config) -> Reproduction``; it computes and
draws but writes nothing.  :func:`write_report` turns the result into
``reports/reproduce-<name>.md`` plus its PNG figures.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

Mode = Literal["quick", "full"]


def mode_of(config: Any) -> str:
    """``"quick"`` or ``"full"`` when ``config`` equals that preset of its class (ignoring a ``progress`` field),
    else ``"custom"``: what a report says about the sizes it ran at."""
    if any(f.name == "progress" for f in dataclasses.fields(config)):
        config = dataclasses.replace(config, progress=True)
    for name in ("quick", "full"):
        if config == getattr(type(config), name)(config.seed):
            return name
    return "custom"


@dataclass(frozen=True)
class Verdict:
    """One claim checked against a threshold: ``measured <= threshold`` (or ``>=``), with why that threshold."""

    claim: str
    measured: float
    threshold: float
    comparison: Literal["<=", ">="]
    justification: str

    @property
    def holds(self) -> bool:
        if math.isnan(self.measured):
            return False
        return self.measured <= self.threshold if self.comparison == "<=" else self.measured >= self.threshold

    def line(self) -> str:
        word = "holds" if self.holds else "DID NOT HOLD"
        return f"{self.claim}: measured {self.measured:.4g} {self.comparison} {self.threshold:.4g}? {word}"


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
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    skipped: str | None = None

    @property
    def holds(self) -> bool:
        return self.skipped is None and all(v.holds for v in self.verdicts)


class Stopwatch:
    """``with Stopwatch() as sw: ...; sw.seconds``: wall time, CUDA-synchronised when CUDA is in use."""

    def __enter__(self) -> "Stopwatch":
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


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def to_markdown(result: Reproduction, figure_names: dict[str, str]) -> str:
    """The report of ``result`` as Markdown; ``figure_names`` maps figure keys to their PNG file names."""
    lines = [f"# {result.title}", "", f"Reference: {result.reference}. Mode `{result.mode}`, device {result.device}, "
             f"torch {torch.__version__}, {result.seconds:.1f} s.", ""]
    if result.skipped:
        lines += [f"**Skipped:** {result.skipped}", ""]
        return "\n".join(lines)
    lines += ["## Settings", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {_cell(v)} |" for k, v in result.settings.items()]
    lines += ["", "## Verdicts", "", "| claim | measured | threshold | verdict | why this threshold |", "|---|---|---|---|---|"]
    for v in result.verdicts:
        lines.append(f"| {v.claim} | {v.measured:.4g} | {v.comparison} {v.threshold:.4g} | "
                     f"{'holds' if v.holds else '**did not hold**'} | {v.justification} |")
    for caption, rows in result.tables.items():
        if not rows:
            continue
        keys = list(rows[0])
        lines += ["", f"## {caption}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(_cell(r.get(k, "")) for k in keys) + " |" for r in rows]
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result.notes]
    if figure_names:
        lines += ["", "## Figures", ""] + [f"![{key}]({fname})" for key, fname in figure_names.items()]
    return "\n".join(lines) + "\n"


def write_report(result: Reproduction, out: Path) -> Path:
    """Write ``out/reproduce-<name>.md`` and ``out/reproduce-<name>-<key>.png``; return the Markdown path."""
    out.mkdir(parents=True, exist_ok=True)
    names: dict[str, str] = {}
    for key, fig in result.figures.items():
        fname = f"reproduce-{result.name}-{key}.png"
        fig.savefig(out / fname, dpi=110)
        names[key] = fname
        import matplotlib.pyplot as plt

        plt.close(fig)
    path = out / f"reproduce-{result.name}.md"
    path.write_text(to_markdown(result, names))
    return path
