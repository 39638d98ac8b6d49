"""seed 000, Thm 2, eq (6) (= Thm 7, eq (17)) and Lemma 3 (§5, App. 10): the initial output splits off linearly.

    h_k(.; h_ini, X, Y) = h_k(.; 0, X, Y) + h_ini - h_k(.; 0, X, h_ini(X))          (eq (6))

and h_k(.; 0, X, .) is linear in the targets (Lemma 3).  ``solvers.decompose`` computes the total
independently (one solve with Y - h_ini(X)), so the identity is a check, not a tautology; the total is
also compared with :func:`interpolate`.

Tolerance: ``tolerance("solver_identity")`` (1e-9 float64), relative to the size of the terms; kernels
with cond(K) > 1e4 are rejected (assume), as that tolerance's reason states.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, strategies as st

import ntkcheck as nk
from ntkcheck.testing.claims import check_close
from ntkcheck.solvers import SingularKernelError, decompose, interpolate
from ntkcheck.strategies import architectures, datasets, initial_functions, seeds
from ntkcheck.tolerances import MAX_CONDITION_FLOW, tolerance

from ._common import DEVICE, DTYPE, reproduce

CLAIM = "decomposition_identity"
pytestmark = pytest.mark.claim(CLAIM)
MAX_COND = MAX_CONDITION_FLOW


def _check_identity(k, y, kt, h_train, h_test, ctx: str, label: str) -> None:
    try:
        d = decompose(k, y, kt, h_train, h_test, max_cond=MAX_COND)
    except SingularKernelError:
        assume(False)  # ill-conditioned kernel: eq (6) needs K^{-1}
    tol = tolerance("solver_identity", DTYPE)
    scale = float(d.unbiased.norm() + d.h_ini.norm() + d.fit_of_init.norm()) + 1e-300
    check_close(d.total, d.unbiased + d.init_bias, tol=tol, scale=scale, claim=CLAIM,
                what=f"{label}: total vs unbiased + init_bias (eq (6))", context=ctx)
    direct = interpolate(k, y, kt, h_ini_train=h_train, h_ini_test=h_test, max_cond=MAX_COND)
    check_close(d.total, direct, tol=tol, scale=scale, claim=CLAIM,
                what=f"{label}: decompose total vs interpolate(h_ini)", context=ctx)
    check_close(d.init_bias, d.h_ini - interpolate(k, h_train, kt, max_cond=MAX_COND), tol=tol, scale=scale,
                claim=CLAIM, what=f"{label}: init_bias vs h_ini - h_k(.; 0, X, h_ini(X))", context=ctx)


@given(arch=architectures(max_depth=2, max_width=24, max_out=1), data=st.data())
def test_eq6_on_empirical_ntk(arch, data):
    """On the empirical NTK of a random network, with h_ini the network's own output and with a drawn
    random function h_ini: h_k(.; h_ini, X, Y) = h_k(.; 0, X, Y) + h_ini - h_k(.; 0, X, h_ini(X)), equal
    to interpolate with h_ini (seed 000, Thm 2 eq (6)).  Tolerance solver_identity (1e-9)."""
    ds = data.draw(datasets(arch, max_n=8))
    h_fn = data.draw(initial_functions(arch.in_features))
    model = arch.build(dtype=DTYPE, device=DEVICE)
    x, y = ds.x(dtype=DTYPE, device=DEVICE), ds.y(dtype=DTYPE, device=DEVICE)
    xt = ds.x_test(6, dtype=DTYPE, device=DEVICE)
    k, kt = nk.ntk(model, x), nk.ntk(model, xt, x)
    with torch.no_grad():
        own = (model(x).reshape(-1), model(xt).reshape(-1))
    ctx = reproduce(arch, ds=repr(ds), h_fn=repr(h_fn), check="decompose(nk.ntk(model, x), y, nk.ntk(model, xt, x), ...)")
    _check_identity(k, y, kt, *own, ctx, "h_ini = network output")
    _check_identity(k, y, kt, h_fn(x), h_fn(xt), ctx, "h_ini = InitialFunction")
    _check_identity(k, y, None, h_fn(x), None, ctx, "at the training points")


def _psd_kernel(seed: int, n: int, m: int, rank: int, ridge: float):
    """Joint kernel on n + m points: B B^T / rank + ridge I, B ~ N(0, 1) from ``seed``; (K, k_test_train)."""
    gen = torch.Generator().manual_seed(seed)
    b = torch.randn(n + m, rank, generator=gen, dtype=torch.float64)
    full = (b @ b.T / rank + ridge * torch.eye(n + m, dtype=torch.float64)).to(dtype=DTYPE, device=DEVICE)
    return full[:n, :n].contiguous(), full[n:, :n].contiguous()


def _vec(seed: int, n: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=gen, dtype=torch.float64).to(dtype=DTYPE, device=DEVICE)


@given(seed=seeds(), n=st.integers(1, 32), m=st.integers(1, 8), rank=st.integers(1, 64),
       ridge=st.sampled_from([1e-3, 1e-2, 0.1, 1.0]))
def test_eq6_on_random_psd_kernels(seed, n, m, rank, ridge):
    """On random PSD kernels A A^T / r + c I (n up to 32) with random targets and h_ini values,
    eq (6) holds and its total equals interpolate with h_ini (seed 000, Thm 2).  Tolerance
    solver_identity (1e-9)."""
    k, kt = _psd_kernel(seed, n, m, rank, ridge)
    y, h_train, h_test = _vec(seed + 1, n), _vec(seed + 2, n), _vec(seed + 3, m)
    ctx = reproduce(check=f"_psd_kernel({seed}, {n}, {m}, {rank}, {ridge}); y, h_train, h_test = "
                          f"_vec({seed}+1, {n}), _vec({seed}+2, {n}), _vec({seed}+3, {m})")
    _check_identity(k, y, kt, h_train, h_test, ctx, "random PSD kernel")


@given(seed=seeds(), n=st.integers(1, 32), m=st.integers(1, 8), rank=st.integers(1, 64),
       ridge=st.sampled_from([1e-3, 1e-2, 0.1, 1.0]),
       a=st.floats(-3, 3, allow_nan=False), b=st.floats(-3, 3, allow_nan=False))
def test_zero_init_interpolant_is_linear_in_targets(seed, n, m, rank, ridge, a, b):
    """h_k(.; 0, X, a Y1 + b Y2) = a h_k(.; 0, X, Y1) + b h_k(.; 0, X, Y2) (seed 000, Lemma 3), at test and
    training points.  Tolerance solver_identity (1e-9), relative to |a| |h(Y1)| + |b| |h(Y2)|."""
    k, kt = _psd_kernel(seed, n, m, rank, ridge)
    y1, y2 = _vec(seed + 1, n), _vec(seed + 2, n)
    ctx = reproduce(check=f"_psd_kernel({seed}, {n}, {m}, {rank}, {ridge}); y1, y2 = _vec({seed}+1, {n}), "
                          f"_vec({seed}+2, {n}); a, b = {a!r}, {b!r}")
    tol = tolerance("solver_identity", DTYPE)
    for where, kx in (("test points", kt), ("training points", None)):
        try:
            h1 = interpolate(k, y1, kx, max_cond=MAX_COND)
            h2 = interpolate(k, y2, kx, max_cond=MAX_COND)
            h12 = interpolate(k, a * y1 + b * y2, kx, max_cond=MAX_COND)
        except SingularKernelError:
            assume(False)
        scale = abs(a) * float(h1.norm()) + abs(b) * float(h2.norm()) + 1e-300
        check_close(h12, a * h1 + b * h2, tol=tol, scale=scale, claim=CLAIM,
                    what=f"Lemma 3 linearity at the {where}", context=ctx)
