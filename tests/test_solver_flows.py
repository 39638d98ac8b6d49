"""Flows against dense float64 numpy/scipy references (seed 000 eq (3)): the MSE flow in closed form,
the ODE flow for L^p losses and the stability limit of gradient descent."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from _solver_problems import problem, rel

from ntkcheck.dynamics._ode.field import _PolarFlow
from ntkcheck.dynamics.flows import (
    ConvergenceWarning,
    DivergenceWarning,
    mse_flow,
    mse_gd,
    ode_flow,
)
from ntkcheck.dynamics.losses import MSE, CrossEntropy, LpLoss
from ntkcheck.dynamics.solvers import (
    interpolate,
    max_stable_lr,
)

# ------------------------------------------------------------------ MSE flow (eq (3), closed form)


def test_mse_flow_limits() -> None:
    d = problem(25, seed=15)
    kw = dict(k_test_train=d["Kx"], h_ini_train=d["h0"], h_ini_test=d["h0x"])
    flow = mse_flow(d["K"], d["y"], times=[0.0, math.inf], **kw)
    assert flow.train.shape == (2, 25) and flow.test.shape == (2, 5)
    assert rel(flow.train[0], d["h0"]) <= 1e-12 and rel(flow.test[0], d["h0x"]) <= 1e-14
    assert rel(flow.test[1], interpolate(d["K"], d["y"], **kw)) <= 1e-10
    assert rel(flow.train[1], d["y"]) <= 1e-10


def test_mse_flow_matches_matrix_exponential() -> None:
    d = problem(10, seed=16, outputs=2)
    n, lr, times = 10, 0.7, [0.3, 2.0, 15.0]
    flow = mse_flow(d["K"], d["y"], times=times, k_test_train=d["Kx"], h_ini_train=d["h0"], h_ini_test=d["h0x"], lr=lr)
    K, Kx, y, h0, h0x = (d[k].numpy() for k in ("K", "Kx", "y", "h0", "h0x"))
    for i, t in enumerate(times):
        # dh/dt = -lr K (2/n)(h - Y)
        h_t = y + scipy.linalg.expm(-lr * 2 / n * K * t) @ (h0 - y)
        assert rel(flow.train[i], h_t) <= 1e-10
        # test points follow h_test = h_ini_test + Kx K^{-1} (h_train(t) - h0) (integral of eq (3))
        assert rel(flow.test[i], h0x + Kx @ scipy.linalg.solve(K, h_t - h0, assume_a="pos")) <= 1e-10


def test_mse_flow_loss_decreases_monotonically() -> None:
    d = problem(20, seed=17)
    times = np.concatenate([[0.0], np.geomspace(1e-3, 1e4, 60)])
    flow = mse_flow(d["K"], d["y"], times=times, h_ini_train=d["h0"])
    losses = np.array([float(MSE(h, d["y"])) for h in flow.train])
    steps = np.diff(losses)
    assert np.all(steps <= 0)
    assert np.all(steps[losses[:-1] > 1e-25] < 0)  # strictly, until the loss underflows to exactly 0
    assert losses[-1] < 1e-12 * losses[0]


def test_mse_flow_one_eigendecomposition_for_many_times(monkeypatch: pytest.MonkeyPatch) -> None:
    d = problem(15, seed=18)
    calls = []
    real = torch.linalg.eigh

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.linalg, "eigh", spy)
    flow = mse_flow(d["K"], d["y"], times=np.linspace(0, 50, 40), k_test_train=d["Kx"])
    assert len(calls) == 1 and flow.train.shape == (40, 15)


def test_mse_flow_times_checked() -> None:
    d = problem(4)
    with pytest.raises(ValueError, match=r"times must be >= 0"):
        mse_flow(d["K"], d["y"], times=[1.0, -0.5])
    with pytest.raises(ValueError, match=r"lr must be a positive finite float"):
        mse_flow(d["K"], d["y"], times=[1.0], lr=0.0)


# ------------------------------------------------------------------ ODE flow for L^p losses


@pytest.mark.parametrize("p", [1.5, 2.0, 3.0, 4.0])
def test_ode_flow_converges_to_interpolant(p: float) -> None:
    d = problem(7, seed=19)
    kw = dict(k_test_train=d["Kx"], h_ini_train=d["h0"], h_ini_test=d["h0x"])
    res = ode_flow(d["K"], d["y"], loss=LpLoss(p), times=[0.0, 1.0, math.inf], **kw)
    assert res.converged and res.residual <= 1.001e-10  # the stop event is located on the dense output
    ref = interpolate(d["K"], d["y"], **kw)
    assert rel(res.final_test, ref) <= 1e-6 and rel(res.test[2], ref) <= 1e-6
    assert rel(res.final_train, d["y"]) <= 1e-6
    assert rel(res.train[0], d["h0"]) == 0.0
    losses = [float(LpLoss(p)(h, d["y"])) for h in res.train]
    assert losses[0] > losses[1] > losses[2]


def test_ode_flow_mse_matches_closed_form() -> None:
    d = problem(7, seed=20, outputs=2)
    kw = dict(k_test_train=d["Kx"], h_ini_train=d["h0"], h_ini_test=d["h0x"], lr=0.8)
    times = [0.1, 0.5, 2.0, 10.0, 40.0]
    res = ode_flow(d["K"], d["y"], loss=LpLoss(2), times=times, **kw)
    closed = mse_flow(d["K"], d["y"], times=times, **kw)
    for i in range(len(times)):
        assert rel(res.train[i], closed.train[i]) <= 1e-6
        assert rel(res.test[i], closed.test[i]) <= 1e-6
    # it stops where the tolerance is reached: the exact residual at t_final is tol
    at_stop = mse_flow(d["K"], d["y"], times=[res.t_final], **kw).train[0]
    assert rel(at_stop, d["y"]) / rel(d["h0"], d["y"]) == pytest.approx(1e-10, rel=1e-4)


def test_ode_flow_mixture_and_grad_tol() -> None:
    d = problem(6, seed=21)
    res = ode_flow(d["K"], d["y"], loss=0.5 * LpLoss(2) + LpLoss(3), times=[math.inf], k_test_train=d["Kx"])
    assert rel(res.final_test, interpolate(d["K"], d["y"], k_test_train=d["Kx"])) <= 1e-6
    res = ode_flow(d["K"], d["y"], loss=MSE, times=[math.inf], grad_tol=1e-9)
    assert res.converged and res.grad_norm <= 1.01e-9


def test_ode_flow_warns_when_tolerance_not_reached() -> None:
    d = problem(6, seed=22)
    with pytest.warns(ConvergenceWarning, match=r"stopped at t=2 .*\|\|grad_h dist\|\| = \d"):
        res = ode_flow(d["K"], d["y"], loss=LpLoss(4), times=[1.0, 2.0], max_time=2.0)
    assert not res.converged and res.t_final == pytest.approx(2.0, rel=1e-9)
    with pytest.raises(ValueError, match=r"times must not exceed max_time"):
        ode_flow(d["K"], d["y"], loss=MSE, times=[3.0], max_time=2.0)


def test_ode_flow_refuses_cross_entropy() -> None:
    d = problem(4)
    with pytest.raises(ValueError, match=r"outside the class of seed 000 §4"):
        ode_flow(d["K"], d["y"], loss=CrossEntropy(), times=[1.0])
    with pytest.raises(TypeError, match=r"loss must be a ntkcheck.dynamics.losses.Loss"):
        ode_flow(d["K"], d["y"], loss=lambda h, y: h, times=[1.0])  # type: ignore[arg-type]


@pytest.mark.parametrize("p", [1.5, 2.0, 4.0])
def test_polar_flow_jacobian_matches_finite_differences(p: float) -> None:
    rng = np.random.default_rng(23)
    A = rng.standard_normal((5, 5))
    flow = _PolarFlow(A @ A.T / 5 + 0.1 * np.eye(5), LpLoss(p), torch.from_numpy(rng.standard_normal(5)), 0.7)
    dvec = rng.standard_normal(5)
    u = np.concatenate([dvec / np.linalg.norm(dvec), [-0.3, 0.4]])
    J = flow.jac(0.0, u)
    eps = 1e-6
    Jn = np.stack([(flow.rhs(0.0, u + eps * e) - flow.rhs(0.0, u - eps * e)) / (2 * eps) for e in np.eye(7)], axis=1)
    assert np.abs(J - Jn).max() <= 1e-7 * np.abs(J).max()


def test_polar_flow_keeps_precision_far_from_zero_targets() -> None:
    # a shift-invariant loss is evaluated at (r, 0): h = Y + r would lose r ~ 1e-11 next to Y ~ 1e8
    rng = np.random.default_rng(29)
    A = rng.standard_normal((4, 4))
    K = A @ A.T / 4 + 0.1 * np.eye(4)
    Y = torch.from_numpy(rng.standard_normal(4))
    dvec = rng.standard_normal(4)
    u = np.concatenate([dvec / np.linalg.norm(dvec), [-25.0, 1.0]])
    near = _PolarFlow(K, LpLoss(3), Y, 1.0).rhs(0.0, u)
    far = _PolarFlow(K, LpLoss(3), Y + 1e8, 1.0).rhs(0.0, u)
    assert rel(far, near) <= 1e-12


# ------------------------------------------------------------------ gradient descent stability


def test_max_stable_lr_is_n_over_lambda_max() -> None:
    d = problem(12, seed=24)
    assert max_stable_lr(d["K"]) == pytest.approx(12 / np.linalg.eigvalsh(d["K"].numpy())[-1], rel=1e-12)


def test_gd_at_or_above_the_limit_raises() -> None:
    d = problem(12, seed=25)
    lr = max_stable_lr(d["K"])
    with pytest.raises(ValueError, match=r"lr=.* >= n / lambda_max = .*lambda_max="):
        mse_gd(d["K"], d["y"], lr=lr, steps=[10])


def test_gd_above_the_limit_warns_and_diverges() -> None:
    d = problem(12, seed=26)
    lr = 1.05 * max_stable_lr(d["K"])
    with pytest.warns(DivergenceWarning, match=r"lambda_max"):
        gd = mse_gd(d["K"], d["y"], lr=lr, steps=[0, 50, 100], on_unstable="warn")
    err = [float((h - d["y"]).norm()) for h in gd.train]
    assert err[2] > err[1] > err[0]


def test_gd_below_the_limit_matches_explicit_iteration() -> None:
    d = problem(9, seed=27)
    lr = 0.95 * max_stable_lr(d["K"])  # top mode oscillates (1 < c lambda < 2) but converges
    steps = [0, 1, 7, 60]
    gd = mse_gd(d["K"], d["y"], lr=lr, steps=steps, k_test_train=d["Kx"], h_ini_train=d["h0"], h_ini_test=d["h0x"])
    K, Kx, y, h, hx = (d[k].numpy().copy() for k in ("K", "Kx", "y", "h0", "h0x"))
    for k in range(61):
        if k in steps:
            i = steps.index(k)
            assert rel(gd.train[i], h) <= 1e-10 and rel(gd.test[i], hx) <= 1e-10
        grad = 2 / 9 * (h - y)
        h, hx = h - lr * K @ grad, hx - lr * Kx @ grad
    assert float(MSE(gd.train[3], d["y"])) < float(MSE(gd.train[2], d["y"]))
