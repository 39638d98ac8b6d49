"""Networks and regression problems shared by the training tests."""

from __future__ import annotations

import torch

import ntkcheck as nk
from ntkcheck.dynamics.losses import LpLoss

F64 = torch.float64
L4 = LpLoss(4)


def mlp(d=3, widths=(16,), o=1, *, seed=0, device="cpu", **kw) -> nk.MLP:
    return nk.MLP(d, list(widths), o, dtype=F64, device=device, generator=torch.Generator().manual_seed(seed), **kw)


def problem(n=8, d=3, *, seed=1, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=F64)
    y = torch.sin(2 * x[:, 0]) + 0.3 * x[:, 1]
    return x.to(device), y.to(device)
