"""Width convergence (Jacot et al. 2018; Lee et al. 2019): finite networks approach their kernel limit.

Statistical statements, checked on fixed, stated seeds (plain pytest parametrize, no Hypothesis).
Setting: NTK parametrization, sigma_w = 1.5, sigma_b = 0.3, N = 6 inputs in R^5 drawn from seed 1234.
In standard parametrization the NTK grows linearly with the width and has no finite limit
(``analytic_ntk`` gives neural-tangents' width-scaled convention there, and refuses seed 000 §7's Glorot
init, whose limit no longer depends on the inputs), so the NTK claims are checked in NTK parametrization;
the forward pass at init, hence the NNGP, is also checked for a standard-parametrization net with
seed 000 §7's Glorot init, against ``analytic_nngp`` of an NTK-parametrization net with the same
per-layer scales.

(a) A bound at EVERY width m in 64..1024: the RMS over 8 seeds of the relative error
    ||Theta_m - Theta_inf||_F / ||Theta_inf||_F is at most C_ntk m^(-1/2) (tolerance
    ``ntk_width_constant``); likewise the NNGP, with Sigma_m = f(X) f(X)^T / O the empirical covariance
    of the O = m outputs of one network (``nngp_width_constant``).
(b) A check that sees a small bias in the analytic kernel: the Monte Carlo mean of S independent
    empirical kernels must equal the analytic one within 4 standard errors plus the finite-width bias
    bound (``mean_kernel_bias`` / m, relative to sqrt(K(x, x) K(x', x'))), entry by entry and along the
    analytic kernel (the projection p_s = <K_s, K_inf> / <K_inf, K_inf>, whose mean must be 1).  For
    ONE hidden layer the mean is exact at every width (no bias term):
        E Theta_m = sigma_w^2 E[phi(u) phi(v)] + sigma_b^2 + sigma_w^2 E[W_2i^2] E[phi'(u) phi'(v)] Sigma_1
                  = Theta_inf,   E f(x) f(x') = sigma_w^2 E[phi(u) phi(v)] + sigma_b^2 = Sigma_inf,
    since the first layer's pre-activations (u, v) are exactly Gaussian with covariance Sigma_1 and the
    readout is independent of them; deeper nets carry an O(1/m) bias (Hanin & Nica 2019).
    Measured power: an analytic kernel 5% too small (or large) is 1.5-4x beyond these bounds.
(c) A really trained one-hidden-layer ReLU net (full-batch GD on the MSE to loss < 1e-12) vs the kernel
    prediction h_k(.; f0, X, Y) of its initial NTK (its linearization's limit, seed 000 Thm 5/6; seed 001
    Lemma 1: |f_NN - f_lin| = O(m^(-1/2))): at EVERY width the RMS over 8 seeds of the relative gap at test
    points is at most C_gap m^(-1/2) (``trained_gap_constant``).

The measured curves (errors against width, with fitted slopes, and the bounds) are recorded with
``record_series`` for the claims report.  The claim is a float64 statement; under
NTKCHECK_DTYPE=float32 the same measurement runs with the same constants (their float32 column equals the
float64 one: float32 rounding, ~1e-6 relative, is far below the 1e-2 fluctuations measured here).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import pytest
import torch

from ntkcheck._support.fitting import loglog_fit
from ntkcheck.dynamics.losses import LpLoss
from ntkcheck.dynamics.solvers import interpolate, max_stable_lr
from ntkcheck.dynamics.training import train
from ntkcheck.kernels.analytic import analytic_nngp, analytic_ntk
from ntkcheck.kernels.empirical import ntk
from ntkcheck.models import MLP, Linear
from ntkcheck.testing.claims import check_at_most, record_series, relative_error
from ntkcheck.testing.tolerances import tolerance

from ._common import DEVICE, DTYPE
from ._width import first_output, output_covariance

CLAIM = "width_convergence"
pytestmark = pytest.mark.claim(CLAIM)

D, N, X_SEED = 5, 6, 1234
WEIGHT_STD, BIAS_STD = 1.5, 0.3

# (a): widths and seeds of the per-width bound
BOUND_WIDTHS = [64, 128, 256, 512, 1024]
BOUND_SEEDS = list(range(8))
BOUND_CONFIGS = [("relu", 2), ("erf", 2), ("relu", 3)]

# (b): (activation, depth, width, seeds S).  One hidden layer: unbiased at any width, so a narrow net with
# many seeds; deeper: width 256 keeps the O(1/m) bias at <= 0.6% of the kernel.
MEAN_NTK_CONFIGS = [
    ("relu", 1, 64, 1024),
    ("erf", 1, 64, 1024),
    ("tanh", 1, 64, 1024),
    ("relu", 2, 256, 512),
    ("relu", 3, 256, 384),
]
MEAN_NNGP_CONFIGS = [
    ("relu", 1, 64, 1024, "ntk"),
    ("tanh", 1, 64, 1024, "ntk"),
    ("relu", 1, 64, 1024, "glorot"),
    ("erf", 2, 256, 256, "ntk"),
]
STANDARD_ERRORS = 4  # the k of "within k standard errors": tolerance monte_carlo_4se

# (c): 5 training points evenly spread on the unit circle, test points halfway between them.
GAP_WIDTHS = [128, 256, 512, 1024, 2048]
GAP_SEEDS = list(range(8))
LR_FRACTION = 0.9  # of the MSE stability limit n / lambda_max(K)


def _inputs() -> torch.Tensor:
    return torch.randn(N, D, generator=torch.Generator().manual_seed(X_SEED), dtype=torch.float64).to(DEVICE, DTYPE)


def _mlp(activation: str, depth: int, width: int, out: int, seed: int, init: str = "ntk") -> MLP:
    """The network of seed ``seed``; ``init="glorot"`` is standard parametrization with seed 000 §7's init."""
    kwargs: dict[str, Any] = dict(parametrization="standard", init="glorot") if init == "glorot" else {}
    return MLP(
        D,
        [width] * depth,
        out,
        activation=activation,
        weight_std=WEIGHT_STD,
        bias_std=BIAS_STD,
        generator=torch.Generator().manual_seed(seed),
        dtype=DTYPE,
        device=DEVICE,
        **kwargs,
    )


def _limit_twin(model: MLP) -> MLP:
    """An NTK-parametrization net whose layers scale like ``model``'s initial draw: for standard
    parametrization W = std_W Z, b = std_b z with Z, z ~ N(0, 1) is the NTK layer with multipliers
    (std_W, std_b), so both have the same output distribution at init, and the twin's analytic_nngp is
    ``model``'s NNGP.  Glorot (seed 000 §7): std_W = std_b = v sqrt(2 / (fan_in + fan_out))."""
    if model.parametrization == "ntk":
        return model
    twin = MLP(
        D,
        model.widths,
        model.out_features,
        activation=model.activation,
        weight_std=WEIGHT_STD,
        bias_std=BIAS_STD,
        dtype=DTYPE,
        device=DEVICE,
    )
    for module in twin.layers:
        layer = cast(Linear, module)
        if model.init == "glorot":
            std = model.weight_std * math.sqrt(2.0 / (layer.in_features + layer.out_features))
            layer.weight_mult, layer.bias_mult = std, std
        else:
            layer.weight_mult, layer.bias_mult = model.weight_std / math.sqrt(layer.in_features), model.bias_std
    return twin


def _rms(values: list[float]) -> float:
    return math.sqrt(sum(v * v for v in values) / len(values))


def _check_bound_at_every_width(
    kind: str,
    activation: str,
    depth: int,
    sample: Callable[[MLP, torch.Tensor], torch.Tensor],
    limit: Callable[[MLP, torch.Tensor], torch.Tensor],
    out: Callable[[int], int],
    constant: str,
) -> None:
    x = _inputs()
    c = tolerance(constant, DTYPE)
    errors = []
    for m in BOUND_WIDTHS:
        exact = None
        errs = []
        for seed in BOUND_SEEDS:
            model = _mlp(activation, depth, m, out(m), seed)
            if exact is None:
                exact = first_output(limit(model, x)).double()
            errs.append(relative_error(sample(model, x).double(), exact))
        errors.append(_rms(errs))
    fitted = loglog_fit(BOUND_WIDTHS, errors)
    slope, intercept = fitted.slope, fitted.intercept
    record_series(
        f"width: {activation} L={depth} {kind} error (RMS over {len(BOUND_SEEDS)} seeds)",
        BOUND_WIDTHS,
        errors,
        slope=slope,
        intercept=intercept,
        bound_constant=float(c),
    )
    record_series(
        f"width: {kind} bound C m^-1/2 (C = {float(c):g})",
        BOUND_WIDTHS,
        [float(c) / math.sqrt(m) for m in BOUND_WIDTHS],
        slope=-0.5,
        intercept=math.log(float(c)),
    )
    for m, e in zip(BOUND_WIDTHS, errors):
        ctx = (
            "import torch, ntkcheck as nk\nfrom ntkcheck.kernels.analytic import analytic_ntk, analytic_nngp\n"
            f"x = torch.randn({N}, {D}, generator=torch.Generator().manual_seed({X_SEED}), dtype=torch.float64)\n"
            f"for seed in {BOUND_SEEDS}: model = nk.MLP({D}, [{m}] * {depth}, {out(m)}, activation={activation!r}, "
            f"weight_std={WEIGHT_STD}, bias_std={BIAS_STD}, generator=torch.Generator().manual_seed(seed))\n"
            f"  relative Frobenius error of the empirical {kind} vs its analytic limit; RMS over seeds\n"
            f"measured at widths {BOUND_WIDTHS}: {[round(v, 4) for v in errors]} (fitted slope {slope:.3f})"
        )
        check_at_most(
            e,
            c * (1.0 / math.sqrt(m)),
            claim=CLAIM,
            what=f"RMS relative {kind} error at width {m} vs the bound C m^(-1/2) ({activation}, L={depth})",
            context=ctx,
        )


@pytest.mark.slow
@pytest.mark.parametrize("activation, depth", BOUND_CONFIGS)
def test_empirical_ntk_error_is_within_c_over_sqrt_width(activation, depth):
    """Jacot et al. 2018: Theta_m -> Theta_inf with fluctuations ~ m^(-1/2): RMS relative error <= C_ntk m^(-1/2)
    at every width 64..1024."""
    _check_bound_at_every_width(
        "NTK",
        activation,
        depth,
        lambda model, x: ntk(model, x, method="layerwise"),
        analytic_ntk,
        lambda m: 1,
        "ntk_width_constant",
    )


@pytest.mark.slow
@pytest.mark.parametrize("activation, depth", BOUND_CONFIGS)
def test_output_covariance_error_is_within_c_over_sqrt_width(activation, depth):
    """The NNGP: f(X) f(X)^T / O over the O = m outputs of one net -> Sigma_inf (analytic_nngp), RMS relative
    error <= C_nngp m^(-1/2) at every width 64..1024 (hidden-layer and readout sampling, both ~ m^(-1/2))."""
    _check_bound_at_every_width(
        "NNGP", activation, depth, output_covariance, analytic_nngp, lambda m: m, "nngp_width_constant"
    )


def _check_mean(kind: str, samples: list[torch.Tensor], exact: torch.Tensor, m: int, depth: int, ctx: str) -> None:
    """The Monte Carlo mean of ``samples`` vs ``exact``: per entry, and along ``exact`` (see the module docstring)."""
    stack = torch.stack(samples)
    s = stack.shape[0]
    mean, se = stack.mean(0), stack.std(0) / math.sqrt(s)
    diag = exact.diagonal()
    scale = torch.sqrt(diag[:, None] * diag[None, :])
    b = 0.0 if depth == 1 else float(tolerance("mean_kernel_bias", DTYPE)) / m
    upper = torch.triu_indices(N, N)
    excess = ((mean - exact).abs() - b * scale).clamp_min(0.0) / (STANDARD_ERRORS * se)
    worst = int(excess[upper[0], upper[1]].argmax())
    i, j = int(upper[0, worst]), int(upper[1, worst])
    tol = tolerance("monte_carlo_4se", DTYPE)
    check_at_most(
        float(excess[i, j]),
        tol,
        claim=CLAIM,
        what=f"mean of {s} empirical {kind}s (width {m}, L={depth}) vs the analytic {kind}: worst entry "
        f"({i}, {j}) |mean - exact| - bias bound, in units of {STANDARD_ERRORS} standard errors "
        f"(relative deviation {float((mean[i, j] - exact[i, j]) / scale[i, j]):+.4f})",
        context=ctx,
    )
    p = (stack * exact).sum((1, 2)) / (exact * exact).sum()
    p_excess = max(abs(float(p.mean()) - 1.0) - b, 0.0) / (STANDARD_ERRORS * float(p.std()) / math.sqrt(s))
    check_at_most(
        p_excess,
        tol,
        claim=CLAIM,
        what=f"mean of {s} empirical {kind}s (width {m}, L={depth}) along the analytic {kind}: "
        f"|mean <K_s, K> / <K, K> - 1| = {abs(float(p.mean()) - 1):.4f} minus the bias bound, in units "
        f"of {STANDARD_ERRORS} standard errors",
        context=ctx,
    )


def _mean_ctx(kind: str, activation: str, depth: int, m: int, s: int, out: int, init: str = "ntk") -> str:
    extra = ", parametrization='standard', init='glorot'" if init == "glorot" else ""
    return (
        "import torch, ntkcheck as nk\n"
        f"x = torch.randn({N}, {D}, generator=torch.Generator().manual_seed({X_SEED}), dtype=torch.float64)\n"
        f"for seed in range({s}): model = nk.MLP({D}, [{m}] * {depth}, {out}, activation={activation!r}, "
        f"weight_std={WEIGHT_STD}, bias_std={BIAS_STD}{extra}, generator=torch.Generator().manual_seed(seed))\n"
        f"  sample: {'nk.ntk(model, x)' if kind == 'NTK' else 'f = model(x); f @ f.T / f.shape[1]'}\n"
        f"mean of the samples vs {'analytic_ntk' if kind == 'NTK' else 'analytic_nngp'}"
        f"{' of the NTK-parametrization twin with multipliers = the Glorot stds' if init == 'glorot' else ''}(model, x)"
    )


@pytest.mark.slow
@pytest.mark.parametrize("activation, depth, width, n_seeds", MEAN_NTK_CONFIGS)
def test_mean_empirical_ntk_is_analytic_ntk(activation, depth, width, n_seeds):
    """E Theta_m = Theta_inf (exactly for one hidden layer, + O(1/m) deeper): the mean of n_seeds empirical NTKs
    lies within 4 standard errors (+ the bias bound) of analytic_ntk, per entry and along Theta_inf."""
    x = _inputs()
    samples = [ntk(_mlp(activation, depth, width, 1, seed), x, method="layerwise").double() for seed in range(n_seeds)]
    exact = analytic_ntk(_mlp(activation, depth, width, 1, 0), x).double()
    _check_mean("NTK", samples, exact, width, depth, _mean_ctx("NTK", activation, depth, width, n_seeds, 1))


@pytest.mark.slow
@pytest.mark.parametrize("activation, depth, width, n_seeds, init", MEAN_NNGP_CONFIGS)
def test_mean_output_covariance_is_analytic_nngp(activation, depth, width, n_seeds, init):
    """The NNGP is E[f(x) f(x')] at init: the mean over n_seeds networks (each averaging its O = width outputs)
    lies within 4 standard errors (+ the bias bound) of analytic_nngp, per entry and along Sigma_inf; also for
    standard parametrization with the Glorot init (against its NTK-parametrization twin)."""
    x = _inputs()
    samples = [output_covariance(_mlp(activation, depth, width, width, seed, init), x) for seed in range(n_seeds)]
    exact = first_output(analytic_nngp(_limit_twin(_mlp(activation, depth, width, width, 0, init)), x)).double()
    _check_mean("NNGP", samples, exact, width, depth, _mean_ctx("NNGP", activation, depth, width, n_seeds, width, init))


def _circle(n: int, offset: float) -> torch.Tensor:
    theta = 2 * math.pi * torch.arange(n, dtype=torch.float64) / n + offset
    return torch.stack([theta.cos(), theta.sin()], dim=1)


@pytest.mark.slow
def test_trained_network_approaches_its_linearization_at_every_width():
    """Lee et al. 2019 / seed 001 Lemma 1: ||f_trained - f_lin||(x_test) = O(m^(-1/2)): the RMS over 8 seeds of
    the relative gap is at most C_gap m^(-1/2) at every width 128..2048."""
    n = 5
    x = _circle(n, 0.3).to(DEVICE, DTYPE)
    xt = _circle(n, 0.3 + math.pi / n).to(DEVICE, DTYPE)
    y = 0.5 * torch.sin(2 * torch.atan2(x[:, 1:], x[:, :1]))
    gaps, worst_loss = [], 0.0
    for m in GAP_WIDTHS:
        per_seed = []
        for seed in GAP_SEEDS:
            gen = torch.Generator().manual_seed(seed)
            model = MLP(
                2, [m], activation="relu", weight_std=1.0, bias_std=0.1, generator=gen, dtype=DTYPE, device=DEVICE
            )
            with torch.no_grad():
                f0x, f0t = model(x), model(xt)
            k, kt = ntk(model, x), ntk(model, xt, x)
            kernel_pred = interpolate(k, y, k_test_train=kt, h_ini_train=f0x, h_ini_test=f0t)
            lr = LR_FRACTION * max_stable_lr(k)
            result = train(
                model,
                x,
                y,
                LpLoss(2),
                optimizer="gd",
                lr=lr,
                steps=3000,
                loss_threshold=1e-12,
                record_every=1000,
                check_lr=False,
            )
            worst_loss = max(worst_loss, result.final_loss)
            with torch.no_grad():
                trained = model(xt)
            per_seed.append(relative_error(trained, kernel_pred, scale=float((kernel_pred - f0t).norm())))
        gaps.append(_rms(per_seed))
    fitted = loglog_fit(GAP_WIDTHS, gaps)
    slope, intercept = fitted.slope, fitted.intercept
    c = tolerance("trained_gap_constant", DTYPE)
    record_series(
        f"width: trained vs linearized gap (RMS over {len(GAP_SEEDS)} seeds)",
        GAP_WIDTHS,
        gaps,
        slope=slope,
        intercept=intercept,
        bound_constant=float(c),
    )
    ctx = (
        f"5 points on the unit circle (angles 2 pi k/5 + 0.3), y = 0.5 sin(2 angle), tests halfway between;\n"
        f"for m in {GAP_WIDTHS}, seeds {GAP_SEEDS}: nk.MLP(2, [m], weight_std=1.0, bias_std=0.1) trained by\n"
        f"train(model, x, y, LpLoss(2), lr={LR_FRACTION} * max_stable_lr(ntk(model0, x)), loss_threshold=1e-12)\n"
        "vs interpolate(ntk(model0, x), y, k_test_train=ntk(model0, xt, x), h_ini_train=f0(x), h_ini_test=f0(xt));\n"
        f"gap = ||trained - pred|| / ||pred - f0(xt)||, RMS over seeds: measured {[round(g, 5) for g in gaps]}, "
        f"slope {slope:.3f}"
    )
    check_at_most(
        worst_loss,
        tolerance("training_fit", DTYPE),
        claim=CLAIM,
        what="every trained network fits its data (training loss)",
        context=ctx,
    )
    for m, g in zip(GAP_WIDTHS, gaps):
        check_at_most(
            g,
            c * (1.0 / math.sqrt(m)),
            claim=CLAIM,
            what=f"RMS relative gap trained vs linearized prediction at width {m} vs the bound C m^(-1/2)",
            context=ctx,
        )
