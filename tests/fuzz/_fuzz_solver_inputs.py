"""Small float64 kernels, targets, Jacobians and networks from which the solver fuzz cases are built."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

F64 = torch.float64
EPS64 = torch.finfo(F64).eps
EPS32 = torch.finfo(torch.float32).eps


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _k(n: int = 5, dtype: torch.dtype = F64) -> torch.Tensor:
    """A well-conditioned Gram kernel A A^T / 6 + 0.1 I."""
    a = torch.randn(n, 6, generator=_gen(0), dtype=F64)
    return (a @ a.T / 6 + 0.1 * torch.eye(n, dtype=F64)).to(dtype)


def _y(n: int = 5, dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.randn(n, generator=_gen(1), dtype=F64).to(dtype)


def _kx(m: int = 3, n: int = 5) -> torch.Tensor:
    return torch.randn(m, n, generator=_gen(2), dtype=F64)


def _spectral(evals: list[float] | np.ndarray, seed: int = 3, dtype: torch.dtype = F64) -> torch.Tensor:
    """Q diag(evals) Q^T, Q a random orthogonal matrix (exactly symmetric)."""
    n = len(evals)
    q = torch.linalg.qr(torch.randn(n, n, generator=_gen(seed), dtype=F64))[0]
    k = q @ torch.diag(torch.as_tensor(evals, dtype=F64)) @ q.T
    return ((k + k.T) / 2).to(dtype)


def _indefinite(n: int = 5) -> torch.Tensor:
    return _spectral(np.linspace(-4.1, 4.8, n))


def _singular() -> torch.Tensor:
    x = torch.randn(5, 3, generator=_gen(4), dtype=F64)
    x[3] = x[0]  # duplicated input
    return torch.exp(-(torch.cdist(x, x) ** 2))


def _with(t: torch.Tensor, value: float) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[1] = value
    return t


def _asym() -> torch.Tensor:
    k = _k()
    k[0, 1] += 1e-3
    return k


def _sparse() -> torch.Tensor:
    return _k().to_sparse()


def _jac(n: int = 3, p: int = 10) -> torch.Tensor:
    return torch.randn(n, p, generator=_gen(5), dtype=F64)


def _dup_jac() -> torch.Tensor:
    j = _jac()
    j[2] = j[0]
    return j


def _net(*middle: nn.Module, width: int = 8) -> nn.Module:
    torch.manual_seed(6)
    return nn.Sequential(nn.Linear(2, width), nn.Tanh(), *middle, nn.Linear(width, 1)).to(F64)


def _x(n: int = 4, d: int = 2) -> torch.Tensor:
    return torch.randn(n, d, generator=_gen(7), dtype=F64)


def _dup_x() -> torch.Tensor:
    x = _x()
    x[3] = x[0]
    return x


def _case(case_id: str, call: Callable[[], object], error: type[Exception], fragment: str):
    return pytest.param(call, error, fragment, id=case_id)


def _rel(a: torch.Tensor, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.detach().double().numpy() - b) / max(np.linalg.norm(b), 1e-300))
