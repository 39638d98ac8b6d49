"""The one tolerance table: every relative tolerance a check uses, per dtype, with its reason.

Exact identities (the same number computed two ways) are checked in float64;
float32 runs use the float32 column.  ``tolerance(name, dtype)`` is the only
way checks read these numbers: it returns a :class:`Bound`, a float that
remembers the table entry it came from (scaling it by a measured size keeps
that provenance), so the claims report prints every tolerance with its reason
and the checks of :mod:`ntkcheck.testing.claims` refuse a bare number.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Tolerance:
    float64: float
    float32: float
    reason: str


class Bound(float):
    """A tolerance value that remembers its table entry (``name``) and ``reason``.

    ``bound * scale`` (a measured size, e.g. the norm the error is relative to) is again a
    Bound with the same provenance; sums and other arithmetic give plain floats.
    """

    name: str
    reason: str

    def __new__(cls, value: float, name: str, reason: str) -> "Bound":
        self = super().__new__(cls, value)
        self.name, self.reason = name, reason
        return self

    def __mul__(self, other: object) -> "Bound":
        if isinstance(other, (int, float)) and not isinstance(other, bool):
            return Bound(float(self) * float(other), self.name, self.reason)
        return NotImplemented

    __rmul__ = __mul__

    def __repr__(self) -> str:
        return f"Bound({float(self)!r}, {self.name!r})"


TABLE: dict[str, Tolerance] = {
    "kernel_methods_agree": Tolerance(
        1e-10, 1e-4,
        "Same sums of products in different orders; float64 rounding ~1e-16 * depth * sqrt(P) stays far below "
        "1e-10. float32 (eps 6e-8) accumulates over P up to ~1e5 terms: 1e-4.",
    ),
    "per_layer_sum": Tolerance(
        1e-12, 1e-5,
        "The total is the sum of the per-layer kernels up to one rounding per layer.",
    ),
    "symmetry": Tolerance(
        1e-12, 1e-5,
        "K(x, x') and K(x', x) are formed by the same products in a different order.",
    ),
    "psd": Tolerance(
        1e-10, 1e-4,
        "Smallest eigenvalue of a Gram matrix >= -tol * largest: eigensolver backward error is ~eps * ||K||.",
    ),
    "solver_identity": Tolerance(
        1e-9, 1e-3,
        "Solves lose ~cond * eps; draws whose kernel condition number exceeds MAX_CONDITION are rejected.",
    ),
    "asi_zero_output": Tolerance(
        0.0, 0.0,
        "The ASI output at init is s*(h - h) for identical floating-point h: exactly 0.",
    ),
    "doubled_zero_output": Tolerance(
        1e-12, 1e-5,
        "The doubled output sums w_i a_i and -w_i a_i inside one dot product: rounding of that sum, "
        "relative to the scale sum |w_i a_i|.",
    ),
    # -- solvers and flows (seed 000 eqs (2)-(7), Thm 5/6, seed 001 eq (8)) --
    "flow_limit": Tolerance(
        1e-6, 1e-2,
        "A flow integrated to a stopping residual of 1e-9..1e-10 ||r_0|| sits within cond(J) times that of its limit; "
        "draws with cond(K) above MAX_CONDITION_FLOW are rejected, so ~1e-7 remains for the ODE's own error. "
        "float32 inputs are integrated in float64 but the kernel carries float32 rounding (~1e-7 * cond).",
    ),
    "gd_limit": Tolerance(
        1e-8, 1e-2,
        "Gradient descent stopped after 35 cond steps contracts the slowest mode by e^-35; what remains is "
        "rounding of ~steps * eps * cond accumulated over the iteration, 10x the solver_identity bound.",
    ),
    "monte_carlo_4se": Tolerance(
        1.0, 1.0,
        "A Monte Carlo mean must lie within 4 standard errors of its expectation (ratio |mean| / (4 se) <= 1): a "
        "false alarm has probability 6e-5 per check (normal tail), independent of the dtype.",
    ),
    "control_ratio": Tolerance(
        1.0, 1.0,
        "A negative control passes when the measured gap exceeds its floor (ratio floor / gap <= 1): the floor "
        "itself is set from the positive twin's tolerance, so no dtype-specific slack is needed.",
    ),
    "training_fit": Tolerance(
        1e-10, 1e-4,
        "A network trained to a loss threshold must reach it: the threshold is the training loop's own stopping "
        "rule (1e-12..1e-14 in float64), this is the largest final loss accepted.",
    ),
    # -- width convergence, empirical and analytic kernels --
    "slope_band": Tolerance(
        0.0, 0.0,
        "A fitted log-log slope must lie inside the band stated by the claim; the check measures the distance "
        "outside the band, which must be 0.",
    ),
    # -- transforms (ASI, RND, doubling) and seed 001 --
    "mismatch_count": Tolerance(
        0.0, 0.0,
        "A count of discrete mismatches (requires_grad flags that differ from the original's, kernel names that "
        "differ, parameter tensors that should be identical copies but are not): no rounding enters, so it is 0.",
    ),
    "sigma_slope": Tolerance(
        0.05, 0.05,
        "The slope of log e(sigma) is measured where sigma^L |init term| >= 1e3 |interpolant error|, so the "
        "interpolant error moves it by O(1e-3) and rounding by less; 0.05 of 2L leaves a 50x margin.",
    ),
}


MAX_CONDITION_FLOW = 1e4
"""cond(K) above this is rejected by the flow properties (their stopping residual times cond stays <= 1e-5)."""


MAX_CONDITION: dict[torch.dtype, float] = {
    # Linear solves lose up to cond * eps of relative accuracy (Higham, ch. 7), so the solver_identity
    # tolerances above hold only for kernels at most this ill-conditioned; properties reject (assume away)
    # worse draws rather than loosen the bound: float64 1e6 * 1.1e-16 ~ 1e-10 < 1e-9, float32 1e3 * 6e-8 ~ 6e-5 < 1e-3.
    torch.float64: 1e6,
    torch.float32: 1e3,
}


def max_condition(dtype: torch.dtype) -> float:
    """The largest kernel condition number for which ``solver_identity`` holds in ``dtype``."""
    if dtype not in MAX_CONDITION:
        raise ValueError(f"dtype must be torch.float64 or torch.float32, got {dtype}")
    return MAX_CONDITION[dtype]


def tolerance(name: str, dtype: torch.dtype) -> Bound:
    """The tolerance ``name`` for ``dtype`` (float64 or float32), as a :class:`Bound` carrying its reason."""
    if name not in TABLE:
        raise KeyError(f"tolerance name must be one of {sorted(TABLE)}, got {name!r}")
    entry = TABLE[name]
    if dtype == torch.float64:
        return Bound(entry.float64, name, entry.reason)
    if dtype == torch.float32:
        return Bound(entry.float32, name, entry.reason)
    raise ValueError(f"dtype must be torch.float64 or torch.float32, got {dtype}")
