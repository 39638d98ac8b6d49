"""Training: the loop's bookkeeping, the step-size check, NaN honesty, and seed 000 Thm 5.

Thm 5 (seed 000 §4 / App. 9): gradient descent on the linearized network ends at
the same parameters theta_inf = theta_0 + J^T (J J^T)^{-1} (Y - f(X; theta_0)) for
the L2 and the L4 loss alike; checked here to 1e-6 relative on theta - theta_0.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import ntkcheck as nk
from ntkcheck.linearize import jacobian, linearize, min_norm_linearized
from ntkcheck.losses import MSE, CrossEntropy, LpLoss
from ntkcheck.training import DivergenceWarning, TrainingDivergedError, TrainResult, sharpness, train
import ntkcheck.training as training_module

F64 = torch.float64
L4 = LpLoss(4)


def mlp(d=3, widths=(16,), o=1, *, seed=0, device="cpu", **kw) -> nk.MLP:
    return nk.MLP(d, list(widths), o, dtype=F64, device=device, generator=torch.Generator().manual_seed(seed), **kw)


def problem(n=8, d=3, *, seed=1, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=F64)
    y = torch.sin(2 * x[:, 0]) + 0.3 * x[:, 1]
    return x.to(device), y.to(device)


def top_eig(k: torch.Tensor) -> float:
    return float(torch.linalg.eigvalsh(k)[-1])


# -- seed 000 Thm 5 -------------------------------------------------------------------------------


def thm5_setup():
    """4 unit-norm inputs in R^4, a 4-32-1 ReLU network in seed 000 §7's parametrization (P = 193 >> n = 4)."""
    g = torch.Generator().manual_seed(100)
    x = torch.randn(4, 4, generator=g, dtype=F64)
    x = x / x.norm(dim=1, keepdim=True)
    y = torch.sin(3 * x[:, 0])
    model = nk.MLP(4, [32], 1, activation="relu", parametrization="standard", init="glorot",
                   dtype=F64, generator=torch.Generator().manual_seed(0))
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
    assert result.history.steps == [0, 10, 20, 30, 40]
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
    assert result.history.steps == [0, 25, 50, 57]
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
    assert result.history.steps == [0, 5, 10, 15, 20, 23]
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
        train(model, x, y, MSE, optimizer="sgd", lr=0.05, steps=15, batch_size=4,
              generator=torch.Generator().manual_seed(seed))
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


# -- the step-size check ----------------------------------------------------------------------------


def test_mse_sharpness_is_two_over_n_times_the_top_ntk_eigenvalue(device):
    x, y = problem(device=device)
    model = mlp(o=2, device=device)
    y2 = torch.stack([y, -y], dim=1)
    k = nk.ntk(model, x).permute(0, 2, 1, 3).reshape(16, 16)
    assert math.isclose(sharpness(model, x, y2, MSE), 2 / 8 * top_eig(k), rel_tol=1e-10)


def test_l4_sharpness_is_the_top_eigenvalue_of_the_gauss_newton_matrix(device):
    x, y = problem(device=device)
    model = mlp(device=device)
    j = jacobian(model, x)
    with torch.no_grad():
        r = model(x).reshape(-1) - y
    gauss_newton = j.T @ torch.diag(12 / 8 * r**2) @ j  # parameter-space Hessian of the L4 loss of f_lin
    assert math.isclose(sharpness(model, x, y, L4), top_eig(gauss_newton), rel_tol=1e-9)


def test_power_iteration_agrees_with_the_dense_computation(device, monkeypatch):
    x, y = problem(device=device)
    model = mlp(device=device)
    dense = sharpness(model, x, y, L4)
    monkeypatch.setattr(training_module, "DENSE_LIMIT", 0)
    assert math.isclose(sharpness(model, x, y, L4), dense, rel_tol=1e-5)


def test_divergence_warning_at_the_stability_limit_and_real_divergence_beyond(device):
    x, y = problem(device=device)
    model = mlp(device=device)
    limit = 2 / (2 / 8 * top_eig(nk.ntk(model, x)))  # 2 / lambda_max(H), H = (2/n) K
    with pytest.warns(DivergenceWarning, match=r"2/lambda_max"):
        train(linearize(model), x, y, MSE, lr=1.0001 * limit, steps=1)
    with pytest.warns(DivergenceWarning):  # an optimizer instance (plain SGD) is checked too
        lin = linearize(model)
        train(lin, x, y, MSE, optimizer=torch.optim.SGD(lin.parameters(), lr=1.2 * limit), steps=1)
    # just below: no warning (filterwarnings=error would turn one into a failure) and GD converges
    below = train(linearize(model), x, y, MSE, lr=0.95 * limit, steps=300, record_every=300)
    assert below.final_loss < 1e-3 * below.history.train_loss[0]
    # just above: the linearized model genuinely diverges (the warning is not a false alarm)
    with pytest.warns(DivergenceWarning):
        above = train(linearize(model), x, y, MSE, lr=1.05 * limit, steps=200, record_every=200)
    assert above.final_loss > 10 * above.history.train_loss[0]
    # minibatch SGD is not checked
    train(linearize(model), x, y, MSE, optimizer="sgd", batch_size=4, lr=1.2 * limit, steps=1)


def test_nan_loss_raises_with_the_history_attached(device):
    x, y = problem(device=device)
    model = mlp(device=device)
    limit = 2 / sharpness(model, x, y, MSE)

    def plain_mse(h, t):  # returns NaN/inf instead of raising, as a user loss may
        return ((h - t) ** 2).mean()

    for loss in (plain_mse, MSE):
        with pytest.raises(FloatingPointError, match=r"at step \d+ \(last finite training loss") as info:
            train(linearize(model), x, y, loss, lr=40 * limit, steps=10_000, record_every=1, check_lr=False)
        err = info.value
        assert isinstance(err, TrainingDivergedError)
        result = err.result
        assert result.steps_run < 10_000 and not result.converged
        assert f"at step {result.steps_run} " in str(err)
        assert len(result.history.steps) == result.steps_run  # steps 0 .. steps_run - 1 were recorded
        assert all(math.isfinite(v) for v in result.history.train_loss)
        assert result.final_loss == result.history.train_loss[-1]
        assert result.history.train_loss[-1] > result.history.train_loss[0]


@pytest.mark.parametrize(
    "change, exc, match",
    [
        (dict(lr=0.0), ValueError, "lr"),
        (dict(lr=-1.0), ValueError, "lr"),
        (dict(lr=float("nan")), ValueError, "lr"),
        (dict(lr=None), TypeError, "lr"),
        (dict(steps=0), ValueError, "steps"),
        (dict(steps=2.5), TypeError, "steps"),
        (dict(record_every=0), ValueError, "record_every"),
        (dict(optimizer="sgd", batch_size=0), ValueError, "batch_size"),
        (dict(optimizer="sgd", batch_size=9), ValueError, "batch_size"),
        (dict(batch_size=4), ValueError, "batch_size"),  # gd is full batch
        (dict(optimizer="lbfgs"), ValueError, "optimizer"),
        (dict(loss_threshold=float("inf")), ValueError, "loss_threshold"),
        (dict(loss="mse"), TypeError, "loss"),
        (dict(generator=0), TypeError, "generator"),
        (dict(x="x"), TypeError, "x must be"),
        (dict(x=torch.zeros(8, 2, dtype=F64)), ValueError, "x must have 3 features"),
        (dict(x=torch.full((8, 3), float("nan"), dtype=F64)), ValueError, "x contains"),
        (dict(x=torch.zeros(8, 3)), TypeError, "x must have the dtype"),
        (dict(y=torch.zeros(7, dtype=F64)), ValueError, "y must have one row per row of x"),
        (dict(y=torch.zeros(8, 2, dtype=F64)), ValueError, "y has shape"),
        (dict(y=torch.full((8,), float("inf"), dtype=F64)), ValueError, "y contains"),
        (dict(x_test=torch.zeros(2, 3, dtype=F64)), ValueError, "x_test and y_test"),
        (dict(x_test=torch.zeros(2, 3, dtype=F64), y_test=torch.zeros(3, dtype=F64)), ValueError, "y_test"),
        (dict(model=lambda t: t), TypeError, "model"),
        (dict(model=mlp().requires_grad_(False)), ValueError, "model has no trainable parameters"),
    ],
)
def test_bad_arguments_name_the_argument(change, exc, match):
    x, y = problem()
    kwargs = dict(model=mlp(), x=x, y=y, loss=MSE, lr=0.01, steps=3)
    kwargs.update(change)
    with pytest.raises(exc, match=match):
        train(**kwargs)


class LogOutput(nn.Module):
    """f(x) = log(c) + 0 * x: gradient descent towards a very negative target drives c below 0, f to NaN."""

    def __init__(self) -> None:
        super().__init__()
        self.in_features = 3
        self.c = nn.Parameter(torch.tensor(1.0, dtype=F64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(self.c) + 0 * x[:, :1]


def test_nan_outputs_raise_diverged_even_with_a_loss_that_validates_its_input(device):
    """LpLoss refuses NaN h with a ValueError; train() must still report the divergence, with the history."""
    x, _ = problem(device=device)
    y = torch.full((8,), -50.0, dtype=F64, device=device)
    with pytest.raises(TrainingDivergedError, match=r"outputs hold .* at step 1 ") as info:
        train(LogOutput().to(device), x, y, MSE, lr=0.1, steps=50, check_lr=False)
    assert info.value.result.history.steps == [0]
    assert math.isfinite(info.value.result.final_loss)
