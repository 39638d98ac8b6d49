"""Inputs, networks and Monte Carlo helpers shared by the tests of ntkcheck.kernels.analytic."""

from __future__ import annotations

import math

import torch
from torch.func import functional_call, jacrev

from ntkcheck.models import MLP

DTYPE = torch.float64


def make_inputs(n: int, d: int = 3, seed: int = 0) -> torch.Tensor:
    """n inputs with |x|^2 / d in [0.25, 2.25] (pre-activation variances of order 1)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=DTYPE)
    scale = torch.linspace(0.5, 1.5, n, dtype=DTYPE) * math.sqrt(d)
    return x / x.norm(dim=1, keepdim=True) * scale[:, None]


def make_mlp(widths: list[int], activation: str, seed: int = 0, **kw: object) -> MLP:
    kw = {"weight_std": 1.2, "bias_std": 0.3, **kw}
    return MLP(3, widths, activation=activation, generator=torch.Generator().manual_seed(seed), dtype=DTYPE, **kw)


def empirical_ntk(model: MLP, x: torch.Tensor) -> torch.Tensor:
    """sum over parameters of df(x)/dtheta df(x')/dtheta (one output), by torch.func."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    jac = jacrev(lambda p: functional_call(model, p, (x,)))(params)
    return sum(j.flatten(2)[:, 0] @ j.flatten(2)[:, 0].T for j in jac.values())


def _grid(q_max: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    q = torch.tensor([0.0, 0.05, 0.3, q_max / 2, q_max], dtype=DTYPE)
    rho = torch.tensor([-1.0, -0.95, -0.3, 0.0, 0.6, 0.999, 1.0], dtype=DTYPE)
    q1, q2, r = torch.meshgrid(q, q, rho, indexing="ij")
    return q1, q2, r * torch.sqrt(q1 * q2)


def within_standard_errors(samples: torch.Tensor, exact: torch.Tensor, bias: float = 0.0, k: float = 4.0) -> None:
    """The mean of independent ``samples`` lies within ``k`` standard errors (+ ``bias``) of ``exact``, per entry."""
    mean, se = samples.mean(0), samples.std(0) / math.sqrt(samples.shape[0])
    excess = (mean - exact).abs() - k * se - bias
    assert (excess <= 0).all(), (mean, exact, se, bias)
