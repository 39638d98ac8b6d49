"""seed 001, Thm 1: training only the last layer from zero gives exactly the Psi-kernel interpolant.

f is linear in the last layer's parameters theta_L = (W_L, b_L), with features
psi(x) = (c_L phi_{L-1}(x), b_mult) (seed 001 eq (3)); from theta_L = 0 gradient descent on
the MSE stays in the span of the training features and converges to the minimum-norm fit
(eqs (8)-(10)), i.e. f(x) = Psi(x, X) Psi(X, X)^{-1} Y with Psi the last-layer kernel (eq (9)).
Drawn: every architecture family, biases in half the draws, 1-3 outputs (each output is its own
last-layer regression on the same features, so Psi is block diagonal).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import cast

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ntkcheck.dynamics.losses import LpLoss
from ntkcheck.dynamics.solvers import condition_number, interpolate
from ntkcheck.dynamics.training import train
from ntkcheck.kernels.empirical import ntk
from ntkcheck.models import MLP, Linear
from ntkcheck.testing.claims import check_at_most, check_close
from ntkcheck.testing.strategies import architectures, datasets
from ntkcheck.testing.tolerances import max_condition, tolerance

from ._common import DEVICE, DTYPE, reproduce

CLAIM = "last_layer_interpolant"
pytestmark = pytest.mark.claim(CLAIM)
MAX_STEPS = 3000  # the GD budget; the contraction it may leave is bounded and discounted


def _wide_enough(arch):
    """Hidden widths >= 8 and the last one >= 32: n <= 3 training points against >= 32 random features."""
    widths = tuple(max(w, 8) for w in arch.widths[:-1]) + (max(arch.widths[-1], 32),)
    return replace(arch, widths=widths)


def _feature_rank_limit(arch, limit: int) -> int:
    """At most ``limit`` points and no more than the features can separate: with the identity activation
    psi(x) is affine (linear without bias) in x, rank <= d + bias; in d = 1 a bias-free ReLU net spans at most
    2 directions (it is positively homogeneous in x) and smooth features of a scalar x give a kernel whose
    spectrum decays like a Taylor series (cond ~ 1e7 for 4 Gaussian points), so d = 1 gets 2 points."""
    if arch.activation == "identity":
        return min(limit, arch.in_features + int(arch.bias))
    if arch.in_features == 1:
        return min(limit, 2)
    return limit


def _features(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """psi(x) = (c_L a_{L-1}(x), b_mult) read off the last layer's input by a forward hook."""
    last = cast(MLP, model).layers[-1]
    assert isinstance(last, Linear)
    seen: dict[str, torch.Tensor] = {}
    handle = last.register_forward_hook(lambda _m, args, _out: seen.__setitem__("a", args[0]))
    with torch.no_grad():
        model(x)
    handle.remove()
    cols = [last.weight_mult * seen["a"]]
    if last.bias is not None:
        cols.append(torch.full((x.shape[0], 1), last.bias_mult, dtype=x.dtype, device=x.device))
    return torch.cat(cols, dim=1)


@given(
    arch=architectures(families=("mlp",), min_depth=1, max_depth=3, max_width=64, max_out=3).map(_wide_enough),
    data=st.data(),
)
def test_last_layer_training_from_zero_is_psi_interpolant(arch, data):
    """GD on the last layer only, started at W_L = 0, b_L = 0, ends at Psi(x, X) Psi(X, X)^{-1} Y (seed 001 Thm 1).

    Compared with the minimum-norm least-squares fit on the hooked features psi (LAPACK gelsd, float64);
    the library's Psi interpolant (ntk with only the last layer trainable, then interpolate) must agree
    with the same oracle where cond(Psi) <= max_condition (the solve's tolerance holds only there; a
    near-linear net, e.g. softplus at small weights, can exceed float32's 1e3).  GD runs at the optimal
    step 2 / (lambda_max + lambda_min) of the loss Hessian (2/n) Psi, which contracts theta_t - theta_inf
    by rho = (cond - 1) / (cond + 1) per step, for the steps that bring rho^t three digits below the
    tolerance (at most MAX_STEPS): the test error GD may still carry, |psi(X*)|_F rho^t |theta_inf|_F, is
    subtracted from the measured error (it is ~0 except on the rare draws with cond(Psi) > ~200, where
    the cap binds)."""
    ds = data.draw(datasets(arch, min_n=1, max_n=_feature_rank_limit(arch, 3)))
    model = arch.build(dtype=DTYPE, device=DEVICE)
    x, y = ds.x(dtype=DTYPE, device=DEVICE), ds.y(dtype=DTYPE, device=DEVICE)
    yo = y.reshape(ds.n, -1)
    xt = ds.x_test(4, dtype=DTYPE, device=DEVICE)
    last = model.layers[-1]
    with torch.no_grad():
        for p in last.parameters():
            p.zero_()
    for layer in model.layers:
        layer.requires_grad_(layer is last)
    ctx = reproduce(arch, ds=repr(ds), check="GD on model.layers[-1] from 0 vs the Psi interpolant")
    # the library's Psi: the NTK with only theta_L trainable (one output's block; the others are copies)
    psi = ntk(model, x)
    psi_test = ntk(model, xt, x)
    k1, kt1 = (psi, psi_test) if ds.out == 1 else (psi[:, :, 0, 0], psi_test[:, :, 0, 0])
    psi_x, psi_t = _features(model, x).double().cpu(), _features(model, xt).double().cpu()
    theta_inf = torch.linalg.lstsq(psi_x, yo.double().cpu(), driver="gelsd").solution  # (features, O), eq (10)
    oracle = psi_t @ theta_inf  # (m, O), eq (9)
    scale = float(oracle.norm()) + float(y.norm())
    if condition_number(k1) <= max_condition(DTYPE):  # the solve's tolerance holds up to max_condition only
        check_close(
            interpolate(k1, yo, k_test_train=kt1).double().cpu(),
            oracle,
            tol=tolerance("solver_identity", DTYPE),
            scale=scale,
            claim=CLAIM,
            what="library Psi interpolant vs min-norm fit on the features",
            context=ctx,
        )
    # gradient descent: the loss (1/n) sum |f - y|^2 has Hessian (2/n) psi psi^T in each output
    evals = torch.linalg.eigvalsh(psi_x @ psi_x.T)
    lam_max, lam_min = 2.0 / ds.n * float(evals[-1]), 2.0 / ds.n * float(evals[0])
    rho = (lam_max - lam_min) / (lam_max + lam_min)
    tol = tolerance("gd_limit", DTYPE)
    steps = 1 if rho == 0.0 else min(MAX_STEPS, math.ceil(math.log(1e-3 * tol) / math.log(rho)))
    train(
        model,
        x,
        yo if ds.out > 1 else y,
        LpLoss(2),
        optimizer="gd",
        lr=2.0 / (lam_max + lam_min),
        steps=steps,
        record_every=steps,
        check_lr=False,
    )
    with torch.no_grad():
        got = model(xt).reshape(oracle.shape).double().cpu()
    # theta_t - theta_inf = (I - lr H)^t (0 - theta_inf) on the row space, so
    # |f_t(X*) - f(X*)| <= |psi(X*)|_F rho^t |theta_inf|_F
    left = float(psi_t.norm()) * rho**steps * float(theta_inf.norm())
    check_at_most(
        max(0.0, float((got - oracle).norm()) - left),
        tol * scale,
        claim=CLAIM,
        what=f"last-layer GD from 0 vs Psi-kernel interpolant, beyond the contraction left after {steps} "
        f"steps (cond {lam_max / lam_min:.1e})",
        context=ctx,
    )
