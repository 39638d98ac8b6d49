"""The claims ntkcheck checks, and the assertion helpers the properties check them with.

Every assertion of the property suite goes through :func:`check_close` or
:func:`check_at_most`, with a tolerance from :func:`ntkcheck.testing.tolerances.tolerance`
(a :class:`~ntkcheck.testing.tolerances.Bound` that carries its reason).  On failure the
message names the claim, the measured quantity against its tolerance, and a
Python snippet that rebuilds the example.  Each call is also recorded by the
active :class:`Recorder` (the pytest plugin gives every test its own and merges
them, also across pytest-xdist workers), so ``ntkcheck verify`` can write the
claims report: per claim the worst measured quantity, what it measures, its
tolerance and that tolerance's reason.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ntkcheck.testing.tolerances import Bound


@dataclass(frozen=True)
class Claim:
    """A statement of a seed paper and where it is stated."""

    key: str
    statement: str
    reference: str


CLAIMS: dict[str, Claim] = {
    c.key: c
    for c in [
        Claim(
            "min_norm_parameters",
            "Gradient flow/descent of the linearized network under any loss of the class converges to "
            "theta_0 + J^+ (Y - h_0), the parameters nearest theta_0 that fit the data.",
            "seed 000, Thm 5, eq (4)",
        ),
        Claim(
            "loss_invariance",
            "The trained linearized network is the RKHS-minimum-norm interpolant closest to h_ini, at test "
            "points, whatever the loss.",
            "seed 000, Thm 6 / Cor 1, eq (5)",
        ),
        Claim(
            "decomposition_identity",
            "The trained linearized network h_k(.; h_ini, X, Y) = h_ini + k(., X) K^{-1} (Y - h_ini(X)) fits Y "
            "and splits as h_k(.; 0, X, Y) + h_ini - h_k(.; 0, X, h_ini(X)); h_k(.; 0, X, .) is linear in the "
            "targets.",
            "seed 000, Thm 2 (eq 6), Lemma 3",
        ),
        Claim(
            "init_error_decomposition",
            "For zero-mean random h_ini the expected test error is the unbiased error plus the init-induced "
            "error: the cross term vanishes.",
            "seed 000, Thm 3",
        ),
        Claim(
            "asi",
            "ASI output is exactly 0 at init, its NTK equals the original's in total and per layer (over the "
            "trainable parameters: a frozen layer stays frozen in both branches), and its linearized training "
            "from 0 equals the kernel interpolant with h_ini = 0; at every time t its linearized gradient flow "
            "under any loss of §4 is the kernel flow (7) of the original's kernel from 0, the original's from h_ini.",
            "seed 000, Thm 4 = Thm 9",
        ),
        Claim(
            "doubling_trick",
            "The doubling trick zeroes the output at init, kills the per-layer kernels of layers <= L-2 and "
            "doubles those of W^(L-1), b^(L-1) and W^(L).",
            "seed 000, Thm 10",
        ),
        Claim(
            "euler_identity",
            "For bias-free ReLU networks f(x) = (1/L) <theta, grad_theta f(x)>, so the trained linearized "
            "network is the kernel interpolant plus (1/L) phi(x)(I - P) theta_0, zero on the training inputs.",
            "seed 001, Lemma 2, eq (14)",
        ),
        Claim(
            "last_layer_interpolant",
            "Training only the last layer from zero gives exactly the Psi-kernel interpolant.",
            "seed 001, Thm 1",
        ),
        Claim(
            "sigma_scaling",
            "Initializing a bias-free ReLU net with variance sigma^2 (seed 001 eq (1)) keeps the interpolant term "
            "and scales the init term by sigma^L: test error |a + sigma^L b|^2 ~ sigma^(2L) at large sigma, "
            "training error 0.",
            "seed 001, §4.2, Thm 3/4",
        ),
        Claim(
            "width_convergence",
            "At every width m the empirical NTK and output covariance f f^T are within C m^(-1/2) of the analytic "
            "NTK / NNGP and their means over initializations equal them up to O(1/m); a trained network is within "
            "C m^(-1/2) of its linearization's kernel prediction.",
            "Jacot et al. 2018; Lee et al. 2019; seed 001, Lemma 1",
        ),
        Claim(
            "empirical_ntk",
            "The exact empirical NTK k(x, x') = grad_theta h(x)^T grad_theta h(x') of the trainable parameters, "
            "per layer and in total, for every output pair.",
            "seed 000, §3.2 (after eq (3)); seed 000 §12 per-layer kernels",
        ),
        Claim(
            "linearization",
            "The linearized network h(x, theta_0) + grad_theta h(x, theta_0)^T (theta - theta_0) is affine in theta, "
            "agrees with the network to first order, and its kernel is the network's kernel at theta_0.",
            "seed 000, §3.2 (linearized model); seed 001, Lemma 1",
        ),
        Claim(
            "finite_time_dynamics",
            "At every finite time t the parameter flow (2) of the linearized network, mapped to function space, "
            "equals the kernel flow (3) on training and test points, for any loss of §4 (MSE: in closed form); "
            "gradient descent on the linearized network gives exactly the forward-Euler iterates of (3).",
            "seed 000, eqs (2), (3), (7)",
        ),
        Claim(
            "gd_iterates",
            "Gradient descent on the squared loss of a model linear in its parameters has the closed-form iterates "
            "theta_t = theta_0 + Psi^T (Psi Psi^T)^+ [I - (I - eta Psi Psi^T)^t] (Y - Psi theta_0).",
            "seed 001, eq (8)",
        ),
        Claim(
            "rkhs_norm",
            "The trained linearized network h minimises ||h - h_ini||_k subject to h(X) = Y, and "
            "||h - h_ini||_k = ||theta - theta_0||: any other interpolant has a larger RKHS distance.",
            "seed 000, Thm 6, eq (12) (App. 9); seed 001, eqs (10), (11)",
        ),
        Claim(
            "output_bound",
            "For bias-free ReLU networks in NTK parametrization with weight scale sigma and inputs in the unit ball, "
            "E |f(x; theta_0)|^2 <= sigma^(2L).",
            "seed 001, Lemma 3 (App. D)",
        ),
        Claim(
            "rnd",
            "The RND control (second branch drawn independently) has a nonzero initial output and, as the average "
            "of two independent networks' kernels, kernel (k_theta + k_theta') / 2.",
            "seed 000, §7 Fig 2c (RND control of Thm 4)",
        ),
        Claim(
            "negative_controls",
            "The suite has teeth: ASI without sqrt(2)/2 doubles the kernel; the doubled net's kernel is not the "
            "original's; a narrow real network trained with L2 and L4 ends at different functions.",
            "controls for seed 000, Thm 4, Thm 10, Thm 6",
        ),
    ]
}


@dataclass
class Record:
    """What the checks of one claim have seen: checks, failures and the worst quantity against its tolerance."""

    claim: str
    checks: int = 0
    failures: int = 0
    worst_ratio: float = 0.0
    worst_error: float = 0.0
    worst_tolerance: float = 0.0
    worst_what: str = ""
    tolerance_name: str = ""
    tolerance_reason: str = ""

    def add(self, error: float, tol: Bound, passed: bool, what: str) -> None:
        self.checks += 1
        self.failures += 0 if passed else 1
        ratio = error / tol if tol > 0 else (0.0 if error == 0 else math.inf)
        if ratio >= self.worst_ratio or math.isnan(error) or not self.tolerance_name:
            self.worst_ratio, self.worst_error, self.worst_tolerance = ratio, error, float(tol)
            self.worst_what, self.tolerance_name, self.tolerance_reason = what, tol.name, tol.reason

    def merge(self, other: Record) -> None:
        self.checks += other.checks
        self.failures += other.failures
        if other.worst_ratio >= self.worst_ratio or not self.tolerance_name:
            for name in (
                "worst_ratio",
                "worst_error",
                "worst_tolerance",
                "worst_what",
                "tolerance_name",
                "tolerance_reason",
            ):
                setattr(self, name, getattr(other, name))


@dataclass
class Recorder:
    """The checks seen in one scope (a test, a worker, a run): claim records and measured curves."""

    records: dict[str, Record] = field(default_factory=dict)
    series: dict[str, dict[str, object]] = field(default_factory=dict)

    def record(self, claim: str, error: float, tol: Bound, passed: bool, what: str) -> None:
        self.records.setdefault(claim, Record(claim)).add(error, tol, passed, what)

    def merge(self, other: Recorder) -> None:
        for key, rec in other.records.items():
            self.records.setdefault(key, Record(key)).merge(rec)
        self.series.update(other.series)

    def to_dict(self) -> dict[str, object]:
        return {"records": {k: asdict(v) for k, v in self.records.items()}, "series": self.series}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recorder:
        return cls({k: Record(**v) for k, v in data.get("records", {}).items()}, dict(data.get("series", {})))


_active: list[Recorder] = [Recorder()]


def active_recorder() -> Recorder:
    """The recorder checks report to (the pytest plugin installs one per test)."""
    return _active[-1]


@contextmanager
def recording(recorder: Recorder) -> Iterator[Recorder]:
    """Context manager: route the checks inside it to ``recorder``."""
    _active.append(recorder)
    try:
        yield recorder
    finally:
        _active.remove(recorder)


def record_series(label: str, xs: Sequence[float], ys: Sequence[float], **fit: float) -> None:
    """Keep a measured curve (e.g. NTK error against width, with its fitted slope) for the claims report."""
    active_recorder().series[label] = {
        "x": [float(v) for v in xs],
        "y": [float(v) for v in ys],
        **{k: float(v) for k, v in fit.items()},
    }


def _record(claim: str, error: float, tol: object, passed: bool, what: str) -> None:
    if claim not in CLAIMS:
        raise KeyError(f"claim must be one of {sorted(CLAIMS)}, got {claim!r}")
    if not isinstance(tol, Bound):
        raise TypeError(
            f"tol must be a Bound from ntkcheck.testing.tolerances.tolerance(name, dtype) (a tolerance with its "
            f"reason), got {type(tol).__name__} {tol!r}"
        )
    active_recorder().record(claim, error, tol, passed, what)


def relative_error(actual: torch.Tensor, expected: torch.Tensor, *, scale: float | None = None) -> float:
    """||actual - expected|| / (scale or ||expected||); NaN anywhere gives NaN."""
    diff = float(torch.linalg.vector_norm((actual - expected).double()))
    denom = scale if scale is not None else float(torch.linalg.vector_norm(expected.double()))
    if denom == 0.0:
        return diff if diff == 0.0 else math.inf
    return diff / denom


def _fail(claim: str, what: str, error: float, tol: Bound, context: str) -> AssertionError:
    c = CLAIMS[claim]
    return AssertionError(
        f"{c.reference} violated: {what}\n  measured {error:.3e} > tolerance {float(tol):.1e}"
        f" ({tol.name}: {tol.reason})"
        f"\n  claim: {c.statement}\n  reproduce with:\n    " + context.replace("\n", "\n    ")
    )


def check_close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    *,
    tol: Bound,
    claim: str,
    what: str,
    context: str,
    scale: float | None = None,
) -> float:
    """Assert ``||actual - expected|| <= tol * (scale or ||expected||)``; return the relative error."""
    if actual.shape != expected.shape:
        _record(claim, math.inf, tol, False, what)
        raise _fail(claim, f"{what}: shapes {tuple(actual.shape)} vs {tuple(expected.shape)}", math.inf, tol, context)
    error = relative_error(actual, expected, scale=scale)
    passed = error <= tol
    _record(claim, error, tol, passed, what)
    if not passed:
        raise _fail(claim, what, error, tol, context)
    return error


def check_at_most(value: float, bound: Bound, *, claim: str, what: str, context: str) -> float:
    """Assert a measured nonnegative quantity is at most ``bound``; return it."""
    passed = value <= bound
    _record(claim, value, bound, passed, what)
    if not passed:
        raise _fail(claim, what, value, bound, context)
    return value
