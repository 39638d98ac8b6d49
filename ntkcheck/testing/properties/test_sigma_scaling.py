"""seed 001, §4.2 (Thm 3/4, Fig 1): scaling the initialization of a bias-free ReLU net by sigma.

With theta_0 -> sigma theta_0: grad f scales by sigma^(L-1), so the interpolant term of
eq (14) is unchanged and the init term (1/L) Phi(x)(I - P) theta_0 scales by sigma^L;
training error stays 0 and the test error e(sigma) = |a + sigma^L b|^2 grows like sigma^(2L).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, strategies as st

from ntkcheck.testing.claims import check_at_most, check_close
from ntkcheck.strategies import datasets
from ntkcheck.tolerances import tolerance

from ._common import DEVICE, DTYPE, reproduce
from ._seed001 import eq14_terms, relu_bias_free

CLAIM = "sigma_scaling"
pytestmark = pytest.mark.claim(CLAIM)


@given(arch=relu_bias_free(max_depth=2, max_width=24), data=st.data(),
       sigma=st.sampled_from([0.25, 0.5, 2.0, 4.0]))
def test_interpolant_invariant_and_init_term_scales_as_sigma_L(arch, data, sigma):
    """Interpolant term unchanged, init term times sigma^L, training error 0 (seed 001 §4.2)."""
    ds = data.draw(datasets(arch, max_n=5))
    x, y = ds.x(dtype=DTYPE, device=DEVICE), ds.y(dtype=DTYPE, device=DEVICE)
    xt = ds.x_test(4, dtype=DTYPE, device=DEVICE)
    try:
        base, scaled = eq14_terms(arch, x, y, xt), eq14_terms(arch, x, y, xt, sigma=sigma)
    except (torch.linalg.LinAlgError, ValueError):
        assume(False)  # singular Phi Phi^T (dead ReLUs)
    L = len(arch.widths) + 1
    ctx = reproduce(arch, ds=repr(ds), sigma=sigma)
    tol = tolerance("solver_identity", DTYPE)
    check_close(scaled.interpolant, base.interpolant, tol=tol, scale=float(base.interpolant.norm()) + 1e-300,
                claim=CLAIM, what="interpolant term at sigma vs at 1", context=ctx)
    check_close(scaled.init_term, sigma**L * base.init_term, tol=tol,
                scale=sigma**L * float(base.init_term.norm()) + 1e-300 + tol * float(base.interpolant.norm()),
                claim=CLAIM, what="init term at sigma vs sigma^L times at 1", context=ctx)
    check_at_most(float(scaled.train_residual.abs().max()), tol * max(1.0, float(y.abs().max())), claim=CLAIM,
                  what="training error of the trained linearization at sigma", context=ctx)


@given(arch=relu_bias_free(max_depth=2, max_width=24), data=st.data())
def test_test_error_grows_like_sigma_2L(arch, data):
    """log e(sigma) against log sigma has slope 2L at large sigma (seed 001 §4.2, Fig 1)."""
    ds = data.draw(datasets(arch, max_n=5))
    x, y = ds.x(dtype=DTYPE, device=DEVICE), ds.y(dtype=DTYPE, device=DEVICE)
    xt = ds.x_test(6, dtype=DTYPE, device=DEVICE)
    target = torch.sin(xt.sum(dim=1))
    try:
        t1 = eq14_terms(arch, x, y, xt)
    except (torch.linalg.LinAlgError, ValueError):
        assume(False)
    a, b = t1.interpolant - target, t1.init_term
    assume(float(b.norm()) > 1e-8 * float(a.norm()) + 1e-12)  # an init term that is not already ~0
    L = len(arch.widths) + 1
    # e(sigma) = |a + sigma^L b|^2 exactly (previous property): measure the slope where sigma^L |b| >= 1e3 |a|,
    # so the interpolant's error a changes the slope by O(1e-3)
    sigma1 = max(1.0, (1e3 * float(a.norm()) / float(b.norm())) ** (1.0 / L))
    sigmas = [sigma1, 10.0 * sigma1]
    errs = []
    for s in sigmas:
        terms = eq14_terms(arch, x, y, xt, sigma=s)
        errs.append(float(((terms.trained - target) ** 2).mean()))
    slope = math.log(errs[1] / errs[0]) / math.log(sigmas[1] / sigmas[0])
    check_at_most(abs(slope - 2 * L), tolerance("sigma_slope", DTYPE), claim=CLAIM, what=f"log-log slope {slope:.3f} of test error vs 2L = {2 * L}",
                  context=reproduce(arch, ds=repr(ds)))
