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
from typing import TYPE_CHECKING, Any, Protocol

import torch

import ntkcheck.testing.properties as _properties
from ntkcheck._support.atomic import staged
from ntkcheck._support.markdown import code, document, heading, image, link, table
from ntkcheck.testing.claims import CLAIMS
from ntkcheck.testing.mutation import run_mutants, xdist_args

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PROPERTIES = Path(_properties.__file__).resolve().parent


@dataclass(frozen=True)
class VerifyResult:
    exit_code: int
    report: Path
    figure: Path | None
    records: dict
    seconds: float


def pytest_command(
    *, profile: str, device: str, dtype: str, records: Path, extra: list[str] | None = None
) -> list[str]:
    """The pytest command line that runs the shipped properties and writes their records to ``records``."""
    return [
        sys.executable,
        "-m",
        "pytest",
        str(PROPERTIES),
        "-p",
        "no:cacheprovider",
        "-p",
        "no:benchmark",
        f"--ntkcheck-profile={profile}",
        f"--ntkcheck-device={device}",
        f"--ntkcheck-dtype={dtype}",
        f"--ntkcheck-claims-json={records}",
        "--ntkcheck-max-discard=0.1",
        *(extra or []),
    ]


def run_properties(*, profile: str, device: str, dtype: str, extra: list[str] | None = None) -> tuple[int, dict]:
    """Run pytest on the shipped properties with the claims plugin; return its exit code and the claim records."""
    with tempfile.TemporaryDirectory() as tmp:
        records_path = Path(tmp) / "claims.json"
        cmd = pytest_command(
            profile=profile,
            device=device,
            dtype=dtype,
            records=records_path,
            extra=["-v", "--hypothesis-show-statistics", *(extra or [])],
        )
        returncode = subprocess.run(cmd, cwd=os.getcwd()).returncode
        records = json.loads(records_path.read_text()) if records_path.exists() else {}
    return returncode, records


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


def plot_series(series: dict) -> Figure | None:
    """Log-log plot of the recorded width-convergence curves with their fitted slopes (None when no curve
    was recorded)."""
    curves = _width_curves(series)
    if not curves:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
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
    return fig


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
    """One row per reproduction: its verdicts, its time and a link to its report."""
    rows = []
    for result, path in done:
        if result.skipped:
            verdicts = f"skipped: {result.skipped}"
        else:
            verdicts = "; ".join(f"{v.claim}: {'DID NOT HOLD' if not v.passes else v.status}" for v in result.verdicts)
        rows.append([result.title, result.reference, verdicts, f"{result.seconds:.0f}", link(path.name, path.name)])
    return ["", heading("Reproductions (quick)"), ""] + table(
        ["experiment", "reference", "verdicts", "seconds", "report"], rows
    )


def _claim_row(key: str, records: dict, mutants: list[dict] | None) -> list[str]:
    """A claim's cells: statement, reference, examples, checks, worst error, tolerance, verdict (and mutants)."""
    claim = CLAIMS[key]
    rec = records.get("records", {}).get(key)
    ex = records.get("examples", {}).get(key)
    run = ex["examples"] if ex else 0
    discarded = ex["discarded"] if ex else 0
    share = f" ({discarded / (run + discarded):.0%})" if run + discarded else ""
    if rec:
        worst = f"{rec['worst_error']:.2e}: {rec['worst_what']}"
        tol = f"{rec['worst_tolerance']:.1e} ({code(rec['tolerance_name'])})"
    else:
        worst = tol = "-"
    checks = rec["checks"] if rec else 0
    cells = [
        claim.statement,
        claim.reference,
        str(run),
        f"{discarded}{share}",
        str(checks),
        worst,
        tol,
        _verdict(rec, ex, records.get("failed", [])),
    ]
    if mutants is not None:
        killed = [m["name"] for m in mutants if m.get("killed_by_claim") == key]
        cells.append(", ".join(code(k) for k in killed) or "-")
    return cells


def _tolerance_lines(records: dict) -> list[str]:
    """The tolerance-table entries the claims were checked with, with their reasons."""
    from ntkcheck.testing.tolerances import TABLE

    used = sorted({r["tolerance_name"] for r in records.get("records", {}).values() if r.get("tolerance_name")})
    rows = [[code(name), f"{TABLE[name].float64:g}", f"{TABLE[name].float32:g}", TABLE[name].reason] for name in used]
    return [
        "",
        heading("Tolerances"),
        "",
        "Each worst error above is checked against one entry of the tolerance "
        "table (`ntkcheck/testing/tolerances.py`), here with its reason.",
        "",
    ] + table(["name", "float64", "float32", "reason"], rows)


def _mutant_lines(mutants: list[dict]) -> list[str]:
    """The mutation score and one row per mutant: what it breaks and what killed it."""
    killed = sum(m["killed"] for m in mutants)
    rows = [
        [
            code(m["name"]),
            m["description"],
            code(m["killed_by"]) if m["killed"] else "SURVIVED",
            m.get("killed_by_claim") or "-",
        ]
        for m in mutants
    ]
    return [
        "",
        heading("Mutation score"),
        "",
        f"{killed} of {len(mutants)} mutants killed by the properties alone "
        f"(`ntkcheck verify --mutants`: the property suite run once per mutant, stopping at the first "
        f"failing property).",
        "",
    ] + table(["mutant", "the plausible bug", "killed by", "claim"], rows)


def _curve_lines(series: dict) -> list[str]:
    """The measured curves: their points and fitted slopes."""
    rows = [
        [
            label,
            ", ".join(f"{v:g}" for v in c["x"]),
            ", ".join(f"{v:.3g}" for v in c["y"]),
            f"{c.get('slope', float('nan')):.3f}",
        ]
        for label, c in series.items()
    ]
    return ["", heading("Measured curves"), ""] + table(["curve", "x", "y", "fitted slope"], rows)


def report_stem(device: str, dtype: str) -> str:
    """The claims report's file stem: ``claims-<device type>-<dtype>``."""
    return f"claims-{device.split(':')[0]}-{dtype}"


def write_report(
    records: dict,
    *,
    out: str | Path,
    profile: str,
    device: str,
    dtype: str,
    seconds: float,
    reproductions: Sequence[tuple[ReproductionOutcome, Path]] | None = None,
    mutants: list[dict] | None = None,
) -> Path:
    """Write ``out/claims-<device>-<dtype>.md`` (:func:`report_text`) and, when width curves were recorded,
    its figure ``...-width.png``; return the Markdown's path.

    Figure and report land together, the report last (:func:`ntkcheck._support.atomic.staged`): an
    interrupted write leaves the previous report and figure as they were.
    """
    stem = report_stem(device, dtype)
    fig = plot_series(records.get("series", {}))
    figure = f"{stem}-width.png" if fig is not None else None
    text = report_text(
        records,
        profile=profile,
        device=device,
        dtype=dtype,
        seconds=seconds,
        figure=figure,
        reproductions=reproductions,
        mutants=mutants,
    )
    with staged(Path(out)) as stage:
        if fig is not None and figure is not None:
            fig.savefig(stage.path(figure), dpi=120)
        return stage.write_text(f"{stem}.md", text)


def report_text(
    records: dict,
    *,
    profile: str,
    device: str,
    dtype: str,
    seconds: float,
    figure: str | None,
    reproductions: Sequence[tuple[ReproductionOutcome, Path]] | None = None,
    mutants: list[dict] | None = None,
) -> str:
    """The claims report as Markdown: one row per claim, the tolerances used, curves, mutants, reproductions;
    ``figure`` is the file name of the width-convergence figure, if any."""
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") and torch.cuda.is_available() else "CPU"
    head = [
        "claim",
        "reference",
        "examples run",
        "discarded",
        "checks",
        "worst error: the quantity",
        "its tolerance",
        "verdict",
    ] + (["mutants it killed"] if mutants is not None else [])
    lines = [
        heading("ntkcheck claims report", 1),
        "",
        f"Profile {code(profile)}, device {device} ({name}), dtype {dtype}, torch {torch.__version__}, "
        f'{seconds:.0f} s. "examples run" counts the Hypothesis examples the claim\'s properties executed '
        '(one per parametrised case for the fixed-seed statistical properties), "discarded" the draws '
        "rejected by `assume` or a filter; the worst error is the claim's own measured quantity, named, "
        "against the tolerance it was checked with. A claim holds when no check exceeded its tolerance.",
        "",
    ]
    lines += table(head, [_claim_row(key, records, mutants) for key in CLAIMS])
    lines += _tolerance_lines(records)
    series = records.get("series", {})
    if series:
        lines += _curve_lines(series)
    if figure is not None:
        lines += ["", image("width convergence", figure)]
    if mutants is not None:
        lines += _mutant_lines(mutants)
    if reproductions:
        lines += _reproduction_lines(reproductions)
    return document(lines)


def verify(
    *,
    profile: str = "ci",
    device: str = "cpu",
    dtype: str = "float64",
    out: Path = Path("reports"),
    extra: list[str] | None = None,
    reproductions: Callable[[], Sequence[tuple[ReproductionOutcome, Path]]] | None = None,
    mutants: list[str] | None = None,
    workers: int = 1,
) -> VerifyResult:
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

    ``seconds`` is the wall-clock time of the whole run, measured once with :func:`time.perf_counter`.
    """
    start = time.perf_counter()
    status, records = run_properties(
        profile=profile, device=device, dtype=dtype, extra=[*xdist_args(workers), *(extra or [])]
    )
    if not any(r.get("checks") for r in records.get("records", {}).values()) and not any(
        e.get("examples") for e in records.get("examples", {}).values()
    ):
        raise RuntimeError(
            f"no claim ran (pytest exit status {status}; its output above says why), "
            f"so no report was written and {out} is as it was"
        )
    done = reproductions() if reproductions is not None else []
    if any(not r.holds and not r.skipped for r, _ in done):
        status = status or 1
    outcomes = None
    if mutants is not None:
        outcomes = [
            o.to_dict()
            for o in run_mutants(mutants, pytest_command, profile=profile, device=device, dtype=dtype, workers=workers)
        ]
        if not all(o["killed"] for o in outcomes):
            status = status or 1
    seconds = time.perf_counter() - start
    report = write_report(
        records,
        out=out,
        profile=profile,
        device=device,
        dtype=dtype,
        seconds=seconds,
        reproductions=done,
        mutants=outcomes,
    )
    figure = out / f"{report_stem(device, dtype)}-width.png" if _width_curves(records.get("series", {})) else None
    return VerifyResult(status, report, figure, records, seconds)
