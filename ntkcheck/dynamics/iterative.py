"""Iterative and out-of-core kernel solvers: CG interpolant, Krylov MSE flow, blocked Cholesky.

The kernel may be anything :func:`ntkcheck.kernels.operator.as_kernel_operator` accepts: an
:class:`~ntkcheck.kernels.operator.NTKOperator` (the empirical NTK, never formed), a dense torch
tensor (N, N) or (n, n, O, O), a numpy array or file-backed ``np.memmap``, or a scipy
``LinearOperator``.  Conventions are those of :mod:`ntkcheck.dynamics.solvers` and
:mod:`ntkcheck.dynamics.flows`: MSE ``(1/n) sum |h - y|^2`` (n samples), rate ``c = 2 lr / n``, and the
ridge ``diag_reg``: the solvers use ``K + mu I`` with ``mu = diag_reg * mean(diag K)``
(``= diag_reg * trace(K) / N``, neural-tangents' relative scale), while predictions use K
itself (kernel ridge regression).  Computation is in float64 (on the device of an operator or
a tensor; on the CPU for arrays); results are float64.

* :func:`cg_solve` / :func:`cg_interpolate`: preconditioned conjugate gradients for
  ``(K + mu I) alpha = Y - h_ini(X)`` (seed 000 eq (5)), several right-hand sides at once
  (one CG recurrence per column, one kernel product per iteration for all active columns),
  with a Jacobi or a rank-r pivoted-Cholesky (Nyström) preconditioner.
* :func:`krylov_mse_flow`: the MSE flow (seed 000 eq (3)) at finite times t by Lanczos:
  ``h(t)`` needs ``phi_t(K + mu I) (Y - h0)`` with the entire function
  ``phi_t(lambda) = (1 - exp(-c lambda t)) / lambda``, approximated on the Krylov space
  ``||b|| Q_m phi_t(T_m) e_1`` (no inverse of K, no eigendecomposition of K).
* :func:`blocked_cholesky_solve`: the direct solve for a kernel in a file, factorised block row
  by block row within a memory budget (the factor itself goes to a file).

Failures carry the measured numbers: :class:`IterativeConvergenceError` (residual or change
estimate and iterations), :class:`ntkcheck.SingularKernelError` (a non-positive curvature or a
failed pivot, with its value).
"""

from __future__ import annotations

import math
import os
import tempfile
from typing import NamedTuple

import numpy as np
import torch

from ntkcheck._support.validation import check_choice, check_finite_result, check_positive_int
from ntkcheck.dynamics.solvers import SingularKernelError, _check_diag_reg, _threshold
from ntkcheck.errors import IterativeConvergenceError
from ntkcheck.kernels.operator import ArrayKernelOperator, KernelOperator, as_kernel_operator

__all__ = [
    "CGInterpolant",
    "CGResult",
    "CholeskyResult",
    "IterativeConvergenceError",
    "KrylovFlowResult",
    "blocked_cholesky_solve",
    "cg_interpolate",
    "cg_solve",
    "krylov_mse_flow",
]

PRECONDITIONERS = ("jacobi", "pivoted_cholesky", "none")
F64 = torch.float64


class CGResult(NamedTuple):
    """``solution`` (N,) or (N, k); ``iterations`` (kernel products); ``residual``: the largest
    ``||b_j - (K + mu I) x_j|| / ||b_j||`` over the columns, recomputed from the solution."""

    solution: torch.Tensor
    iterations: int
    residual: float


class CGInterpolant(NamedTuple):
    """:func:`cg_interpolate`: predictions (shape of y_train, or (m,) + its trailing shape), the
    coefficients ``alpha = (K + mu I)^{-1} (Y - h_ini(X))`` (N,) or (N, k), iterations, residual."""

    prediction: torch.Tensor
    alpha: torch.Tensor
    iterations: int
    residual: float


class KrylovFlowResult(NamedTuple):
    """Trajectory of :func:`krylov_mse_flow`: ``train`` (T, n[, O]), ``test`` (T, m[, O]) or None;
    ``iterations``: Lanczos steps (the largest over right-hand sides); ``error``: the final change
    estimate ``||a_m - a_{m-s}|| / ||a_m||`` (largest over times and right-hand sides)."""

    times: torch.Tensor
    train: torch.Tensor
    test: torch.Tensor | None
    iterations: int
    error: float


class CholeskyResult(NamedTuple):
    """:func:`blocked_cholesky_solve`: ``solution`` (N,) or (N, k); ``residual`` the largest relative
    residual ``||b_j - (K + mu I) x_j|| / ||b_j||``; ``block_rows`` used; ``cond_lower_bound``
    ``max_i (K + mu I)_ii / min_i L_ii^2`` (a lower bound of the condition number)."""

    solution: torch.Tensor
    residual: float
    block_rows: int
    cond_lower_bound: float


# ---------------------------------------------------------------------------------------------
# helpers


def _check_tol(tol: object, name: str = "tol") -> float:
    if isinstance(tol, bool) or not isinstance(tol, (int, float)):
        raise TypeError(f"{name} must be a float in (0, 1), got {type(tol).__name__} {tol!r}")
    if not 0 < tol < 1:
        raise ValueError(f"{name} must be a float in (0, 1), got {tol!r}")
    return float(tol)


def _rhs(rhs: object, op: KernelOperator, name: str) -> tuple[torch.Tensor, tuple[int, ...]]:
    """``rhs`` (N,) or (N, k), a tensor or numpy array, as an (N, k) float64 tensor on the operator's device."""
    if isinstance(rhs, np.ndarray):
        rhs = torch.from_numpy(np.array(rhs, dtype=np.float64))
    if not isinstance(rhs, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array of shape ({op.size},) or ({op.size}, k), "
                        f"got {type(rhs).__name__}")
    if not rhs.is_floating_point():
        raise TypeError(f"{name} must be floating-point, got dtype {rhs.dtype}")
    if rhs.ndim not in (1, 2) or rhs.shape[0] != op.size or rhs.numel() == 0:
        raise ValueError(f"{name} must have shape ({op.size},) or ({op.size}, k) with k >= 1 (the kernel is "
                         f"{op.size} x {op.size}), got {tuple(rhs.shape)}")
    if not bool(torch.isfinite(rhs).all()):
        raise ValueError(f"{name} contains {int((~torch.isfinite(rhs)).sum())} NaN or infinite entries")
    return rhs.detach().to(op.device, F64).reshape(op.size, -1), tuple(rhs.shape)


class _Regularised:
    """``V -> (K + mu I) V`` in float64, ``mu = diag_reg * mean(diag K)``; counts products."""

    def __init__(self, op: KernelOperator, diag_reg: float, diag: torch.Tensor | None = None) -> None:
        self.op = op
        self.diag = diag
        if diag_reg > 0 and self.diag is None:
            self.diag = op.diagonal().to(F64)
        self.mu = diag_reg * float(self.diag.mean()) if diag_reg > 0 and self.diag is not None else 0.0
        self.products = 0

    def kernel(self, V: torch.Tensor) -> torch.Tensor:
        self.products += 1
        return self.op.apply(V.to(self.op.torch_dtype)).to(F64)

    def __call__(self, V: torch.Tensor) -> torch.Tensor:
        out = self.kernel(V)
        return out + self.mu * V if self.mu else out

    def diagonal(self) -> torch.Tensor:
        if self.diag is None:
            self.diag = self.op.diagonal().to(F64)
        return self.diag + self.mu


def _pivoted_cholesky(A: _Regularised, rank: int) -> tuple[torch.Tensor, float]:
    """Greedy pivoted Cholesky of K to rank ``rank``: ``K ~ L L^T`` (N, r'), and the mean remaining diagonal.

    Each step takes the largest remaining diagonal entry as pivot and one kernel column
    (one product for an operator).  Stops early when the remaining diagonal falls to
    ``N eps`` of its start (K is then numerically of that rank).
    """
    if A.diag is None:
        A.diag = A.op.diagonal().to(F64)
    d = A.diag.clone()
    n = d.shape[0]
    floor = n * torch.finfo(F64).eps * float(d.max())
    L = torch.zeros(n, rank, dtype=F64, device=d.device)
    r = 0
    for j in range(rank):
        i = int(torch.argmax(d))
        if float(d[i]) <= floor:
            break
        col = A.op.columns([i]).to(F64)[:, 0]
        col = col - L[:, :j] @ L[i, :j]
        L[:, j] = col / math.sqrt(float(d[i]))
        d = (d - L[:, j] ** 2).clamp_min(0.0)
        d[i] = 0.0
        r = j + 1
    return L[:, :r], float(d.mean())


class _Preconditioner:
    """``M^{-1}``: Jacobi ``diag(K + mu I)^{-1}``, or ``(L L^T + s I)^{-1}`` with ``s = mu + mean remaining
    diagonal`` (floored at ``N eps max diag K``) from a rank-r pivoted Cholesky ``K ~ L L^T``."""

    def __init__(self, kind: str, A: _Regularised, rank: int) -> None:
        self.kind = kind
        if kind == "jacobi":
            dg = A.diagonal()
            if not bool((dg > 0).all()):
                raise SingularKernelError(f"the kernel has a diagonal entry {float(dg.min()):.3e} <= 0: the Jacobi "
                                          f"preconditioner needs a positive diagonal (a zero row of the kernel)")
            self.inv_diag = 1.0 / dg
        elif kind == "pivoted_cholesky":
            L, rest = _pivoted_cholesky(A, rank)
            assert A.diag is not None
            s = max(A.mu + rest, A.diag.shape[0] * torch.finfo(F64).eps * float(A.diag.max()))
            U, sv, _ = torch.linalg.svd(L, full_matrices=False)
            self.U, self.s, self.scale = U, s, 1.0 / (sv**2 + s)

    def __call__(self, R: torch.Tensor) -> torch.Tensor:
        if self.kind == "jacobi":
            return self.inv_diag[:, None] * R
        if self.kind == "none":
            return R
        UR = self.U.T @ R
        return self.U @ (self.scale[:, None] * UR) + (R - self.U @ UR) / self.s


def _pcg(A: _Regularised, B: torch.Tensor, M: _Preconditioner, X: torch.Tensor, tol: float, max_iter: int,
         what: str) -> tuple[torch.Tensor, float]:
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
                    f"<= 0 at iteration {A.products} (a singular or indefinite kernel; pass diag_reg > 0)")
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
        residual=worst, iterations=A.products)


def _cg_setup(kernel: object, diag_reg: object, preconditioner: object, rank: object, tol: object,
              max_iter: object, name: str) -> tuple[KernelOperator, float, str, int, float, int | None]:
    reg = _check_diag_reg(diag_reg)
    check_choice(preconditioner, "preconditioner", PRECONDITIONERS)
    rank = check_positive_int(rank, "rank")
    tol = _check_tol(tol)
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
    return CGResult(check_finite_result(X.reshape(shape), "cg_solve"), A.products, res)


def _targets(y: object, op: KernelOperator, name: str) -> tuple[torch.Tensor, tuple[int, ...], int]:
    """y (n,) or (n, O) as an (N, C) matrix: flattened row-major when the kernel is (n*O, n*O) and y (n, O)."""
    if isinstance(y, np.ndarray):
        y = torch.from_numpy(np.array(y, dtype=np.float64))
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (n,) or (n, O), got {type(y).__name__}")
    if y.ndim == 2 and y.shape[0] * y.shape[1] == op.size and y.shape[0] != op.size:
        return _rhs(y.reshape(-1), op, name)[0], tuple(y.shape), y.shape[0]
    mat, shape = _rhs(y, op, name)
    return mat, shape, op.size


def cg_interpolate(
    k_train: object,
    y_train: object,
    k_test_train: object = None,
    *,
    h_ini_train: object = None,
    h_ini_test: object = None,
    diag_reg: float = 0.0,
    preconditioner: str = "jacobi",
    rank: int = 100,
    tol: float = 1e-10,
    max_iter: int | None = None,
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
    op, reg, kind, rank, tol, max_iter = _cg_setup(k_train, diag_reg, preconditioner, rank, tol, max_iter,
                                                   "k_train")
    Y, shape, n = _targets(y_train, op, "y_train")
    H0 = torch.zeros_like(Y)
    if h_ini_train is not None:
        H0, h_shape, _ = _targets(h_ini_train, op, "h_ini_train")
        if h_shape != shape:
            raise ValueError(f"h_ini_train must have the shape of y_train {shape}, got {h_shape}")
    if h_ini_test is not None and k_test_train is None:
        raise ValueError("h_ini_test was given without k_test_train")
    if h_ini_train is not None and k_test_train is not None and h_ini_test is None:
        raise ValueError("h_ini_test is required when h_ini_train and k_test_train are given (h_ini at the test points)")
    if h_ini_train is None and h_ini_test is not None:
        raise ValueError("h_ini_test was given without h_ini_train: give the initial function at both point sets")
    Kx = None
    if k_test_train is not None:
        if isinstance(k_test_train, np.ndarray):
            k_test_train = torch.from_numpy(np.array(k_test_train, dtype=np.float64))
        if not isinstance(k_test_train, torch.Tensor):
            raise TypeError(f"k_test_train must be a torch.Tensor or numpy array (m, N), got "
                            f"{type(k_test_train).__name__}")
        kx = k_test_train.detach()
        if kx.ndim == 4:
            m, _, o, _ = kx.shape
            kx = kx.permute(0, 2, 1, 3).reshape(m * o, -1)
        if kx.ndim != 2 or kx.shape[1] != op.size:
            raise ValueError(f"k_test_train must have shape (m, {op.size}) (columns matching k_train), got "
                             f"{tuple(k_test_train.shape)}")
        if not bool(torch.isfinite(kx).all()):
            raise ValueError("k_test_train contains NaN or infinite entries")
        Kx = kx.to(op.device, F64)
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
        C = Y.shape[1]
        if n != op.size:  # flattened multi-output targets: test rows are (point, output) pairs
            o = shape[1]
            test_shape: tuple[int, ...] = (Kx.shape[0] // o, o)
        else:
            test_shape = (Kx.shape[0],) + shape[1:]
        H0x = torch.zeros(Kx.shape[0], C, dtype=F64, device=Kx.device)
        if h_ini_test is not None:
            h0x = h_ini_test if isinstance(h_ini_test, torch.Tensor) else torch.from_numpy(np.array(h_ini_test, dtype=np.float64))
            if tuple(h0x.shape) != test_shape:
                raise ValueError(f"h_ini_test must have shape {test_shape}, got {tuple(h0x.shape)}")
            H0x = h0x.detach().to(Kx.device, F64).reshape(Kx.shape[0], C)
        pred = (H0x + Kx @ alpha).reshape(test_shape)
    return CGInterpolant(check_finite_result(pred, "cg_interpolate"), alpha_out, iterations, res)


# ---------------------------------------------------------------------------------------------
# the MSE flow at finite times by Lanczos


def _phi(theta: torch.Tensor, ct: torch.Tensor) -> torch.Tensor:
    """``(1 - exp(-ct theta)) / theta`` for every (time, Ritz value): (T, m); ``ct`` at ``theta = 0``."""
    x = ct[:, None] * theta[None, :]
    safe = torch.where(x == 0, torch.ones_like(x), x)
    ratio = torch.where(x == 0, torch.ones_like(x), -torch.expm1(-x) / safe)
    return ct[:, None] * ratio


def _lanczos_phi(A: _Regularised, b: torch.Tensor, ct: torch.Tensor, tol: float, max_iter: int,
                 check_every: int) -> tuple[torch.Tensor, int, float]:
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
                change = float(((coef - padded).norm(dim=0) / torch.where(norms > 0, norms,
                                                                          torch.ones_like(norms))).max())
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
        f"is the interpolant: cg_interpolate)", residual=change, iterations=m)


def krylov_mse_flow(
    k_train: object,
    y_train: object,
    times: object,
    *,
    k_test_train: object = None,
    h_ini_train: object = None,
    h_ini_test: object = None,
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

    ``times`` must be finite (``t = inf`` is the interpolant: :func:`cg_interpolate` or
    :func:`ntkcheck.interpolate`).  Targets: (n,) or (n, O), as :func:`cg_interpolate`; columns are
    solved one Lanczos run each.  ``k_test_train`` (m, N) tensor or array.
    """
    from ntkcheck.dynamics.flows import _check_lr, _times

    lr = _check_lr(lr)
    reg = _check_diag_reg(diag_reg)
    tol = _check_tol(tol)
    if max_iter is not None:
        max_iter = check_positive_int(max_iter, "max_iter")
    t_np = _times(times)
    if not np.isfinite(t_np).all():
        raise ValueError("times must be finite for krylov_mse_flow: t = inf is the interpolant, "
                         "use cg_interpolate (or ntkcheck.interpolate / ntkcheck.mse_flow on a dense kernel)")
    op = as_kernel_operator(k_train, name="k_train")
    Y, shape, n = _targets(y_train, op, "y_train")
    H0 = torch.zeros_like(Y)
    if h_ini_train is not None:
        H0, h_shape, _ = _targets(h_ini_train, op, "h_ini_train")
        if h_shape != shape:
            raise ValueError(f"h_ini_train must have the shape of y_train {shape}, got {h_shape}")
    if (h_ini_test is not None) != (h_ini_train is not None and k_test_train is not None):
        if h_ini_test is not None and k_test_train is None:
            raise ValueError("h_ini_test was given without k_test_train")
        if h_ini_test is not None:
            raise ValueError("h_ini_test was given without h_ini_train: give the initial function at both point sets")
        raise ValueError("h_ini_test is required when h_ini_train and k_test_train are given (h_ini at the test points)")
    A = _Regularised(op, reg)
    samples = n
    ct = torch.as_tensor(t_np * (2 * lr / samples), dtype=F64)
    limit = max_iter if max_iter is not None else min(op.size, 500)
    cols, steps, err = [], 0, 0.0
    for j in range(Y.shape[1]):
        a, m, e = _lanczos_phi(A, Y[:, j] - H0[:, j], ct.to(op.device), tol, limit, 5)
        cols.append(a)
        steps, err = max(steps, m), max(err, e)
    Aall = torch.stack(cols, dim=2)  # (N, T, C)
    T = len(t_np)
    flat = Aall.permute(0, 2, 1).reshape(op.size, -1)  # (N, C*T)
    train = H0[None] + A.kernel(flat).reshape(op.size, -1, T).permute(2, 0, 1)
    test = None
    if k_test_train is not None:
        kx = k_test_train.detach() if isinstance(k_test_train, torch.Tensor) else torch.from_numpy(
            np.array(k_test_train, dtype=np.float64))
        if kx.ndim == 4:
            kx = kx.permute(0, 2, 1, 3).reshape(kx.shape[0] * kx.shape[2], -1)
        if kx.ndim != 2 or kx.shape[1] != op.size:
            raise ValueError(f"k_test_train must have shape (m, {op.size}), got {tuple(k_test_train.shape)}")
        Kx = kx.to(op.device, F64)
        test_shape = (Kx.shape[0] // shape[1], shape[1]) if n != op.size else (Kx.shape[0],) + shape[1:]
        H0x = torch.zeros(Kx.shape[0], Y.shape[1], dtype=F64, device=Kx.device)
        if h_ini_test is not None:
            h0x = torch.as_tensor(h_ini_test).detach()
            if tuple(h0x.shape) != test_shape:
                raise ValueError(f"h_ini_test must have shape {test_shape}, got {tuple(h0x.shape)}")
            H0x = h0x.to(Kx.device, F64).reshape(Kx.shape[0], -1)
        test = H0x[None] + (Kx @ flat).reshape(Kx.shape[0], -1, T).permute(2, 0, 1)
        test = check_finite_result(test.reshape((T,) + test_shape), "krylov_mse_flow test predictions")
    train = check_finite_result(train.reshape((T,) + shape), "krylov_mse_flow train predictions")
    return KrylovFlowResult(torch.as_tensor(t_np, dtype=F64), train, test, steps, err)


# ---------------------------------------------------------------------------------------------
# out-of-core Cholesky


def blocked_cholesky_solve(
    kernel: np.ndarray,
    rhs: object,
    *,
    diag_reg: float = 0.0,
    memory_budget: int = 256 * 2**20,
    factor_path: str | os.PathLike[str] | None = None,
    max_cond: float | None = None,
) -> CholeskyResult:
    """Solve ``(K + mu I) X = B`` for a kernel in a file by a Cholesky factorisation, block row by block row.

    ``kernel``: an (N, N) numpy array, typically ``np.load(path, mmap_mode="r")`` or an ``np.memmap``
    (only its lower triangle is read by the factorisation; symmetry is checked first).  The factor
    ``L`` (``K + mu I = L L^T``, float64, N^2 * 8 bytes) is written to ``factor_path`` (a new file;
    default a temporary file, deleted afterwards).  Row blocks of ``block_rows = memory_budget //
    (16 N)`` rows are held two at a time: block row I of the kernel is reduced against each earlier
    block row J of L (read back from the factor file), ``L_IJ = (K_IJ - L_I,<J L_J,<J^T) L_JJ^{-T}``,
    then ``L_II = chol(K_II - L_I,<I L_I,<I^T)``.  Forward and back substitution read L by block rows.

    Guards: a failed diagonal-block Cholesky raises :class:`~ntkcheck.SingularKernelError` with the
    block and the pivot; ``max_i (K + mu I)_ii / min_i L_ii^2`` is a lower bound of the condition
    number (``L_ii^2 >= lambda_min``) and above ``max_cond`` (default ``1 / (N eps)``, as
    :mod:`ntkcheck.dynamics.solvers`) it raises :class:`~ntkcheck.SingularKernelError`.  The relative
    residual is measured with one more pass over the kernel and returned.
    """
    reg = _check_diag_reg(diag_reg)
    if isinstance(memory_budget, bool) or not isinstance(memory_budget, int) or memory_budget <= 0:
        raise ValueError(f"memory_budget must be a positive int (bytes), got {memory_budget!r}")
    if not isinstance(kernel, np.ndarray):
        raise TypeError(f"kernel must be a numpy array (N, N), e.g. np.load(path, mmap_mode='r'), "
                        f"got {type(kernel).__name__}")
    n = kernel.shape[0] if kernel.ndim == 2 else 0
    bs = memory_budget // (16 * max(n, 1))
    if n and bs < 1:
        raise ValueError(f"memory_budget={memory_budget} bytes is too small: one block row of the kernel and one "
                         f"of the factor need 16 N = {16 * n} bytes (N={n})")
    op = as_kernel_operator(kernel, name="kernel", block_rows=max(bs, 1))
    assert isinstance(op, ArrayKernelOperator)
    B, shape = _rhs(rhs, op, "rhs")
    threshold = _threshold(n, F64, max_cond)
    bs = min(bs, n)
    diag = op.diagonal()
    mu = reg * float(diag.mean()) if reg > 0 else 0.0
    with tempfile.TemporaryDirectory() as tmp:
        path = os.fspath(factor_path) if factor_path is not None else os.path.join(tmp, "factor.f64")
        if factor_path is not None and os.path.exists(path):
            raise ValueError(f"factor_path {path!r} exists: give a new file for the factor")
        L = np.memmap(path, dtype=np.float64, mode="w+", shape=(n, n))
        blocks = op.row_blocks()
        pivots = []
        for bi, (a, b) in enumerate(blocks):
            Li = torch.from_numpy(np.array(kernel[a:b, :b], dtype=np.float64))  # (bs, b)
            Li[:, a:b] += mu * torch.eye(b - a, dtype=F64)
            for c, d in blocks[:bi]:
                Lj = torch.from_numpy(np.asarray(L[c:d, :d]))  # (bsj, d)
                rhs_j = Li[:, c:d] - Li[:, :c] @ Lj[:, :c].T
                Li[:, c:d] = torch.linalg.solve_triangular(Lj[:, c:d], rhs_j.T, upper=False).T
            S = Li[:, a:b] - Li[:, :a] @ Li[:, :a].T
            S = torch.tril(S) + torch.tril(S, -1).T  # the lower triangle, as read
            Lii, info = torch.linalg.cholesky_ex(S)
            if int(info) != 0:
                col = a + int(info) - 1
                raise SingularKernelError(
                    f"blocked_cholesky_solve: the kernel (+ mu I, mu = {mu:.3e}) is not numerically positive definite: "
                    f"Cholesky failed in block row {bi} at column {col} (Schur complement pivot "
                    f"{float(S.diagonal()[int(info) - 1]):.3e}); pass diag_reg > 0")
            Li[:, a:b] = Lii
            pivots.append(Lii.diagonal().clone())
            L[a:b, :b] = Li.numpy()
            L[a:b, b:] = 0.0
        L.flush()
        piv = torch.cat(pivots)
        cond_lb = float((diag + mu).max()) / float(piv.min()) ** 2
        if cond_lb > threshold:
            raise SingularKernelError(
                f"blocked_cholesky_solve: the kernel is singular or numerically rank-deficient: condition number >= "
                f"{cond_lb:.3e} (max diagonal / smallest squared Cholesky pivot) > threshold {threshold:.3e}; "
                f"pass diag_reg > 0 or max_cond")
        Z = B.clone().cpu()
        for a, b in blocks:  # forward: L Z = B
            Lr = torch.from_numpy(np.asarray(L[a:b, :b]))
            Z[a:b] = torch.linalg.solve_triangular(Lr[:, a:b], Z[a:b] - Lr[:, :a] @ Z[:a], upper=False)
        X = Z
        for a, b in reversed(blocks):  # backward: L^T X = Z, column update with block row (a, b)
            Lr = torch.from_numpy(np.asarray(L[a:b, :b]))
            X[a:b] = torch.linalg.solve_triangular(Lr[:, a:b].T, X[a:b], upper=True)
            X[:a] -= Lr[:, :a].T @ X[a:b]
        del L
    R = B - (op.apply(X) + mu * X)
    bn = B.norm(dim=0)
    res = float((R.norm(dim=0) / torch.where(bn > 0, bn, torch.ones_like(bn))).max())
    return CholeskyResult(check_finite_result(X.reshape(shape), "blocked_cholesky_solve"), res, bs, cond_lb)
