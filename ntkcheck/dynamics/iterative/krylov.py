"""The MSE flow (seed 000 eq (3)) at finite times by Lanczos: ``phi_t(K + mu I) (Y - h0)`` on a Krylov space
(conventions in :mod:`ntkcheck.dynamics.iterative`)."""

from __future__ import annotations

import math

import numpy as np
import torch

from ntkcheck._support.validation import check_finite_result, check_positive_int
from ntkcheck.dynamics._arguments import check_diag_reg, check_lr, check_tol, times_array
from ntkcheck.dynamics.iterative._operators import (
    F64,
    _check_initial_pairing,
    _initial_test,
    _initial_train,
    _Regularised,
    _targets,
    _test_kernel,
    _test_shape,
)
from ntkcheck.dynamics.results import KrylovFlowResult
from ntkcheck.errors import IterativeConvergenceError
from ntkcheck.kernels.kernel_operator import as_kernel_operator


def _phi(theta: torch.Tensor, ct: torch.Tensor) -> torch.Tensor:
    """``(1 - exp(-ct theta)) / theta`` for every (time, Ritz value): (T, m); ``ct`` at ``theta = 0``."""
    x = ct[:, None] * theta[None, :]
    safe = torch.where(x == 0, torch.ones_like(x), x)
    ratio = torch.where(x == 0, torch.ones_like(x), -torch.expm1(-x) / safe)
    return ct[:, None] * ratio


def _lanczos_phi(
    A: _Regularised, b: torch.Tensor, ct: torch.Tensor, tol: float, max_iter: int, check_every: int
) -> tuple[torch.Tensor, int, float]:
    """``phi_t(A) b`` for each time, by Lanczos with full reorthogonalisation: (N, T), steps, change estimate."""
    n = b.shape[0]
    beta0 = float(b.norm())
    T_len = ct.shape[0]
    if beta0 == 0.0:
        return torch.zeros(n, T_len, dtype=F64, device=b.device), 0, 0.0
    m_max = min(max_iter, n)
    Q = torch.zeros(n, m_max + 1, dtype=F64, device=b.device)
    Q[:, 0] = b / beta0
    alphas: list[float] = []
    betas: list[float] = []
    prev: torch.Tensor | None = None
    change = math.inf
    scale = 0.0
    m = 0
    for j in range(m_max):
        w = A(Q[:, j : j + 1])[:, 0]
        a = float(Q[:, j] @ w)
        w = w - a * Q[:, j] - (betas[-1] * Q[:, j - 1] if j > 0 else 0.0)
        for _ in range(2):  # full reorthogonalisation, twice ("twice is enough")
            w = w - Q[:, : j + 1] @ (Q[:, : j + 1].T @ w)
        bnext = float(w.norm())
        alphas.append(a)
        m = j + 1
        scale = max(scale, abs(a) + (betas[-1] if betas else 0.0) + bnext)
        # an invariant Krylov space (or all of R^N): the Lanczos approximation is exact
        breakdown = bnext <= 64 * torch.finfo(F64).eps * scale or m == n
        if breakdown or m % check_every == 0 or m == m_max:
            Tm = torch.diag(torch.tensor(alphas, dtype=F64))
            if betas:
                off = torch.tensor(betas, dtype=F64)
                Tm = Tm + torch.diag(off, 1) + torch.diag(off, -1)
            theta, S = torch.linalg.eigh(Tm)
            coef = beta0 * (S @ (_phi(theta, ct.cpu()).T * S[0][:, None]))  # (m, T): Krylov coordinates
            if breakdown:  # an invariant subspace: exact
                return Q[:, :m] @ coef.to(b.device), m, 0.0
            if prev is not None:
                padded = torch.zeros_like(coef)
                padded[: prev.shape[0]] = prev
                norms = coef.norm(dim=0)
                change = float(
                    ((coef - padded).norm(dim=0) / torch.where(norms > 0, norms, torch.ones_like(norms))).max()
                )
                if change <= tol:
                    return Q[:, :m] @ coef.to(b.device), m, change
            prev = coef
        if m < m_max:
            betas.append(bnext)
            Q[:, m] = w / bnext
    raise IterativeConvergenceError(
        f"krylov_mse_flow: Lanczos did not converge within max_iter={max_iter} steps: change estimate "
        f"||a_m - a_(m-{check_every})|| / ||a_m|| = {change:.3e} > tol={tol:g}; raise max_iter, or use "
        f"ntkcheck.mse_flow on the dense kernel (late times need about sqrt(c t lambda_max) steps, and t = inf "
        f"is the interpolant: cg_interpolate)",
        residual=change,
        iterations=m,
    )


def _lanczos_columns(
    A: _Regularised, B: torch.Tensor, ct: torch.Tensor, tol: float, limit: int
) -> tuple[torch.Tensor, int, float]:
    """``a(t) = phi_t(A) b`` for every column b of B (one Lanczos run each): (N, C*T) ordered column-major in
    (C, T), the largest number of steps and the largest change estimate."""
    cols, steps, err = [], 0, 0.0
    for j in range(B.shape[1]):
        a, m, e = _lanczos_phi(A, B[:, j], ct, tol, limit, 5)
        cols.append(a)
        steps, err = max(steps, m), max(err, e)
    Aall = torch.stack(cols, dim=2)  # (N, T, C)
    return Aall.permute(0, 2, 1).reshape(B.shape[0], -1), steps, err  # (N, C*T)


def krylov_mse_flow(
    k_train: object,
    y_train: object,
    *,
    k_test_train: object = None,
    h_ini_train: object = None,
    h_ini_test: object = None,
    times: object,
    lr: float = 1.0,
    diag_reg: float = 0.0,
    tol: float = 1e-10,
    max_iter: int | None = None,
) -> KrylovFlowResult:
    """The MSE kernel flow (seed 000 eq (3)) at finite times by Lanczos, as :func:`ntkcheck.mse_flow` computes densely.

    With ``c = 2 lr / n``, ``mu = diag_reg * mean(diag K)``, ``b = Y - h0`` and
    ``a(t) = phi_t(K + mu I) b``, ``phi_t(lambda) = (1 - exp(-c lambda t)) / lambda``:

        h_train(t) = h0 + K a(t),        h_test(t) = h_ini_test + k(x, X) a(t)

    (for ``mu = 0``, ``h_train(t) = Y - exp(-c K t) (Y - h0)``; for ``mu > 0`` the weight-decay flow
    of :func:`ntkcheck.mse_flow`).  ``phi_t`` is entire, so no inverse of K is needed: ``a(t)`` is
    approximated by ``||b|| Q_m phi_t(T_m) e_1`` on the Krylov space of ``K + mu I`` and b (Lanczos
    with full reorthogonalisation: memory ``O(N m)``; one kernel product per step; one basis serves
    all times).  The approximation is exact when the Krylov space becomes invariant (at most N
    steps) and converges superlinearly once ``m`` exceeds about ``sqrt(c t lambda_max)``; it stops
    when the change of ``a`` over the last 5 steps is at most ``tol`` relative, for every time
    (this a-posteriori estimate is the reported ``error``).  Not converging within ``max_iter``
    steps (default ``min(N, 500)``) raises :class:`IterativeConvergenceError` with the estimate.

    ``times`` must be finite (``t = inf`` is the interpolant: :func:`~ntkcheck.dynamics.iterative.cg.cg_interpolate` or
    :func:`ntkcheck.interpolate`).  Targets: (n,) or (n, O), as
    :func:`~ntkcheck.dynamics.iterative.cg.cg_interpolate`; columns are
    solved one Lanczos run each.  ``k_test_train`` (m, N) tensor or array.
    """
    lr = check_lr(lr)
    reg = check_diag_reg(diag_reg)
    tol = check_tol(tol)
    if max_iter is not None:
        max_iter = check_positive_int(max_iter, "max_iter")
    t_np = times_array(times)
    if not np.isfinite(t_np).all():
        raise ValueError(
            "times must be finite for krylov_mse_flow: t = inf is the interpolant, "
            "use cg_interpolate (or ntkcheck.interpolate / ntkcheck.mse_flow on a dense kernel)"
        )
    op = as_kernel_operator(k_train, name="k_train")
    Y, shape, n = _targets(y_train, op, "y_train")
    H0 = _initial_train(h_ini_train, op, Y, shape)
    _check_initial_pairing(k_test_train, h_ini_train, h_ini_test)
    Kx = None if k_test_train is None else _test_kernel(k_test_train, op)
    A = _Regularised(op, reg)
    ct = torch.as_tensor(t_np * (2 * lr / n), dtype=F64)
    limit = max_iter if max_iter is not None else min(op.size, 500)
    flat, steps, err = _lanczos_columns(A, Y - H0, ct.to(op.device), tol, limit)
    T = len(t_np)
    train = H0[None] + A.kernel(flat).reshape(op.size, -1, T).permute(2, 0, 1)
    test = None
    if Kx is not None:
        test_shape = _test_shape(Kx, shape, n != op.size)
        H0x = _initial_test(h_ini_test, Kx, Y.shape[1], test_shape)
        test = H0x[None] + (Kx @ flat).reshape(Kx.shape[0], -1, T).permute(2, 0, 1)
        test = check_finite_result(test.reshape((T,) + test_shape), "krylov_mse_flow test predictions")
    train = check_finite_result(train.reshape((T,) + shape), "krylov_mse_flow train predictions")
    return KrylovFlowResult(times=torch.as_tensor(t_np, dtype=F64), train=train, test=test, iterations=steps, error=err)
