"""The direct solve for a kernel in a file: a Cholesky factorisation block row by block row within a memory
budget, the factor itself in a file (conventions in :mod:`ntkcheck.dynamics.iterative`)."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import torch

from ntkcheck._support.validation import check_finite_result
from ntkcheck.dynamics._arguments import check_diag_reg
from ntkcheck.dynamics._kernel_checks import _threshold
from ntkcheck.dynamics.iterative._operators import F64, _rhs
from ntkcheck.dynamics.results import CholeskyResult
from ntkcheck.errors import SingularKernelError
from ntkcheck.kernels.kernel_operator import ArrayKernelOperator, as_kernel_operator


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
    reg = check_diag_reg(diag_reg)
    if isinstance(memory_budget, bool) or not isinstance(memory_budget, int) or memory_budget <= 0:
        raise ValueError(f"memory_budget must be a positive int (bytes), got {memory_budget!r}")
    if not isinstance(kernel, np.ndarray):
        raise TypeError(
            f"kernel must be a numpy array (N, N), e.g. np.load(path, mmap_mode='r'), got {type(kernel).__name__}"
        )
    n = kernel.shape[0] if kernel.ndim == 2 else 0
    bs = memory_budget // (16 * max(n, 1))
    if n and bs < 1:
        raise ValueError(
            f"memory_budget={memory_budget} bytes is too small: one block row of the kernel and one "
            f"of the factor need 16 N = {16 * n} bytes (N={n})"
        )
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
                    f"{float(S.diagonal()[int(info) - 1]):.3e}); pass diag_reg > 0"
                )
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
                f"pass diag_reg > 0 or max_cond"
            )
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
    return CholeskyResult(
        solution=check_finite_result(X.reshape(shape), "blocked_cholesky_solve"),
        residual=res,
        block_rows=bs,
        cond_lower_bound=cond_lb,
    )
