"""Negative controls: each asserts the failure its positive twin must not show, so the suite has teeth."""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from ntkcheck.kernels.empirical import ntk
from ntkcheck.models import MLP
from ntkcheck.models.transforms import AntiSymmetric, asi, double_last_layer
from ntkcheck.testing.claims import check_at_most, check_close, relative_error
from ntkcheck.testing.strategies import architectures, inputs, seeds
from ntkcheck.testing.tolerances import tolerance

from ._common import DEVICE, DTYPE, reproduce
from .test_asi import with_trainable_room

CLAIM = "negative_controls"
F64 = torch.float64
pytestmark = pytest.mark.claim(CLAIM)


@given(
    arch=architectures(families=("mlp",), max_depth=3, max_width=32, frozen=None).map(with_trainable_room),
    data_seed=seeds(),
    n=st.integers(1, 6),
)
def test_asi_without_sqrt2_factor_doubles_the_kernel(arch, data_seed, n):
    """Twin of seed 000 Thm 9: with scale 1 instead of sqrt(2)/2 the kernel is 2 k, not k (frozen layers
    included: the sum runs over the trainable parameters of both branches)."""
    model = arch.build(dtype=DTYPE, device=DEVICE)
    x = inputs(data_seed, n, arch.in_features, dtype=DTYPE, device=DEVICE)
    net = asi(model)
    unscaled = AntiSymmetric(net.plus, net.minus, scale=1.0)
    k = ntk(model, x, method="layerwise")
    assume(float(k.norm()) > 0)  # every unit of a narrow ReLU net dead: 2 * 0 = 0 says nothing
    ctx = reproduce(
        arch,
        x=f"inputs({data_seed}, {n}, {arch.in_features})",
        check="nk.ntk(nk.AntiSymmetric(m1, m2, scale=1.0), x) vs 2 * nk.ntk(model, x)",
    )
    check_close(
        ntk(unscaled, x, method="jacobian"),
        2 * k,
        tol=tolerance("kernel_methods_agree", DTYPE),
        claim=CLAIM,
        what="kernel of unscaled ASI vs twice the original",
        context=ctx,
    )


# activations whose derivative vanishes on no open set: every trainable layer carries kernel mass
NEVER_DEAD = ("tanh", "erf", "gelu", "softplus", "sin")


@given(
    arch=architectures(families=("mlp",), max_depth=3, max_width=32, activations=NEVER_DEAD, frozen=None).map(
        with_trainable_room
    ),
    data_seed=seeds(),
    n=st.integers(2, 6),
)
def test_doubled_kernel_is_not_the_original(arch, data_seed, n):
    """Twin of seed 000 Thm 10 vs Thm 9: the doubling trick changes the kernel (ASI does not).

    The doubled kernel is 2 (k_W[L-1] + k_b[L-1] + k_W[L]) over the trainable parameters, the original's
    k_top + k_lower with k_lower = the kernels of layers <= L-2 and of b^(L); they differ by k_top - k_lower,
    0 only if those kernels coincide.  With activations that are never locally constant every trainable layer
    carries kernel mass, so on every draw the measured relative distance must exceed 100x the float tolerance.
    """
    model = arch.build(dtype=DTYPE, device=DEVICE)
    x = inputs(data_seed, n, arch.in_features, dtype=DTYPE, device=DEVICE)
    total = ntk(model, x)
    doubled = ntk(double_last_layer(model), x)
    gap = relative_error(doubled, total)
    ctx = reproduce(
        arch,
        x=f"inputs({data_seed}, {n}, {arch.in_features})",
        check="nk.ntk(nk.double_last_layer(model), x) vs nk.ntk(model, x)",
    )
    floor = 100 * tolerance("kernel_methods_agree", DTYPE)
    check_at_most(
        floor / max(gap, 1e-300),
        tolerance("control_ratio", DTYPE),
        claim=CLAIM,
        what=f"doubled kernel must differ from the original (relative gap {gap:.2e} vs floor {floor:.0e})",
        context=ctx,
    )


@pytest.mark.slow
def test_narrow_real_network_depends_on_the_loss():
    """Twin of seed 000 Thm 6: outside the kernel regime the loss matters.

    A width-16 real network (standard parametrization, seed 000's glorot init, seed 0) trained
    by full-batch GD with L2 and with L4 from the same init on 4 points of sin(4x), both to
    training loss < 1e-14, ends at different functions on 21 test points in [-1, 1]
    (measured relative difference 1.7e-2).  Its linearization, trained the same way, ends at
    the same function up to optimization error (measured 1.3e-4, ~0 by Thm 6); the real gap
    must exceed 10x the linearized gap and 1e-3.  GD steps use lr = 0.5 * 2 / sharpness
    (0.9 for the linearization, whose loss Hessian is its Gauss-Newton matrix), re-measured
    every 200 steps (L4's curvature shrinks with the residuals).

    Computed in float64 in both dtype runs: the control is about exact training, and float32 gradient
    descent cannot drive the L4 loss below ~1e-8, whose residuals (~1e-2) would mask the 1.7e-2 gap.
    """
    import copy

    from ntkcheck.dynamics.curvature import sharpness
    from ntkcheck.dynamics.linearization import linearize
    from ntkcheck.dynamics.losses import LpLoss
    from ntkcheck.dynamics.training import train

    x = torch.tensor([[-0.9], [-0.3], [0.3], [0.9]], dtype=F64, device=DEVICE)
    y = torch.sin(4 * x)
    xt = torch.linspace(-1, 1, 21, dtype=F64, device=DEVICE)[:, None]
    gen = torch.Generator().manual_seed(0)
    base = MLP(
        1, [16], parametrization="standard", init="glorot", weight_std=1.0, generator=gen, dtype=F64, device=DEVICE
    )

    def fit(model: torch.nn.Module, p: int, fraction: float) -> tuple[torch.Tensor, float]:
        loss, result = LpLoss(p), None
        for _ in range(40):
            lr = fraction * 2.0 / sharpness(model, x, y, loss)
            result = train(
                model,
                x,
                y,
                loss,
                optimizer="gd",
                lr=lr,
                steps=200,
                loss_threshold=1e-16,
                record_every=200,
                check_lr=False,
            )
            if result.converged:
                break
        assert result is not None  # the loop ran
        with torch.no_grad():
            return model(xt).detach(), result.final_loss

    real = {p: fit(copy.deepcopy(base), p, 0.5) for p in (2, 4)}
    lin = {p: fit(linearize(copy.deepcopy(base)), p, 0.9) for p in (2, 4)}
    real_gap = relative_error(real[4][0], real[2][0])
    lin_gap = relative_error(lin[4][0], lin[2][0])
    ctx = reproduce(
        None,
        x="[[-0.9], [-0.3], [0.3], [0.9]]",
        y="sin(4 x)",
        model="nk.MLP(1, [16], parametrization='standard', init='glorot', weight_std=1.0, "
        "generator=torch.Generator().manual_seed(0))",
        check=f"GD with LpLoss(2) vs LpLoss(4) on the real net (gap {real_gap:.2e}) and on "
        f"linearize(model) (gap {lin_gap:.2e}), at 21 points of [-1, 1]",
    )
    worst_loss = max(v[1] for v in (*real.values(), *lin.values()))
    check_at_most(
        worst_loss,
        tolerance("narrow_net_fit", F64),
        claim=CLAIM,
        what="every L2/L4 run fits the 4 points (training loss)",
        context=ctx,
    )
    floor = max(10 * lin_gap, 1e-3)
    check_at_most(
        floor / max(real_gap, 1e-300),
        tolerance("control_ratio", F64),
        claim=CLAIM,
        what=f"L2- and L4-trained narrow nets must differ (relative gap {real_gap:.2e} vs floor "
        f"{floor:.1e} = max(10 x linearized gap, 1e-3))",
        context=ctx,
    )
