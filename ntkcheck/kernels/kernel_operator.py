"""Kernels as linear operators: the common interface, and dense, array-backed or scipy kernels in it.

A :class:`KernelOperator` is a :class:`scipy.sparse.linalg.LinearOperator` (float64 numpy in
and out; ``matvec``, ``matmat``; symmetric, so ``rmatvec = matvec``) that also applies to
torch tensors: ``op @ v`` with ``v`` of shape (N,) or (N, k) returns a tensor of that
shape in the operator's dtype and on its device.

:func:`as_kernel_operator` wraps a dense kernel (a torch tensor) or a file-backed one
(``np.memmap`` / ``np.load(path, mmap_mode="r")``, read in row blocks) in this interface, so
:mod:`ntkcheck.kernels.spectral` and :mod:`ntkcheck.dynamics.iterative` take any of them, and
the matrix-free empirical NTK of :mod:`ntkcheck.kernels.operator` alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator

from ntkcheck._support.shapes import kernel_as_matrix
from ntkcheck._support.validation import check_finite_result, check_kernel_tensor, check_positive_int

__all__ = ["ArrayKernelOperator", "DenseKernelOperator", "KernelOperator", "as_kernel_operator"]

DEFAULT_BLOCK_BYTES = 64 * 2**20
"""Bytes of a file-backed kernel read per row block when ``block_rows`` is not given."""


class KernelOperator(LinearOperator):
    """A symmetric (N, N) kernel as an operator: scipy's float64 interface plus ``op @ tensor``.

    Subclasses implement :meth:`_apply` (a (N, k) tensor in :attr:`torch_dtype` on
    :attr:`device` to ``K V``), :meth:`diagonal` and :meth:`columns`.
    """

    torch_dtype: torch.dtype
    device: torch.device

    def __init__(self, size: int, torch_dtype: torch.dtype, device: torch.device) -> None:
        super().__init__(dtype=np.dtype(np.float64), shape=(size, size))
        self.torch_dtype = torch_dtype
        self.device = torch.device(device)

    @property
    def size(self) -> int:
        """N, the number of rows (and columns) of the kernel."""
        return int(self.shape[0])

    # -- torch interface -------------------------------------------------------------------
    def _apply(self, V: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        """``K v`` for a tensor ``v`` of shape (N,) or (N, k); returned in the operator's dtype and device."""
        if not isinstance(v, torch.Tensor):
            raise TypeError(
                f"v must be a torch.Tensor of shape ({self.size},) or ({self.size}, k), got {type(v).__name__}"
            )
        if v.ndim not in (1, 2) or v.shape[0] != self.size:
            raise ValueError(
                f"v must have shape ({self.size},) or ({self.size}, k) (the operator is "
                f"{self.size} x {self.size}), got {tuple(v.shape)}"
            )
        if not v.is_floating_point():
            raise TypeError(f"v must be a floating-point tensor, got dtype {v.dtype}")
        if v.device != self.device:
            raise ValueError(f"v must be on the operator's device ({self.device}), got {v.device}")
        V = v.to(self.torch_dtype).reshape(self.size, -1)
        if V.shape[1] == 0:
            return V.clone().reshape(v.shape)
        out = self._apply(V)
        return check_finite_result(out, f"{type(self).__name__} product").reshape(v.shape)

    def __matmul__(self, other: Any) -> Any:
        if isinstance(other, torch.Tensor):
            return self.apply(other)
        return super().__matmul__(other)

    def diagonal(self) -> torch.Tensor:
        """The diagonal ``K_ii`` as an (N,) tensor in the operator's dtype and device."""
        raise NotImplementedError

    def columns(self, index: Sequence[int]) -> torch.Tensor:
        """The columns ``K[:, index]`` as an (N, len(index)) tensor."""
        E = torch.zeros(self.size, len(index), dtype=self.torch_dtype, device=self.device)
        E[
            torch.as_tensor(list(index), dtype=torch.long, device=self.device),
            torch.arange(len(index), device=self.device),
        ] = 1
        return self.apply(E)

    # -- scipy interface (float64 numpy) -----------------------------------------------------
    def matvec(self, x: Any) -> np.ndarray:
        """``K x`` for x of shape (N,) or (N, 1), float64 numpy out (scipy's ``LinearOperator.matvec``)."""
        shape = np.shape(x)
        if shape not in ((self.size,), (self.size, 1)):
            raise ValueError(
                f"x must have shape ({self.size},) or ({self.size}, 1) (the operator is "
                f"{self.size} x {self.size}), got {shape}"
            )
        kx: np.ndarray = super().matvec(x)  # scipy's LinearOperator is untyped
        return kx

    def matmat(self, X: Any) -> np.ndarray:
        """``K X`` for X of shape (N, k), float64 numpy out (scipy's ``LinearOperator.matmat``)."""
        shape = np.shape(X)
        if len(shape) != 2 or shape[0] != self.size:
            raise ValueError(
                f"X must have shape ({self.size}, k) (the operator is {self.size} x {self.size}), got {shape}"
            )
        kX: np.ndarray = super().matmat(X)  # scipy's LinearOperator is untyped
        return kX

    def rmatvec(self, x: Any) -> np.ndarray:
        """``K^T x = K x`` (the kernel is symmetric)."""
        return self.matvec(x)

    def _matmat(self, X: np.ndarray) -> np.ndarray:
        V = torch.from_numpy(np.array(X, dtype=np.float64)).to(self.device)  # a copy: X may be read-only
        out = self.apply(V)
        return out.detach().to("cpu", torch.float64).numpy()

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        return self._matmat(np.asarray(x).reshape(-1, 1)).reshape(np.shape(x))

    def _rmatvec(self, x: np.ndarray) -> np.ndarray:
        return self._matvec(x)

    def _rmatmat(self, X: np.ndarray) -> np.ndarray:
        return self._matmat(X)

    def _adjoint(self) -> KernelOperator:
        return self


def _asymmetry_error(name: str, asym: float, scale: float, eps: float, dtype: object) -> ValueError:
    ratio = asym / max(scale, np.finfo(np.float64).tiny)
    return ValueError(
        f"{name} must be symmetric: relative asymmetry max|K - K^T| / max|K| = {ratio:.3e} "
        f"(max|K - K^T| = {asym:.3e}, max|K| = {scale:.3e}) exceeds sqrt(eps) = "
        f"{math.sqrt(eps):.3e} ({dtype})"
    )


class DenseKernelOperator(KernelOperator):
    """A dense (N, N) torch kernel as an operator (products in its dtype, on its device)."""

    def __init__(self, K: torch.Tensor) -> None:
        super().__init__(K.shape[0], K.dtype, K.device)
        self.K = K

    def _apply(self, V: torch.Tensor) -> torch.Tensor:
        return self.K @ V

    def diagonal(self) -> torch.Tensor:
        return self.K.diagonal().clone()

    def columns(self, index: Sequence[int]) -> torch.Tensor:
        return self.K[:, list(index)]

    def __repr__(self) -> str:
        return f"DenseKernelOperator(N={self.size}, {self.torch_dtype}, {self.device})"


class ArrayKernelOperator(KernelOperator):
    """A numpy (N, N) kernel, e.g. a ``np.memmap``, read ``block_rows`` rows at a time; products in float64 on
    the CPU."""

    def __init__(self, K: np.ndarray, block_rows: int) -> None:
        super().__init__(K.shape[0], torch.float64, torch.device("cpu"))
        self.K, self.block_rows = K, block_rows

    def row_blocks(self) -> list[tuple[int, int]]:
        n = self.size
        return [(a, min(a + self.block_rows, n)) for a in range(0, n, self.block_rows)]

    def rows(self, a: int, b: int) -> torch.Tensor:
        """Rows ``a:b`` of the kernel as a float64 tensor (one read of the file's row block)."""
        return torch.from_numpy(np.array(self.K[a:b], dtype=np.float64))  # a copy: files may be read-only

    def _apply(self, V: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(V)
        for a, b in self.row_blocks():
            out[a:b] = self.rows(a, b) @ V
        return out

    def diagonal(self) -> torch.Tensor:
        return torch.from_numpy(np.array(np.diagonal(self.K), dtype=np.float64))

    def columns(self, index: Sequence[int]) -> torch.Tensor:
        # K[:, j] = K[j, :] by symmetry: rows are contiguous in a row-major file
        return torch.from_numpy(np.array(self.K[list(index)], dtype=np.float64)).T.contiguous()

    def __repr__(self) -> str:
        kind = "memmap" if isinstance(self.K, np.memmap) else "array"
        return f"ArrayKernelOperator(N={self.size}, {kind} {self.K.dtype}, block_rows={self.block_rows})"


class _ScipyKernelOperator(KernelOperator):
    """Any square scipy ``LinearOperator`` (assumed symmetric, probed) in this interface; float64 on the CPU."""

    def __init__(self, A: LinearOperator) -> None:
        super().__init__(A.shape[0], torch.float64, torch.device("cpu"))
        self.A = A

    def _apply(self, V: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.array(self.A.matmat(V.numpy()), dtype=np.float64).reshape(V.shape))

    def diagonal(self) -> torch.Tensor:
        n = self.size
        out = torch.empty(n, dtype=torch.float64)
        step = 256
        for a in range(0, n, step):
            idx = list(range(a, min(a + step, n)))
            out[a : a + len(idx)] = self.columns(idx)[idx, torch.arange(len(idx))]
        return out


def _check_array(K: np.ndarray, name: str, block_rows: int) -> None:
    """Symmetry within sqrt(eps) and finiteness, tile by tile (the file is read about twice)."""
    eps = float(np.finfo(K.dtype).eps)
    n = K.shape[0]
    asym = scale = 0.0
    bad = 0
    for a in range(0, n, block_rows):
        b = min(a + block_rows, n)
        R = np.asarray(K[a:b], dtype=np.float64)
        finite = np.isfinite(R)
        if not finite.all():
            bad += int((~finite).sum())
            continue
        scale = max(scale, float(np.abs(R).max()))
        for c in range(a, n, block_rows):
            d = min(c + block_rows, n)
            T = np.asarray(K[c:d, a:b], dtype=np.float64)
            if np.isfinite(T).all():
                asym = max(asym, float(np.abs(R[:, c:d] - T.T).max()))
    if bad:
        raise ValueError(f"{name} contains {bad} NaN or infinite entries")
    if asym > math.sqrt(eps) * max(scale, np.finfo(np.float64).tiny):
        raise _asymmetry_error(name, asym, scale, eps, K.dtype)


def as_kernel_operator(
    kernel: object, *, name: str = "kernel", block_rows: int | None = None, check: bool = True
) -> KernelOperator:
    """``kernel`` as a :class:`KernelOperator`.

    Accepts an operator of this module (returned as is); a dense torch tensor, (N, N) or
    (n, n, O, O) (reshaped to (n*O, n*O) with row index ``i*O + a``, as :mod:`ntkcheck.dynamics.solvers`
    does), float32 or float64, products in its dtype on its device; a numpy array of
    float32/float64, including a file-backed ``np.memmap`` (``np.load(path, mmap_mode="r")``),
    read ``block_rows`` rows at a time (default: 64 MiB of float64 per block), products in float64
    on the CPU; or any square scipy ``LinearOperator`` (products in float64).

    With ``check`` (default) a tensor or array must be symmetric, ``max|K - K^T| <= sqrt(eps)
    max|K|``, and finite (``ValueError`` naming ``name`` with the measured numbers; for a file
    this reads it about twice, tile by tile); a scipy operator is probed for symmetry with two
    seeded random vectors.  Positive semi-definiteness is not checked here (it would take a
    factorisation): the solvers that need it report its failure with the measured quantity.
    """
    if isinstance(kernel, KernelOperator):
        return kernel
    if block_rows is not None:
        check_positive_int(block_rows, "block_rows")
    if isinstance(kernel, torch.Tensor):
        return _dense_operator(kernel, name, check)
    if isinstance(kernel, np.ndarray):
        return _array_operator(kernel, name, block_rows, check)
    if isinstance(kernel, LinearOperator):
        return _scipy_operator(kernel, name, check)
    raise TypeError(
        f"{name} must be a torch.Tensor, a numpy array (np.memmap included), a scipy "
        f"LinearOperator or an ntkcheck KernelOperator, got {type(kernel).__name__}"
    )


def _dense_operator(kernel: torch.Tensor, name: str, check: bool) -> DenseKernelOperator:
    K = check_kernel_tensor(kernel, name, (2, 4), "(N, N) or (n, n, O, O)")
    if K.shape[0] != K.shape[1] or (K.ndim == 4 and K.shape[2] != K.shape[3]):
        raise ValueError(f"{name} must be square, (N, N) or (n, n, O, O), got shape {tuple(K.shape)}")
    K = kernel_as_matrix(K).detach()
    if check:
        eps = torch.finfo(K.dtype).eps
        asym, scale = float((K - K.T).abs().max()), float(K.abs().max())
        if asym > math.sqrt(eps) * max(scale, torch.finfo(K.dtype).tiny):
            raise _asymmetry_error(name, asym, scale, eps, K.dtype)
    return DenseKernelOperator(K)


def _array_operator(kernel: np.ndarray, name: str, block_rows: int | None, check: bool) -> ArrayKernelOperator:
    if kernel.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must be a float32 or float64 array, got dtype {kernel.dtype}")
    if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty square (N, N) array, got shape {kernel.shape}")
    rows = block_rows or max(1, DEFAULT_BLOCK_BYTES // (8 * kernel.shape[0]))
    if check:
        _check_array(kernel, name, rows)
    return ArrayKernelOperator(kernel, rows)


def _scipy_operator(kernel: LinearOperator, name: str, check: bool) -> KernelOperator:
    if kernel.shape[0] != kernel.shape[1] or kernel.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty square operator, got shape {kernel.shape}")
    op = _ScipyKernelOperator(kernel)
    if check:
        gen = torch.Generator().manual_seed(0)
        U = torch.randn(op.size, 2, dtype=torch.float64, generator=gen)
        KU = op.apply(U)
        a, b = float(U[:, 0] @ KU[:, 1]), float(U[:, 1] @ KU[:, 0])
        scale = float(KU.norm(dim=0).max() * U.norm(dim=0).max())
        if abs(a - b) > 1e-8 * max(scale, np.finfo(np.float64).tiny):
            raise ValueError(
                f"{name} must be symmetric: u^T (K v) = {a:.6g} but v^T (K u) = {b:.6g} "
                f"for two random vectors (relative gap {abs(a - b) / max(scale, 1e-300):.3e})"
            )
    return op
