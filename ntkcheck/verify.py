"""``ntkcheck verify``: run the property suite and write the claims report.

The suite (``properties/`` of an ntkcheck checkout) runs in a pytest subprocess
under the chosen Hypothesis profile, device and dtype; every check records its
examples and worst error (:mod:`ntkcheck.claims`), and the report lists, claim by
claim, the statement, the seed reference, the examples tried, the worst error
against its tolerance and the verdict, with a figure of the width-convergence fit.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ntkcheck.claims import CLAIMS
from ntkcheck.reproduce import Reproduction

PROPERTIES = Path(__file__).resolve().parent.parent / "properties"


@dataclass(frozen=True)
class VerifyResult:
    exit_code: int
    report: Path
    figure: Path | None
    records: dict
    seconds: float


def run_properties(*, profile: str, device: str, dtype: str, extra: list[str] | None = None) -> tuple[int, dict]:
    """Run pytest on ``properties/`` with the claims plugin; return its exit code and the claim records."""
    if not PROPERTIES.is_dir():
        raise FileNotFoundError(f"the property suite is not at {PROPERTIES}: run verify from an ntkcheck checkout")
    with tempfile.TemporaryDirectory() as tmp:
        records_path = Path(tmp) / "claims.json"
        env = dict(os.environ, NTKCHECK_PROFILE=profile, NTKCHECK_DEVICE=device, NTKCHECK_DTYPE=dtype,
                   NTKCHECK_CLAIMS_JSON=str(records_path))
        cmd = [sys.executable, "-m", "pytest", str(PROPERTIES), "-p", "ntkcheck.pytest_plugin",
               "-p", "no:cacheprovider", "-v", "--hypothesis-show-statistics", *(extra or [])]
        code = subprocess.run(cmd, env=env, cwd=PROPERTIES.parent).returncode
        records = json.loads(records_path.read_text()) if records_path.exists() else {}
    return code, records


def _verdict(rec: dict | None) -> str:
    if rec is None or rec["examples"] == 0:
        return "NOT RUN"
    return "holds" if rec["failures"] == 0 else f"FAILED ({rec['failures']} of {rec['examples']})"


def plot_series(series: dict, path: Path) -> Path | None:
    """Log-log plot of the recorded width-convergence curves with their fitted slopes."""
    curves = {k: v for k, v in series.items() if k.startswith("width")}
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
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run_reproductions(*, device: str, out: Path) -> list[tuple[Reproduction, Path]]:
    """Run every reproduction in quick mode and write its report; return the results with their paths."""
    from ntkcheck.reproduce import EXPERIMENTS, reproduce, write_report as write_reproduction

    done = []
    for name in EXPERIMENTS:
        result = reproduce(name, "quick", device=device)
        done.append((result, write_reproduction(result, out)))
    return done


def _reproduction_lines(done: list[tuple[Reproduction, Path]]) -> list[str]:
    lines = ["", "## Reproductions (quick)", "", "| experiment | reference | verdicts | seconds | report |",
             "|---|---|---|---|---|"]
    for result, path in done:
        if result.skipped:
            verdicts = f"skipped: {result.skipped}"
        else:
            verdicts = "; ".join(f"{v.claim}: {'holds' if v.holds else 'DID NOT HOLD'}" for v in result.verdicts)
        lines.append(f"| {result.title} | {result.reference} | {verdicts} | {result.seconds:.0f} | [{path.name}]({path.name}) |")
    return lines


def write_report(records: dict, path: Path, *, profile: str, device: str, dtype: str, seconds: float,
                 figure: Path | None, reproductions: list[tuple[Reproduction, Path]] | None = None) -> Path:
    """The claims report as Markdown."""
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") and torch.cuda.is_available() else "CPU"
    lines = [
        "# ntkcheck claims report",
        "",
        f"Profile `{profile}`, device {device} ({name}), dtype {dtype}, torch {torch.__version__}, "
        f"{seconds:.0f} s. Errors are relative unless the check says otherwise; a claim holds when no example "
        "exceeded its tolerance (tolerances: `ntkcheck/tolerances.py`).",
        "",
        "| claim | reference | examples | worst error | its tolerance | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for key, claim in CLAIMS.items():
        rec = records.get(key)
        worst = f"{rec['worst_error']:.2e}" if rec else "-"
        tol = f"{rec['worst_tolerance']:.1e}" if rec else "-"
        n = rec["examples"] if rec else 0
        lines.append(f"| {claim.statement} | {claim.reference} | {n} | {worst} | {tol} | {_verdict(rec)} |")
    series = records.get("_series", {})
    if series:
        lines += ["", "## Measured curves", "", "| curve | x | y | fitted slope |", "|---|---|---|---|"]
        for label, c in series.items():
            xs = ", ".join(f"{v:g}" for v in c["x"])
            ys = ", ".join(f"{v:.3g}" for v in c["y"])
            lines.append(f"| {label} | {xs} | {ys} | {c.get('slope', float('nan')):.3f} |")
    if figure is not None:
        lines += ["", f"![width convergence]({figure.name})"]
    if reproductions:
        lines += _reproduction_lines(reproductions)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def verify(*, profile: str = "ci", device: str = "cpu", dtype: str = "float64", out: Path = Path("reports"),
           extra: list[str] | None = None, reproductions: bool = False) -> VerifyResult:
    """Run the property suite and write ``out/claims-<device>-<dtype>.md`` (+ PNG).

    With ``reproductions=True`` the quick reproductions run too, each writing its own
    report, and the claims report links them; one that does not hold makes the exit code 1.
    """
    start = time.perf_counter()
    code, records = run_properties(profile=profile, device=device, dtype=dtype, extra=extra)
    done = run_reproductions(device=device, out=out) if reproductions else []
    if any(not r.holds and not r.skipped for r, _ in done):
        code = code or 1
    seconds = time.perf_counter() - start
    stem = f"claims-{device.split(':')[0]}-{dtype}"
    figure = plot_series(records.get("_series", {}), out / f"{stem}-width.png")
    report = write_report(records, out / f"{stem}.md", profile=profile, device=device, dtype=dtype,
                          seconds=seconds, figure=figure, reproductions=done)
    return VerifyResult(code, report, figure, records, seconds)
