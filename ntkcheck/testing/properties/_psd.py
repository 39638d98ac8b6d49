"""Random PSD kernel problems of the decomposition properties, with scipy's Cholesky solve as the reference.

The interpolant of seed 000 problem (5), h_k(.; h_ini, X, Y) = h_ini + k(., X) K^{-1} (Y - h_ini(X)), and
the terms of eq (6) are checked on kernels B B^T / r + c I of a drawn condition number against
``scipy.linalg.cho_solve`` on the same rounded matrix (no ntkcheck code on the reference side).
The kernel is drawn from ``seed``; targets and initial outputs from streams 1, 2, 3 under it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.linalg
import torch

from ntkcheck._support.seeding import torch_generator
from ntkcheck._support.shapes import matrix_as_kernel

from ._common import DEVICE, DTYPE
from ._interpolants import EPS, flat

MODULE = f"__import__({__name__!r}, fromlist=['psd_problem'])"
"""This module as an expression, for the reproduction snippets."""


class KernelReference(NamedTuple):
    """scipy Cholesky solves with the joint kernel (no ntkcheck code)."""

    K: torch.Tensor  # (N, N) float64
    Kt: torch.Tensor  # (M, N)
    Ktt: torch.Tensor  # (M, M)
    o: int  # target columns solved with one shared kernel (1 for block kernels)

    def coefficients(self, rhs: torch.Tensor) -> np.ndarray:
        r = flat(rhs).numpy().reshape(self.K.shape[0], self.o)
        return scipy.linalg.cho_solve(scipy.linalg.cho_factor(self.K.numpy()), r)

    def at_test(self, rhs: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.Kt.numpy() @ self.coefficients(rhs)).reshape(-1)

    def cond(self) -> float:
        ev = np.linalg.eigvalsh(self.K.numpy())
        return float(ev[-1] / ev[0]) if ev[0] > 0 else float("inf")

    def fit_scale(self, rhs: torch.Tensor, h_train: torch.Tensor, y: torch.Tensor) -> float:
        lam = float(np.linalg.eigvalsh(self.K.numpy())[-1])
        return EPS * (
            self.K.shape[0] * lam * float(np.linalg.norm(self.coefficients(rhs)))
            + float(flat(h_train).norm())
            + float(flat(y).norm())
        )

    def forward_scale(self, rhs: torch.Tensor, h_test: torch.Tensor | None) -> float:
        lam_x = float(np.linalg.eigvalsh(self.K.numpy())[-1])
        lam_t = float(np.linalg.eigvalsh(self.Ktt.numpy())[-1])
        h = 0.0 if h_test is None else float(flat(h_test).norm())
        return EPS * ((1 + self.cond()) * (lam_x * lam_t) ** 0.5 * float(np.linalg.norm(self.coefficients(rhs))) + h)


def psd_problem(
    seed: int, n: int, m: int, o: int, rank: int, cond: float, block: bool
) -> tuple[torch.Tensor, torch.Tensor, KernelReference]:
    """A joint PSD kernel on n + m points with o outputs: B B^T / rank + c I (B ~ N(0, 1), (n+m) o rows,
    sample-major), c = lambda_max(B B^T / rank) / cond, so cond(K) <= cond + 1.  Returns the library's
    arguments (k, k_test_train: (n, n, o, o) blocks when ``block``, else one (n, n) kernel shared by the
    o target columns) and the :class:`KernelReference` of the same (rounded) matrix."""
    gen = torch.Generator().manual_seed(seed)
    per = o if block else 1
    rows = (n + m) * per
    b = torch.randn(rows, rank, generator=gen, dtype=torch.float64)
    full = b @ b.T / rank
    full = full + float(torch.linalg.eigvalsh(full)[-1]) / cond * torch.eye(rows, dtype=torch.float64)
    full = full.to(DTYPE)  # the library and the reference see the same rounded matrix
    if block:
        blocks = matrix_as_kernel(full, o)
        k, kt = blocks[:n, :n].contiguous(), blocks[n:, :n].contiguous()
    else:
        k, kt = full[:n, :n].contiguous(), full[n:, :n].contiguous()
    f64, N = full.double(), n * per
    return k.to(DEVICE), kt.to(DEVICE), KernelReference(f64[:N, :N], f64[N:, :N], f64[N:, N:], 1 if block else o)


def targets(seed: int, stream: int, n: int, o: int) -> torch.Tensor:
    """n standard normal targets with o outputs ((n,) when o is 1), from stream ``stream`` under ``seed``."""
    gen = torch_generator(seed, stream)
    v = torch.randn(n, o, generator=gen, dtype=torch.float64)
    return (v[:, 0] if o == 1 else v).to(dtype=DTYPE, device=DEVICE)
