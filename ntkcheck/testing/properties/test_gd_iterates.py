"""seed 001, eq (8) (§3.1, proof of Thm 1): the closed-form iterates of gradient descent on a model linear in theta.

For a model linear in its parameters, ``f(x; theta) = f(x; theta_0) + psi(x) (theta - theta_0)`` with
feature rows ``Psi = psi(X)`` (N*O, P), gradient descent with step eta on ``||f(X; theta) - Y||^2 / 2``
is eq (7), ``theta_{t+1} = theta_t - eta Psi^T (f(X; theta_t) - Y)``.  The extracted text of eq (8) is
garbled; re-derived: the residual ``e_t = Y - f(X; theta_t)`` obeys ``e_{t+1} = (I - eta Psi Psi^T) e_t``, so

    theta_t = theta_0 + Psi^T sum_{i=1}^{t} (-1)^{i-1} C(t, i) eta^i (Psi Psi^T)^{i-1} e_0          (8, first line)
            = theta_0 + Psi^T (Psi Psi^T)^+ [I - (I - eta Psi Psi^T)^t] e_0                           (8, second line)

(binomial theorem on ``I - (I - eta K)^t``; the pseudo-inverse is exact because e_0 enters only through
``Psi^T``, which vanishes on null(K)).  Checked for (a) the linearized network ``linearize(model)``
(Psi = J, every trainable layer) and (b) seed 001 §3.1's case: all layers but the last frozen, so the REAL
network is linear in its trainable parameters (Psi = the last hidden layer's features), from the drawn
last layer or from 0 as in seed 001 Thm 1.  Real gradient descent (``ntkcheck.dynamics.training.train``,
``optimizer="gd"``) against both lines of (8) computed here from the Jacobian (eigendecomposition of
Psi Psi^T, float64), and against :func:`ntkcheck.dynamics.flows.mse_gd` in function space: its MSE is
``(1/n) sum |h - y|^2``, whose gradient step is ``lr (2/n)`` times this one's, so ``lr = eta n / 2``.
The step is ``eta = a / lambda_max(Psi Psi^T)`` with a up to 1.7 (the top mode oscillating for a > 1).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from torch.nn.utils import parameters_to_vector

from ntkcheck.dynamics.flows import mse_gd
from ntkcheck.dynamics.linearization import linearize
from ntkcheck.dynamics.training import train
from ntkcheck.kernels.empirical import ntk
from ntkcheck.testing.claims import check_close
from ntkcheck.testing.strategies import datasets
from ntkcheck.testing.tolerances import tolerance

from ._common import DEVICE, DTYPE, reproduce
from ._dynamics import outputs, param_jacobian
from ._dynamics_draws import wide_architectures

CLAIM = "gd_iterates"
pytestmark = pytest.mark.claim(CLAIM)
STEPS = [1, 2, 3, 5, 12, 25]
BINOMIAL_UP_TO = 5  # the alternating binomial sum loses ~C(t, t/2) 2^t eps: used for t <= 5 only
STEP_FRACTIONS = st.sampled_from([0.3, 1.0, 1.7])


def half_squared(h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """||h - y||^2 / 2, the loss of seed 001 eq (7)."""
    return 0.5 * ((h - y) ** 2).sum()


def eq8_pinv(Psi: np.ndarray, e0: np.ndarray, eta: float, t: int) -> np.ndarray:
    """theta_t - theta_0 = Psi^T (Psi Psi^T)^+ [I - (I - eta Psi Psi^T)^t] e_0 (eq (8), second line)."""
    lam, Q = np.linalg.eigh(Psi @ Psi.T)
    keep = lam > lam[-1] * 1e-14
    base = 1.0 - eta * lam
    with np.errstate(divide="ignore", invalid="ignore"):
        # [1 - (1 - eta lam)^t] / lam without cancellation where 0 < eta lam < 1
        smooth = -np.expm1(t * np.log1p(-np.minimum(eta * lam, 0.5))) / lam
        direct = (1.0 - base**t) / lam
        coef = np.where(keep, np.where(eta * lam <= 0.5, smooth, direct), 0.0)
    return Psi.T @ (Q @ (coef * (Q.T @ e0)))


def eq8_binomial(Psi: np.ndarray, e0: np.ndarray, eta: float, t: int) -> np.ndarray:
    """theta_t - theta_0 = Psi^T sum_{i=1}^t (-1)^(i-1) C(t, i) eta^i (Psi Psi^T)^(i-1) e_0 (eq (8), first line)."""
    K = Psi @ Psi.T
    term, total = e0.copy(), np.zeros_like(e0)
    for i in range(1, t + 1):
        total += (-1) ** (i - 1) * math.comb(t, i) * eta**i * term
        term = K @ term
    return Psi.T @ total


def _run(model, x, y, xt, out, eta, flat_delta):
    """Gradient descent by ``train``; (theta_t - theta_0, f(X), f(T)) after each of STEPS."""
    deltas, fx, ft, done = [], [], [], 0
    for s in STEPS:  # the step-size check (a DivergenceWarning would fail the test) once, at theta_0
        train(model, x, y, half_squared, optimizer="gd", lr=eta, steps=s - done, check_lr=done == 0)
        done = s
        deltas.append(flat_delta())
        fx.append(outputs(model, x, out))
        ft.append(outputs(model, xt, out))
    return torch.stack(deltas), torch.stack(fx), torch.stack(ft)


def _check(arch, ds, model, x, y, xt, Psi, k, kt, h0, h0t, eta, deltas, fx, ft, case):
    e0 = (y - h0).reshape(-1).detach().cpu().double().numpy()
    P = Psi.detach().cpu().double().numpy()
    ctx = reproduce(
        arch,
        ds=repr(ds),
        eta=eta,
        steps=STEPS,
        case=repr(case),
        check="train(..., half_squared, optimizer='gd', lr=eta) iterates vs eq (8) and mse_gd(lr=eta*n/2)",
    )
    tol = tolerance("gd_iterates", DTYPE)
    pinv = torch.from_numpy(np.stack([eq8_pinv(P, e0, eta, t) for t in STEPS])).to(deltas)
    check_close(
        deltas,
        pinv,
        tol=tol,
        claim=CLAIM,
        context=ctx,
        what=f"GD theta_t - theta_0 vs eq (8) pseudo-inverse form, t in {STEPS} ({case})",
    )
    small = [t for t in STEPS if t <= BINOMIAL_UP_TO]
    binom = torch.from_numpy(np.stack([eq8_binomial(P, e0, eta, t) for t in small])).to(deltas)
    check_close(
        deltas[: len(small)],
        binom,
        tol=tol,
        claim=CLAIM,
        context=ctx,
        what=f"GD theta_t - theta_0 vs eq (8) binomial form, t in {small} ({case})",
    )
    res = mse_gd(k, y, lr=eta * ds.n / 2, steps=STEPS, k_test_train=kt, h_ini_train=h0, h_ini_test=h0t)
    check_close(
        fx,
        res.train,
        tol=tol,
        claim=CLAIM,
        context=ctx,
        what=f"GD outputs vs mse_gd(lr = eta n / 2) at the training points ({case})",
    )
    check_close(
        ft,
        res.test,
        tol=tol,
        claim=CLAIM,
        context=ctx,
        what=f"GD outputs vs mse_gd(lr = eta n / 2) at test points ({case})",
    )


@given(
    arch=wide_architectures(4, max_depth=2, max_width=96, max_in=4, max_out=3, frozen=None),
    data=st.data(),
    a=STEP_FRACTIONS,
)
def test_linearized_gd_iterates_are_eq8(arch, data, a):
    """``train(linearize(model), ..., optimizer="gd", lr=eta)`` on ||f - Y||^2 / 2 has iterates
    theta_t = theta_0 + J^T (J J^T)^+ [I - (I - eta J J^T)^t] (Y - f(X; theta_0)) (seed 001 eq (8) with Psi = J),
    and outputs equal to ``mse_gd`` with lr = eta n / 2.  Tolerance ``gd_iterates``."""
    ds = data.draw(datasets(arch, max_n=6))
    model = arch.build(dtype=DTYPE, device=DEVICE)
    x, y = ds.x(dtype=DTYPE, device=DEVICE), ds.y(dtype=DTYPE, device=DEVICE)
    xt = ds.x_test(4, dtype=DTYPE, device=DEVICE)
    J = param_jacobian(model, x)
    lam_max = float(torch.linalg.svdvals(J.double())[0]) ** 2
    assume(lam_max > 0)  # an all-zero Jacobian (every unit dead, no bias) would pass trivially
    eta = a / lam_max
    h0, h0t = outputs(model, x, ds.out), outputs(model, xt, ds.out)
    k, kt = ntk(model, x), ntk(model, xt, x)
    lin = linearize(model)
    deltas, fx, ft = _run(lin, x, y, xt, ds.out, eta, lin.delta)
    _check(arch, ds, model, x, y, xt, J, k, kt, h0, h0t, eta, deltas, fx, ft, "linearized network")


@st.composite
def last_layer_architectures(draw: st.DrawFn):
    """An MLP with every layer but the last frozen (seed 001 §3.1)."""
    arch = draw(wide_architectures(8, max_depth=3, max_width=128, max_in=4, max_out=3))
    return dataclasses.replace(arch, frozen=tuple(range(len(arch.widths))))


@given(arch=last_layer_architectures(), data=st.data(), a=STEP_FRACTIONS, from_zero=st.booleans())
def test_last_layer_gd_iterates_are_eq8(arch, data, a, from_zero):
    """Seed 001 §3.1: with only the last layer trained the network is linear in theta_L with features
    psi(x) (the last hidden layer, times its multiplier); real gradient descent on the NETWORK itself follows
    eq (8) with Psi = psi(X), from the drawn last layer or from theta_L = 0 (Thm 1).  Tolerance ``gd_iterates``."""
    ds = data.draw(datasets(arch, max_n=6))
    model = arch.build(dtype=DTYPE, device=DEVICE)
    if from_zero:
        with torch.no_grad():
            for p in model.layers[-1].parameters():
                p.zero_()
    x, y = ds.x(dtype=DTYPE, device=DEVICE), ds.y(dtype=DTYPE, device=DEVICE)
    xt = ds.x_test(4, dtype=DTYPE, device=DEVICE)
    Psi = param_jacobian(model, x)
    lam_max = float(torch.linalg.svdvals(Psi.double())[0]) ** 2
    assume(lam_max > 0)  # every feature dead and no bias: nothing to train
    eta = a / lam_max
    h0, h0t = outputs(model, x, ds.out), outputs(model, xt, ds.out)
    k, kt = ntk(model, x), ntk(model, xt, x)
    params = [p for p in model.parameters() if p.requires_grad]
    theta0 = parameters_to_vector([p.detach() for p in params]).clone()

    def flat_delta() -> torch.Tensor:
        return parameters_to_vector([p.detach() for p in params]) - theta0

    deltas, fx, ft = _run(model, x, y, xt, ds.out, eta, flat_delta)
    _check(
        arch,
        ds,
        model,
        x,
        y,
        xt,
        Psi,
        k,
        kt,
        h0,
        h0t,
        eta,
        deltas,
        fx,
        ft,
        f"last layer only, from {'0' if from_zero else 'its draw'}",
    )
