"""Shared pieces of the seed 001 properties: bias-free ReLU nets and the terms of Lemma 2, eq (14)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ntkcheck.linearize import jacobian, min_norm_linearized
from ntkcheck.strategies import Arch, architectures

from ._common import DEVICE, DTYPE, require_well_conditioned


def relu_bias_free(max_depth: int = 3, max_width: int = 24):
    """Bias-free ReLU MLPs with one output: f(x; theta) is positively homogeneous of degree L in theta."""
    return architectures(max_depth=max_depth, max_width=max_width, max_out=1, activations=("relu",), bias=False)


def flat_params(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters() if p.requires_grad])


@dataclass
class Eq14Terms:
    """f_lin(x; theta_inf) at test points and the two terms of seed 001 eq (14)."""

    trained: torch.Tensor  # f_lin(x; theta_inf), by the min-norm solution of seed 000 problem (4)
    interpolant: torch.Tensor  # Phi(x) Phi(X)^T (Phi(X) Phi(X)^T)^{-1} Y
    init_term: torch.Tensor  # (1/L) Phi(x) [I - P] theta_0
    init_term_train: torch.Tensor  # the same at the training inputs (zero by eq (14))
    train_residual: torch.Tensor  # f_lin(X; theta_inf) - Y
    euler_train: torch.Tensor  # (1/L) Phi(X) theta_0 = f(X; theta_0): the size the init term cancels from


def eq14_terms(arch: Arch, x: torch.Tensor, y: torch.Tensor, xt: torch.Tensor, sigma: float = 1.0) -> Eq14Terms:
    """Both sides of seed 001 eq (14) for the net ``arch`` with every initial parameter scaled by ``sigma``."""
    model = arch.build(dtype=DTYPE, device=DEVICE)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(sigma)
    n_layers = len(model.layers)
    theta0 = flat_params(model)
    phi_train, phi_test = jacobian(model, x), jacobian(model, xt)  # rows: gradients at theta_0
    gram = phi_train @ phi_train.T
    require_well_conditioned(gram, "Phi Phi^T")
    chol = torch.linalg.cholesky(gram)
    interp = phi_test @ phi_train.T @ torch.cholesky_solve(y.reshape(-1, 1), chol)
    projected = phi_train.T @ torch.cholesky_solve((phi_train @ theta0).reshape(-1, 1), chol)  # P theta_0
    init_test = (phi_test @ (theta0.reshape(-1, 1) - projected)) / n_layers
    init_train = (phi_train @ (theta0.reshape(-1, 1) - projected)) / n_layers
    trained = min_norm_linearized(model, x, y)
    with torch.no_grad():
        return Eq14Terms(trained(xt).reshape(-1), interp.reshape(-1), init_test.reshape(-1),
                         init_train.reshape(-1), trained(x).reshape(-1) - y,
                         (phi_train @ theta0 / n_layers).reshape(-1))
