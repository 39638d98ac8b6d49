"""seed 001, Thm 1: training only the last layer from zero gives exactly the Psi-kernel interpolant.

f is linear in the last layer's parameters theta_L = (W_L, b_L), with features
psi(x) = (c_L phi_{L-1}(x), b_mult); from theta_L = 0 gradient descent on the MSE
stays in the span of the training features and converges to the minimum-norm
fit, i.e. f(x) = Psi(x, X) Psi(X, X)^{-1} Y with Psi the last-layer kernel.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, strategies as st

import ntkcheck as nk
from ntkcheck.testing.claims import check_close
from ntkcheck.losses import LpLoss
from ntkcheck.solvers import SingularKernelError, condition_number, interpolate
from ntkcheck.strategies import architectures, datasets
from ntkcheck.tolerances import tolerance
from ntkcheck.training import train

from ._common import DEVICE, DTYPE, reproduce

CLAIM = "last_layer_interpolant"
pytestmark = pytest.mark.claim(CLAIM)


@given(arch=architectures(min_depth=1, max_depth=3, max_width=32, max_out=1), data=st.data())
def test_last_layer_training_from_zero_is_psi_interpolant(arch, data):
    """GD on the last layer only, started at W_L = 0, b_L = 0, ends at Psi(x, X) Psi(X, X)^{-1} Y (seed 001 Thm 1)."""
    ds = data.draw(datasets(arch, max_n=4))
    model = arch.build(dtype=DTYPE, device=DEVICE)
    x, y = ds.x(dtype=DTYPE, device=DEVICE), ds.y(dtype=DTYPE, device=DEVICE)
    xt = ds.x_test(4, dtype=DTYPE, device=DEVICE)
    last = model.layers[-1]
    with torch.no_grad():
        for p in last.parameters():
            p.zero_()
    for layer in model.layers[:-1]:
        layer.requires_grad_(False)
    psi, psi_test = nk.ntk(model, x), nk.ntk(model, xt, x)  # only theta_L is trainable: the Psi kernel
    try:
        cond = condition_number(psi)
        expected = interpolate(psi, y, psi_test)
    except SingularKernelError:
        assume(False)
    # GD contracts the slowest direction by 1 - 1/cond per step at this lr: bounded work needs a bounded cond
    assume(cond < 60)
    lam_max = float(torch.linalg.eigvalsh(psi).max())
    lr = 1.0 / (2.0 / ds.n * lam_max)  # half the stability limit 2 / lambda_max of (2/n) Psi
    steps = int(35 * cond) + 100  # (1 - 1/cond)^(35 cond) ~ e^-35 ~ 6e-16
    train(model, x, y.reshape(-1, 1), LpLoss(2), optimizer="gd", lr=lr, steps=steps, loss_threshold=1e-26,
          record_every=steps)
    with torch.no_grad():
        got = model(xt).reshape(-1)
    check_close(got, expected, tol=tolerance("gd_limit", DTYPE), claim=CLAIM,
                scale=float(expected.norm()) + float(y.norm()),
                what="last-layer GD from 0 vs Psi-kernel interpolant", context=reproduce(arch, ds=repr(ds)))
