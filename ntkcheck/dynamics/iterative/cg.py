"""Preconditioned conjugate gradients for ``(K + mu I) alpha = Y - h_ini(X)`` (seed 000 eq (5)) on any kernel
operator (conventions in :mod:`ntkcheck.dynamics.iterative`)."""

from __future__ import annotations

import torch

from ntkcheck._support.validation import check_choice, check_finite_result, check_positive_int
from ntkcheck.dynamics._arguments import check_diag_reg, check_tol
from ntkcheck.dynamics.iterative._operators import (
    _check_initial_pairing,
    _initial_test,
    _initial_train,
    _Regularised,
    _rhs,
    _targets,
    _test_kernel,
    _test_shape,
)
from ntkcheck.dynamics.iterative.preconditioners import PRECONDITIONERS, _Preconditioner
from ntkcheck.dynamics.results import CGInterpolant, CGResult
from ntkcheck.errors import IterativeConvergenceError, SingularKernelError
from ntkcheck.kernels.kernel_operator import KernelOperator, as_kernel_operator


def _pcg(
    A: _Regularised, B: torch.Tensor, M: _Preconditioner, X: torch.Tensor, tol: float, max_iter: int, what: str
) -> tuple[torch.Tensor, float]:
    """Preconditioned CG, one recurrence per column of B; restarted from the true residual when the
    recurrence's residual claims convergence that the true one does not confirm."""
    bnorm = B.norm(dim=0)
    bnorm = torch.where(bnorm > 0, bnorm, torch.ones_like(bnorm))
    R = B - A(X)
    true = R.norm(dim=0) / bnorm
    while True:
        active = true > tol
        if not bool(active.any()):
            return X, float(true.max())
        if A.products > max_iter:
            break
        Z = M(R)
        P = Z.clone()
        rz = (R * Z).sum(0)
        while bool(active.any()) and A.products <= max_iter:
            idx = torch.nonzero(active).flatten()
            AP = A(P[:, idx])
            pap = (P[:, idx] * AP).sum(0)
            if not bool((pap > 0).all()):
                bad = float(pap.min())
                raise SingularKernelError(
                    f"{what}: the kernel is not positive definite along a CG direction: p^T (K + mu I) p = {bad:.3e} "
                    f"<= 0 at iteration {A.products} (a singular or indefinite kernel; pass diag_reg > 0)"
                )
            alpha = rz[idx] / pap
            X[:, idx] += alpha * P[:, idx]
            R[:, idx] -= alpha * AP
            res = R[:, idx].norm(dim=0) / bnorm[idx]
            still = res > tol
            active[idx[~still]] = False
            idx = idx[still]
            if idx.numel() == 0:
                break
            Zi = M(R[:, idx])
            rz_new = (R[:, idx] * Zi).sum(0)
            beta = rz_new / rz[idx]
            P[:, idx] = Zi + beta * P[:, idx]
            rz[idx] = rz_new
        R = B - A(X)
        true = R.norm(dim=0) / bnorm
    worst = float(true.max())
    raise IterativeConvergenceError(
        f"{what}: conjugate gradients did not converge within max_iter={max_iter} kernel products: relative "
        f"residual {worst:.3e} > tol={tol:g} ({int((true > tol).sum())} of {B.shape[1]} right-hand sides); raise "
        f"max_iter, use a stronger preconditioner, or pass diag_reg > 0 (an ill-conditioned kernel)",
        residual=worst,
        iterations=A.products,
    )


def _cg_setup(
    kernel: object, diag_reg: object, preconditioner: object, rank: object, tol: object, max_iter: object, name: str
) -> tuple[KernelOperator, float, str, int, float, int | None]:
    reg = check_diag_reg(diag_reg)
    check_choice(preconditioner, "preconditioner", PRECONDITIONERS)
    rank = check_positive_int(rank, "rank")
    tol = check_tol(tol)
    if max_iter is not None:
        max_iter = check_positive_int(max_iter, "max_iter")
    op = as_kernel_operator(kernel, name=name)
    return op, reg, str(preconditioner), rank, tol, max_iter


def cg_solve(
    kernel: object,
    rhs: object,
    *,
    diag_reg: float = 0.0,
    preconditioner: str = "jacobi",
    rank: int = 100,
    tol: float = 1e-10,
    max_iter: int | None = None,
) -> CGResult:
    """Solve ``(K + mu I) X = B`` by preconditioned conjugate gradients; ``mu = diag_reg * mean(diag K)``.

    ``rhs`` (N,) or (N, k): each column runs its own CG recurrence, all active columns share one
    kernel product per iteration.  A column stops when ``||b - (K + mu I) x|| <= tol ||b||``,
    confirmed on the recomputed residual (CG restarts from it if rounding made the recurrence
    optimistic).  ``preconditioner``: ``"jacobi"`` (``diag(K + mu I)``; for an :class:`NTKOperator`
    the diagonal costs N per-row gradients), ``"pivoted_cholesky"`` (rank ``rank`` greedy pivoted
    Cholesky ``K ~ L L^T`` from ``rank`` kernel columns, preconditioner ``L L^T + s I``, s = mu plus
    the mean remaining diagonal: the Nyström approximation at the pivots) or ``"none"``.

    CG on a PSD kernel converges in at most N steps in exact arithmetic; in floating point the
    number of iterations grows like ``sqrt(cond)`` and can exceed N.  ``max_iter`` bounds the kernel
    products (default ``max(10 N, 100)``); past it :class:`IterativeConvergenceError` reports the relative
    residual reached.  A non-positive curvature ``p^T (K + mu I) p <= 0`` raises
    :class:`~ntkcheck.SingularKernelError` with its value.
    """
    op, reg, kind, rank, tol, max_iter = _cg_setup(kernel, diag_reg, preconditioner, rank, tol, max_iter, "kernel")
    B, shape = _rhs(rhs, op, "rhs")
    A = _Regularised(op, reg)
    M = _Preconditioner(kind, A, rank)
    A.products = 0
    limit = max_iter if max_iter is not None else max(10 * op.size, 100)
    X, res = _pcg(A, B, M, torch.zeros_like(B), tol, limit, "cg_solve")
    return CGResult(solution=check_finite_result(X.reshape(shape), "cg_solve"), iterations=A.products, residual=res)


def cg_interpolate(
    k_train: object,
    y_train: object,
    *,
    k_test_train: object = None,
    h_ini_train: object = None,
    h_ini_test: object = None,
    diag_reg: float = 0.0,
    tol: float = 1e-10,
    max_iter: int | None = None,
    preconditioner: str = "jacobi",
    rank: int = 100,
) -> CGInterpolant:
    """The interpolant of seed 000 eq (5), ``h_ini(x) + k(x, X) (K + mu I)^{-1} (Y - h_ini(X))``, by CG.

    As :func:`ntkcheck.interpolate`, with the inverse applied by :func:`cg_solve`.  ``k_train`` is
    any kernel (operator, tensor, array, memmap).  ``y_train`` (n,) or (n, O): for an (n*O, n*O)
    kernel (``output="full"`` of a multi-output model, or an (n, n, O, O) tensor) the (n, O) targets
    are flattened row-major; for an (n, n) kernel the O columns are right-hand sides of one solve.
    ``k_test_train`` (m, N) (a torch tensor or numpy array; (m, n, O, O) tensors are reshaped) gives
    predictions at m test points; without it the prediction is at the training points,
    ``h_ini(X) + K alpha`` (one more kernel product; equal to Y up to the residual when ``diag_reg = 0``).
    """
    op, reg, kind, rank, tol, max_iter = _cg_setup(k_train, diag_reg, preconditioner, rank, tol, max_iter, "k_train")
    Y, shape, n = _targets(y_train, op, "y_train")
    H0 = _initial_train(h_ini_train, op, Y, shape)
    _check_initial_pairing(k_test_train, h_ini_train, h_ini_test)
    Kx = None if k_test_train is None else _test_kernel(k_test_train, op)
    A = _Regularised(op, reg)
    M = _Preconditioner(kind, A, rank)
    A.products = 0
    limit = max_iter if max_iter is not None else max(10 * op.size, 100)
    alpha, res = _pcg(A, Y - H0, M, torch.zeros_like(Y), tol, limit, "cg_interpolate")
    iterations = A.products
    alpha_out = alpha.reshape(-1) if (len(shape) == 1 or n != op.size) else alpha
    if Kx is None:
        pred = (H0 + A.kernel(alpha)).reshape(shape)
    else:
        test_shape = _test_shape(Kx, shape, n != op.size)
        H0x = _initial_test(h_ini_test, Kx, Y.shape[1], test_shape)
        pred = (H0x + Kx @ alpha).reshape(test_shape)
    return CGInterpolant(
        prediction=check_finite_result(pred, "cg_interpolate"), alpha=alpha_out, iterations=iterations, residual=res
    )
