"""``ntkcheck verify``: run the property suite and write the claims report.

The suite ships inside the package (``ntkcheck.testing.properties``), so it runs the
same from a checkout and from an installed ntkcheck.  It runs in a pytest subprocess
under the chosen Hypothesis profile, device and dtype, with the ntkcheck plugin's claim
recorder (:mod:`ntkcheck.testing.plugin`); the report lists, claim by claim, the
statement, the seed reference, the Hypothesis examples run and discarded, the worst
value of the claim's own quantity against its tolerance (with the tolerance's reason
from :mod:`ntkcheck.testing.tolerances`), the verdict and the mutants the claim's properties
killed, with a figure of the width-convergence measurements.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

import ntkcheck.testing.properties as _properties
from ntkcheck._support.atomic import staged
from ntkcheck.testing.claims import CLAIMS
from ntkcheck.testing.mutation import run_mutants, xdist_args

PROPERTIES = Path(_properties.__file__).resolve().parent


@dataclass(frozen=True)
class VerifyResult:
    exit_code: int
    report: Path
    figure: Path | None
    records: dict
    seconds: float


def pytest_command(*, profile: str, device: str, dtype: str, records: Path, extra: list[str] | None = None) -> list[str]:
    """The pytest command line that runs the shipped properties and writes their records to ``records``."""
    return [sys.executable, "-m", "pytest", str(PROPERTIES), "-p", "no:cacheprovider", "-p", "no:benchmark",
            f"--ntkcheck-profile={profile}", f"--ntkcheck-device={device}", f"--ntkcheck-dtype={dtype}",
            f"--ntkcheck-claims-json={records}", "--ntkcheck-max-discard=0.1", *(extra or [])]


def run_properties(*, profile: str, device: str, dtype: str, extra: list[str] | None = None) -> tuple[int, dict]:
    """Run pytest on the shipped properties with the claims plugin; return its exit code and the claim records."""
    with tempfile.TemporaryDirectory() as tmp:
        records_path = Path(tmp) / "claims.json"
        cmd = pytest_command(profile=profile, device=device, dtype=dtype, records=records_path,
                             extra=["-v", "--hypothesis-show-statistics", *(extra or [])])
        code = subprocess.run(cmd, cwd=os.getcwd()).returncode
        records = json.loads(records_path.read_text()) if records_path.exists() else {}
    return code, records


def _verdict(rec: dict | None, ex: dict | None, failed: list[str]) -> str:
    if (rec is None or rec["checks"] == 0) and (ex is None or ex["examples"] == 0):
        return "NOT RUN"
    bad = [n for n in (ex or {}).get("nodeids", []) if n in failed]
    failures = (rec or {}).get("failures", 0)
    if failures or bad:
        return f"FAILED ({failures} checks, {len(bad)} tests)"
    return "holds"


def _width_curves(series: dict) -> dict:
    return {k: v for k, v in series.items() if k.startswith("width")}


def plot_series(series: dict, path: Path) -> Path | None:
    """Log-log plot of the recorded width-convergence curves with their fitted slopes, saved to ``path``
    (None, and nothing written, when no curve was recorded)."""
    curves = _width_curves(series)
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, c in curves.items():
        xs, ys = c["x"], c["y"]
        line = ax.loglog(xs, ys, "o-", label=f"{label} (slope {c.get('slope', float('nan')):.2f})")[0]
        if "slope" in c and "intercept" in c:
            fit = [math.exp(c["intercept"]) * x ** c["slope"] for x in xs]
            ax.loglog(xs, fit, "--", color=line.get_color(), alpha=0.6)
    ax.set_xlabel("width m")
    ax.set_ylabel("relative error")
    ax.set_title("Width convergence (theory: slope -1/2)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
    return path


class ReproductionOutcome(Protocol):
    """What the claims report reads of a reproduction's result (:class:`ntkcheck.experiments.Reproduction`)."""

    title: str
    reference: str
    seconds: float
    skipped: str | None

    @property
    def verdicts(self) -> Sequence[Any]: ...

    @property
    def holds(self) -> bool: ...


def _reproduction_lines(done: Sequence[tuple[ReproductionOutcome, Path]]) -> list[str]:
    lines = ["", "## Reproductions (quick)", "", "| experiment | reference | verdicts | seconds | report |",
             "|---|---|---|---|---|"]
    for result, path in done:
        if result.skipped:
            verdicts = f"skipped: {result.skipped}"
        else:
            verdicts = "; ".join(f"{v.claim}: {'DID NOT HOLD' if not v.passes else v.status}" for v in result.verdicts)
        lines.append(f"| {result.title} | {result.reference} | {verdicts} | {result.seconds:.0f} | [{path.name}]({path.name}) |")
    return lines


def _claim_row(key: str, records: dict, mutants: list[dict] | None) -> str:
    claim = CLAIMS[key]
    rec = records.get("records", {}).get(key)
    ex = records.get("examples", {}).get(key)
    run = ex["examples"] if ex else 0
    discarded = ex["discarded"] if ex else 0
    share = f" ({discarded / (run + discarded):.0%})" if run + discarded else ""
    if rec:
        worst = f"{rec['worst_error']:.2e}: {rec['worst_what']}"
        tol = f"{rec['worst_tolerance']:.1e} (`{rec['tolerance_name']}`)"
    else:
        worst = tol = "-"
    checks = rec["checks"] if rec else 0
    cells = [claim.statement, claim.reference, str(run), f"{discarded}{share}", str(checks), worst, tol,
             _verdict(rec, ex, records.get("failed", []))]
    if mutants is not None:
        killed = [m["name"] for m in mutants if m.get("killed_by_claim") == key]
        cells.append(", ".join(f"`{k}`" for k in killed) or "-")
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _tolerance_lines(records: dict) -> list[str]:
    from ntkcheck.testing.tolerances import TABLE

    used = sorted({r["tolerance_name"] for r in records.get("records", {}).values() if r.get("tolerance_name")})
    lines = ["", "## Tolerances", "", "Each worst error above is checked against one entry of the tolerance table "
             "(`ntkcheck/testing/tolerances.py`), here with its reason.", "", "| name | float64 | float32 | reason |",
             "|---|---|---|---|"]
    for name in used:
        t = TABLE[name]
        lines.append(f"| `{name}` | {t.float64:g} | {t.float32:g} | {t.reason} |")
    return lines


def _mutant_lines(mutants: list[dict]) -> list[str]:
    killed = sum(m["killed"] for m in mutants)
    lines = ["", "## Mutation score", "",
             f"{killed} of {len(mutants)} mutants killed by the properties alone "
             f"(`ntkcheck verify --mutants`: the property suite run once per mutant, stopping at the first "
             f"failing property).", "", "| mutant | the plausible bug | killed by | claim |", "|---|---|---|---|"]
    for m in mutants:
        by = f"`{m['killed_by']}`" if m["killed"] else "SURVIVED"
        lines.append(f"| `{m['name']}` | {m['description']} | {by} | {m.get('killed_by_claim') or '-'} |")
    return lines


def write_report(records: dict, path: Path, *, profile: str, device: str, dtype: str, seconds: float,
                 figure: Path | None, reproductions: Sequence[tuple[ReproductionOutcome, Path]] | None = None,
                 mutants: list[dict] | None = None) -> Path:
    """Write :func:`report_text` to ``path`` atomically (an interrupted run leaves the old report)."""
    text = report_text(records, profile=profile, device=device, dtype=dtype, seconds=seconds, figure=figure,
                       reproductions=reproductions, mutants=mutants)
    with staged(path.parent) as stage:
        return stage.write_text(path.name, text)


def report_text(records: dict, *, profile: str, device: str, dtype: str, seconds: float, figure: Path | None,
                reproductions: Sequence[tuple[ReproductionOutcome, Path]] | None = None,
                mutants: list[dict] | None = None) -> str:
    """The claims report as Markdown: one row per claim, the tolerances used, curves, mutants, reproductions."""
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") and torch.cuda.is_available() else "CPU"
    head = ["claim", "reference", "examples run", "discarded", "checks", "worst error: the quantity",
            "its tolerance", "verdict"] + (["mutants it killed"] if mutants is not None else [])
    lines = [
        "# ntkcheck claims report",
        "",
        f"Profile `{profile}`, device {device} ({name}), dtype {dtype}, torch {torch.__version__}, "
        f"{seconds:.0f} s. \"examples run\" counts the Hypothesis examples the claim's properties executed "
        "(one per parametrised case for the fixed-seed statistical properties), \"discarded\" the draws "
        "rejected by `assume` or a filter; the worst error is the claim's own measured quantity, named, "
        "against the tolerance it was checked with. A claim holds when no check exceeded its tolerance.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    lines += [_claim_row(key, records, mutants) for key in CLAIMS]
    lines += _tolerance_lines(records)
    series = records.get("series", {})
    if series:
        lines += ["", "## Measured curves", "", "| curve | x | y | fitted slope |", "|---|---|---|---|"]
        for label, c in series.items():
            xs = ", ".join(f"{v:g}" for v in c["x"])
            ys = ", ".join(f"{v:.3g}" for v in c["y"])
            lines.append(f"| {label} | {xs} | {ys} | {c.get('slope', float('nan')):.3f} |")
    if figure is not None:
        lines += ["", f"![width convergence]({figure.name})"]
    if mutants is not None:
        lines += _mutant_lines(mutants)
    if reproductions:
        lines += _reproduction_lines(reproductions)
    return "\n".join(lines) + "\n"


def verify(*, profile: str = "ci", device: str = "cpu", dtype: str = "float64", out: Path = Path("reports"),
           extra: list[str] | None = None,
           reproductions: Callable[[], Sequence[tuple[ReproductionOutcome, Path]]] | None = None,
           mutants: list[str] | None = None,
           workers: int = 1) -> VerifyResult:
    """Run the property suite and write ``out/claims-<device>-<dtype>.md`` (+ PNG).

    ``reproductions``, when given, is called after the properties: it runs reproductions, writes
    their reports and returns each result with its report's path (the ``ntkcheck verify --reproduce``
    command passes the quick reproductions); the claims report links them, and one that does not
    hold makes the exit code 1.
    With ``mutants`` (a list of names; empty for the whole catalogue) the properties also run
    once per mutant (:mod:`ntkcheck.testing.mutation`) and the report gives the mutation score;
    a surviving mutant makes the exit code 1.  ``workers`` > 1 runs pytest-xdist workers.

    Raises ``RuntimeError`` and writes nothing when no claim ran at all (a collection error,
    a device the properties cannot run on, a ``-k`` that selects nothing): a report of
    claims all "NOT RUN" would say nothing, so the previous report stays in place.
    """
    start = time.perf_counter()
    code, records = run_properties(profile=profile, device=device, dtype=dtype,
                                   extra=[*xdist_args(workers), *(extra or [])])
    if not any(r.get("checks") for r in records.get("records", {}).values()) \
            and not any(e.get("examples") for e in records.get("examples", {}).values()):
        raise RuntimeError(f"no claim ran (pytest exit status {code}; its output above says why), "
                           f"so no report was written and {out} is as it was")
    done = reproductions() if reproductions is not None else []
    if any(not r.holds and not r.skipped for r, _ in done):
        code = code or 1
    outcomes = None
    if mutants is not None:
        outcomes = [o.to_dict() for o in run_mutants(mutants, pytest_command, profile=profile, device=device,
                                                     dtype=dtype, workers=workers)]
        if not all(o["killed"] for o in outcomes):
            code = code or 1
    seconds = time.perf_counter() - start
    stem = f"claims-{device.split(':')[0]}-{dtype}"
    series = records.get("series", {})
    with staged(out) as stage:  # figure and report land together, the report last
        figure = out / f"{stem}-width.png" if _width_curves(series) else None
        if figure is not None:
            plot_series(series, stage.path(figure.name))
        report = stage.write_text(f"{stem}.md", report_text(
            records, profile=profile, device=device, dtype=dtype, seconds=seconds, figure=figure,
            reproductions=done, mutants=outcomes))
    return VerifyResult(code, report, figure, records, seconds)
