"""Training: the loop's bookkeeping and seed 000 Thm 5.

Thm 5 (seed 000 §4 / App. 9): gradient descent on the linearized network ends at
the same parameters theta_inf = theta_0 + J^T (J J^T)^{-1} (Y - f(X; theta_0)) for
the L2 and the L4 loss alike; checked here to 1e-6 relative on theta - theta_0.
"""

from __future__ import annotations

import math

import pytest
import torch
from _training_problems import F64, L4, mlp, problem

import ntkcheck as nk
from ntkcheck.dynamics.curvature import sharpness
from ntkcheck.dynamics.linearization import linearize, min_norm_linearized
from ntkcheck.dynamics.losses import MSE, CrossEntropy
from ntkcheck.dynamics.results import TrainResult
from ntkcheck.dynamics.training import train

# -- seed 000 Thm 5 -------------------------------------------------------------------------------


def thm5_setup():
    """4 unit-norm inputs in R^4, a 4-32-1 ReLU network in seed 000 §7's parametrization (P = 193 >> n = 4)."""
    g = torch.Generator().manual_seed(100)
    x = torch.randn(4, 4, generator=g, dtype=F64)
    x = x / x.norm(dim=1, keepdim=True)
    y = torch.sin(3 * x[:, 0])
    model = nk.MLP(
        4,
        [32],
        1,
        activation="relu",
        parametrization="standard",
        init="glorot",
        dtype=F64,
        generator=torch.Generator().manual_seed(0),
    )
    return model, x, y


def test_thm5_gradient_descent_with_l2_and_l4_ends_at_the_min_norm_solution():
    model, x, y = thm5_setup()
    target = min_norm_linearized(model, x, y).delta()
    assert float(target.norm()) > 0.1  # a genuine displacement

    # L2: plain GD at a fixed step below the stability limit; linear convergence
    lin2 = linearize(model)
    lr = 1.9 / sharpness(lin2, x, y, MSE)
    r2 = train(lin2, x, y, MSE, lr=lr, steps=5000, loss_threshold=1e-28, record_every=100)
    assert r2.converged and r2.steps_run < 5000
    err2 = float((lin2.delta() - target).norm() / target.norm())
    assert err2 <= 1e-6, err2

    # L4: plain GD; the Hessian (12/n) diag(r^2) vanishes at the optimum (polynomial rate), so the step is
    # raised in stages: each stage runs at half the current limit 2/lambda_max until the loss drops 16x
    # (the residual halves, so the limit grows ~4x).  Every step is theta <- theta - lr * grad.
    lin4 = linearize(model)
    early = None
    stages = 0
    while True:
        lr = 1.0 / sharpness(lin4, x, y, L4)
        with torch.no_grad():
            current = float(L4(lin4(x).reshape(-1), y))
        r4 = train(lin4, x, y, L4, lr=lr, steps=5000, loss_threshold=current / 16, record_every=1000)
        assert r4.converged, f"stage {stages} did not reach its threshold in 5000 steps"
        stages += 1
        if early is None:  # the L4 trajectory is not the L2 one: after one stage it is far from theta_inf
            early = float((lin4.delta() - target).norm() / target.norm())
        if r4.final_loss < 1e-30:
            break
        assert stages < 60
    err4 = float((lin4.delta() - target).norm() / target.norm())
    assert early > 1e-2
    assert err4 <= 1e-6, err4
    # and both end at the same parameters, not merely at outputs that interpolate
    assert float((lin4.delta() - lin2.delta()).norm() / target.norm()) <= 2e-6


# -- the loop's bookkeeping -----------------------------------------------------------------------


def test_gd_loss_decreases_and_stops_at_budget(device):
    x, y = problem(device=device)
    lin = linearize(mlp(device=device))
    lr = 1.0 / sharpness(lin, x, y, MSE)
    result = train(lin, x, y, MSE, lr=lr, steps=40, record_every=10)
    assert isinstance(result, TrainResult) and result.model is lin
    assert result.steps_run == 40 and not result.converged
    assert result.history.steps == (0, 10, 20, 30, 40)
    losses = result.history.train_loss
    assert all(b < a for a, b in zip(losses, losses[1:]))  # GD below the limit on a quadratic: monotone
    assert losses[-1] < 0.5 * losses[0]
    assert result.final_loss == losses[-1]
    with torch.no_grad():
        assert math.isclose(result.final_loss, float(MSE(lin(x).reshape(-1), y)), rel_tol=1e-12)
    assert result.history.test_loss is None
    assert math.isclose(result.lr_limit, 2 / result.sharpness)


def test_stops_at_loss_threshold(device):
    x, y = problem(device=device)
    model = mlp(device=device)
    lr = 0.5 * 2 / sharpness(model, x, y, MSE)
    reference = train(mlp(device=device), x, y, MSE, lr=lr, steps=300, record_every=1)
    threshold = reference.history.train_loss[57] * 1.0000001  # first crossed at step 57
    result = train(model, x, y, MSE, lr=lr, steps=300, loss_threshold=threshold, record_every=25)
    assert result.converged and result.steps_run == 57
    assert result.final_loss < threshold
    assert result.history.steps == (0, 25, 50, 57)
    assert result.history.train_loss[-1] == result.final_loss
    # a threshold never reached: the budget ends the run, not converged
    result = train(mlp(device=device), x, y, MSE, lr=lr, steps=30, loss_threshold=1e-12)
    assert result.steps_run == 30 and not result.converged


def test_test_loss_is_recorded_at_the_interval(device):
    x, y = problem(device=device)
    xt, yt = problem(5, seed=9, device=device)
    model = mlp(device=device)
    lr = 0.5 / sharpness(model, x, y, MSE)
    result = train(model, x, y, MSE, lr=lr, steps=23, record_every=5, x_test=xt, y_test=yt)
    assert result.history.steps == (0, 5, 10, 15, 20, 23)
    assert len(result.history.test_loss) == len(result.history.steps)
    with torch.no_grad():
        assert math.isclose(result.history.test_loss[-1], float(MSE(model(xt).reshape(-1), yt)), rel_tol=1e-12)
        fresh = mlp(device=device)
        assert math.isclose(result.history.test_loss[0], float(MSE(fresh(xt).reshape(-1), yt)), rel_tol=1e-12)
    assert result.history.test_loss[0] != result.history.test_loss[-1]


def test_sgd_is_reproducible_with_the_generator(device):
    x, y = problem(12, device=device)

    def run(seed):
        model = mlp(device=device)
        train(
            model,
            x,
            y,
            MSE,
            optimizer="sgd",
            lr=0.05,
            steps=15,
            batch_size=4,
            generator=torch.Generator().manual_seed(seed),
        )
        return torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_adam_and_optimizer_instances_run(device):
    x, y = problem(device=device)
    model = mlp(device=device)
    result = train(model, x, y, MSE, optimizer="adam", lr=1e-2, steps=60, record_every=20)
    assert result.history.train_loss[-1] < result.history.train_loss[0]
    assert result.sharpness is None  # Adam is not checked
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    result = train(model, x, y, MSE, optimizer=opt, steps=5)
    assert result.steps_run == 5 and result.sharpness is not None
    with pytest.raises(ValueError, match="optimizer holds"):
        train(mlp(device=device), x, y, MSE, optimizer=opt, steps=5)
    with pytest.raises(ValueError, match="lr must be None"):
        train(model, x, y, MSE, optimizer=opt, lr=0.1, steps=5)


def test_integer_labels_with_cross_entropy(device):
    x, _ = problem(9, device=device)
    labels = torch.arange(9, device=device) % 3
    model = mlp(o=3, device=device)
    result = train(model, x, labels, CrossEntropy(), lr=0.5, steps=30, record_every=10)
    assert result.history.train_loss[-1] < result.history.train_loss[0]


def test_progress_bar_runs(device, capsys):
    x, y = problem(device=device)
    result = train(mlp(device=device), x, y, MSE, lr=0.01, steps=3, progress=True)
    assert result.steps_run == 3
