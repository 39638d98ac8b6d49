"""The claims ntkcheck checks, and the assertion helpers the properties check them with.

Every assertion of the property suite goes through :func:`check_close` or
:func:`check_at_most`.  On failure the message names the claim, the measured
error against its tolerance, and a Python snippet that rebuilds the example.
Each call is also recorded (examples tried, worst error relative to tolerance)
so ``ntkcheck verify`` can write the claims report.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch


@dataclass(frozen=True)
class Claim:
    """A statement of a seed paper and where it is stated."""

    key: str
    statement: str
    reference: str


CLAIMS: dict[str, Claim] = {
    c.key: c
    for c in [
        Claim("min_norm_parameters",
              "Gradient flow/descent of the linearized network under any loss of the class converges to "
              "theta_0 + J^+ (Y - h_0), the parameters nearest theta_0 that fit the data.",
              "seed 000, Thm 5, eq (4)"),
        Claim("loss_invariance",
              "The trained linearized network is the RKHS-minimum-norm interpolant closest to h_ini, at test "
              "points, whatever the loss.",
              "seed 000, Thm 6 / Cor 1, eq (5)"),
        Claim("decomposition_identity",
              "h_k(.; h_ini, X, Y) = h_k(.; 0, X, Y) + h_ini - h_k(.; 0, X, h_ini(X)), and h_k(.; 0, X, .) is "
              "linear in the targets.",
              "seed 000, Thm 2 (eq 6), Lemma 3"),
        Claim("init_error_decomposition",
              "For zero-mean random h_ini the expected test error is the unbiased error plus the init-induced "
              "error: the cross term vanishes.",
              "seed 000, Thm 3"),
        Claim("asi",
              "ASI output is exactly 0 at init, its NTK equals the original's in total and per layer, and its "
              "linearized training from 0 equals the kernel interpolant with h_ini = 0.",
              "seed 000, Thm 4 = Thm 9"),
        Claim("doubling_trick",
              "The doubling trick zeroes the output at init, kills the per-layer kernels of layers <= L-2 and "
              "doubles those of W^(L-1), b^(L-1) and W^(L).",
              "seed 000, Thm 10"),
        Claim("euler_identity",
              "For bias-free ReLU networks f(x) = (1/L) <theta, grad_theta f(x)>, so the trained linearized "
              "network is the kernel interpolant plus (1/L) phi(x)(I - P) theta_0, zero on the training inputs.",
              "seed 001, Lemma 2, eq (14)"),
        Claim("last_layer_interpolant",
              "Training only the last layer from zero gives exactly the Psi-kernel interpolant.",
              "seed 001, Thm 1"),
        Claim("sigma_scaling",
              "Scaling the initial parameters of a bias-free ReLU net by sigma keeps the interpolant term and "
              "scales the init term by sigma^L: test error ~ sigma^(2L), training error 0.",
              "seed 001, §4.2, Thm 3/4"),
        Claim("width_convergence",
              "The empirical NTK tends to the analytic NTK at rate ~ m^(-1/2); the gap between a trained network "
              "and its linearization shrinks with width.",
              "Jacot et al. 2018; Lee et al. 2019"),
        Claim("negative_controls",
              "The suite has teeth: ASI without sqrt(2)/2 doubles the kernel; the doubled net's kernel is not the "
              "original's; a narrow real network trained with L2 and L4 ends at different functions.",
              "controls for seed 000, Thm 4, Thm 10, Thm 6"),
    ]
}


@dataclass
class Record:
    """What the checks of one claim have seen: examples and the worst error against its tolerance."""

    claim: str
    examples: int = 0
    failures: int = 0
    worst_ratio: float = 0.0
    worst_error: float = 0.0
    worst_tolerance: float = 0.0
    notes: list[str] = field(default_factory=list)


RECORDS: dict[str, Record] = {}
SERIES: dict[str, dict[str, object]] = {}
"""Measured curves for the report's figures, by label: {"x": [...], "y": [...], "slope": float, ...}."""


def record_series(label: str, xs: list[float], ys: list[float], **fit: float) -> None:
    """Keep a measured curve (e.g. NTK error against width, with its fitted slope) for the claims report."""
    SERIES[label] = {"x": [float(v) for v in xs], "y": [float(v) for v in ys], **{k: float(v) for k, v in fit.items()}}


def _record(claim: str, error: float, tol: float, passed: bool) -> None:
    if claim not in CLAIMS:
        raise KeyError(f"claim must be one of {sorted(CLAIMS)}, got {claim!r}")
    rec = RECORDS.setdefault(claim, Record(claim))
    rec.examples += 1
    rec.failures += 0 if passed else 1
    ratio = error / tol if tol > 0 else (0.0 if error == 0 else math.inf)
    if ratio >= rec.worst_ratio or math.isnan(error):
        rec.worst_ratio, rec.worst_error, rec.worst_tolerance = ratio, error, tol


def relative_error(actual: torch.Tensor, expected: torch.Tensor, *, scale: float | None = None) -> float:
    """||actual - expected|| / (scale or ||expected||); NaN anywhere gives NaN."""
    diff = float(torch.linalg.vector_norm((actual - expected).double()))
    denom = scale if scale is not None else float(torch.linalg.vector_norm(expected.double()))
    if denom == 0.0:
        return diff if diff == 0.0 else math.inf
    return diff / denom


def _fail(claim: str, what: str, error: float, tol: float, context: str) -> AssertionError:
    c = CLAIMS[claim]
    return AssertionError(
        f"{c.reference} violated: {what}\n  measured {error:.3e} > tolerance {tol:.1e}\n"
        f"  claim: {c.statement}\n  reproduce with:\n    " + context.replace("\n", "\n    ")
    )


def check_close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    *,
    tol: float,
    claim: str,
    what: str,
    context: str,
    scale: float | None = None,
) -> float:
    """Assert ``||actual - expected|| <= tol * (scale or ||expected||)``; return the relative error."""
    if actual.shape != expected.shape:
        raise _fail(claim, f"{what}: shapes {tuple(actual.shape)} vs {tuple(expected.shape)}", math.inf, tol, context)
    error = relative_error(actual, expected, scale=scale)
    passed = error <= tol
    _record(claim, error, tol, passed)
    if not passed:
        raise _fail(claim, what, error, tol, context)
    return error


def check_at_most(value: float, bound: float, *, claim: str, what: str, context: str) -> float:
    """Assert a measured nonnegative quantity is at most ``bound``; return it."""
    passed = value <= bound
    _record(claim, value, bound, passed)
    if not passed:
        raise _fail(claim, what, value, bound, context)
    return value


def dump_records(path: Path) -> None:
    """Write the records of this process as JSON (merged with what the file already holds)."""
    existing = json.loads(path.read_text()) if path.exists() else {}
    for key, rec in RECORDS.items():
        old = existing.get(key)
        if old:
            rec.examples += old["examples"]
            rec.failures += old["failures"]
            if old["worst_ratio"] > rec.worst_ratio:
                rec.worst_ratio, rec.worst_error = old["worst_ratio"], old["worst_error"]
                rec.worst_tolerance = old["worst_tolerance"]
        existing[key] = asdict(rec)
    existing.setdefault("_series", {}).update(SERIES)
    path.write_text(json.dumps(existing, indent=1, default=float))
