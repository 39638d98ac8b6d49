"""Training: the step-size check (the sharpness against the exact top eigenvalue, divergence at and beyond
the stability limit), NaN honesty and refused arguments."""

from __future__ import annotations

import math

import pytest
import torch
from _training_problems import F64, L4, mlp, problem
from torch import nn

import ntkcheck as nk
import ntkcheck.dynamics.curvature as curvature
from ntkcheck.dynamics.curvature import sharpness
from ntkcheck.dynamics.linearization import jacobian, linearize
from ntkcheck.dynamics.losses import MSE, LpLoss
from ntkcheck.dynamics.training import DivergenceWarning, TrainingDivergedError, train


def top_eig(k: torch.Tensor) -> float:
    return float(torch.linalg.eigvalsh(k)[-1])


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


def exact_lambda_max(model, x, y, loss) -> tuple[float, float]:
    """(largest, smallest) eigenvalue of J^T H J, dense: J by autograd over a flat parameter vector (the model
    in its current mode, its buffers left as they were), H = the loss Hessian at the current outputs."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    flat0 = torch.cat([p.detach().reshape(-1) for n, p in model.named_parameters() if p.requires_grad])
    shapes = [p.shape for n, p in model.named_parameters() if p.requires_grad]
    saved = {n: b.clone() for n, b in model.named_buffers()}

    def f(flat):
        parts, i = {}, 0
        for n, shape in zip(names, shapes):
            parts[n], i = flat[i : i + shape.numel()].reshape(shape), i + shape.numel()
        return torch.func.functional_call(model, {**parts, **{k: v.clone() for k, v in saved.items()}}, (x,))

    h0 = f(flat0).detach().reshape(y.shape)
    j = torch.autograd.functional.jacobian(lambda flat: f(flat).reshape(-1), flat0)
    hess = torch.autograd.functional.hessian(lambda h: loss(h.reshape(y.shape), y), h0.reshape(-1))
    w = torch.linalg.eigvalsh(j.T @ (0.5 * (hess + hess.T)) @ j)
    return float(w[-1]), float(w[0])


def bn_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Linear(16, 1)).double()


CHECK_MODELS = {
    "tanh": lambda: mlp(widths=(32,)),
    "relu-2-layers": lambda: mlp(widths=(24, 24), activation="relu"),
    "two-outputs": lambda: mlp(o=2),
    "batchnorm-train-mode": bn_net,
}


@pytest.mark.parametrize("loss", [MSE, L4], ids=["mse", "l4"])
@pytest.mark.parametrize("name", list(CHECK_MODELS))
def test_the_checks_estimate_is_within_its_margin_of_the_exact_lambda_max(name, loss):
    """train()'s Lanczos estimate theta: a lower bound of lambda_max within CHECK_RTOL of it (its stated margin)."""
    x, y = problem(16)
    model = CHECK_MODELS[name]()
    if name == "two-outputs":
        y = torch.stack([y, -y], dim=1)
    exact, _ = exact_lambda_max(model, x, y, loss)
    params = [p for p in model.parameters() if p.requires_grad]
    estimate = curvature._measure(model, x, y, loss, params, curvature.CHECK_RTOL, curvature._CHECK_NCV)
    assert estimate <= exact * (1 + 1e-12) and exact <= estimate * (1 + curvature.CHECK_RTOL), (estimate, exact)
    result = train(model, x, y, loss, lr=1e-3, steps=1)
    assert result.sharpness == estimate and result.lr_check_skipped is None


def test_sharpness_agrees_with_the_dense_eigenvalue_in_train_mode_batchnorm():
    x, y = problem(16)
    model = bn_net()
    before = {n: b.clone() for n, b in model.named_buffers()}
    exact, _ = exact_lambda_max(model, x, y, MSE)
    assert math.isclose(sharpness(model, x, y, MSE), exact, rel_tol=1e-10)
    for n, b in model.named_buffers():  # the running statistics are left as they were
        assert torch.equal(b, before[n]), n


def cosine_loss(h, t):
    """1 - cos(h - y), averaged: curvature cos(r) / n, negative where |r| > pi / 2."""
    return (1 - torch.cos(h - t)).mean()


def test_indefinite_curvature_gives_the_largest_algebraic_eigenvalue():
    """A loss with negative curvature at most outputs: sharpness is the largest eigenvalue of J^T H J, not the
    one of largest magnitude (negative here), for more than 2048 outputs as for few."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2100, 3, generator=g, dtype=F64)
    model = mlp(widths=(6,))
    with torch.no_grad():
        h = model(x).reshape(-1)
    y = h - torch.where(x[:, 0] > 0, 0.0, math.pi)  # r = 0 (curvature +1/n) or pi (-1/n) by input region
    largest, smallest = exact_lambda_max(model, x, y, cosine_loss)
    assert largest > 0.05 and -smallest > 2.5 * largest  # indefinite, and the negative side dominates in magnitude
    assert math.isclose(sharpness(model, x, y, cosine_loss), largest, rel_tol=1e-9)


@pytest.mark.parametrize(
    "loss",
    [LpLoss(1.5), MSE + LpLoss(1.2), lambda h, t: (h - t).abs().pow(1.5).mean()],
    ids=["lp1.5", "mixture", "callable"],
)
def test_sharpness_refuses_curvature_unbounded_at_a_zero_residual(loss):
    x, y = problem()
    model = mlp()
    with torch.no_grad():
        y[3] = model(x)[3, 0]  # a zero residual: p (p-1) |r|^(p-2) is unbounded there
    with pytest.raises(
        curvature.CurvatureError,
        match=r"loss .* curvature .*smallest \|h_i - y_i\| at the "
        r"current outputs is 0\.000e\+00 \(entry 3\)",
    ) as info:
        sharpness(model, x, y, loss)
    assert isinstance(info.value, ValueError) and str(info.value).startswith("loss ")
    # train() skips its step-size check and says why (no NaN anywhere)
    result = train(model, x, y, loss, lr=1e-3, steps=2)
    assert result.sharpness is None and "curvature" in result.lr_check_skipped


def test_sharpness_of_lp_below_2_is_finite_and_exact_away_from_zero_residuals():
    x, y = problem()
    model = mlp()
    exact, _ = exact_lambda_max(model, x, y, LpLoss(1.5))
    assert math.isclose(sharpness(model, x, y, LpLoss(1.5)), exact, rel_tol=1e-9)


class DropoutNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.l1, self.l2 = nn.Linear(3, 32).double(), nn.Linear(32, 1).double()
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=F64))
        self.drop = nn.Dropout(0.3)

    def forward(self, x):
        return self.l2(self.drop(torch.tanh(self.l1(x))))


def manual_gd(model, x, y, lr, steps):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        MSE(model(x).reshape(-1), y).backward()
        opt.step()


@pytest.mark.parametrize("make", [DropoutNet, bn_net], ids=["dropout", "batchnorm"])
def test_train_mode_dropout_and_batchnorm_train_with_the_check(make):
    """The check runs on the model as it trains (batch statistics, the first step's dropout mask); checks,
    the lr check and the test loss leave no trace: the run equals plain gradient descent step for step."""
    x, y = problem(12)
    xt, yt = problem(5, seed=4)
    model, twin = make(), make()
    torch.manual_seed(11)
    result = train(model, x, y, MSE, lr=0.05, steps=7, x_test=xt, y_test=yt)
    torch.manual_seed(11)
    manual_gd(twin, x, y, 0.05, 7)
    assert result.sharpness is not None and result.sharpness > 0 and result.lr_check_skipped is None
    for (n, a), b in zip(model.state_dict().items(), twin.state_dict().values()):
        assert torch.equal(a, b), n  # parameters, running statistics, num_batches_tracked


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
        (
            dict(x=torch.zeros(8, 3)),
            ValueError,
            r"x must have the dtype of the model's parameters \(torch.float64\), got torch.float32",
        ),
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
    assert info.value.result.history.steps == (0,)
    assert math.isfinite(info.value.result.final_loss)


def test_data_on_another_device_than_the_model_is_refused_not_moved() -> None:
    """train() names both devices instead of moving the data to the model's device."""
    model = nk.MLP(3, [4], 1, dtype=F64).to("meta")
    x, y = torch.zeros(8, 3, dtype=F64), torch.zeros(8, 1, dtype=F64)
    with pytest.raises(ValueError, match=r"x must be on the device of the model's parameters \(meta\), got cpu"):
        train(model, x, y, MSE, steps=1, lr=0.1)
