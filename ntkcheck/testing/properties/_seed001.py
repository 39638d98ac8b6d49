"""Shared pieces of the seed 001 properties: bias-free ReLU nets, unit-ball data, the terms of Lemma 2, eq (14).

seed 001 eq (1) is the NTK parametrization with an explicit sigma: every layer computes
``sigma / sqrt(fan_in) W a`` (plus ``sigma b``) with ``W, b ~ N(0, 1)``; an ``ntkcheck.MLP``
with ``parametrization="ntk"`` and ``weight_std=sigma`` is that network (its ``weight_mult`` is
``weight_std / sqrt(fan_in)``).  With ``parametrization="standard"`` ``weight_std`` scales the
initial draw instead; for a bias-free ReLU net both make the function ``sigma^L f_1`` with f_1
the sigma = 1 network, so every seed 001 statement about sigma holds in both.  Inputs are drawn
from seed 001's domain, the closed unit ball B_1^d(0) (§1.2).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from hypothesis import strategies as st
from torch.nn.utils import parameters_to_vector

from ntkcheck._support.seeding import child_seed
from ntkcheck.dynamics.linearization import jacobian, min_norm_linearized
from ntkcheck.testing.strategies import Arch, Dataset, inputs, seeds

from ._common import DEVICE, DTYPE, require_well_conditioned

MAX_N = 4 if DTYPE == torch.float64 else 3
"""Training points per draw: the solves of eq (14) are checked only up to cond(Phi Phi^T) <= max_condition
(1e6 in float64, 1e3 in float32, tolerances.MAX_CONDITION), and unit-ball inputs spread the kernel's diagonal
by |x|^2; with 4 points ~3% of draws exceed float32's 1e3, with 3 points ~1%."""


@st.composite
def relu_bias_free(
    draw, max_depth: int = 3, max_width: int = 24, min_width: int = 8, max_in: int = 5, max_out: int = 1
) -> Arch:
    """Bias-free ReLU MLPs: f(x; theta) is positively homogeneous of degree L in theta (and of degree 1 in x).

    Built so that Phi(X) Phi(X)^T is invertible: inputs in d >= 2 dimensions (with d = 1 every x is a
    positive multiple of +1 or -1, so the Jacobian rows span at most 2 directions and n >= 3 points make
    Phi Phi^T singular) and hidden widths >= ``min_width`` (a unit is dead on x with probability 1/2).
    Both parametrizations, and the standard one's fan-in and seed 000 glorot inits, as
    :func:`ntkcheck.testing.strategies.architectures` draws them (widths as a tuple: a fixed-size list draw is
    sometimes rejected by Hypothesis).
    """
    depth = draw(st.integers(1, max_depth))
    parametrization = draw(st.sampled_from(["ntk", "standard"]))
    init = draw(st.sampled_from(["fan_in", "glorot"])) if parametrization == "standard" else "fan_in"
    return Arch(
        in_features=draw(st.integers(2, max_in)),
        widths=draw(st.tuples(*[st.integers(min_width, max_width)] * depth)),
        out_features=draw(st.integers(1, max_out)),
        activation="relu",
        bias=False,
        parametrization=parametrization,
        weight_std=draw(st.sampled_from([0.5, 1.0, 1.5, 2.0**0.5])),
        bias_std=0.0,
        seed=draw(seeds()),
        init=init,
    )


def with_sigma(arch: Arch, sigma: float) -> Arch:
    """The same draw (seed) with seed 001's sigma as the MLP's weight_std."""
    return replace(arch, weight_std=float(sigma))


def ball_x(ds: Dataset) -> torch.Tensor:
    """The training inputs of ``ds`` drawn uniformly from the unit ball B_1^d(0)."""
    return inputs(ds.seed, ds.n, ds.d, unit_ball=True, dtype=DTYPE, device=DEVICE)


def ball_x_test(ds: Dataset, m: int) -> torch.Tensor:
    """``m`` test inputs drawn uniformly from the unit ball, from a stream of their own."""
    return inputs(child_seed(ds.seed, 2), m, ds.d, unit_ball=True, dtype=DTYPE, device=DEVICE)


def flat_params(model: torch.nn.Module) -> torch.Tensor:
    return parameters_to_vector([p.detach() for p in model.parameters() if p.requires_grad])


@dataclass
class Eq14Terms:
    """f_lin(x; theta_inf) at test points and the two terms of seed 001 eq (14) (flat, sample-major)."""

    trained: torch.Tensor  # f_lin(x; theta_inf), by the min-norm solution of seed 000 problem (4)
    interpolant: torch.Tensor  # Phi(x) Phi(X)^T (Phi(X) Phi(X)^T)^{-1} Y
    init_term: torch.Tensor  # (1/L) Phi(x) [I - P] theta_0
    init_term_train: torch.Tensor  # the same at the training inputs (zero by eq (14))
    trained_train: torch.Tensor  # f_lin(X; theta_inf) (= Y)
    euler_train: torch.Tensor  # (1/L) Phi(X) theta_0 = f(X; theta_0): the size the init term cancels from
    euler_test: torch.Tensor  # (1/L) Phi(x) theta_0 = f(x; theta_0) at the test points


def eq14_terms(arch: Arch, x: torch.Tensor, y: torch.Tensor, xt: torch.Tensor) -> Eq14Terms:
    """Both sides of seed 001 eq (14) for the net ``arch`` (its weight_std is seed 001's sigma).

    Raises :class:`~ntkcheck.errors.IllConditionedError` when Phi Phi^T is too ill-conditioned for the dtype's
    solver tolerance.
    """
    model = arch.build(dtype=DTYPE, device=DEVICE)
    n_layers = len(arch.units(model))  # the layers of the MLP
    theta0 = flat_params(model)
    phi_train, phi_test = jacobian(model, x), jacobian(model, xt)  # rows: gradients at theta_0
    gram = phi_train @ phi_train.T
    require_well_conditioned(gram, "Phi Phi^T")
    chol = torch.linalg.cholesky(gram)
    interp = phi_test @ phi_train.T @ torch.cholesky_solve(y.reshape(-1, 1), chol)
    projected = phi_train.T @ torch.cholesky_solve((phi_train @ theta0).reshape(-1, 1), chol)  # P theta_0
    init_test = (phi_test @ (theta0.reshape(-1, 1) - projected)) / n_layers
    init_train = (phi_train @ (theta0.reshape(-1, 1) - projected)) / n_layers
    trained = min_norm_linearized(model, x, y)
    with torch.no_grad():
        return Eq14Terms(
            trained(xt).reshape(-1),
            interp.reshape(-1),
            init_test.reshape(-1),
            init_train.reshape(-1),
            trained(x).reshape(-1),
            (phi_train @ theta0 / n_layers).reshape(-1),
            (phi_test @ theta0 / n_layers).reshape(-1),
        )
