"""Preconditioners of conjugate gradients: Jacobi and the rank-r pivoted Cholesky (Nystrom) approximation."""

from __future__ import annotations

import math

import torch

from ntkcheck.dynamics.iterative._operators import F64, _Regularised
from ntkcheck.errors import SingularKernelError

PRECONDITIONERS = ("jacobi", "pivoted_cholesky", "none")


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

    inv_diag: torch.Tensor
    U: torch.Tensor
    s: float
    scale: torch.Tensor

    def __init__(self, kind: str, A: _Regularised, rank: int) -> None:
        self.kind = kind
        if kind == "jacobi":
            dg = A.diagonal()
            if not bool((dg > 0).all()):
                raise SingularKernelError(
                    f"the kernel has a diagonal entry {float(dg.min()):.3e} <= 0: the Jacobi "
                    f"preconditioner needs a positive diagonal (a zero row of the kernel)"
                )
            self.inv_diag = 1.0 / dg
        elif kind == "pivoted_cholesky":
            L, rest = _pivoted_cholesky(A, rank)
            assert A.diag is not None
            s = max(A.mu + rest, A.diag.shape[0] * torch.finfo(F64).eps * float(A.diag.max()))
            U, sv, _ = torch.linalg.svd(L, full_matrices=False)
            self.U, self.s, self.scale = U, s, 1.0 / (sv**2 + s)

    def __call__(self, R: torch.Tensor) -> torch.Tensor:
        """``M^{-1} R``."""
        if self.kind == "jacobi":
            return self.inv_diag[:, None] * R
        if self.kind == "none":
            return R
        UR = self.U.T @ R
        return self.U @ (self.scale[:, None] * UR) + (R - self.U @ UR) / self.s
