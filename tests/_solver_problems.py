"""Random float64 kernel problems and references shared by the tests of the kernel solvers and flows."""

from __future__ import annotations

import numpy as np
import torch

F64 = torch.float64


def rel(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    a = np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a)
    b = np.asarray(b.detach().cpu() if isinstance(b, torch.Tensor) else b)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def problem(n: int, m: int = 5, seed: int = 0, outputs: int | None = None) -> dict[str, torch.Tensor]:
    """Well-conditioned joint kernel A A^T / N + 0.1 I on n train + m test points (seeded)."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n + m, 6, generator=g, dtype=F64)
    Kall = A @ A.T / 6 + 0.1 * torch.eye(n + m, dtype=F64)
    tail = () if outputs is None else (outputs,)
    return dict(
        K=Kall[:n, :n].contiguous(),
        Kx=Kall[n:, :n].contiguous(),
        y=torch.randn((n,) + tail, generator=g, dtype=F64),
        h0=torch.randn((n,) + tail, generator=g, dtype=F64),
        h0x=torch.randn((m,) + tail, generator=g, dtype=F64),
    )
