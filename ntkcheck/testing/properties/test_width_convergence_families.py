"""Width convergence across families (Jacot et al. 2018; Novak et al. 2019; Arora et al. 2019): MLP, CNN, ResNet.

test_ntk_width_convergence.py (a) for the MLP, extended to the convolutional and residual families, in BOTH
parametrizations: at EVERY width m in 32..512 the RMS over 8 seeds of the relative error
||K_m - K_inf||_F / ||K_inf||_F is at most C m^(-1/2), for

* the NTK: K_m = ntk(model, x) (one output) against analytic_ntk;
* the NNGP: K_m = f(X) f(X)^T / O over the O = m outputs of one network against analytic_nngp.

In standard parametrization (``init="fan_in"``) analytic_ntk is neural-tangents' convention, each layer's weight
term weighted by its actual fan-in: it is the expectation of the standard-parametrization empirical NTK (up to
the O(1/m) bias of every deep net), so it grows with m like the empirical kernel does, and the RELATIVE error
still falls like m^(-1/2).  Measured before asserting (24 seeds, one thread, float64, the settings below), fitted
slopes of the RMS NTK error over 32..512, NTK / standard parametrization: CNN -0.53 / -0.46, dense ResNet
-0.65 / -0.65, conv ResNet -0.53 / -0.51 (NNGP -0.54, -0.61, -0.55); the dense ResNet is steeper than -1/2
at the small widths, where an O(1/m) part of the error still counts.  Fits to 8 seeds scatter from -0.2 to
-0.76, so the slope is recorded, not asserted; the bound at every width is (``ntk_width_constant_families``,
``nngp_width_constant_families``).

Families (sigma_w = 1.5, sigma_b = 0.3, relu, one output for the NTK): MLP of two hidden layers of width m on 6
inputs in R^5 (seed 1234; measured sqrt(m) RMS <= 3.31 / 3.77 NTK, 5.08 NNGP); CNN with two 3x3 ``"same"``
convolutions of m channels and global average pooling, on 4 images 2 x 6 x 6 (seed 4321); ResNet of one
block (stem, branch Linear/Conv -> relu -> Linear/Conv, head), dense on 6 inputs in R^5 (seed 1234) and
convolutional (m channels, 3x3) on the same images.  The curves (errors against width, fitted slopes, the
bound) are recorded with ``record_series`` for the claims report.  Statistical: float32 rounding (1e-6) is far
below these 1e-2 errors, so the float32 constants equal the float64 ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

from ntkcheck._support.fitting import loglog_fit
from ntkcheck.kernels.analytic import analytic_nngp, analytic_ntk
from ntkcheck.kernels.empirical import ntk
from ntkcheck.models import CNN, MLP, ResNet
from ntkcheck.testing.claims import check_at_most, record_series, relative_error
from ntkcheck.testing.tolerances import tolerance

from ._common import DEVICE, DTYPE
from ._width import IMAGE_SEED, X_SEED, family_inputs, first_output, output_covariance

CLAIM = "width_convergence"
pytestmark = pytest.mark.claim(CLAIM)

WEIGHT_STD, BIAS_STD = 1.5, 0.3
WIDTHS = [32, 64, 128, 256, 512]
SEEDS = list(range(8))
FAMILIES = ["mlp", "cnn", "resnet_dense", "resnet_conv"]
PARAMETRIZATIONS = ["ntk", "standard"]


def _spec(family: str, width: str, out: str, parametrization: str) -> str:
    """The constructor call, as Python source, with ``width`` and ``out`` spelled as given (e.g. "m", "O")."""
    common = (
        f"weight_std={WEIGHT_STD}, bias_std={BIAS_STD}, parametrization={parametrization!r}, "
        f"generator=torch.Generator().manual_seed(seed), dtype={DTYPE}"
    )
    return {
        "mlp": f"nk.MLP(5, [{width}, {width}], {out}, {common})",
        "cnn": f"nk.CNN(2, [{width}, {width}], {out}, {common})",
        "resnet_dense": f"nk.ResNet({width}, 1, {out}, in_features=5, {common})",
        "resnet_conv": f"nk.ResNet({width}, 1, {out}, in_channels=2, {common})",
    }[family]


def _model(family: str, width: int, out: int, parametrization: str, seed: int) -> torch.nn.Module:
    kw: dict[str, Any] = dict(
        weight_std=WEIGHT_STD,
        bias_std=BIAS_STD,
        parametrization=parametrization,
        generator=torch.Generator().manual_seed(seed),
        dtype=DTYPE,
        device=DEVICE,
    )
    if family == "mlp":
        return MLP(5, [width, width], out, **kw)
    if family == "cnn":
        return CNN(2, [width, width], out, **kw)
    if family == "resnet_dense":
        return ResNet(width, 1, out, in_features=5, **kw)
    return ResNet(width, 1, out, in_channels=2, **kw)


def _check_bound_at_every_width(
    kind: str,
    family: str,
    parametrization: str,
    sample: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor],
    limit: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor],
    out: Callable[[int], int],
    constant: str,
) -> None:
    x = family_inputs(family)
    c = tolerance(constant, DTYPE)
    errors = []
    for m in WIDTHS:
        exact = None
        errs = []
        for seed in SEEDS:
            model = _model(family, m, out(m), parametrization, seed)
            if exact is None:
                exact = first_output(limit(model, x)).double()
            errs.append(relative_error(sample(model, x).double(), exact))
        errors.append(math.sqrt(sum(e * e for e in errs) / len(errs)))
    fitted = loglog_fit(WIDTHS, errors)
    slope, intercept = fitted.slope, fitted.intercept
    label = f"width: {family} {parametrization} param. {kind} error (RMS over {len(SEEDS)} seeds)"
    record_series(label, WIDTHS, errors, slope=slope, intercept=intercept, bound_constant=float(c))
    record_series(
        f"width: families {kind} bound C m^-1/2 (C = {float(c):g})",
        WIDTHS,
        [float(c) / math.sqrt(m) for m in WIDTHS],
        slope=-0.5,
        intercept=math.log(float(c)),
    )
    images = family not in ("mlp", "resnet_dense")
    ctx = (
        "import torch, ntkcheck as nk\nfrom ntkcheck.kernels.analytic import analytic_ntk, analytic_nngp\n"
        + (
            f"x = torch.randn(4, 2, 6, 6, generator=torch.Generator().manual_seed({IMAGE_SEED}), dtype=torch.float64)\n"
            if images
            else f"x = torch.randn(6, 5, generator=torch.Generator().manual_seed({X_SEED}), dtype=torch.float64)\n"
        )
        + f"for m in {WIDTHS}, seed in {SEEDS}: model = {_spec(family, 'm', 'O', parametrization)} "
        "with O = 1 for the NTK, O = m for the NNGP\n"
        f"  relative Frobenius error of the empirical {kind} "
        f"({'nk.ntk(model, x)' if kind == 'NTK' else 'f f^T / O'}) vs analytic_{kind.lower()}(model, x); RMS over "
        f"seeds\nmeasured: {[round(v, 4) for v in errors]} (fitted slope {slope:.3f})"
    )
    for m, e in zip(WIDTHS, errors):
        check_at_most(
            e,
            c * (1.0 / math.sqrt(m)),
            claim=CLAIM,
            what=f"RMS relative {kind} error at width {m} vs the bound C m^(-1/2) ({family}, "
            f"{parametrization} parametrization)",
            context=ctx,
        )


@pytest.mark.slow
@pytest.mark.parametrize("parametrization", PARAMETRIZATIONS)
@pytest.mark.parametrize("family", FAMILIES)
def test_family_ntk_error_is_within_c_over_sqrt_width(family, parametrization):
    """Theta_m -> Theta_inf with fluctuations ~ m^(-1/2) for CNN and ResNet, NTK and standard parametrization:
    RMS relative error <= C m^(-1/2) at every width 32..512."""
    _check_bound_at_every_width(
        "NTK",
        family,
        parametrization,
        lambda model, x: ntk(model, x, method="layerwise"),
        analytic_ntk,
        lambda m: 1,
        "ntk_width_constant_families",
    )


@pytest.mark.slow
@pytest.mark.parametrize("parametrization", PARAMETRIZATIONS)
@pytest.mark.parametrize("family", FAMILIES)
def test_family_output_covariance_error_is_within_c_over_sqrt_width(family, parametrization):
    """f(X) f(X)^T / O over the O = m outputs of one CNN / ResNet -> Sigma_inf (analytic_nngp): RMS relative error
    <= C m^(-1/2) at every width 32..512, in both parametrizations (the forward pass at init, hence the NNGP, is
    the same distribution in both)."""
    _check_bound_at_every_width(
        "NNGP", family, parametrization, output_covariance, analytic_nngp, lambda m: m, "nngp_width_constant_families"
    )
