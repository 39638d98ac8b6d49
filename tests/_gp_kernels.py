"""Kernels, ensembles and comparisons shared by the tests of ntkcheck.dynamics.gp."""

from __future__ import annotations

import math

import torch

import ntkcheck as nk
from ntkcheck.dynamics.gp import GaussianPrediction, ensemble_predict

D = torch.float64
INF = math.inf
TIMES = [0.0, 0.3, 2.0, 25.0, INF]
RTOL = 1e-10  # float64 solves on kernels of condition number <= ~1e3: rounding ~cond * eps * n


def _kernels(seed: int = 0, n: int = 7, m: int = 4, d: int = 3, out: int = 1):
    """Analytic NNGP / NTK blocks of a relu MLP on n training and m test inputs, and targets (n,) or (n, out)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n + m, d, generator=g, dtype=D)
    model = nk.MLP(d, [8], 1, weight_std=1.4, bias_std=0.3, generator=g, dtype=D)
    K, T = nk.analytic_nngp(model, x), nk.analytic_ntk(model, x)
    y = torch.randn((n,) if out == 1 else (n, out), generator=g, dtype=D)
    nngp = (K[:n, :n], K[n:, :n], K[n:, n:])
    ntk = (T[:n, :n], T[n:, :n])
    return nngp, ntk, y


def _ensemble(nngp, ntk, y, times, **kw) -> GaussianPrediction:
    """:func:`ensemble_predict` on the kernels of :func:`_kernels`: ``ntk=None`` trains the readout layer only
    (the NNGP kernel is the kernel of training), ``ntk = (Theta, Theta*X)`` every layer."""
    K, Kx, Ktt = nngp
    if ntk is None:
        return ensemble_predict(K, y, k_test_train=Kx, nngp_test_test=Ktt, times=times, **kw)
    return ensemble_predict(
        ntk[0], y, k_test_train=ntk[1], nngp_train=K, nngp_test_train=Kx, nngp_test_test=Ktt, times=times, **kw
    )


def _close(actual: torch.Tensor, expected: torch.Tensor, what: str, rtol: float = RTOL) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    err = float((actual - expected).abs().max())
    scale = max(float(expected.abs().max()), 1e-300)
    assert err <= rtol * scale, f"{what}: max|a - b| = {err:.3e} > {rtol:g} * max|b| = {rtol * scale:.3e}"
