"""Monte Carlo kernels equal the analytic limits (Jacot et al. 2018; Novak et al. 2019; Arora et al. 2019).

``monte_carlo_ntk`` / ``monte_carlo_nngp`` average the empirical NTK (per output) and the output covariance
f(x) f(x')^T / O of S independently initialized networks, with entrywise standard errors; ``analytic_ntk`` /
``analytic_nngp`` propagate Gaussian expectations layer by layer.  The two share nothing but the model's
architecture, so they check each other.  For the MLP, CNN and ResNet families, in NTK and standard
(``init="fan_in"``) parametrization, entry by entry over the upper triangle (x, x'):

    |mean_S(x, x') - K_inf(x, x')| - (b / m) sqrt(K_inf(x, x) K_inf(x', x'))  <=  k se_S(x, x')

with k from ``tolerance("monte_carlo_se")`` and the finite-width bias bound b / m:

* b = 0 (no bias term) for ONE hidden layer or ONE convolution at any width: its pre-activations are exactly
  Gaussian given the input and the readout is independent of them, so E Theta_m = Theta_inf and
  E f f^T = Sigma_inf (derivation in test_ntk_width_convergence.py; the convolution's is the same per position,
  global average pooling being linear).
* b = ``mean_kernel_bias_families`` for deeper nets and for the ResNet, whose branch sees the stem's
  features through a second random matrix (u = W_1 W_0 x is Gaussian only given W_0, with the empirical
  covariance of W_0 x): an O(1/m) bias (Hanin & Nica 2019).  Measured at m = 16 (S = 3000-4000, one thread,
  float64, the settings below): m max|mean - exact| / scale <= 0.18 (CNN, 2 convs, NTK param.), 0.29 (same,
  standard), 0.21 (dense ResNet, 1 block), 0.14 (conv ResNet, 1 block), NNGP <= 0.32; each within ~2.6
  standard errors, i.e. no bias resolved above the noise.  At the width 64 below the bias allowance b / m is
  1.25% of the kernel, at most one standard error of these estimates (1.0-1.5%).

The check has teeth, measured on every run: the same samples against (1 +- p) K_inf must FAIL the bound (their
worst entry beyond k standard errors; ``control_ratio``).  p = 5% for the unbiased configurations (MLP, CNN
with one hidden layer / convolution), p = 10% for the biased ones, where a 5% power would need ~2000 samples
(a network's NTK varies by 14-26% relative at m = 64, its NNGP by 25-38%: se = that / sqrt(S) must stay below
(p - b / m) / (k + 2)) and the one-thread budget of the file (~60 s) allows a few hundred.

Fixed, stated seeds (plain parametrize, as test_ntk_width_convergence.py): a check at k standard errors on
fresh Hypothesis draws would be a new false-alarm chance per example, and each example costs seconds.
Setting: sigma_w = 1.5, sigma_b = 0.3, relu; dense inputs 6 x R^5 (seed 1234), images 4 x 2 x 6 x 6 (seed 4321);
Monte Carlo seed 2024; NNGP with O = 64 outputs per network.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from ntkcheck.kernels.analytic import analytic_nngp, analytic_ntk
from ntkcheck.kernels.monte_carlo import MonteCarloKernel, monte_carlo_nngp, monte_carlo_ntk
from ntkcheck.models import CNN, MLP, ResNet
from ntkcheck.testing.claims import check_at_most
from ntkcheck.testing.tolerances import tolerance

from ._common import DEVICE, DTYPE
from ._width import IMAGE_SEED, X_SEED, family_inputs, first_output

CLAIM = "width_convergence"
pytestmark = pytest.mark.claim(CLAIM)

WEIGHT_STD, BIAS_STD = 1.5, 0.3
MC_SEED = 2024
NNGP_OUTPUTS = 64

# (family, depth, width, parametrization, S, power): depth = hidden layers (mlp), convolutions (cnn), blocks
# (resnets); power = the relative error of the analytic kernel these samples must detect (see the docstring).
NTK_CONFIGS = [
    ("mlp", 1, 64, "ntk", 600, 0.05),
    ("mlp", 1, 64, "standard", 600, 0.05),
    ("cnn", 1, 64, "ntk", 300, 0.05),
    ("cnn", 1, 64, "standard", 300, 0.05),
    ("cnn", 2, 64, "ntk", 200, 0.10),
    ("resnet_dense", 1, 64, "ntk", 400, 0.10),
    ("resnet_dense", 1, 64, "standard", 400, 0.10),
    ("resnet_conv", 1, 64, "ntk", 200, 0.10),
    ("resnet_conv", 1, 64, "standard", 200, 0.10),
]
NNGP_CONFIGS = [
    ("mlp", 1, 64, "ntk", 1500, 0.05),
    ("mlp", 1, 64, "standard", 1500, 0.05),
    ("cnn", 1, 64, "ntk", 1500, 0.05),
    ("cnn", 2, 64, "standard", 600, 0.10),
    ("resnet_dense", 1, 64, "ntk", 1500, 0.10),
    ("resnet_dense", 1, 64, "standard", 1500, 0.10),
    ("resnet_conv", 1, 64, "ntk", 600, 0.10),
    ("resnet_conv", 1, 64, "standard", 600, 0.10),
]


def _spec(family: str, depth: int, width: int, parametrization: str, out: int) -> str:
    common = (
        f"weight_std={WEIGHT_STD}, bias_std={BIAS_STD}, parametrization={parametrization!r}, generator=g, dtype={DTYPE}"
    )
    return {
        "mlp": f"nk.MLP(5, [{width}] * {depth}, {out}, {common})",
        "cnn": f"nk.CNN(2, [{width}] * {depth}, {out}, {common})",
        "resnet_dense": f"nk.ResNet({width}, {depth}, {out}, in_features=5, {common})",
        "resnet_conv": f"nk.ResNet({width}, {depth}, {out}, in_channels=2, {common})",
    }[family]


def _factory(family: str, depth: int, width: int, parametrization: str, out: int):
    kw: dict[str, Any] = dict(
        weight_std=WEIGHT_STD, bias_std=BIAS_STD, parametrization=parametrization, dtype=DTYPE, device=DEVICE
    )

    def build(g: torch.Generator) -> torch.nn.Module:
        if family == "mlp":
            return MLP(5, [width] * depth, out, generator=g, **kw)
        if family == "cnn":
            return CNN(2, [width] * depth, out, generator=g, **kw)
        if family == "resnet_dense":
            return ResNet(width, depth, out, in_features=5, generator=g, **kw)
        return ResNet(width, depth, out, in_channels=2, generator=g, **kw)

    return build


def _unbiased(family: str, depth: int) -> bool:
    """One hidden layer / convolution: the mean kernel is the limit at every width (module docstring)."""
    return family in ("mlp", "cnn") and depth == 1


def _worst_excess(est: MonteCarloKernel, exact: torch.Tensor, bias: float) -> tuple[float, int, int, float]:
    """max over the upper triangle of (|mean - exact| - bias * scale)_+ / se; its entry; its relative deviation."""
    mean, se = est.mean.double(), est.standard_error.double()
    diag = exact.diagonal()
    scale = torch.sqrt(diag[:, None] * diag[None, :])
    excess = ((mean - exact).abs() - bias * scale).clamp_min(0.0) / se
    rows, cols = torch.triu_indices(*exact.shape)
    flat = excess[rows, cols]
    w = int(flat.argmax())
    i, j = int(rows[w]), int(cols[w])
    return float(flat[w]), i, j, float((mean[i, j] - exact[i, j]) / scale[i, j])


def _check(
    kind: str,
    family: str,
    depth: int,
    width: int,
    parametrization: str,
    s: int,
    power: float,
    est: MonteCarloKernel,
    exact: torch.Tensor,
) -> None:
    k = tolerance("monte_carlo_se", DTYPE)
    b = 0.0 if _unbiased(family, depth) else float(tolerance("mean_kernel_bias_families", DTYPE))
    bias = b / width
    out = 1 if kind == "NTK" else NNGP_OUTPUTS
    fn = "monte_carlo_ntk" if kind == "NTK" else "monte_carlo_nngp"
    ctx = (
        "import torch, ntkcheck as nk\n"
        + (
            f"x = torch.randn(6, 5, generator=torch.Generator().manual_seed({X_SEED}), dtype=torch.float64)\n"
            if family in ("mlp", "resnet_dense")
            else f"x = torch.randn(4, 2, 6, 6, generator=torch.Generator().manual_seed({IMAGE_SEED}), "
            "dtype=torch.float64)\n"
        )
        + f"est = nk.{fn}(lambda g: {_spec(family, depth, width, parametrization, out)}, x, n_samples={s}, "
        f"seed={MC_SEED})\n"
        f"vs nk.analytic_{kind.lower()}(model, x) (output 0); bias allowance b / m = {bias:.4f} of "
        f"sqrt(K(x, x) K(x', x'))"
    )
    excess, i, j, rel = _worst_excess(est, exact, bias)
    label = f"{family} depth {depth} width {width} {parametrization} param."
    check_at_most(
        excess,
        k,
        claim=CLAIM,
        what=f"Monte Carlo {kind} (S = {s}) vs analytic_{kind.lower()}, {label}: worst entry ({i}, {j}) "
        f"|mean - exact| - bias bound in standard errors (relative deviation {rel:+.4f})",
        context=ctx,
    )
    for c in (1.0 + power, 1.0 - power):  # the same samples must reject an analytic kernel off by `power`
        wrong, i, j, rel = _worst_excess(est, c * exact, bias)
        check_at_most(
            float(k) / max(wrong, 1e-300),
            tolerance("control_ratio", DTYPE),
            claim=CLAIM,
            what=f"power: Monte Carlo {kind} (S = {s}) vs {c} x analytic_{kind.lower()}, {label}: k / worst "
            f"excess in standard errors (entry ({i}, {j}), relative deviation {rel:+.4f}) must be <= 1",
            context=ctx + f"\nagainst {c} * the analytic kernel: must fail the agreement bound",
        )


@pytest.mark.slow
@pytest.mark.parametrize("family, depth, width, parametrization, s, power", NTK_CONFIGS)
def test_monte_carlo_ntk_is_analytic_ntk(family, depth, width, parametrization, s, power):
    """E_theta Theta_m = Theta_inf (exact for one hidden layer / convolution, + O(1/m) deeper and for ResNets):
    the Monte Carlo NTK of S networks lies within k standard errors (+ the bias bound) of analytic_ntk."""
    x = family_inputs(family)
    factory = _factory(family, depth, width, parametrization, 1)
    est = monte_carlo_ntk(factory, x, n_samples=s, seed=MC_SEED, method="layerwise")
    exact = first_output(analytic_ntk(factory(torch.Generator().manual_seed(0)), x)).double()
    _check("NTK", family, depth, width, parametrization, s, power, est, exact)


@pytest.mark.slow
@pytest.mark.parametrize("family, depth, width, parametrization, s, power", NNGP_CONFIGS)
def test_monte_carlo_nngp_is_analytic_nngp(family, depth, width, parametrization, s, power):
    """E_theta f(x) f(x')^T / O = Sigma_inf (exact for one hidden layer / convolution, + O(1/m) otherwise): the
    Monte Carlo NNGP of S networks with O = 64 outputs each lies within k standard errors (+ the bias bound)."""
    x = family_inputs(family)
    factory = _factory(family, depth, width, parametrization, NNGP_OUTPUTS)
    est = monte_carlo_nngp(factory, x, n_samples=s, seed=MC_SEED)
    exact = first_output(analytic_nngp(factory(torch.Generator().manual_seed(0)), x)).double()
    _check("NNGP", family, depth, width, parametrization, s, power, est, exact)
