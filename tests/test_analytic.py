"""Tests of ntkcheck.kernels.analytic on MLPs: the infinite-width NNGP / NTK against finite networks,
the closed forms against quadrature, structural properties and refused input.

Everything runs in float64 with explicit torch.Generator seeds, so the statistical
tests are deterministic; their tolerances are derived in the comments.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from _analytic_cases import DTYPE, _grid, empirical_ntk, make_inputs, make_mlp
from scipy import integrate

import ntkcheck.kernels.analytic as analytic
import ntkcheck.kernels.gaussian as gaussian
from ntkcheck.kernels.analytic import analytic_nngp, analytic_ntk
from ntkcheck.kernels.gaussian import ANGULAR_NODES, RADIAL_NODES
from ntkcheck.models import ACTIVATIONS, MLP

ACTS = sorted(ACTIVATIONS)
QUADRATURE_ACTS = ("tanh", "gelu", "softplus")


# ---------------------------------------------------------------- against finite networks


@pytest.mark.parametrize("depth,width", [(1, 4096), (2, 2048)])
@pytest.mark.parametrize("activation", ACTS)
def test_ntk_matches_wide_empirical_ntk(activation: str, depth: int, width: int) -> None:
    # At width m the empirical NTK is Theta + O(m^-1/2) fluctuation (std ~ C |Theta| / sqrt(m),
    # C measured 1-2 for these activations at depth <= 2) + O(1/m) bias.  Averaging S = 3
    # independent nets (seeds 0..2): tol = 10 max|Theta| / sqrt(m S) >= 5 standard deviations.
    # (1 hidden layer: 0.090 relative; 2 hidden layers: 0.128; observed at most ~0.05.)
    x = torch.cat([make_inputs(3), torch.zeros(1, 3, dtype=DTYPE)])  # with a zero input
    seeds = range(3)
    theta = analytic_ntk(make_mlp([width] * depth, activation), x)
    mean = torch.stack([empirical_ntk(make_mlp([width] * depth, activation, seed=s), x) for s in seeds]).mean(0)
    tol = 10 * theta.abs().max() / math.sqrt(width * len(seeds))
    assert (mean - theta).abs().max() <= tol, (mean, theta)


@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize("activation", ACTS)
def test_nngp_matches_monte_carlo_covariance(activation: str, depth: int) -> None:
    # S = 200 nets (seed 1000 generator), width m = 256, O = 256 outputs each.  Outputs have
    # mean 0, so each net gives an estimate K_a = f f^T / O of E[f(x) f(x')]; the nets are
    # independent, so the standard error of the mean is std_a(K_a) / sqrt(S) (~1% here).
    # One hidden layer: the estimate is unbiased at any width.  Two: the finite-width bias
    # is O(1/m); allow 2 max|Sigma| / m.  tol = 5 standard errors + that bias allowance.
    m, outputs, nets = 256, 256, 200
    x = torch.cat([make_inputs(3), torch.zeros(1, 3, dtype=DTYPE)])
    g = torch.Generator().manual_seed(1000)
    base = make_mlp([m] * depth, activation, out_features=outputs)
    with torch.no_grad():
        est = torch.stack([(f := base.reinitialized(g)(x)) @ f.T / outputs for _ in range(nets)])
    sigma = analytic_nngp(make_mlp([m] * depth, activation), x)
    tol = 5 * est.std(0) / math.sqrt(nets) + (depth - 1) * 2 * sigma.abs().max() / m
    assert ((est.mean(0) - sigma).abs() <= tol).all(), (est.mean(0), sigma, tol)


# ---------------------------------------------------------------- closed forms and quadrature


@pytest.mark.parametrize("activation", ["relu", "erf", "sin", "identity", "abs", "leaky_relu", "sign"])
def test_closed_forms_match_quadrature(activation: str) -> None:
    # The polar rule puts relu's (abs', sign's) kink or jump at 0 on its arcs' ends: it is exact up to
    # rounding for positively homogeneous activations, and erf / sin are smooth.  1e-12 absolute, except the
    # derivative of a jump at |rho| = 1 (leaky relu': rho rounded by 1e-16 moves an arc by 1e-8): 1e-9.
    q1, q2, s = _grid(2.0)
    for k, (closed, f) in enumerate(zip(gaussian._EXPECTATIONS[activation], gaussian._PHI[activation])):
        tol = 1e-9 if (activation, k) == ("leaky_relu", 1) else 1e-12
        assert torch.allclose(closed(q1, q2, s), gaussian._polar_quadrature(f, q1, q2, s), rtol=0, atol=tol)
    if activation in ACTIVATIONS:
        model, x = make_mlp([5, 5], activation, weight_std=1.0), make_inputs(5)  # variances q <= 2.4
        for closed, quad in zip(
            analytic._infinite_width(model, x, None), analytic._infinite_width(model, x, None, quadrature=True)
        ):
            assert (closed - quad).abs().max() <= 1e-12 * closed.abs().max()


@pytest.mark.parametrize("q1,q2,rho", [(1.0, 1.0, 0.5), (0.3, 2.0, -0.7), (1.5, 0.4, 0.9), (2.0, 1.0, 0.0)])
def test_relu_closed_form_matches_adaptive_quadrature(q1: float, q2: float, rho: float) -> None:
    # The arc-cosine formulas against scipy's adaptive quadrature over u, v > 0 (independent of the polar rule).
    c = math.sqrt(1 - rho * rho)

    def density(z2: float, z1: float) -> float:
        return math.exp(-(z1 * z1 + z2 * z2) / 2) / (2 * math.pi)

    def lower(z1):
        return -rho * z1 / c  # v > 0  <=>  z2 > -rho z1 / c

    opts = {"epsabs": 1e-12, "epsrel": 1e-12}
    e_phi = integrate.dblquad(
        lambda z2, z1: math.sqrt(q1) * z1 * math.sqrt(q2) * (rho * z1 + c * z2) * density(z2, z1),
        0,
        math.inf,
        lower,
        math.inf,
        **opts,
    )[0]
    e_dphi = integrate.dblquad(density, 0, math.inf, lower, math.inf, **opts)[0]

    def t(v):
        return torch.tensor([v], dtype=DTYPE)

    args = (t(q1), t(q2), t(rho * math.sqrt(q1 * q2)))
    assert gaussian._relu(*args).item() == pytest.approx(e_phi, abs=1e-8)
    assert gaussian._relu_dot(*args).item() == pytest.approx(e_dphi, abs=1e-8)


@pytest.mark.parametrize("activation", QUADRATURE_ACTS + ("erf",))
def test_quadrature_accuracy_at_typical_variances(activation: str) -> None:
    # The 4 x 32 x 64 polar rule against a 4 x 64 x 160 one (and erf's closed form) for variances q <= 1:
    # error relative to sqrt(E[f(u)^2] E[f(v)^2]) (odd f: E[f(u) f(v)] = 0 at rho = 0) < 1e-12.
    assert (ANGULAR_NODES, RADIAL_NODES) == (32, 64)
    q1, q2, s = _grid(1.0)
    for k, f in enumerate(gaussian._PHI[activation]):
        got = gaussian._polar_quadrature(f, q1, q2, s)
        fine = functools.partial(gaussian._polar_quadrature, f, radial=160, angular=64)
        ref = gaussian._EXPECTATIONS["erf"][k](q1, q2, s) if activation == "erf" else fine(q1, q2, s)
        scale = torch.sqrt(fine(q1, q1, q1) * fine(q2, q2, q2))
        assert ((got - ref).abs() <= 1e-12 * scale.clamp_min(1e-300)).all()


@pytest.mark.parametrize("activation", ACTS)
def test_expectations_safe_where_rho_rounds_past_one(activation: str) -> None:
    # |s12| may exceed sqrt(q1 q2) by rounding (rho = 1 + 2e-16); a variance may be 0.
    q1 = torch.tensor([1.0, 1.0, 2.0, 0.0, 0.0], dtype=DTYPE)
    q2 = torch.tensor([1.0, 1.0, 2.0, 1.0, 0.0], dtype=DTYPE)
    s = torch.tensor([1.0 + 2e-16, -(1.0 + 2e-16), 2.0 * (1 + 4e-16), 0.0, 0.0], dtype=DTYPE)
    exact = torch.tensor([1.0, -1.0, 2.0, 0.0, 0.0], dtype=DTYPE)
    for expectation in gaussian._EXPECTATIONS[activation]:
        got = expectation(q1, q2, s)
        assert torch.isfinite(got).all()
        assert torch.allclose(got, expectation(q1, q2, exact), rtol=1e-12, atol=1e-15)


def test_quadrature_chunks_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x1, x2 = make_mlp([4, 4], "tanh"), make_inputs(5), make_inputs(4, seed=1)
    whole = analytic_ntk(model, x1, x2)
    monkeypatch.setattr(gaussian, "_CHUNK_ELEMENTS", 3 * 4 * ANGULAR_NODES * RADIAL_NODES)  # chunks of 3 pairs
    assert torch.allclose(analytic_ntk(model, x1, x2), whole, rtol=1e-14, atol=0)


# ---------------------------------------------------------------- structural properties


@pytest.mark.parametrize("kernel", [analytic_ntk, analytic_nngp])
@pytest.mark.parametrize("activation", ACTS)
def test_symmetric_and_psd(activation: str, kernel) -> None:
    x = torch.cat([make_inputs(9), torch.zeros(1, 3, dtype=DTYPE)])
    x = torch.cat([x, x[:2]])  # duplicated rows: a singular kernel matrix
    k = kernel(make_mlp([7, 7, 7], activation), x)
    assert torch.equal(k, k.T)
    eig = torch.linalg.eigvalsh(k)
    assert eig.min() >= -1e-10 * eig.max()


@pytest.mark.parametrize("activation", ACTS)
def test_diagonal_is_exact(activation: str) -> None:
    model, x = make_mlp([6, 6], activation), make_inputs(6)
    full = analytic_ntk(model, x)
    cross = analytic_ntk(model, x, x.clone())  # rho computed as s / sqrt(q q): may round above 1
    single = torch.stack([analytic_ntk(model, x[i : i + 1])[0, 0] for i in range(len(x))])
    assert torch.isfinite(cross).all()
    assert torch.allclose(cross, full, rtol=1e-12, atol=0)
    assert torch.allclose(full.diagonal(), single, rtol=1e-12, atol=0)


def test_relu_one_hidden_layer_diagonal_by_hand() -> None:
    # q = w1^2 |x|^2 + b^2; Sigma_2 = sw^2 q / 2 + b^2; Theta_2 = Sigma_2 + sw^2 (1/2) q
    model, x = make_mlp([10], "relu"), make_inputs(4)
    w1, sw2, b2 = model.layers[0].weight_mult, 1.2**2, 0.3**2
    q = w1**2 * (x * x).sum(1) + b2
    for k in (analytic_ntk(model, x).diagonal(), analytic_ntk(model, x, x.clone()).diagonal()):
        assert torch.allclose(k, sw2 * q / 2 + b2 + sw2 * q / 2, rtol=1e-14, atol=0)
    assert torch.allclose(analytic_nngp(model, x).diagonal(), sw2 * q / 2 + b2, rtol=1e-14, atol=0)


@pytest.mark.parametrize("activation", ACTS)
def test_zero_inputs_without_bias_are_finite(activation: str) -> None:
    # q = 0 at a zero input: rho undefined (relu: expectations 0, as torch's relu'(0) = 0).
    model = make_mlp([5, 5], activation, bias=False)
    x = torch.cat([torch.zeros(2, 3, dtype=DTYPE), make_inputs(3)])
    for kernel in (analytic_ntk, analytic_nngp):
        for k in (kernel(model, x), kernel(model, x, x.clone())):
            assert torch.isfinite(k).all()
            if activation != "softplus":  # phi(0) = 0: the zero rows vanish exactly
                assert torch.equal(k[:2], torch.zeros_like(k[:2]))


def test_relu_zero_input_matches_empirical() -> None:
    model = make_mlp([64, 64], "relu", bias=False)
    x = torch.cat([torch.zeros(1, 3, dtype=DTYPE), make_inputs(2)])
    assert torch.equal(empirical_ntk(model, x)[0], analytic_ntk(model, x)[0])


@pytest.mark.parametrize("kernel", [analytic_ntk, analytic_nngp])
def test_multi_output_is_kernel_times_identity(kernel) -> None:
    x1, x2 = make_inputs(4), make_inputs(3, seed=1)
    k = kernel(make_mlp([8], "tanh", out_features=3), x1, x2)
    single = kernel(make_mlp([8], "tanh"), x1, x2)
    assert k.shape == (4, 3, 3, 3)
    eye = torch.eye(3, dtype=torch.bool)
    assert torch.equal(k[:, :, ~eye], torch.zeros(4, 3, 6, dtype=DTYPE))
    for o in range(3):
        assert torch.equal(k[:, :, o, o], single)


def test_x2_default_and_cross_kernel() -> None:
    model, x1, x2 = make_mlp([8, 8], "gelu"), make_inputs(4), make_inputs(3, seed=1)
    assert torch.allclose(analytic_ntk(model, x1), analytic_ntk(model, x1, x1.clone()), rtol=1e-13, atol=0)
    k12, k21 = analytic_ntk(model, x1, x2), analytic_ntk(model, x2, x1)
    assert k12.shape == (4, 3)
    assert torch.allclose(k12, k21.T, rtol=1e-12, atol=0)


def test_dtype_follows_x1() -> None:
    model, x = make_mlp([8], "erf"), make_inputs(4)
    k32 = analytic_ntk(model, x.float())
    assert k32.dtype == torch.float32 and k32.device == x.device
    assert torch.allclose(k32.double(), analytic_ntk(model, x), rtol=1e-6)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("kernel", [analytic_ntk, analytic_nngp])
def test_bad_arguments_are_refused(kernel) -> None:
    model, x = make_mlp([8], "relu"), make_inputs(4)
    glorot = MLP(3, [8], parametrization="standard", init="glorot", dtype=DTYPE)
    with pytest.raises(ValueError, match="model.init 'glorot' has no infinite-width limit"):
        kernel(glorot, x)
    with pytest.raises(TypeError, match="model"):
        kernel(torch.nn.Linear(3, 1), x)
    bad = x.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="x1"):
        kernel(model, bad)
    with pytest.raises(ValueError, match="x2"):
        kernel(model, x, bad)
    with pytest.raises(ValueError, match="x1"):
        kernel(model, torch.zeros(4, 2, dtype=DTYPE))
    with pytest.raises(ValueError, match="x2"):
        kernel(model, x, torch.zeros(4, 5, dtype=DTYPE))
    with pytest.raises(ValueError, match="x1"):
        kernel(model, torch.zeros(3, dtype=DTYPE))
    with pytest.raises(TypeError, match="x1"):
        kernel(model, [[0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match=r"x2 must have the dtype of x1 \(torch.float64\), got torch.float32"):
        kernel(model, x, x.float())


@pytest.mark.parametrize("kernel", [analytic_ntk, analytic_nngp])
@pytest.mark.parametrize("which", ["x1", "x2"])
def test_meta_inputs_refused(kernel, which: str) -> None:
    x = make_inputs(3)
    args = {"x1": x, "x2": x, which: torch.empty(3, 3, dtype=DTYPE, device="meta")}
    with pytest.raises(ValueError, match=f"{which} is on the meta device: it holds no values"):
        kernel(make_mlp([8], "relu"), args["x1"], args["x2"])
