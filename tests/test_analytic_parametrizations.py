"""Tests of ntkcheck.kernels.analytic: the standard parametrization, frozen parameters and the activations
(closed forms of kinked ones, quadrature for unknown ones).

Everything runs in float64 with explicit torch.Generator seeds, so the statistical
tests are deterministic; their tolerances are derived in the comments.
"""

from __future__ import annotations

import math

import pytest
import torch
from _analytic_cases import DTYPE, _grid, empirical_ntk, make_inputs, make_mlp, within_standard_errors
from scipy import integrate

import ntkcheck as nk
import ntkcheck.kernels.gaussian as gaussian
from ntkcheck.kernels.analytic import analytic_nngp, analytic_ntk
from ntkcheck.models import ACTIVATIONS, MLP, Transformer

# ---------------------------------------------------------------- standard parametrization


def test_standard_parametrization_one_hidden_layer_by_hand() -> None:
    # W1 ~ N(0, 1.2^2 / 3), b ~ N(0, 0.3^2): q = 1.2^2 |x|^2 / 3 + 0.3^2 (the NTK-parametrization NNGP).
    # Gradients w.r.t. the raw parameters: Theta = m E[relu relu] + 1 + 1.2^2 E[relu' relu'] (<x, x> + 1),
    # on the diagonal m q / 2 + 1 + 1.2^2 (|x|^2 + 1) / 2 (neural-tangents' parameterization="standard").
    m, x = 50, make_inputs(4)
    model = make_mlp([m], "relu", parametrization="standard")
    q = 1.2**2 * (x * x).sum(1) / 3 + 0.3**2
    expected = m * q / 2 + 1 + 1.2**2 * ((x * x).sum(1) + 1) / 2
    assert torch.allclose(analytic_ntk(model, x).diagonal(), expected, rtol=1e-14, atol=0)
    assert torch.allclose(analytic_nngp(model, x), analytic_nngp(make_mlp([m], "relu"), x), rtol=1e-14, atol=0)


@pytest.mark.parametrize("depth,width,nets", [(1, 128, 48), (2, 256, 24)])
def test_standard_parametrization_ntk_matches_monte_carlo(depth: int, width: int, nets: int) -> None:
    # The standard-parametrization kernel is the expectation of the empirical NTK of standard-parametrised
    # nets (fan_in init): one hidden layer, exactly at any width (4 standard errors); two, + O(1/m): allow
    # 2 max|Theta| / m.
    x = torch.cat([make_inputs(3), torch.zeros(1, 3, dtype=DTYPE)])
    models = [make_mlp([width] * depth, "erf", seed=s, parametrization="standard") for s in range(nets)]
    theta = analytic_ntk(models[0], x)
    samples = torch.stack([empirical_ntk(m, x) for m in models])
    within_standard_errors(samples, theta, (depth - 1) * 2 * float(theta.abs().max()) / width)


def test_glorot_and_attention_are_refused_by_name() -> None:
    x = make_inputs(2)
    with pytest.raises(ValueError, match="glorot"):
        analytic_ntk(MLP(3, [8], parametrization="standard", init="glorot", dtype=DTYPE), x)
    model = Transformer(d_model=8, n_heads=2, n_blocks=1, mlp_width=8, in_features=3, positional="none", dtype=DTYPE)
    with pytest.raises(ValueError, match="no infinite-width limit implemented for SelfAttention"):
        analytic_ntk(model, x[:, None, :])


# ---------------------------------------------------------------- frozen parameters


def _frozen(model: MLP, names: tuple[str, ...]) -> MLP:
    for name, p in model.named_parameters():
        p.requires_grad_(name not in names)
    return model


def test_frozen_first_layer_gives_the_empirical_limit() -> None:
    # Width 4096, first layer frozen: only the readout trains, so the NTK is the NNGP exactly in the limit;
    # the mean of 3 nets is within 10 max|Theta| / sqrt(m S) (>= 5 standard deviations) of it.
    x, frozen = make_inputs(4), ("layers.0.weight", "layers.0.bias")
    theta = analytic_ntk(_frozen(make_mlp([4096], "relu"), frozen), x)
    assert torch.allclose(theta, analytic_nngp(make_mlp([4096], "relu"), x), rtol=1e-14, atol=0)
    mean = torch.stack([nk.ntk(_frozen(make_mlp([4096], "relu", seed=s), frozen), x) for s in range(3)]).mean(0)
    tol = 10 * theta.abs().max() / math.sqrt(4096 * 3)
    assert (mean - theta).abs().max() <= tol
    assert (analytic_ntk(make_mlp([4096], "relu"), x) - mean).abs().max() > 10 * tol  # the full kernel is not it


@pytest.mark.parametrize("kernel", [analytic_ntk, analytic_nngp])
def test_kernel_is_the_sum_of_each_trainable_parameters_term(kernel) -> None:
    # Theta = sum over parameters of its own term: training one parameter at a time and summing gives the
    # full NTK; the NNGP does not depend on what is trainable.
    x = make_inputs(5)
    names = [n for n, _ in make_mlp([6, 6], "tanh").named_parameters()]
    full = kernel(make_mlp([6, 6], "tanh"), x)
    parts = [kernel(_frozen(make_mlp([6, 6], "tanh"), tuple(n for n in names if n != keep)), x) for keep in names]
    if kernel is analytic_ntk:
        assert torch.allclose(sum(parts), full, rtol=1e-12, atol=0)
        assert all((p - full).abs().max() > 1e-3 * full.abs().max() for p in parts)
    else:
        assert all(torch.equal(p, full) for p in parts)


def test_frozen_middle_weight_matches_monte_carlo() -> None:
    # Only layers.1.weight trains (2 hidden layers, width 1024, 6 nets): 4 standard errors + 2 max|Theta| / m.
    x, keep = make_inputs(3), "layers.1.weight"
    names = tuple(n for n, _ in make_mlp([4, 4], "relu").named_parameters() if n != keep)
    models = [_frozen(make_mlp([1024, 1024], "relu", seed=s), names) for s in range(6)]
    theta = analytic_ntk(models[0], x)
    within_standard_errors(torch.stack([nk.ntk(m, x) for m in models]), theta, 2 * float(theta.abs().max()) / 1024)


# ---------------------------------------------------------------- activations


def _gaussian_expectation(f, g, q1: float, q2: float, rho: float) -> float:
    """E[f(u) g(v)] by scipy's adaptive quadrature on the four regions cut by u = 0 and v = 0 (kinks, jumps)."""
    c = math.sqrt(1 - rho * rho)

    def line(z1):
        return -rho * z1 / c  # v > 0  <=>  z2 > line(z1)

    opts = {"epsabs": 1e-12, "epsrel": 1e-12}

    def integrand(z2: float, z1: float) -> float:
        u, v = math.sqrt(q1) * z1, math.sqrt(q2) * (rho * z1 + c * z2)
        return f(u) * g(v) * math.exp(-(z1 * z1 + z2 * z2) / 2) / (2 * math.pi)

    total = 0.0
    for a, b in ((0, math.inf), (-math.inf, 0)):
        total += integrate.dblquad(integrand, a, b, line, math.inf, **opts)[0]
        total += integrate.dblquad(integrand, a, b, -math.inf, line, **opts)[0]
    return total


_SCALAR = {
    "abs": (abs, lambda t: math.copysign(1.0, t) if t else 0.0),
    "leaky_relu": (lambda t: t if t > 0 else 0.01 * t, lambda t: 1.0 if t > 0 else 0.01),
    "sign": (lambda t: math.copysign(1.0, t) if t else 0.0, lambda t: 0.0),
}


@pytest.mark.parametrize("q1,q2,rho", [(1.0, 1.0, 0.5), (0.3, 2.0, -0.7)])
@pytest.mark.parametrize("activation", sorted(_SCALAR))
def test_kinked_closed_forms_match_adaptive_quadrature(activation: str, q1: float, q2: float, rho: float) -> None:
    def t(v):
        return torch.tensor([v], dtype=DTYPE)

    args = (t(q1), t(q2), t(rho * math.sqrt(q1 * q2)))
    f, df = _SCALAR[activation]
    for closed, g in zip(gaussian._EXPECTATIONS[activation], (f, df)):
        assert closed(*args).item() == pytest.approx(_gaussian_expectation(g, g, q1, q2, rho), abs=1e-8)


@pytest.mark.parametrize("activation", ["abs", "leaky_relu", "sign"])
def test_registered_kinked_activation_matches_wide_network(activation: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Registered under its name, the activation gets its closed form; vs 3 nets of width 4096 (10 max|Theta| /
    # sqrt(m S) >= 5 standard deviations, as above).
    monkeypatch.setitem(ACTIVATIONS, activation, gaussian._PHI[activation][0])
    x = make_inputs(4)
    theta = analytic_ntk(make_mlp([4096], activation), x)
    mean = torch.stack([nk.ntk(make_mlp([4096], activation, seed=s), x) for s in range(3)]).mean(0)
    assert (mean - theta).abs().max() <= 10 * theta.abs().max() / math.sqrt(4096 * 3)
    closed = gaussian._expectations(activation, quadrature=False)
    assert closed == gaussian._EXPECTATIONS[activation]


def _silu_dot(x: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(x)
    return s * (1 + x * (1 - s))


@pytest.mark.parametrize("kernel", [analytic_ntk, analytic_nngp])
def test_unknown_activation_goes_to_quadrature(kernel, monkeypatch: pytest.MonkeyPatch) -> None:
    # silu, registered by a user: the polar rule on phi and on phi' (by autograd), equal to the rule on the
    # exact derivative to 1e-13; a callable given as activation= gives the same kernel.
    silu = torch.nn.functional.silu
    monkeypatch.setitem(ACTIVATIONS, "silu", silu)
    x = torch.cat([make_inputs(4), torch.zeros(1, 3, dtype=DTYPE)])
    k = kernel(make_mlp([8, 8], "silu"), x)
    assert torch.isfinite(k).all()
    assert torch.allclose(kernel(make_mlp([8, 8], "relu"), x, activation=lambda t: silu(t)), k, rtol=1e-14, atol=0)
    q1, q2, s = _grid(2.0)
    e_dphi = gaussian._expectations("silu", quadrature=False)[1]
    assert torch.allclose(e_dphi(q1, q2, s), gaussian._polar_quadrature(_silu_dot, q1, q2, s), rtol=0, atol=1e-13)


def test_unknown_activation_matches_wide_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ACTIVATIONS, "silu", torch.nn.functional.silu)
    x = make_inputs(4)
    theta = analytic_ntk(make_mlp([4096], "silu"), x)
    mean = torch.stack([nk.ntk(make_mlp([4096], "silu", seed=s), x) for s in range(3)]).mean(0)
    assert (mean - theta).abs().max() <= 10 * theta.abs().max() / math.sqrt(4096 * 3)


@pytest.mark.parametrize("kernel", [analytic_ntk, analytic_nngp])
def test_activation_argument_is_checked(kernel) -> None:
    model, x = make_mlp([8], "relu"), make_inputs(3)
    with pytest.raises(ValueError, match="activation 'swish' is unknown"):
        kernel(model, x, activation="swish")
    with pytest.raises(TypeError, match="activation must be a name or a callable"):
        kernel(model, x, activation=3)
