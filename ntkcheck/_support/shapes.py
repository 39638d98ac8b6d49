"""The reshapes between a kernel's (N1, N2, O, O) form and its (N1 O, N2 O) matrix, rows sample-major."""

from __future__ import annotations

import torch


def kernel_as_matrix(k: torch.Tensor) -> torch.Tensor:
    """(N1, N2, O, O) -> (N1 O, N2 O), row ``i O + a`` and column ``j O + b`` holding ``k[i, j, a, b]``
    (sample-major, the order of ``y.reshape(-1)`` for targets (N, O)); (N1, N2) is returned as it is."""
    if k.ndim == 2:
        return k
    if k.ndim != 4 or k.shape[2] != k.shape[3]:
        raise ValueError(f"kernel must have shape (N1, N2) or (N1, N2, O, O), got {tuple(k.shape)}")
    n1, n2, o = k.shape[0], k.shape[1], k.shape[2]
    return k.permute(0, 2, 1, 3).reshape(n1 * o, n2 * o)


def matrix_as_kernel(m: torch.Tensor, n_out: int) -> torch.Tensor:
    """(N1 O, N2 O) -> (N1, N2, O, O), the inverse of :func:`kernel_as_matrix` (a view where possible)."""
    if m.ndim != 2 or n_out < 1 or m.shape[0] % n_out or m.shape[1] % n_out:
        raise ValueError(f"matrix must have shape (N1 O, N2 O) with O = {n_out}, got {tuple(m.shape)}")
    return m.reshape(m.shape[0] // n_out, n_out, m.shape[1] // n_out, n_out).permute(0, 2, 1, 3)
