"""seed 000, eqs (2), (3), (7) (§3.2): at every FINITE time the linearized network's parameter flow is the kernel flow.

The linearized network ``f_lin(x; theta) = h(x; theta_0) + J(x) (theta - theta_0)`` trained by the
parameter-space gradient flow (2), ``d theta/dt = -lr J^T grad_h dist(f_lin(X; theta), Y)``, moves its
outputs by ``d f_lin(x)/dt = J(x) d theta/dt = -lr k(x, X) grad_h dist`` — the function-space flow (3)
(eq (7) is the same flow written for h' = the output of any network with kernel k) — at the training
points AND at every test point x.  So for every t:

    h0(x) + J(x) (theta(t) - theta_0)  ==  the solution of (3) at (x, t), started at h_ini = h0.

The left side is :mod:`._dynamics`' parameter-space integration (the loss's gradient written there, the
Jacobian by autograd rows, predictions from the parameters); the right side is the library:
:func:`ntkcheck.dynamics.flows.ode_flow` for §4 losses, :func:`ntkcheck.dynamics.flows.mse_flow` (closed form)
for the MSE, and :func:`ntkcheck.dynamics.flows.mse_gd` for the real ``linearize(model)`` trained by
``train(optimizer="gd")``, whose discrete iterates it gives exactly.  The times are spread over the flow's
time scales at t = 0, ``|r_0| / (lr lambda |g_0|)`` for lambda = lambda_max and lambda_min of K: early times test the
fast modes, late ones the slow modes (a wrong time scale or a wrong gradient shows at all of them).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from ntkcheck.dynamics.flows import ConvergenceWarning, mse_flow, mse_gd, ode_flow
from ntkcheck.dynamics.linearization import linearize
from ntkcheck.dynamics.losses import MSE, LpLoss
from ntkcheck.dynamics.solvers import SingularKernelError
from ntkcheck.dynamics.training import train
from ntkcheck.kernels.empirical import ntk
from ntkcheck.testing.claims import check_close
from ntkcheck.testing.strategies import datasets
from ntkcheck.testing.tolerances import MAX_CONDITION_FLOW, max_condition, tolerance

from ._common import DEVICE, DTYPE, reproduce
from ._dynamics import ODE_RTOL, ParameterFlow, outputs, param_jacobian, predict
from ._dynamics_draws import max_samples, section4_losses, wide_architectures

CLAIM = "finite_time_dynamics"
pytestmark = pytest.mark.claim(CLAIM)
LRS = st.sampled_from([0.3, 1.0, 2.5])


def _setup(arch, ds, m_test: int = 4):
    """Model, data, the oracle's Jacobians (autograd rows) and the initial outputs."""
    model = arch.build(dtype=DTYPE, device=DEVICE)
    x, y = ds.x(dtype=DTYPE, device=DEVICE), ds.y(dtype=DTYPE, device=DEVICE)
    xt = ds.x_test(m_test, dtype=DTYPE, device=DEVICE)
    J, Jt = param_jacobian(model, x), param_jacobian(model, xt)
    h0, h0t = outputs(model, x, ds.out), outputs(model, xt, ds.out)
    return model, x, y, xt, J, Jt, h0, h0t


def _times(flow: ParameterFlow) -> list[float]:
    fast, slow = flow.time_scales()
    return np.unique([0.5 * fast, 2 * fast, 0.3 * slow, slow, 3 * slow]).tolist()


def _check_against_parameter_flow(res, h0, h0t, J, Jt, delta, ctx: str, name: str, setting: str) -> None:
    """The library's flow ``res`` (train and test outputs) against the parameter flow's displacements ``delta``
    mapped through the oracle's Jacobians, at the training and test points (tolerance ``finite_time_flow``)."""
    tol = tolerance("finite_time_flow", DTYPE)
    check_close(
        res.train,
        predict(h0, J, delta),
        tol=tol,
        claim=CLAIM,
        context=ctx,
        what=f"{name} vs parameter flow (2) at the training points, {setting}",
    )
    check_close(
        res.test,
        predict(h0t, Jt, delta),
        tol=tol,
        claim=CLAIM,
        context=ctx,
        what=f"{name} vs parameter flow (2) at test points, {setting}",
    )


@given(
    arch=wide_architectures(6, max_depth=2, max_width=48, max_in=3, max_out=3, frozen=None),
    data=st.data(),
    loss=section4_losses(),
    lr=LRS,
)
def test_ode_flow_is_parameter_flow_at_finite_times(arch, data, loss, lr):
    """For a §4 loss (L^p, 1.5 <= p <= 4, or a mixture), ``ode_flow(k, Y, loss, times, ...)`` at the training
    and test points equals h0 + J (theta(t) - theta_0) of the parameter flow (2) at 5 finite times
    (seed 000 eqs (2), (3)).  Tolerance ``finite_time_flow``, relative to the trajectory's norm."""
    ds = data.draw(datasets(arch, max_n=max_samples(arch, 3)))
    model, x, y, xt, J, Jt, h0, h0t = _setup(arch, ds)
    flow = ParameterFlow(J, (h0 - y).reshape(-1), loss, ds.n, lr)
    assume(flow.cond <= MAX_CONDITION_FLOW)  # K^{-1} carries the flow to the test points
    times = _times(flow)
    delta = flow.at(times)
    k, kt = ntk(model, x), ntk(model, xt, x)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # stopped at max_time on purpose
            res = ode_flow(
                k,
                y,
                loss=loss,
                times=times,
                k_test_train=kt,
                h_ini_train=h0,
                h_ini_test=h0t,
                lr=lr,
                rtol=ODE_RTOL,
                atol=ODE_RTOL,
                max_time=times[-1],
                max_cond=MAX_CONDITION_FLOW,
            )
    except SingularKernelError:
        assume(False)  # the library's kernel rounds past the bound where the oracle's did not (float32)
    ctx = reproduce(
        arch,
        ds=repr(ds),
        loss=repr(loss),
        lr=lr,
        times=times,
        check="ode_flow(nk.ntk(model, x), y, loss=loss, times=times, k_test_train=nk.ntk(model, xt, x), "
        "h_ini_train=model(x), h_ini_test=model(xt), lr=lr) vs the parameter flow (2)",
    )
    _check_against_parameter_flow(res, h0, h0t, J, Jt, delta, ctx, "ode_flow", f"finite t ({loss!r}, lr={lr})")


@given(arch=wide_architectures(8, max_depth=2, max_width=256, max_in=4, max_out=3, frozen=None), data=st.data(), lr=LRS)
def test_mse_flow_is_parameter_flow(arch, data, lr):
    """``mse_flow`` (closed form of (3) for the MSE (1/n) sum |h - y|^2) at the training and test points equals
    the parameter flow (2) with gradient (2/n)(h - Y) at 5 finite times and at t = inf (seed 000 eqs (2), (3),
    Cor 1).  Tolerance ``finite_time_flow``."""
    ds = data.draw(datasets(arch, max_n=max_samples(arch, 6)))
    model, x, y, xt, J, Jt, h0, h0t = _setup(arch, ds)
    flow = ParameterFlow(J, (h0 - y).reshape(-1), LpLoss(2.0), ds.n, lr)
    # the limit needs K^{-1} (the solvers' bound, max_condition) and rounding of K grows like cond at late finite
    # times: float32's ~1e-6 stays within finite_time_flow up to MAX_CONDITION_FLOW, float64's up to max_condition
    limit = max(MAX_CONDITION_FLOW, max_condition(DTYPE))
    assume(flow.cond <= limit)
    times = _times(flow) + [math.inf]
    delta = np.concatenate([flow.at(times[:-1]), flow.limit()[0][None]])
    k, kt = ntk(model, x), ntk(model, xt, x)
    try:
        res = mse_flow(k, y, times=times, k_test_train=kt, h_ini_train=h0, h_ini_test=h0t, lr=lr, max_cond=limit)
    except SingularKernelError:
        assume(False)  # the library's kernel rounds past the bound where the oracle's did not (float32)
    ctx = reproduce(
        arch,
        ds=repr(ds),
        lr=lr,
        times=times,
        check="mse_flow(nk.ntk(model, x), y, times=times, k_test_train=nk.ntk(model, xt, x), "
        "h_ini_train=model(x), h_ini_test=model(xt), lr=lr) vs the parameter flow (2)",
    )
    _check_against_parameter_flow(res, h0, h0t, J, Jt, delta, ctx, "mse_flow", f"lr={lr}")


@given(
    arch=wide_architectures(8, max_depth=2, max_width=128, max_in=4, max_out=3, frozen=None),
    data=st.data(),
    fraction=st.sampled_from([0.1, 0.5, 0.9]),
)
def test_linearized_gd_follows_mse_gd(arch, data, fraction):
    """``train(linearize(model), x, y, MSE, optimizer="gd", lr)`` — real gradient descent on the parameters of the
    linearized module (seed 000 eq (1)) — gives after k steps, at the training and test points, exactly the
    iterates of ``mse_gd(k, y, lr, k)``: the forward-Euler discretisation of (3), the step h <- h - lr (2/n) K (h - Y).
    lr = fraction * n / lambda_max(K) (stable).  Tolerance ``gd_iterates``."""
    ds = data.draw(datasets(arch, max_n=max_samples(arch, 6)))
    model, x, y, xt, J, Jt, h0, h0t = _setup(arch, ds)
    k, kt = ntk(model, x), ntk(model, xt, x)
    lam_max = float(torch.linalg.svdvals(J.double())[0]) ** 2
    assume(lam_max > 0)  # an all-zero Jacobian (every unit dead, no bias) would pass trivially
    lr = fraction * ds.n / lam_max
    lin = linearize(model)
    steps = [1, 3, 10, 25]
    got_train, got_test, done = [], [], 0
    for s in steps:  # the step-size check (a DivergenceWarning would fail the test) once, at theta_0
        train(lin, x, y, MSE, optimizer="gd", lr=lr, steps=s - done, check_lr=done == 0)
        done = s
        got_train.append(outputs(lin, x, ds.out))
        got_test.append(outputs(lin, xt, ds.out))
    res = mse_gd(k, y, lr=lr, steps=steps, k_test_train=kt, h_ini_train=h0, h_ini_test=h0t)
    ctx = reproduce(
        arch,
        ds=repr(ds),
        lr=lr,
        steps=steps,
        check="train(linearize(model), x, y, MSE, optimizer='gd', lr=lr, steps=...) outputs vs "
        "mse_gd(nk.ntk(model, x), y, lr=lr, steps=steps, k_test_train=..., h_ini_train=..., h_ini_test=...)",
    )
    tol = tolerance("gd_iterates", DTYPE)
    check_close(
        torch.stack(got_train),
        res.train,
        tol=tol,
        claim=CLAIM,
        context=ctx,
        what=f"linearized GD outputs vs mse_gd at the training points, steps {steps}",
    )
    check_close(
        torch.stack(got_test),
        res.test,
        tol=tol,
        claim=CLAIM,
        context=ctx,
        what=f"linearized GD outputs vs mse_gd at test points, steps {steps}",
    )
