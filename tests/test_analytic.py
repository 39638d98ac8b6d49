"""Tests of ntkcheck.kernels.analytic: the infinite-width NNGP / NTK of MLP, CNN and ResNet, both parametrizations.

Everything runs in float64 with explicit torch.Generator seeds, so the statistical
tests are deterministic; their tolerances are derived in the comments.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from scipy import integrate
from torch.func import functional_call, jacrev

import ntkcheck as nk
import ntkcheck.kernels.analytic as analytic
import ntkcheck.kernels.gaussian as gaussian
from ntkcheck.kernels.analytic import analytic_nngp, analytic_ntk
from ntkcheck.kernels.gaussian import ANGULAR_NODES, RADIAL_NODES
from ntkcheck.models import ACTIVATIONS, CNN, MLP, ResNet, Transformer

DTYPE = torch.float64
ACTS = sorted(ACTIVATIONS)
QUADRATURE_ACTS = ("tanh", "gelu", "softplus")


def make_inputs(n: int, d: int = 3, seed: int = 0) -> torch.Tensor:
    """n inputs with |x|^2 / d in [0.25, 2.25] (pre-activation variances of order 1)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=DTYPE)
    scale = torch.linspace(0.5, 1.5, n, dtype=DTYPE) * math.sqrt(d)
    return x / x.norm(dim=1, keepdim=True) * scale[:, None]


def make_mlp(widths: list[int], activation: str, seed: int = 0, **kw: object) -> MLP:
    kw = {"weight_std": 1.2, "bias_std": 0.3, **kw}
    return MLP(3, widths, activation=activation, generator=torch.Generator().manual_seed(seed), dtype=DTYPE, **kw)


def empirical_ntk(model: MLP, x: torch.Tensor) -> torch.Tensor:
    """sum over parameters of df(x)/dtheta df(x')/dtheta (one output), by torch.func."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    jac = jacrev(lambda p: functional_call(model, p, (x,)))(params)
    return sum(j.flatten(2)[:, 0] @ j.flatten(2)[:, 0].T for j in jac.values())


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


def _grid(q_max: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    q = torch.tensor([0.0, 0.05, 0.3, q_max / 2, q_max], dtype=DTYPE)
    rho = torch.tensor([-1.0, -0.95, -0.3, 0.0, 0.6, 0.999, 1.0], dtype=DTYPE)
    q1, q2, r = torch.meshgrid(q, q, rho, indexing="ij")
    return q1, q2, r * torch.sqrt(q1 * q2)


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


# ---------------------------------------------------------------- Monte Carlo helpers


def within_standard_errors(samples: torch.Tensor, exact: torch.Tensor, bias: float = 0.0, k: float = 4.0) -> None:
    """The mean of independent ``samples`` lies within ``k`` standard errors (+ ``bias``) of ``exact``, per entry."""
    mean, se = samples.mean(0), samples.std(0) / math.sqrt(samples.shape[0])
    excess = (mean - exact).abs() - k * se - bias
    assert (excess <= 0).all(), (mean, exact, se, bias)


def output_covariances(models: list[torch.nn.Module], x: torch.Tensor) -> torch.Tensor:
    """f(X) f(X)^T / O for each network (O outputs, mean 0 at init): unbiased estimates of its NNGP."""
    with torch.no_grad():
        return torch.stack([(f := m(x)) @ f.T / f.shape[1] for m in models])


def images(n: int, channels: int = 2, size: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, channels, size, size, generator=g, dtype=DTYPE)


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


# ---------------------------------------------------------------- convolutions and residual networks

CNN_CONFIGS = {
    "same-gap-1conv": dict(channels=1, kernel_size=3, padding="same"),
    "valid-stride2-gap-2conv": dict(channels=2, kernel_size=2, stride=2, padding="valid"),
    "dilated-pad1-flatten-1conv": dict(
        channels=1, kernel_size=3, padding=1, dilation=2, readout="flatten", image_size=6
    ),
    "stride2-pad1-flatten-2conv": dict(channels=2, kernel_size=3, stride=2, padding=1, readout="flatten", image_size=6),
    "standard-same-gap-1conv": dict(channels=1, kernel_size=3, padding="same", parametrization="standard"),
}


def make_cnn(config: str, width: int, out: int = 1, seed: int = 0) -> CNN:
    kw = dict(CNN_CONFIGS[config])
    return CNN(
        2,
        [width] * kw.pop("channels"),
        out,
        weight_std=1.3,
        bias_std=0.2,
        dtype=DTYPE,
        generator=torch.Generator().manual_seed(seed),
        **kw,
    )


@pytest.mark.parametrize("config", sorted(CNN_CONFIGS))
def test_cnn_nngp_matches_monte_carlo(config: str) -> None:
    # 150 nets of 64 channels, O = 32 outputs each: one convolution is exact at any width (4 standard errors),
    # two have an O(1/m) bias: allow 2 max|Sigma| / m.
    x, m = images(4), 64
    depth = CNN_CONFIGS[config]["channels"]
    sigma = analytic_nngp(make_cnn(config, m), x)
    samples = output_covariances([make_cnn(config, m, 32, seed=s) for s in range(150)], x)
    within_standard_errors(samples, sigma, (depth - 1) * 2 * float(sigma.abs().max()) / m)


@pytest.mark.parametrize("config", sorted(CNN_CONFIGS))
def test_cnn_ntk_matches_monte_carlo(config: str) -> None:
    # 24 nets of 128 channels: 4 standard errors (+ 2 max|Theta| / m with two convolutions).
    x, m = images(3), 128
    depth = CNN_CONFIGS[config]["channels"]
    theta = analytic_ntk(make_cnn(config, m), x)
    samples = torch.stack([nk.ntk(make_cnn(config, m, seed=s), x) for s in range(24)])
    within_standard_errors(samples, theta, (depth - 1) * 2 * float(theta.abs().max()) / m)


def test_cnn_one_pixel_is_the_mlp() -> None:
    # 1x1 images through 1x1 convolutions are dense layers: the CNN's kernels are the MLP's exactly.
    x = make_inputs(4)
    cnn = CNN(3, [7, 7], kernel_size=1, activation="erf", weight_std=1.2, bias_std=0.3, dtype=DTYPE)
    mlp = make_mlp([7, 7], "erf")
    for kernel in (analytic_ntk, analytic_nngp):
        assert torch.allclose(kernel(cnn, x[:, :, None, None]), kernel(mlp, x), rtol=1e-13, atol=0)


@pytest.mark.parametrize("convolutional", [False, True])
def test_resnet_matches_monte_carlo(convolutional: bool) -> None:
    # Two residual blocks (branch_scale 1/sqrt(2)): NNGP from 100 nets of width 128 with O = 32 outputs,
    # NTK from 12 nets of width 256 (convolutional: 8 of width 128, 3x3 images); O(1/m) bias: allow 2 max|K| / m.
    kw = dict(in_channels=2) if convolutional else dict(in_features=3)
    x = images(3, size=3) if convolutional else make_inputs(4)

    def make(width: int, out: int = 1, seed: int = 0) -> ResNet:
        return ResNet(
            width,
            2,
            out,
            weight_std=1.2,
            bias_std=0.2,
            dtype=DTYPE,
            generator=torch.Generator().manual_seed(seed),
            **kw,
        )

    sigma, theta = analytic_nngp(make(8), x), analytic_ntk(make(8), x)
    within_standard_errors(
        output_covariances([make(128, 32, s) for s in range(100)], x), sigma, 2 * float(sigma.abs().max()) / 128
    )
    nets, m = (8, 128) if convolutional else (12, 256)
    within_standard_errors(
        torch.stack([nk.ntk(make(m, seed=s), x) for s in range(nets)]), theta, 2 * float(theta.abs().max()) / m
    )


def test_family_inputs_are_checked() -> None:
    cnn = make_cnn("valid-stride2-gap-2conv", 4)
    with pytest.raises(ValueError, match="x1 has images of size"):
        analytic_ntk(cnn, images(2, size=2))
    with pytest.raises(ValueError, match="x2 must have shape"):
        analytic_ntk(cnn, images(2), torch.zeros(2, 3, 6, 6, dtype=DTYPE))
    with pytest.raises(TypeError, match="x1"):
        analytic_nngp(cnn, images(2).long())


@pytest.mark.parametrize("same", [True, False])
def test_row_blocks_agree(same: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # Blocks of 2 rows (2 N2 P^2 entries) give the one-block kernels to rounding; x2 = None stays symmetric
    # and pairs each block of rows (at most ceil(N / 8) = 1 here) only with the columns from its first row on.
    model, x1, x2 = make_cnn("stride2-pad1-flatten-2conv", 4), images(5), images(3, seed=1)
    other = None if same else x2
    whole = [kernel(model, x1, other) for kernel in (analytic_ntk, analytic_nngp)]
    monkeypatch.setattr(analytic, "_ROW_ELEMENTS", 2 * (5 if same else 3) * 36**2)
    pairs = []
    propagate = analytic._propagate
    monkeypatch.setattr(
        analytic, "_propagate", lambda *args: pairs.append(tuple(args[1].cross.shape[:2])) or propagate(*args)
    )
    for kernel, expected in zip((analytic_ntk, analytic_nngp), whole):
        pairs.clear()
        got = kernel(model, x1, other)
        assert pairs == ([(1, 5), (1, 4), (1, 3), (1, 2), (1, 1)] if same else [(2, 3), (2, 3), (1, 3)])
        assert torch.allclose(got, expected, rtol=1e-13, atol=0)
        if same:
            assert torch.equal(got, got.T)


def test_an_input_has_correlation_one_with_itself_at_every_layer() -> None:
    # The arc-cosine kernels' angle at a correlation of 1 - 1e-16 is 1.5e-8: unless the variances are read
    # off the cross kernel, the diagonal of a deep relu kernel is ~1e-9 off. The polar quadrature has no
    # arc cosine, so it is the reference (agreement ~1e-14 elsewhere).
    g = torch.Generator().manual_seed(0)
    for model, x in [
        (nk.MLP(5, [8, 8, 8], 1, dtype=DTYPE), torch.randn(20, 5, generator=g, dtype=DTYPE)),
        (make_cnn("stride2-pad1-flatten-2conv", 4), images(5)),
    ]:
        for rows in (None, 2 * 36**2 * 5):  # one block, and blocks of rows paired with their upper triangle
            if rows is not None and model.in_shape == (5,):
                continue
            with pytest.MonkeyPatch.context() as mp:
                if rows is not None:
                    mp.setattr(analytic, "_ROW_ELEMENTS", rows)
                closed = analytic._infinite_width(model, x, None)[1]
            quad = analytic._infinite_width(model, x, None, quadrature=True)[1]
            assert float((closed - quad).abs().max() / quad.abs().max()) < 1e-12


# ---------------------------------------------------------------- sequences (Conv1d) and LayerNorm


def sequences(n: int, channels: int = 2, length: int = 7, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, channels, length, generator=g, dtype=DTYPE)


SEQUENCE_CONFIGS = {
    "same-gap": dict(kernel_size=3, padding="same"),
    "valid-stride2-flatten": dict(kernel_size=2, stride=2, padding="valid", readout="flatten", image_size=7),
    "dilated-pad1-gap": dict(kernel_size=3, padding=1, dilation=2),
}


@pytest.mark.parametrize("config", sorted(SEQUENCE_CONFIGS))
def test_sequence_cnn_is_the_image_cnn_of_height_one(config: str) -> None:
    # A sequence of length L is an image of size 1 x L: with (1, k) kernels, strides, dilations and
    # (0, p) padding the Conv2d network computes the same function, so the limits agree to rounding.
    kw = SEQUENCE_CONFIGS[config]
    as_image = {k: (v if isinstance(v, str) else ((0 if k == "padding" else 1), v)) for k, v in kw.items()}
    x = sequences(4)
    seq = CNN(2, [5, 5], weight_std=1.3, bias_std=0.2, dims=1, dtype=DTYPE, **kw)
    img = CNN(2, [5, 5], weight_std=1.3, bias_std=0.2, dtype=DTYPE, **as_image)
    for kernel in (analytic_ntk, analytic_nngp):
        assert torch.allclose(kernel(seq, x), kernel(img, x[:, :, None, :]), rtol=1e-13, atol=0)


def test_sequence_one_convolution_by_hand() -> None:
    # Identity activation, one "valid" convolution (kernel 2, no bias), a flatten readout, weight_std 1.3 for
    # both layers: Sigma(x, x') = 1.3^2 mean over p of 1.3^2 mean_d K0(p + d, p + d) with
    # K0(p, q) = sum_c x_c(p) x'_c(q) / C.
    x = sequences(3, length=5)
    model = CNN(
        2,
        [4],
        kernel_size=2,
        padding="valid",
        readout="flatten",
        image_size=5,
        dims=1,
        activation="identity",
        bias=False,
        weight_std=1.3,
        dtype=DTYPE,
    )
    k0 = torch.einsum("ncp,mcp->nmp", x, x) / 2  # the diagonal p = q of K0
    expected = 1.3**4 * (k0[..., :-1] + k0[..., 1:]).mean(-1) / 2
    assert torch.allclose(analytic_nngp(model, x), expected, rtol=1e-14, atol=0)


@pytest.mark.parametrize("config", sorted(SEQUENCE_CONFIGS))
def test_sequence_cnn_matches_monte_carlo(config: str) -> None:
    # NNGP: 150 nets of 64 channels with O = 32 outputs; NTK: 24 nets of 128 channels.  Two convolutions:
    # an O(1/m) finite-width bias, allow 2 max|K| / m on top of 4 standard errors.
    kw = SEQUENCE_CONFIGS[config]
    x = sequences(4)

    def make(width: int, out: int = 1, seed: int = 0) -> CNN:
        return CNN(
            2,
            [width, width],
            out,
            weight_std=1.3,
            bias_std=0.2,
            dims=1,
            dtype=DTYPE,
            generator=torch.Generator().manual_seed(seed),
            **kw,
        )

    sigma, theta = analytic_nngp(make(4), x), analytic_ntk(make(4), x)
    within_standard_errors(
        output_covariances([make(64, 32, s) for s in range(150)], x), sigma, 2 * float(sigma.abs().max()) / 64
    )
    within_standard_errors(
        torch.stack([nk.ntk(make(128, seed=s), x[:3]) for s in range(24)]),
        theta[:3, :3],
        2 * float(theta.abs().max()) / 128,
    )


def _resnet(norm: str | None, width: int = 8, out: int = 1, seed: int = 0, **kw: object) -> ResNet:
    kw = kw if "in_channels" in kw else {"in_features": 3, **kw}
    return ResNet(
        width,
        2,
        out,
        norm=norm,
        activation="erf",
        weight_std=1.4,
        bias_std=0.3,
        dtype=DTYPE,
        generator=torch.Generator().manual_seed(seed),
        **kw,
    )


@pytest.mark.parametrize("frozen", [False, True])
def test_post_norm_by_hand(frozen: bool) -> None:
    # One block with the LayerNorm after the sum: the head (Linear, weight_std 1.4, bias_std 0.3) reads
    # u = LN(h) with h the sum.  From the network without the norm, whose head reads h itself:
    # K_h = (Sigma - 0.3^2) / 1.4^2 and Theta_h = (Theta - Sigma) / 1.4^2.  With the norm
    # rho = K_h / sqrt((K_h(x, x) + eps)(K_h(x', x') + eps)), Sigma' = 1.4^2 rho + 0.3^2 and
    # Theta' = 1.4^2 (Theta_h / sqrt(..) + rho + 1) + Sigma' (the gain's and the bias's terms unless frozen).
    x = make_inputs(5)
    plain = ResNet(8, 1, in_features=3, activation="erf", weight_std=1.4, bias_std=0.3, dtype=DTYPE)
    normed = ResNet(8, 1, in_features=3, norm="post", activation="erf", weight_std=1.4, bias_std=0.3, dtype=DTYPE)
    eps = normed.residual[0].norm.eps
    if frozen:
        normed.residual[0].norm.requires_grad_(False)
    sigma, theta = analytic_nngp(plain, x), analytic_ntk(plain, x)
    k_h, theta_h = (sigma - 0.3**2) / 1.4**2, (theta - sigma) / 1.4**2
    v = k_h.diagonal() + eps
    scale = torch.sqrt(v[:, None] * v[None, :])
    rho = k_h / scale
    expected_sigma = 1.4**2 * rho + 0.3**2
    expected_theta = 1.4**2 * (theta_h / scale + (0 if frozen else rho + 1)) + expected_sigma
    assert torch.allclose(analytic_nngp(normed, x), expected_sigma, rtol=1e-13, atol=0)
    assert torch.allclose(analytic_ntk(normed, x), expected_theta, rtol=1e-13, atol=0)


def test_layer_norm_output_has_unit_variance() -> None:
    # Pre-norm ends with a LayerNorm before the head: the head reads features of variance K / (K + eps),
    # so Sigma(x, x) = 1.4^2 K / (K + eps) + 0.3^2 for any input scale (here 1e-3 to 1e3 times the inputs).
    x = make_inputs(4) * torch.logspace(-3, 3, 4, dtype=DTYPE)[:, None]
    model = _resnet("pre")
    diag = analytic_nngp(model, x).diagonal()
    assert ((diag - (1.4**2 + 0.3**2)).abs() <= 1.4**2 * 1e-4).all(), diag
    assert diag[-1] - (1.4**2 + 0.3**2) > -1e-14 - 1.4**2 * model.final_norm.eps  # K / (K + eps) < 1


@pytest.mark.parametrize("norm", ["pre", "post"])
@pytest.mark.parametrize("shape", ["dense", "sequences"])
def test_layer_norm_resnet_matches_monte_carlo(norm: str, shape: str) -> None:
    # NNGP: 100 nets of width 128 with O = 32 outputs; NTK (LayerNorm gains and biases trained too): 10 nets
    # of width 256 (sequences: 8 of width 128).  LayerNorm and depth add an O(1/m) bias: allow 3 max|K| / m.
    kw = dict(in_channels=2, dims=1, kernel_size=3) if shape == "sequences" else {}
    x = sequences(3, length=4) if shape == "sequences" else make_inputs(4)
    sigma, theta = analytic_nngp(_resnet(norm, **kw), x), analytic_ntk(_resnet(norm, **kw), x)
    within_standard_errors(
        output_covariances([_resnet(norm, 128, 32, s, **kw) for s in range(100)], x),
        sigma,
        3 * float(sigma.abs().max()) / 128,
    )
    nets, m = (8, 128) if shape == "sequences" else (10, 256)
    samples = torch.stack([nk.ntk(_resnet(norm, m, seed=s, **kw), x) for s in range(nets)])
    within_standard_errors(samples, theta, 3 * float(theta.abs().max()) / m)


def test_layer_norm_of_activations_is_refused_by_name() -> None:
    # With post_activation a LayerNorm normalises phi(u), whose channel mean does not vanish: refused.
    x = make_inputs(2)
    for norm in ("pre", "post"):
        model = ResNet(4, 2, in_features=3, norm=norm, post_activation=True, dtype=DTYPE)
        for kernel in (analytic_ntk, analytic_nngp):
            with pytest.raises(ValueError, match="post_activation=True: a LayerNorm then normalises an activation"):
                kernel(model, x)
    # one block with the norm after the sum sees only Gaussian streams: its limit exists
    single = ResNet(4, 1, in_features=3, norm="post", post_activation=True, dtype=DTYPE)
    assert torch.isfinite(analytic_ntk(single, x)).all()


def test_sequence_inputs_are_checked() -> None:
    model = CNN(2, [4], kernel_size=3, padding="valid", dims=1, dtype=DTYPE)
    with pytest.raises(ValueError, match="x1 has sequences of size"):
        analytic_ntk(model, sequences(2, length=2))
    with pytest.raises(ValueError, match=r"x1 must have shape \(N, 2, size\)"):
        analytic_ntk(model, images(2))
