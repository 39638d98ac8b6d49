"""seed 001, §4.2 (Thm 3/4, Fig 1): the initialization variance sigma^2 of a bias-free ReLU net.

sigma is the MLP's weight_std (seed 001 eq (1): every layer ``sigma / sqrt(fan_in) W a``), drawn
from a continuous range.  The net is ``sigma^L f_1`` and its features ``Phi(x, sigma) =
sigma^L Phi(x, 1)`` (the proof of Thm 4), so in eq (14) the interpolant term is unchanged and
the init term (1/L) Phi(x)(I - P) theta_0 scales by sigma^L; training error stays 0 and the test
error is the quadratic ``e(sigma) = |a + sigma^L b|^2 / m`` (a = interpolant - target, b = init
term, both at sigma = 1), which grows like sigma^(2L) once sigma^L |b| >> |a| (Thm 4, Fig 1).
Inputs in the unit ball B_1^d(0).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from ntkcheck.dynamics.linearization import min_norm_linearized
from ntkcheck.errors import IllConditionedError
from ntkcheck.testing.claims import check_at_most, check_close, record_series
from ntkcheck.testing.strategies import datasets
from ntkcheck.testing.tolerances import tolerance

from ._common import DEVICE, DTYPE, reproduce
from ._seed001 import MAX_N, ball_x, ball_x_test, eq14_terms, relu_bias_free, with_sigma

CLAIM = "sigma_scaling"
pytestmark = pytest.mark.claim(CLAIM)
N_TEST = 8


def _target(x: torch.Tensor) -> torch.Tensor:
    """seed 001 §5's 2D bump exp(-|x|^2), in any dimension."""
    return torch.exp(-(x**2).sum(dim=1))


@given(arch=relu_bias_free(max_depth=2, max_width=24, max_out=2), data=st.data(), sigma=st.floats(0.3, 3.0))
def test_interpolant_invariant_and_init_term_scales_as_sigma_L(arch, data, sigma):
    """At weight_std sigma vs 1: interpolant term unchanged, init term times sigma^L, training error 0
    (seed 001 §4.2, proof of Thm 4)."""
    ds = data.draw(datasets(arch, max_n=MAX_N))
    x, y, xt = ball_x(ds), ds.y(dtype=DTYPE, device=DEVICE), ball_x_test(ds, 4)
    try:
        base, scaled = eq14_terms(with_sigma(arch, 1.0), x, y, xt), eq14_terms(with_sigma(arch, sigma), x, y, xt)
    except IllConditionedError:
        assume(False)  # Phi Phi^T too ill-conditioned for the dtype's solver tolerance
    L = len(arch.widths) + 1
    s_L = sigma**L
    ctx = reproduce(arch, ds=repr(ds), sigma=sigma, check="eq14_terms(replace(arch, weight_std=sigma), ...)")
    tol = tolerance("solver_identity", DTYPE)
    check_close(
        scaled.interpolant,
        base.interpolant,
        tol=tol,
        scale=float(base.interpolant.norm() + y.norm()),
        claim=CLAIM,
        what="interpolant term at sigma vs at 1",
        context=ctx,
    )
    # the init term is f(x) minus the interpolant of f(X): it cancels terms of size sigma^L |f_1(x)|
    check_close(
        scaled.init_term,
        s_L * base.init_term,
        tol=tol,
        scale=s_L * float(base.init_term.norm() + base.euler_test.norm()),
        claim=CLAIM,
        what="init term at sigma vs sigma^L times at 1",
        context=ctx,
    )
    check_close(
        scaled.trained_train,
        y.reshape(-1),
        tol=tol,
        scale=float(y.norm()) + s_L * float(base.euler_train.norm()),
        claim=CLAIM,
        what="training fit f_lin(X; theta_inf) vs Y at sigma",
        context=ctx,
    )


@given(
    arch=relu_bias_free(max_depth=2, max_width=24),
    data=st.data(),
    start=st.floats(4.0, 10.0),
    steps=st.lists(st.floats(1.3, 2.0), min_size=3, max_size=3),
)
def test_test_error_grows_like_sigma_2L(arch, data, start, steps):
    """log e(sigma) against log sigma has slope 2L at large sigma (seed 001 Thm 4, §4.2, Fig 1).

    e(sigma) is measured: the test error of min_norm_linearized of the net with weight_std sigma, on a
    grid of four drawn sigmas starting at ``start`` times the crossover sigma_0 = (|a| / |b|)^(1/L) (where
    the init term's size sigma^L |b| reaches the interpolant's error |a|; a, b from eq (14) at sigma = 1).
    The least-squares slope through log e is compared with 2L.  Its deviation is bounded, not chosen:
    with r = |a| / (sigma_min^L |b|) <= start^-L, d log e / d log sigma differs from 2L by at most
    2L r (1 + r) / (1 - r)^2 on the grid, and the least-squares slope of a function whose derivative
    lies in a band lies in the same band; rounding of e adds sum_i |w_i| 2 eps_e (w the least-squares
    weights, eps_e the relative error of the test residual)."""
    ds = data.draw(datasets(arch, max_n=MAX_N))
    x, y, xt = ball_x(ds), ds.y(dtype=DTYPE, device=DEVICE), ball_x_test(ds, N_TEST)
    target = _target(xt)
    try:
        t1 = eq14_terms(with_sigma(arch, 1.0), x, y, xt)
    except IllConditionedError:
        assume(False)  # Phi Phi^T too ill-conditioned for the dtype's solver tolerance
    a, b = (t1.interpolant - target).double(), t1.init_term.double()
    L = len(arch.widths) + 1
    sigma0 = (float(a.norm()) / float(b.norm())) ** (1.0 / L)
    sigmas = [sigma0 * start]
    for step in steps:
        sigmas.append(sigmas[-1] * step)
    tol = tolerance("solver_identity", DTYPE)
    ctx = reproduce(
        arch,
        ds=repr(ds),
        sigmas=[round(s, 6) for s in sigmas],
        check="min_norm_linearized(replace(arch, weight_std=s).build(), x, y)(x_test) for s in sigmas",
    )
    errs, eps = [], []
    for s in sigmas:
        model = with_sigma(arch, s).build(dtype=DTYPE, device=DEVICE)
        with torch.no_grad():
            resid = min_norm_linearized(model, x, y)(xt).reshape(-1).double() - target.double()
        # eq (14) with a, b computed once at sigma = 1: the residual is a + sigma^L b exactly; the solve's rounding
        # is relative to the interpolant's size plus the init term's and the sigma^L f_1(x) it cancels from
        quad = a + s**L * b
        scale = float(t1.interpolant.norm() + y.norm()) + s**L * float(t1.euler_test.norm() + b.norm())
        check_close(
            resid,
            quad,
            tol=tol,
            scale=scale,
            claim=CLAIM,
            what="test residual at sigma vs a + sigma^L b (a, b at sigma = 1)",
            context=ctx,
        )
        errs.append(float((resid**2).mean()))
        eps.append(float(tol) * scale / float(quad.norm()))
    logs, loge = torch.tensor(sigmas, dtype=torch.float64).log(), torch.tensor(errs, dtype=torch.float64).log()
    w = (logs - logs.mean()) / ((logs - logs.mean()) ** 2).sum()  # least-squares slope = sum_i w_i log e_i
    slope = float((w * loge).sum())
    r = float(a.norm()) / (sigmas[0] ** L * float(b.norm()))
    # |log e_i - log e_i(exact)| <= 2 eps_i (e is a squared norm): the slope moves by at most sum |w_i| 2 max eps
    band = 2 * L * r * (1 + r) / (1 - r) ** 2 + float(w.abs().sum()) * 2 * max(eps)
    record_series("sigma_scaling: test error e(sigma) of the last drawn net", sigmas, errs, slope=slope, expected=2 * L)
    check_at_most(
        abs(slope - 2 * L),
        tolerance("sigma_slope", DTYPE) * band,
        claim=CLAIM,
        what=f"|log-log slope {slope:.4f} of the test error - 2L| (2L = {2 * L}, r = {r:.2e})",
        context=ctx,
    )
