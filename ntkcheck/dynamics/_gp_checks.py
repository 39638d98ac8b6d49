"""Kernels, targets and ridge of the Gaussian-process predictions of :mod:`ntkcheck.dynamics.gp`, checked."""

from __future__ import annotations

import math

import torch

from ntkcheck._support.validation import check_kernel_tensor, check_same_device, check_same_device_dtype
from ntkcheck.dynamics._kernel_checks import _check_psd, _kernel_matrix, _threshold
from ntkcheck.errors import SingularKernelError


def _square(k: object, name: str) -> torch.Tensor:
    """A symmetric PSD (n, n) kernel of one output, symmetrised; ``ValueError`` for (n, n, O, O)."""
    if isinstance(k, torch.Tensor) and k.ndim == 4:
        raise ValueError(
            f"{name} must be the (n, n) kernel of one output (the network's kernel is K (x) I_O), "
            f"got shape {tuple(k.shape)}; pass k[:, :, 0, 0] of a K (x) I kernel"
        )
    check_kernel_tensor(k, name, (2,), "(n, n)")
    return _kernel_matrix(k, name)


def _cross(k: object, name: str, like: torch.Tensor, like_name: str, n: int, m: int | None) -> torch.Tensor:
    """A (m, n) test-train kernel with the dtype and device of ``like``."""
    shape = f"(m, {n})" if m is None else f"({m}, {n})"
    check_same_device(like, k, like_name, name)
    kx = check_kernel_tensor(k, name, (2,), shape)
    check_same_device_dtype(like, kx, like_name, name)
    if kx.shape[1] != n or (m is not None and kx.shape[0] != m):
        raise ValueError(f"{name} must have shape {shape} (test rows, training columns), got {tuple(kx.shape)}")
    return kx


def _targets(y: object, K: torch.Tensor, name_k: str) -> torch.Tensor:
    """``y_train`` (n,) or (n, O) as an (n, O) matrix."""
    check_same_device(K, y, name_k, "y_train")
    y = check_kernel_tensor(y, "y_train", (1, 2), "(n,) or (n, O)")
    check_same_device_dtype(K, y, name_k, "y_train")
    if y.shape[0] != K.shape[0]:
        raise ValueError(f"y_train must have {K.shape[0]} rows (the size of {name_k}), got shape {tuple(y.shape)}")
    return y.reshape(-1, 1) if y.ndim == 1 else y


def _check_joint(K: torch.Tensor, Kx: torch.Tensor, Ktt: torch.Tensor, name: str) -> None:
    """``ValueError`` unless the joint NNGP matrix ``[[K, K_X*], [K*X, K**]]`` is PSD (up to rounding)."""
    joint = torch.cat([torch.cat([K, Kx.T], dim=1), torch.cat([Kx, Ktt], dim=1)], dim=0)
    _check_psd(joint.detach(), f"{name} (the joint train/test matrix [[K, K_X*], [K*X, K**]])")


def _diag_reg(diag_reg: object, absolute: object) -> tuple[float, bool]:
    if isinstance(diag_reg, bool) or not isinstance(diag_reg, (int, float)):
        raise TypeError(f"diag_reg must be a finite float >= 0, got {type(diag_reg).__name__} {diag_reg!r}")
    if not (math.isfinite(diag_reg) and diag_reg >= 0):
        raise ValueError(f"diag_reg must be a finite float >= 0, got {diag_reg!r}")
    if not isinstance(absolute, bool):
        raise TypeError(f"diag_reg_absolute_scale must be a bool, got {type(absolute).__name__} {absolute!r}")
    return float(diag_reg), absolute


def _regularise(K: torch.Tensor, diag_reg: float, absolute: bool) -> torch.Tensor:
    """``K + delta I``, ``delta = diag_reg`` (absolute) or ``diag_reg * trace(K) / n`` (neural-tangents' default)."""
    if diag_reg == 0:
        return K
    delta = diag_reg if absolute else diag_reg * float(torch.trace(K.detach())) / K.shape[0]
    return K + delta * torch.eye(K.shape[0], dtype=K.dtype, device=K.device)


def _refuse_singular(
    lam: torch.Tensor, size: int, dtype: torch.dtype, max_cond: object, name: str, diag_reg: float
) -> None:
    """:class:`SingularKernelError` with the measured condition number if it exceeds the solvers' bound."""
    threshold = _threshold(size, dtype, max_cond)
    lo, hi = float(lam.min()), float(lam.max())
    cond = hi / lo if lo > 0 and hi > 0 else math.inf
    if cond > threshold:
        what = name if diag_reg == 0 else f"{name} + diag_reg I (diag_reg={diag_reg:g})"
        raise SingularKernelError(
            f"{what} is singular or numerically rank-deficient: condition number {cond:.3e} > threshold "
            f"{threshold:.3e} (smallest eigenvalue {lo:.3e}, largest {hi:.3e}); duplicated inputs make the kernel "
            f"singular. Pass diag_reg=... (relative to the mean diagonal; e.g. 1e-10) to predict with K + delta I."
        )


def _symmetric(c: torch.Tensor) -> torch.Tensor:
    """``(c + c^T) / 2`` over the last two dimensions."""
    return (c + c.mT) / 2
