"""seed 001, Lemma 3 (App. D): E |f(x; theta_0)|^2 <= sigma^(2L) for bias-free ReLU nets on the unit ball.

seed 001 eq (1) (NTK parametrization, ``W ~ N(0, 1)``, layer ``sigma / sqrt(fan_in) W a``) is an
``ntkcheck.MLP`` with ``parametrization="ntk"``, ``weight_std=sigma``; ``parametrization="standard"``
with the fan-in init draws ``W ~ N(0, sigma^2 / fan_in)``, the same function distribution (seed 001
§1.2, He init).  App. D bounds the second moment by a product of chi-square ratios; the exact value
is derived here.  Given the previous layer's activations a (width m'), a pre-activation
h_j = (sigma / sqrt(m')) sum_k W_jk a_k is exactly N(0, sigma^2 |a|^2 / m') (fresh Gaussian W), so
E[relu(h_j)^2 | a] = sigma^2 |a|^2 / (2 m') and E[|a_next|^2 / m | a] = (sigma^2 / 2) |a|^2 / m'.
Starting from |x|^2 / d and ending with the linear output layer,

    E f_o(x)^2 = sigma^2 (sigma^2 / 2)^(L-1) |x|^2 / d = sigma^(2L) |x|^2 / (2^(L-1) d)    (every width, every o),

which is <= sigma^(2L) on B_1^d(0), with equality exactly for the linear net (L = 1) in d = 1 at |x| = 1
(seed 001's first layer, garbled as sigma / sqrt(m_1) W_1 x, is read with the fan-in normalisation 1/sqrt(d)).

Monte Carlo: M = 2000 independent initialisations (one seeded generator drawing them in turn) per
example; per x the mean of f(x)^2 (averaged over the outputs) with its standard error.  Checks:
the mean is within 4 s.e. of the exact value; the bound holds (mean <= sigma^(2L) + 4 s.e.); and as a
power control the mean is more than 4 s.e. from the value with the wrong exponent, sigma^(+-2) times
the exact one (sigma is drawn from [0.3, 0.8] and [1.25, 3], where that factor is >= 1.56 or <= 0.64).
Hidden widths are >= 16: f^2 of narrower deep nets is heavy-tailed (a product of chi-square ratios) and
its standard error at M draws would hide a factor 0.64.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ntkcheck._support.seeding import child_seed
from ntkcheck.models import MLP
from ntkcheck.testing.claims import check_at_most
from ntkcheck.testing.strategies import architectures, inputs, seeds
from ntkcheck.testing.tolerances import tolerance

from ._common import DEVICE, DTYPE, reproduce

CLAIM = "output_bound"
pytestmark = pytest.mark.claim(CLAIM)
M = 2000  # independent initialisations per example
N_SE = 4.0


def _second_moments(make, x: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per input, the Monte Carlo mean of f(x)^2 (averaged over outputs) and its standard error."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        samples = torch.stack([make(gen)(x).double().pow(2).mean(dim=1) for _ in range(M)])  # (M, n)
    return samples.mean(dim=0), samples.std(dim=0) / M**0.5


def _check(mean: torch.Tensor, se: torch.Tensor, exact: torch.Tensor, sigma: float, L: int, ctx: str) -> None:
    mc = tolerance("monte_carlo_4se", DTYPE)
    for i in range(mean.numel()):
        m, s, e = float(mean[i]), float(se[i]), float(exact[i])
        check_at_most(
            abs(m - e) / (N_SE * s),
            mc,
            claim=CLAIM,
            what=f"|mean f(x)^2 - sigma^(2L) |x|^2 / (2^(L-1) d)| / (4 s.e.) (mean {m:.4e}, exact {e:.4e})",
            context=ctx,
        )
        check_at_most(
            max(0.0, m - sigma ** (2 * L)) / (N_SE * s),
            mc,
            claim=CLAIM,
            what=f"(mean f(x)^2 - sigma^(2L)) / (4 s.e.): Lemma 3's bound (mean {m:.4e}, bound {sigma ** (2 * L):.4e})",
            context=ctx,
        )
        for power in (-2, 2):
            wrong = e * sigma**power
            check_at_most(
                N_SE * s / abs(m - wrong),
                tolerance("control_ratio", DTYPE),
                claim=CLAIM,
                what=f"power control: 4 s.e. / |mean - exact * sigma^({power:+d})| (a wrong exponent "
                f"2L{power:+d} must be detected; mean {m:.4e}, wrong {wrong:.4e})",
                context=ctx,
            )


@settings(max_examples=10)
@given(
    arch=architectures(
        families=("mlp",),
        max_depth=3,
        max_width=32,
        max_in=5,
        activations=("relu",),
        bias=False,
        parametrizations=("ntk", "standard"),
    ),
    sigma=st.one_of(st.floats(0.3, 0.8), st.floats(1.25, 3.0)),
    data_seed=seeds(),
)
def test_second_moment_at_init_is_sigma_2L_over_2_L1_d(arch, sigma, data_seed):
    """E f(x)^2 = sigma^(2L) |x|^2 / (2^(L-1) d) <= sigma^(2L) for |x| <= 1 (seed 001, Lemma 3), with a power
    control against sigma^(2L -+ 2); 3 inputs from the unit ball and one on its boundary sphere."""
    arch = replace(arch, weight_std=float(sigma), init="fan_in", widths=tuple(max(w, 16) for w in arch.widths))
    L, d = len(arch.widths) + 1, arch.in_features
    x = inputs(data_seed, 4, d, unit_ball=True, dtype=torch.float64)
    x[0] = x[0] / x[0].norm()  # |x| = 1: where the bound is nearest
    x = x.to(dtype=DTYPE, device=DEVICE)

    def make(gen: torch.Generator) -> MLP:
        return MLP(
            d,
            arch.widths,
            arch.out_features,
            activation="relu",
            bias=False,
            parametrization=arch.parametrization,
            weight_std=arch.weight_std,
            init="fan_in",
            generator=gen,
            dtype=DTYPE,
            device=DEVICE,
        )

    mc_seed = child_seed(data_seed, 3)
    mean, se = _second_moments(make, x, mc_seed)
    exact = sigma ** (2 * L) * (x.double().cpu() ** 2).sum(dim=1) / (2 ** (L - 1) * d)
    ctx = reproduce(
        arch,
        x=f"inputs({data_seed}, 4, {d}, unit_ball=True) with x[0] scaled to |x| = 1",
        check=f"mean of model(x)^2 over {M} models drawn in turn from torch.Generator().manual_seed({mc_seed})",
    )
    _check(mean.cpu(), se.cpu(), exact, sigma, L, ctx)


@pytest.mark.parametrize("sigma", [0.6, 1.7])
def test_bound_is_attained_by_the_linear_net_on_the_sphere(sigma):
    """L = 1, d = 1, x = +-1: f(x) = sigma w x with w ~ N(0, 1), so E f(x)^2 = sigma^2 = sigma^(2L): Lemma 3's
    bound is attained; the mean must also lie within 4 s.e. of it from below (it is not slack)."""
    x = torch.tensor([[1.0], [-1.0], [0.5]], dtype=DTYPE, device=DEVICE)

    def make(gen: torch.Generator) -> MLP:
        return MLP(
            1, [], 1, bias=False, parametrization="ntk", weight_std=sigma, generator=gen, dtype=DTYPE, device=DEVICE
        )

    mean, se = _second_moments(make, x, 0)
    exact = sigma**2 * (x.double().cpu() ** 2).sum(dim=1)
    ctx = reproduce(
        None,
        model=f"nk.MLP(1, [], 1, bias=False, weight_std={sigma})",
        x="[[1.0], [-1.0], [0.5]]",
        check=f"mean of model(x)^2 over {M} models drawn in turn from torch.Generator().manual_seed(0)",
    )
    _check(mean.cpu(), se.cpu(), exact, sigma, 1, ctx)
    for i in range(2):  # on the sphere the bound itself is the expectation
        check_at_most(
            max(0.0, sigma**2 - float(mean[i])) / (N_SE * float(se[i])),
            tolerance("monte_carlo_4se", DTYPE),
            claim=CLAIM,
            what="(sigma^(2L) - mean f(x)^2) / (4 s.e.) at |x| = 1, L = 1: the bound is attained",
            context=ctx,
        )
