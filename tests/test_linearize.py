"""The linearized network f_lin of seed 000 eq (1) and the min-norm interpolant of eq (4).

f_lin equals f at theta_0, is affine in theta, its increment is the jvp of f;
its NTK at every theta is the NTK of f at theta_0; optimizers move only theta;
min_norm_linearized interpolates, lies in the row space of J and has the least norm.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ntkcheck as nk
from ntkcheck.dynamics.linearization import Linearized, jacobian, linearize, min_norm_linearized
from ntkcheck.testing.tolerances import tolerance

F64 = torch.float64


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm().clamp_min(1e-300))


def mlp(d=2, widths=(16, 16), o=1, *, seed=0, device="cpu", **kw) -> nk.MLP:
    kw.setdefault("activation", "tanh")
    return nk.MLP(d, list(widths), o, dtype=F64, device=device, generator=torch.Generator().manual_seed(seed), **kw)


def data(n, d, *, seed=1, device="cpu") -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64).to(device)


def models(device):
    return {
        "ntk-tanh": mlp(device=device),
        "standard-relu-3out": mlp(3, (8,), 3, activation="relu", parametrization="standard", seed=2, device=device),
        "asi": nk.asi(mlp(seed=3, device=device)),
        "sequential": nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)).to(device=device, dtype=F64),
    }


@pytest.mark.parametrize("name", ["ntk-tanh", "standard-relu-3out", "asi", "sequential"])
def test_f_lin_at_theta0_is_f_exactly(name, device):
    torch.manual_seed(0)
    model = models(device)[name]
    x = data(7, 3 if name.startswith("standard") else 2, device=device)
    lin = linearize(model)
    with torch.no_grad():
        assert torch.equal(lin(x), model(x))
    assert [n for n, _ in lin.named_parameters()] == [n for n, _ in model.named_parameters()]
    assert float(lin.delta().abs().max()) == 0.0


def test_f_lin_is_affine_in_theta(device):
    model = mlp(device=device)
    lin = linearize(model)
    x = data(6, 2, device=device)
    g = torch.Generator().manual_seed(5)
    d1, d2 = (torch.randn(lin.n_params(), generator=g, dtype=F64).to(device) for _ in range(2))
    with torch.no_grad():
        f0 = model(x)
        f1 = lin.load_delta(d1)(x) - f0
        f2 = lin.load_delta(d2)(x) - f0
        a, b = 1.7, -0.6
        combo = lin.load_delta(a * d1 + b * d2)(x)
    assert rel(combo, f0 + a * f1 + b * f2) <= 1e-12
    # and it is NOT the network: f at theta_0 + d1 differs from f_lin there (d1 is O(1))
    with torch.no_grad():
        theta = {n: t + d for (n, t), d in zip(lin.theta0.items(), lin.delta(flat=False).values())}
        assert rel(torch.func.functional_call(model, theta, (x,)), combo) > 1e-3


def test_increment_is_the_jvp_of_f(device):
    """f_lin(theta_0 + eps d) - f(theta_0) is the directional derivative: central differences of f agree to O(eps^2)."""
    model = mlp(device=device)
    lin = linearize(model)
    x = data(5, 2, device=device)
    d = torch.randn(lin.n_params(), generator=torch.Generator().manual_seed(9), dtype=F64).to(device)
    shapes = [t.shape for t in lin.theta0.values()]

    def f_at(delta: torch.Tensor) -> torch.Tensor:
        params, start = {}, 0
        for (n, t0), s in zip(lin.theta0.items(), shapes):
            params[n] = t0 + delta[start : start + t0.numel()].view(s)
            start += t0.numel()
        return torch.func.functional_call(model, params, (x,))

    with torch.no_grad():
        jd = lin.load_delta(d)(x) - model(x)  # J d, exactly linear in d
        errors = []
        for eps in (1e-2, 5e-3):
            central = (f_at(eps * d) - f_at(-eps * d)) / (2 * eps)
            errors.append(rel(central, jd))
        # second-order accurate: halving eps divides the error by ~4
        assert 3.0 < errors[0] / errors[1] < 5.0
        assert errors[1] < 1e-3
        eps = 1e-5
        assert rel((f_at(eps * d) - f_at(-eps * d)) / (2 * eps), jd) < 1e-8
        # one-sided: f(theta_0 + eps d) - f_lin(theta_0 + eps d) = O(eps^2)
        gaps = [rel(f_at(e * d), lin.load_delta(e * d)(x)) for e in (1e-2, 5e-3)]
        assert 3.0 < gaps[0] / gaps[1] < 5.0


@pytest.mark.parametrize("out", [1, 2])
def test_ntk_of_linearization_is_ntk_of_f_at_theta0(out, device):
    model = mlp(3, (12, 12), out, device=device)
    lin = linearize(model)
    x1, x2 = data(5, 3, device=device), data(4, 3, seed=7, device=device)
    tol = tolerance("kernel_methods_agree", F64)
    ref = nk.ntk(model, x1, x2, per_layer=True)
    for delta in (None, torch.randn(lin.n_params(), generator=torch.Generator().manual_seed(2), dtype=F64)):
        if delta is not None:
            lin.load_delta(delta.to(device))  # the NTK of f_lin does not depend on theta
        got = nk.ntk(lin, x1, x2, per_layer=True)
        assert list(got) == list(ref)
        for key in ref:
            assert rel(got[key], ref[key]) <= tol, key
    assert rel(nk.ntk(lin, x1), nk.ntk(model, x1)) <= tol
    # J J^T of the explicit Jacobian (rows sample-major) is the same kernel
    j = jacobian(model, x1)
    k = nk.ntk(model, x1)
    k = k if out == 1 else k.permute(0, 2, 1, 3).reshape(5 * out, 5 * out)
    assert rel(j @ j.T, k) <= tol


def test_jacobian_rows_are_sample_major_and_match_the_linearization(device):
    model = mlp(2, (8,), 3, device=device)
    lin = linearize(model)
    x = data(4, 2, device=device)
    j = jacobian(model, x)
    assert j.shape == (4 * 3, lin.n_params())
    d = torch.randn(lin.n_params(), generator=torch.Generator().manual_seed(4), dtype=F64).to(device)
    with torch.no_grad():
        jd = (lin.load_delta(d)(x) - model(x)).reshape(-1)
    assert rel(j @ d, jd) <= 1e-12
    assert rel(jacobian(lin, x), j) <= 1e-12  # J of f_lin is J of f at theta_0, whatever theta


def test_optimizer_moves_only_trainable_parameters(device):
    model = mlp(device=device)
    model.layers[0].weight.requires_grad_(False)  # frozen: held fixed, not a parameter of the linearization
    lin = linearize(model)
    names = [n for n, _ in lin.named_parameters()]
    assert "layers.0.weight" not in names and names == [n for n, p in model.named_parameters() if p.requires_grad]
    assert "_fixed.layers.0.weight" in dict(lin.named_buffers())
    before = {n: t.clone() for n, t in lin.state_dict().items()}
    original = {n: t.clone() for n, t in model.state_dict().items()}
    x, y = data(6, 2, device=device), data(6, 1, seed=3, device=device)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        ((lin(x) - y) ** 2).mean().backward()
        opt.step()
    after = lin.state_dict()
    for n in before:
        moved = not torch.equal(before[n], after[n])
        assert moved == (n in names), n  # theta moves; theta_0 and the frozen weight do not
    assert all(torch.equal(original[n], t) for n, t in model.state_dict().items())  # the original is untouched
    assert rel(lin.delta(), torch.zeros(1, dtype=F64, device=device)) > 0
    # frozen weight still enters the function: f_lin at theta_0 is f exactly
    with torch.no_grad():
        assert torch.equal(lin.reset()(x), model(x))


def test_delta_round_trips_and_modules_move(device):
    model = mlp(device=device)
    lin = linearize(model)
    d = torch.randn(lin.n_params(), generator=torch.Generator().manual_seed(1), dtype=F64).to(device)
    assert torch.equal(lin.load_delta(d).delta(), d) or rel(lin.delta(), d) <= 1e-15
    as_dict = lin.delta(flat=False)
    assert list(as_dict) == list(lin.names)
    assert rel(lin.reset().load_delta(as_dict).delta(), d) <= 1e-15
    assert float(lin.reset().delta().abs().max()) == 0.0
    with pytest.raises(ValueError, match="delta"):
        lin.load_delta(d[:-1])
    with pytest.raises(ValueError, match="delta"):
        lin.load_delta({"layers.0.weight": as_dict["layers.0.weight"]})
    with pytest.raises(ValueError, match="delta"):
        lin.load_delta(d * float("nan"))
    # .to() moves the private copy of the network too
    lin32 = linearize(model).float()
    x = data(3, 2, device=device)
    assert lin32(x.float()).dtype == torch.float32
    assert rel(lin32(x.float()).double(), model(x)) < 1e-5


def test_min_norm_linearized_interpolates_in_the_row_space_with_least_norm(device):
    model = mlp(3, (16,), 2, activation="relu", seed=4, device=device)
    x, y = data(5, 3, device=device), data(5, 2, seed=8, device=device)
    lin = min_norm_linearized(model, x, y)
    assert isinstance(lin, Linearized)
    with torch.no_grad():
        assert float((lin(x) - y).abs().max()) <= 1e-10
    j = jacobian(model, x)
    delta = lin.delta()
    # a random vector of the null space of J: w - J^T (J J^T)^{-1} J w
    w = torch.randn(delta.numel(), generator=torch.Generator().manual_seed(6), dtype=F64).to(device)
    z = w - j.T @ torch.linalg.solve(j @ j.T, j @ w)
    assert float((j @ z).norm() / z.norm()) <= 1e-10
    assert abs(float(delta @ z)) <= 1e-10 * float(delta.norm() * z.norm())  # delta is orthogonal to null(J)
    for scale in (1e-3, 1.0):  # every other interpolant theta_inf + s z is farther from theta_0
        other = delta + scale * z
        with torch.no_grad():
            assert float((lin.load_delta(other)(x) - y).abs().max()) <= 1e-9  # still interpolates
        assert float(other.norm()) > float(delta.norm())


def test_min_norm_refuses_too_few_parameters_and_rank_deficiency(device):
    small = mlp(1, (2,), 1, seed=0, device=device)  # P = 7
    x, y = data(8, 1, device=device), data(8, 1, seed=2, device=device)
    with pytest.raises(ValueError, match="fewer parameters than data points"):
        min_norm_linearized(small, x, y)
    model = mlp(2, (16,), 1, device=device)
    x = data(4, 2, device=device)
    x[3] = x[0]  # repeated input: J has two equal rows
    with pytest.raises(ValueError, match="singular|rank"):
        min_norm_linearized(model, x, data(4, 1, seed=3, device=device))


def test_bad_arguments_name_the_argument(device):
    model = mlp(device=device)
    x = data(4, 2, device=device)
    with pytest.raises(TypeError, match="model"):
        linearize("not a module")
    frozen = mlp(device=device).requires_grad_(False)
    with pytest.raises(ValueError, match="model has no trainable parameters"):
        linearize(frozen)
    bad = x.clone()
    bad[1, 0] = float("nan")
    with pytest.raises(ValueError, match="x contains"):
        jacobian(model, bad)
    with pytest.raises(ValueError, match="x must have 2 features"):
        jacobian(model, data(4, 3, device=device))
    with pytest.raises(ValueError, match="x must have shape"):
        jacobian(model, x[0])
    with pytest.raises(ValueError, match="x must have the dtype of the model's parameters"):
        jacobian(model, x.float())
    with pytest.raises(ValueError, match="x_train contains"):
        min_norm_linearized(model, bad, torch.zeros(4, dtype=F64, device=device))
    with pytest.raises(ValueError, match="y_train must have shape"):
        min_norm_linearized(model, x, torch.zeros(5, dtype=F64, device=device))
    with pytest.raises(ValueError, match="y_train must have the dtype"):
        min_norm_linearized(model, x, torch.zeros(4, device=device))
    y = torch.zeros(4, dtype=F64, device=device)
    y[0] = float("inf")
    with pytest.raises(ValueError, match="y_train contains"):
        min_norm_linearized(model, x, y)


class _NoisyTanh(nn.Module):
    """tanh with functional dropout: random in training mode, invisible to a module scan."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.dropout(torch.tanh(x), p=0.5, training=self.training)


def _net(*middle: nn.Module) -> nn.Module:
    torch.manual_seed(12)
    return nn.Sequential(nn.Linear(2, 16), *middle, nn.Linear(16, 1)).to(F64)


@pytest.mark.parametrize(
    "build, names, fits_in_eval",
    [
        (lambda: _net(nn.Tanh(), nn.Dropout(0.5)), r"model\.2 \(Dropout, training mode: random\)", True),
        (lambda: _net(nn.Tanh(), nn.AlphaDropout(0.2)), r"model\.2 \(AlphaDropout, training mode", True),
        (lambda: _net(nn.RReLU()), r"model\.1 \(RReLU, training mode: random\)", False),
        (
            lambda: _net(nn.BatchNorm1d(16), nn.Tanh()),
            r"model\.1 \(BatchNorm1d, training mode: normalises by the batch\)",
            True,
        ),
        (
            lambda: _net(nn.BatchNorm1d(16, track_running_stats=False), nn.Tanh()).eval(),
            r"model\.1 \(BatchNorm1d, no running statistics: normalises by the batch\)",
            False,
        ),
        (lambda: linearize(_net(nn.Tanh(), nn.Dropout(0.5))), r"model\.base\.2 \(Dropout, training mode", True),
        (lambda: _net(_NoisyTanh()), r"two forward passes", True),
    ],
    ids=[
        "dropout",
        "alpha-dropout",
        "rrelu",
        "batchnorm-train",
        "batchnorm-no-running-stats",
        "linearized-dropout",
        "functional-dropout",
    ],
)
def test_min_norm_linearized_refuses_random_or_batch_coupled_models(build, names, fits_in_eval):
    model = build()
    x, y = data(6, 2), data(6, 1, seed=13)
    with pytest.raises(ValueError, match=rf"model .*{names}.*model\.eval\(\)"):
        min_norm_linearized(model, x, y)
    if fits_in_eval:  # in eval mode the net is a function of theta, and the solve fits Y
        lin = min_norm_linearized(model.eval(), x, y)
        with torch.no_grad():
            assert rel(lin.eval()(x), y) <= 1e-10


def test_min_norm_linearized_accuracy_on_an_ill_conditioned_jacobian():
    # f(x) = w . x has J = X: rows with singular values 1 ... 1e-6, cond(J J^T) = 1e12
    g = torch.Generator().manual_seed(14)
    U = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=F64))[0]
    V = torch.linalg.qr(torch.randn(30, 8, generator=g, dtype=F64))[0]
    x = U @ torch.diag(torch.logspace(0, -6, 8, dtype=F64)) @ V.T
    model = nn.Linear(30, 1, bias=False).to(F64)
    y = torch.randn(8, 1, generator=g, dtype=F64)
    with torch.no_grad():
        residual = (y - model(x)).flatten()
    ref = torch.linalg.lstsq(x, residual[:, None], driver="gelsd").solution.flatten()  # float64, SVD-based
    lin = min_norm_linearized(model, x, y)
    assert rel(lin.delta(), ref) <= 1e-9
