"""Bad inputs to the kernel solvers, the closed-form flows and the min-norm solvers, and drawn kernels.

Every refused input raises the documented exception type with a message that names the
argument. Drawn kernels: indefinite symmetric matrices are always refused, Gram matrices of random
features are solved to within ``10 N cond eps`` of numpy (the forward-error bound of a
backward-stable solve, Higham Thm 7.2, with the factor N of its backward error).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import numpy as np
import pytest
import torch
from _fuzz_interpolate_cases import DECOMPOSE_CASES, INTERPOLATE_CASES
from _fuzz_solver_cases import (
    CONDITION_CASES,
    CONSISTENT_CASES,
    FLOW_CASES,
    LINEARIZED_CASES,
    MAX_LR_CASES,
    MIN_NORM_CASES,
)
from _fuzz_solver_inputs import EPS64, _rel, _spectral
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ntkcheck.dynamics.flows import mse_flow, mse_gd
from ntkcheck.dynamics.solvers import (
    condition_number,
    decompose,
    interpolate,
    max_stable_lr,
    min_norm_parameters,
)


def _named(prefix: str, cases: list) -> list:
    return [pytest.param(*c.values, id=f"{prefix}:{c.id}") for c in cases]


CASES = (
    _named("interpolate", INTERPOLATE_CASES)
    + _named("decompose", DECOMPOSE_CASES)
    + _named("min_norm_parameters", MIN_NORM_CASES)
    + _named("min_norm_linearized", LINEARIZED_CASES)
    + _named("condition_number", CONDITION_CASES)
    + _named("max_stable_lr", MAX_LR_CASES)
    + FLOW_CASES
    + _named("check_consistent", CONSISTENT_CASES)
)


@pytest.mark.parametrize("call, error, fragment", CASES)
def test_bad_input_is_refused_by_name(call: Callable[[], object], error: type[Exception], fragment: str) -> None:
    with pytest.raises(error, match=re.escape(fragment)):
        call()


# ------------------------------------------------------------------ drawn kernels


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 8),
    seed=st.integers(0, 2**31 - 1),
    log_depth=st.floats(-9.0, 1.0),
    log_scale=st.floats(-30.0, 30.0),
    dtype=st.sampled_from([torch.float64, torch.float32]),
)
def test_indefinite_symmetric_kernels_are_always_refused(n, seed, log_depth, log_scale, dtype):
    """Eigenvalues in [0, 1] except one at ``-depth * max(lambda_max, 1e-3)``, all scaled by 10^log_scale.

    depth >= 1e-9 in float64 and >= 1e-3 in float32 lies at least 10x outside the tolerance
    ``100 N eps`` (N <= 8: 1.8e-13 and 9.5e-5).
    """
    depth = 10.0 ** max(log_depth, -3.0 if dtype == torch.float32 else -9.0)
    rng = np.random.default_rng(seed)
    evals = rng.uniform(0.0, 1.0, n)
    evals[0] = -depth * max(evals[1:].max(initial=0.0), 1e-3)
    k = _spectral(evals * 10.0**log_scale, seed=seed % 1000, dtype=dtype)
    y = torch.ones(n, dtype=dtype)
    fragment = "k_train is not positive semi-definite: smallest eigenvalue -"
    for call in (
        lambda: interpolate(k, y, pinv_rcond=1e-3),
        lambda: interpolate(k, y),
        lambda: max_stable_lr(k),
        lambda: mse_flow(k, y, times=[1.0, math.inf], pinv_rcond=1e-3),
        lambda: mse_gd(k, y, lr=1e-3, steps=[2]),
        lambda: decompose(k, y, k_test_train=None, h_ini_train=y, h_ini_test=None, pinv_rcond=1e-3),
    ):
        with pytest.raises(ValueError, match=re.escape(fragment)):
            call()
    with pytest.raises(ValueError, match="k is not positive semi-definite"):
        condition_number(k)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 12), extra=st.integers(0, 10), m=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_random_gram_kernels_are_solved_like_numpy(n, extra, m, seed):
    """K = Phi Phi^T from random features Phi (n, n + extra), float64: interpolate and the t = inf flow agree
    with ``k_x alpha``, ``alpha = np.linalg.solve(K, y)``, within ``10 N cond(K) eps ||k_x|| ||alpha||`` (the
    error of alpha carried through k_x; relative to the output itself a cancelling sum would inflate it), and
    min_norm_parameters(Phi, y) agrees with ``np.linalg.lstsq`` within ``10 N cond(Phi) eps`` relative."""
    rng = np.random.default_rng(seed)
    phi = rng.standard_normal((n + m, n + extra))
    k_all = phi @ phi.T
    k, kx, y = k_all[:n, :n], k_all[n:, :n], rng.standard_normal(n)
    cond = np.linalg.cond(k)
    assume(cond <= 1e10)  # the default guard 1 / (N eps) refuses far worse; the bound stays meaningful
    alpha = np.linalg.solve(k, y)
    ref = kx @ alpha
    bound = 10 * n * cond * EPS64 * np.linalg.norm(kx, 2) * np.linalg.norm(alpha)
    kt, kxt, yt = torch.from_numpy(k), torch.from_numpy(kx), torch.from_numpy(y)
    assert np.linalg.norm(interpolate(kt, yt, k_test_train=kxt).numpy() - ref) <= bound
    assert np.linalg.norm(mse_flow(kt, yt, times=[math.inf], k_test_train=kxt).test[0].numpy() - ref) <= bound
    jac = torch.from_numpy(phi[:n])
    if jac.shape[1] > n:
        lstsq = np.linalg.lstsq(phi[:n], y, rcond=None)[0]
        assert _rel(min_norm_parameters(jac, yt), lstsq) <= 10 * n * math.sqrt(cond) * EPS64
