"""The one tolerance table: every relative tolerance a check uses, per dtype, with its reason.

Exact identities (the same number computed two ways) are checked in float64;
float32 runs use the float32 column.  ``tolerance(name, dtype)`` is the only
way checks read these numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Tolerance:
    float64: float
    float32: float
    reason: str


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
}


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


def tolerance(name: str, dtype: torch.dtype) -> float:
    """The tolerance ``name`` for ``dtype`` (float64 or float32)."""
    entry = TABLE[name]
    if dtype == torch.float64:
        return entry.float64
    if dtype == torch.float32:
        return entry.float32
    raise ValueError(f"dtype must be torch.float64 or torch.float32, got {dtype}")
