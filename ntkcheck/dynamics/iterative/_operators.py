"""Kernel operators and right-hand sides as the iterative solvers take them (float64, the operator's device)."""

from __future__ import annotations

import numpy as np
import torch

from ntkcheck._support.shapes import kernel_as_matrix
from ntkcheck.kernels.kernel_operator import KernelOperator

F64 = torch.float64


def _rhs(rhs: object, op: KernelOperator, name: str) -> tuple[torch.Tensor, tuple[int, ...]]:
    """``rhs`` (N,) or (N, k), a tensor or numpy array, as an (N, k) float64 tensor on the operator's device."""
    if isinstance(rhs, np.ndarray):
        rhs = torch.from_numpy(np.array(rhs, dtype=np.float64))
    if not isinstance(rhs, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor or numpy array of shape ({op.size},) or ({op.size}, k), "
            f"got {type(rhs).__name__}"
        )
    if not rhs.is_floating_point():
        raise TypeError(f"{name} must be floating-point, got dtype {rhs.dtype}")
    if rhs.ndim not in (1, 2) or rhs.shape[0] != op.size or rhs.numel() == 0:
        raise ValueError(
            f"{name} must have shape ({op.size},) or ({op.size}, k) with k >= 1 (the kernel is "
            f"{op.size} x {op.size}), got {tuple(rhs.shape)}"
        )
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
        """``K V`` (one counted product)."""
        self.products += 1
        return self.op.apply(V.to(self.op.torch_dtype)).to(F64)

    def __call__(self, V: torch.Tensor) -> torch.Tensor:
        """``(K + mu I) V``."""
        out = self.kernel(V)
        return out + self.mu * V if self.mu else out

    def diagonal(self) -> torch.Tensor:
        """``diag(K + mu I)``."""
        if self.diag is None:
            self.diag = self.op.diagonal().to(F64)
        return self.diag + self.mu


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


def _check_initial_pairing(k_test_train: object, h_ini_train: object, h_ini_test: object) -> None:
    """``ValueError`` unless ``h_ini_test`` is given exactly when ``h_ini_train`` and ``k_test_train`` are."""
    if h_ini_test is not None and k_test_train is None:
        raise ValueError("h_ini_test was given without k_test_train")
    if h_ini_train is not None and k_test_train is not None and h_ini_test is None:
        raise ValueError(
            "h_ini_test is required when h_ini_train and k_test_train are given (h_ini at the test points)"
        )
    if h_ini_train is None and h_ini_test is not None:
        raise ValueError("h_ini_test was given without h_ini_train: give the initial function at both point sets")


def _initial_train(h_ini_train: object, op: KernelOperator, Y: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``h_ini_train`` with the shape of ``y_train`` as an (N, C) matrix (zeros when None)."""
    if h_ini_train is None:
        return torch.zeros_like(Y)
    H0, h_shape, _ = _targets(h_ini_train, op, "h_ini_train")
    if h_shape != shape:
        raise ValueError(f"h_ini_train must have the shape of y_train {shape}, got {h_shape}")
    return H0


def _test_kernel(k_test_train: object, op: KernelOperator) -> torch.Tensor:
    """``k_test_train`` (m, N) or (m, n, O, O), a tensor or numpy array, as an (M, N) float64 matrix."""
    if isinstance(k_test_train, np.ndarray):
        k_test_train = torch.from_numpy(np.array(k_test_train, dtype=np.float64))
    if not isinstance(k_test_train, torch.Tensor):
        raise TypeError(f"k_test_train must be a torch.Tensor or numpy array (m, N), got {type(k_test_train).__name__}")
    kx = k_test_train.detach()
    if kx.ndim == 4:
        kx = kernel_as_matrix(kx)
    if kx.ndim != 2 or kx.shape[1] != op.size:
        raise ValueError(
            f"k_test_train must have shape (m, {op.size}) (columns matching k_train), got {tuple(k_test_train.shape)}"
        )
    if not bool(torch.isfinite(kx).all()):
        raise ValueError("k_test_train contains NaN or infinite entries")
    return kx.to(op.device, F64)


def _test_shape(Kx: torch.Tensor, shape: tuple[int, ...], flattened: bool) -> tuple[int, ...]:
    """The shape of the test predictions; with ``flattened`` multi-output targets the rows of Kx are
    (point, output) pairs."""
    if flattened:
        o = shape[1]
        return (Kx.shape[0] // o, o)
    return (Kx.shape[0],) + shape[1:]


def _initial_test(h_ini_test: object, Kx: torch.Tensor, columns: int, test_shape: tuple[int, ...]) -> torch.Tensor:
    """``h_ini_test`` of shape ``test_shape`` as an (M, C) float64 matrix (zeros when None)."""
    if h_ini_test is None:
        return torch.zeros(Kx.shape[0], columns, dtype=F64, device=Kx.device)
    h0x = (
        h_ini_test if isinstance(h_ini_test, torch.Tensor) else torch.from_numpy(np.array(h_ini_test, dtype=np.float64))
    )
    if tuple(h0x.shape) != test_shape:
        raise ValueError(f"h_ini_test must have shape {test_shape}, got {tuple(h0x.shape)}")
    return h0x.detach().to(Kx.device, F64).reshape(Kx.shape[0], columns)
