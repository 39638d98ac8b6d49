"""The draws of the dynamics properties: wide networks, sample counts they can fit, and pairs of §4 losses.

Seed 000 §4 (Thm 5, Thm 6, Cor 1) is about losses ``dist`` with a unique minimum at h = Y: every L^p with
p > 1 and positive mixtures of them.  The networks are widened so that their kernels are well conditioned
by construction rather than by discarding draws.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import strategies as st

from ntkcheck.dynamics.losses import Loss, LpLoss
from ntkcheck.testing.strategies import Arch, architectures


def wide_architectures(min_width: int, *, min_in: int = 2, **kwargs: Any) -> st.SearchStrategy[Arch]:
    """``architectures(**kwargs)`` with every hidden width raised to at least ``min_width`` and at least
    ``min_in`` input features.

    Narrow hidden layers (width 1-3, dead ReLUs) and one-dimensional inputs (a bias-free ReLU net is
    positively homogeneous: on R^1 its kernel has rank 2) give numerically singular kernels that the flows'
    condition bound would reject; widening makes the draws valid by construction instead.
    """

    def widen(arch: Arch) -> Arch:
        return dataclasses.replace(
            arch, widths=tuple(max(w, min_width) for w in arch.widths), in_features=max(arch.in_features, min_in)
        )

    kwargs.setdefault("families", ("mlp",))  # widths/in_features are an MLP's
    return architectures(**kwargs).map(widen)


SMOOTH_ACTIVATIONS = ("tanh", "erf", "sin", "gelu", "softplus")


def max_samples(arch: Arch, max_n: int) -> int:
    """At most ``max_n`` samples, and no more than a network of ``arch`` can fit with a well-conditioned kernel.

    A linear network (identity activation) is linear in x: its kernel has rank <= (d + 1) O, so n <= d
    (+ 1 with biases).  A smooth activation at weight scale < 1 is nearly linear on its pre-activations
    (tanh z = z - z^3/3 + ...): beyond the same n the kernel's extra eigenvalues are only the small
    nonlinear corrections (condition numbers 1e5-1e7 measured), so the same cap applies.
    """
    near_linear = arch.activation in SMOOTH_ACTIVATIONS and arch.weight_std < 1
    if arch.activation == "identity" or near_linear:
        return max(1, min(max_n, arch.in_features + (1 if arch.bias else 0)))
    return max_n


@st.composite
def loss_pairs(draw: st.DrawFn, *, min_p: float = 1.5, max_p: float = 4.0) -> tuple[Loss, Loss]:
    """Two DIFFERENT losses of seed 000 §4: L^p with distinct p (|p - q| >= 0.5), or an L^p and a mixture.

    Mixture weights avoid 1.0, so a slip that drops a weight changes the loss.  Every choice is drawn in
    every example (a choice sequence of fixed shape: Hypothesis rejects no mutated draw as invalid).
    """

    def exponent(lo: float, hi: float, u: float) -> float:
        return round(lo + u * (hi - lo), 2)

    p = exponent(min_p, max_p, draw(st.floats(0, 1)))
    kind = draw(st.sampled_from(["two_lp", "lp_mixture", "mixture_lp"]))
    u = draw(st.floats(0, 1))
    q = exponent(min_p, p - 0.5, u) if p - 0.5 >= min_p else exponent(p + 0.5, max_p, u)
    w = draw(st.sampled_from([0.25, 0.5, 2.0, 4.0]))
    third = exponent(min_p, max_p, draw(st.floats(0, 1)))
    if kind == "two_lp":
        return LpLoss(p), LpLoss(q)
    mix = LpLoss(q) + w * LpLoss(third)
    return (LpLoss(p), mix) if kind == "lp_mixture" else (mix, LpLoss(p))


@st.composite
def section4_losses(draw: st.DrawFn, *, min_p: float = 1.5, max_p: float = 4.0) -> Loss:
    """One loss of seed 000 §4: L^p (p in [min_p, max_p]) or a mixture with weight != 1 (the second of a pair)."""
    return draw(loss_pairs(min_p=min_p, max_p=max_p))[1]
