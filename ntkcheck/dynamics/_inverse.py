"""The inverse of a training kernel: ridge, the singular-kernel guard and the Cholesky or pseudo-inverse solve
(conventions in :mod:`ntkcheck.dynamics.solvers`)."""

from __future__ import annotations

import math

import torch

from ntkcheck.dynamics._kernel_checks import _threshold
from ntkcheck.errors import SingularKernelError


def _ridge(K: torch.Tensor, diag_reg: float) -> float:
    """The absolute ridge ``diag_reg * mean(diag K)`` added to the (N, N) matrix ``K``."""
    return diag_reg * float(K.detach().diagonal().mean()) if diag_reg > 0 else 0.0


def _regularised(K: torch.Tensor, diag_reg: float) -> torch.Tensor:
    """``K + diag_reg * mean(diag K) * I`` (``K`` itself when ``diag_reg == 0``)."""
    ridge = _ridge(K, diag_reg)
    if ridge == 0.0:
        return K
    return K + ridge * torch.eye(K.shape[0], dtype=K.dtype, device=K.device)


def _cond(lam_min: float, lam_max: float) -> float:
    return lam_max / lam_min if lam_min > 0 and lam_max > 0 else math.inf


def _raise_singular(evals: torch.Tensor, threshold: float, name: str) -> None:
    lo, hi = float(evals.min()), float(evals.max())
    cond = _cond(lo, hi)
    if cond > threshold:
        raise SingularKernelError(
            f"{name} is singular or numerically rank-deficient: condition number {cond:.3e} > threshold "
            f"{threshold:.3e} "
            f"(smallest eigenvalue {lo:.3e}, largest {hi:.3e}); duplicated or inconsistent inputs make the kernel "
            f"singular. Pass pinv_rcond=... to use a pseudo-inverse with an explicit cutoff."
        )


class _Inverse:
    """K^{-1} (Cholesky) or the named pseudo-inverse, applied to right-hand sides."""

    def __init__(
        self, K: torch.Tensor, pinv_rcond: float | None, max_cond: float | None, name: str = "k_train"
    ) -> None:
        self.pinv: torch.Tensor | None = None
        self.chol: torch.Tensor | None = None
        self.evals: torch.Tensor | None = None
        threshold = _threshold(K.shape[0], K.dtype, max_cond)  # checked even where pinv_rcond replaces the guard
        if pinv_rcond is not None:
            self.pinv = torch.linalg.pinv(K, rtol=pinv_rcond, hermitian=True)
            return
        self.evals = torch.linalg.eigvalsh(K.detach())
        _raise_singular(self.evals, threshold, name)
        L, info = torch.linalg.cholesky_ex(K)
        if int(info) != 0:
            raise SingularKernelError(f"{name} is not positive definite: Cholesky failed at column {int(info)}")
        self.chol = L

    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        """``K^{-1} rhs`` (or the pseudo-inverse applied to ``rhs``)."""
        if self.chol is not None:
            return torch.cholesky_solve(rhs, self.chol)
        assert self.pinv is not None
        return self.pinv @ rhs
