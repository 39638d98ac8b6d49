"""Kernel matrices as the solvers take them: validation, the positive semi-definite test and the
condition-number bound of a solve (conventions in :mod:`ntkcheck.dynamics.solvers`)."""

from __future__ import annotations

import math

import torch

from ntkcheck._support.shapes import kernel_as_matrix
from ntkcheck._support.validation import check_kernel_tensor

_PSD_SLACK = 100.0


def _check_rcond(pinv_rcond: object, dtype: torch.dtype) -> float | None:
    """``pinv_rcond`` as a float in ``[eps, 1)`` of ``dtype``, or None.

    A cutoff below eps keeps eigenvalues under ``eps * lambda_max``: those are rounding
    noise of the kernel's entries, and dividing by them amplifies that noise.
    """
    if pinv_rcond is None:
        return None
    if isinstance(pinv_rcond, bool) or not isinstance(pinv_rcond, (int, float)):
        raise TypeError(f"pinv_rcond must be None or a float in (0, 1), got {type(pinv_rcond).__name__}")
    if not (0 < pinv_rcond < 1):
        raise ValueError(f"pinv_rcond must lie in (0, 1) (cutoff relative to the largest eigenvalue), got {pinv_rcond}")
    eps = torch.finfo(dtype).eps
    if pinv_rcond < eps:
        raise ValueError(
            f"pinv_rcond={pinv_rcond:.3g} is below the machine epsilon of the kernel's dtype {dtype} "
            f"(eps = {eps:.3g}): eigenvalues under eps * lambda_max are rounding noise; "
            f"use pinv_rcond >= {eps:.3g}"
        )
    return float(pinv_rcond)


def _psd_tolerance(size: int, dtype: torch.dtype) -> float:
    """``tol = 100 N eps``: a kernel passes as positive semi-definite iff ``lambda_min >= -tol * lambda_max``.

    A backward-stable symmetric eigensolver returns the exact eigenvalues of ``K + E``
    with ``||E|| <= p(N) eps ||K||`` (p(N) ~ N in the standard bound), and a kernel
    formed in floating point carries entry rounding of the same order, so a positive
    semi-definite kernel can show eigenvalues down to about ``-N eps lambda_max``.
    Measured on Gram matrices of random features and empirical NTKs with N up to 400
    (float32 and float64): never below ``-0.2 N eps lambda_max``.  The factor 100 is
    the margin; an indefinite kernel such as ``A + A^T`` has ``lambda_min / lambda_max``
    of order -1.
    """
    return _PSD_SLACK * size * torch.finfo(dtype).eps


def _check_psd(K: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` if the symmetric ``K`` has ``lambda_min < -tol * lambda_max``.

    Cholesky succeeding on ``K + tol * max_i K_ii * I`` accepts ``K`` at the price of one
    factorisation (``max_i K_ii <= lambda_max``, so the shift is at most ``tol * lambda_max``);
    otherwise the eigenvalues decide and are reported.
    """
    n = K.shape[0]
    tol = _psd_tolerance(n, K.dtype)
    shift = tol * max(float(K.diagonal().max()), 0.0)
    _, info = torch.linalg.cholesky_ex(K + shift * torch.eye(n, dtype=K.dtype, device=K.device))
    if int(info) == 0:
        return
    evals = torch.linalg.eigvalsh(K)
    lo, hi = float(evals[0]), float(evals[-1])
    if lo < -tol * max(hi, 0.0):
        raise ValueError(
            f"{name} is not positive semi-definite: smallest eigenvalue {lo:.4g} (largest {hi:.4g}); a kernel "
            f"matrix dips below 0 only by rounding, lambda_min >= -tol * lambda_max with "
            f"tol = {_PSD_SLACK:g} N eps = {tol:.2g} (N={n}, {K.dtype})"
        )


def _kernel_matrix(k: object, name: str = "k_train") -> torch.Tensor:
    """Validate an (n, n) or (n, n, O, O) kernel; return the symmetrised (N, N) matrix.

    Refused with ``ValueError`` naming ``name``: a relative asymmetry
    ``max|K - K^T| / max|K|`` above ``sqrt(eps)`` and an indefinite kernel (:func:`_check_psd`).
    """
    k = check_kernel_tensor(k, name, (2, 4), "(n, n) or (n, n, O, O)")
    if k.shape[0] != k.shape[1] or (k.ndim == 4 and k.shape[2] != k.shape[3]):
        raise ValueError(f"{name} must be square, (n, n) or (n, n, O, O), got shape {tuple(k.shape)}")
    k = kernel_as_matrix(k)
    finfo = torch.finfo(k.dtype)
    kd = k.detach()  # the checks read numbers; the returned matrix keeps k's autograd history
    asym = float((kd - kd.T).abs().max())
    scale = float(kd.abs().max())
    ratio = asym / max(scale, finfo.tiny)
    if ratio > math.sqrt(finfo.eps):
        raise ValueError(
            f"{name} must be symmetric: relative asymmetry max|K - K^T| / max|K| = {ratio:.3e} "
            f"(max|K - K^T| = {asym:.3e}, max|K| = {scale:.3e}) exceeds sqrt(eps) = "
            f"{math.sqrt(finfo.eps):.3e} ({k.dtype})"
        )
    K = (k + k.T) / 2
    _check_psd(K.detach(), name)
    return K


def _threshold(size: int, dtype: torch.dtype, max_cond: object, *, squared: bool = False) -> float:
    """The condition-number bound of a solve: ``max_cond``, by default ``1 / (N eps)``.

    A backward-stable solve (Cholesky, Higham Thm 10.4) returns the exact solution for
    ``K + E``, ``||E|| <= c N eps ||K||``, so its relative error is up to
    ``cond * N eps`` (Higham Thm 7.2): the default ``1 / (N eps)`` is the condition
    number at which that bound reaches 1.  ``max_cond`` may tighten it, or loosen it up
    to ``1 / eps``: there even the kernel's own entry rounding ``eps ||K||`` reaches its
    smallest eigenvalue, so no digit of a solution is determined; larger values are
    refused.  With ``squared`` the bound is on ``cond(J J^T) = cond(J)^2`` for a solve
    that factorises J itself (:func:`min_norm_parameters`): its error is ``cond(J) eps``
    and the ceiling is ``1 / eps^2``.
    """
    eps = torch.finfo(dtype).eps
    if max_cond is None:
        return 1.0 / (size * eps)
    if isinstance(max_cond, bool) or not isinstance(max_cond, (int, float)):
        raise TypeError(f"max_cond must be None or a float > 1, got {type(max_cond).__name__} {max_cond!r}")
    if not max_cond > 1:
        raise ValueError(f"max_cond must be None or a float > 1, got {max_cond!r}")
    ceiling = 1.0 / eps**2 if squared else 1.0 / eps
    if max_cond > ceiling:
        what = "1 / eps^2 (cond(J) = 1 / eps)" if squared else "1 / eps"
        raise ValueError(
            f"max_cond={max_cond:.3g} exceeds what {dtype} can honour, {what} = {ceiling:.3g} "
            f"(eps = {eps:.3g}): a solve at that condition number has no correct digit"
        )
    return float(max_cond)
