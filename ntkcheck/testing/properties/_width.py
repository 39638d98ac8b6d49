"""Shared by the width-convergence and Monte Carlo properties: their inputs, kernel of output 0 and
output covariance."""

from __future__ import annotations

import torch

from ._common import DEVICE, DTYPE

X_SEED, IMAGE_SEED = 1234, 4321


def family_inputs(family: str) -> torch.Tensor:
    """6 inputs in R^5 (seed 1234) for the dense families ``"mlp"`` / ``"resnet_dense"``, else 4 images
    2 x 6 x 6 (seed 4321)."""
    if family in ("mlp", "resnet_dense"):
        x = torch.randn(6, 5, generator=torch.Generator().manual_seed(X_SEED), dtype=torch.float64)
    else:
        x = torch.randn(4, 2, 6, 6, generator=torch.Generator().manual_seed(IMAGE_SEED), dtype=torch.float64)
    return x.to(DEVICE, DTYPE)


def first_output(k: torch.Tensor) -> torch.Tensor:
    """The (N, N) kernel of output 0 (analytic kernels of O outputs are K (x) I_O)."""
    return k if k.ndim == 2 else k[:, :, 0, 0]


def output_covariance(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Sigma_m = f(X) f(X)^T / O: the empirical covariance of the O outputs of one network at init."""
    with torch.no_grad():
        f = model(x).double()
    return f @ f.T / f.shape[1]
