"""The results the solvers, flows and training loop return: frozen dataclasses, read by field name."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "CGInterpolant",
    "CGResult",
    "CholeskyResult",
    "Decomposition",
    "FlowResult",
    "History",
    "KrylovFlowResult",
    "ODEFlowResult",
    "TrainResult",
]


@dataclass(frozen=True)
class Decomposition:
    """Seed 000 Thm 2, eq (6): ``total = unbiased + h_ini - fit_of_init = unbiased + init_bias``."""

    total: torch.Tensor  # h_k(.; h_ini, X, Y)
    unbiased: torch.Tensor  # h_k(.; 0, X, Y)
    h_ini: torch.Tensor  # h_ini(.)
    fit_of_init: torch.Tensor  # h_k(.; 0, X, h_ini(X))
    init_bias: torch.Tensor  # h_ini - h_k(.; 0, X, h_ini(X))


@dataclass(frozen=True)
class FlowResult:
    """Trajectory at the requested times: ``train`` (T, n[, O]), ``test`` (T, m[, O]) or None."""

    times: torch.Tensor
    train: torch.Tensor
    test: torch.Tensor | None


@dataclass(frozen=True)
class ODEFlowResult:
    """Trajectory of :func:`ntkcheck.dynamics.flows.ode_flow` plus its final state and how it got there."""

    times: torch.Tensor
    train: torch.Tensor
    test: torch.Tensor | None
    final_train: torch.Tensor
    final_test: torch.Tensor | None
    t_final: float  # flow time at which integration stopped
    converged: bool  # whether the tolerance was reached
    residual: float  # ||h_train - Y|| / ||h_ini_train - Y|| at t_final
    grad_norm: float  # ||grad_h dist(h_train, Y)|| at t_final
    steps: int = 0  # accepted integration steps (all blocks together)


@dataclass(frozen=True)
class CGResult:
    """``solution`` (N,) or (N, k); ``iterations`` (kernel products); ``residual``: the largest
    ``||b_j - (K + mu I) x_j|| / ||b_j||`` over the columns, recomputed from the solution."""

    solution: torch.Tensor
    iterations: int
    residual: float


@dataclass(frozen=True)
class CGInterpolant:
    """:func:`ntkcheck.dynamics.iterative.cg.cg_interpolate`: predictions (shape of y_train, or (m,) + its
    trailing shape), the coefficients ``alpha = (K + mu I)^{-1} (Y - h_ini(X))`` (N,) or (N, k), iterations,
    residual."""

    prediction: torch.Tensor
    alpha: torch.Tensor
    iterations: int
    residual: float


@dataclass(frozen=True)
class KrylovFlowResult:
    """Trajectory of :func:`ntkcheck.dynamics.iterative.krylov.krylov_mse_flow`: ``train`` (T, n[, O]), ``test``
    (T, m[, O]) or None; ``iterations``: Lanczos steps (the largest over right-hand sides); ``error``: the final
    change estimate ``||a_m - a_{m-s}|| / ||a_m||`` (largest over times and right-hand sides)."""

    times: torch.Tensor
    train: torch.Tensor
    test: torch.Tensor | None
    iterations: int
    error: float


@dataclass(frozen=True)
class CholeskyResult:
    """:func:`ntkcheck.dynamics.iterative.blocked_cholesky.blocked_cholesky_solve`: ``solution`` (N,) or (N, k);
    ``residual`` the largest relative residual ``||b_j - (K + mu I) x_j|| / ||b_j||``; ``block_rows`` used;
    ``cond_lower_bound`` ``max_i (K + mu I)_ii / min_i L_ii^2`` (a lower bound of the condition number)."""

    solution: torch.Tensor
    residual: float
    block_rows: int
    cond_lower_bound: float


@dataclass(frozen=True)
class History:
    """Losses recorded every ``record_every`` steps (and at the last step)."""

    steps: tuple[int, ...] = ()
    train_loss: tuple[float, ...] = ()
    test_loss: tuple[float, ...] | None = None


@dataclass(frozen=True)
class TrainResult:
    """What :func:`ntkcheck.dynamics.training.train` did.

    Attributes:
        model: the trained module (trained in place: the same object that was passed).
        steps_run: optimizer steps taken.
        converged: the full training loss fell below ``loss_threshold``.
        final_loss: the full training loss at the final parameters.
        history: recorded losses.
        sharpness: lambda_max estimated by the step-size check, or ``None`` when not checked.
        lr_check_skipped: why the step-size check did not run although it applied (the loss has no finite
            curvature at the initial outputs), else ``None``.
    """

    model: nn.Module
    steps_run: int
    converged: bool
    final_loss: float
    history: History
    sharpness: float | None = None
    lr_check_skipped: str | None = None

    @property
    def lr_limit(self) -> float | None:
        """2 / lambda_max, the gradient-descent stability limit (``None`` when not measured or lambda_max <= 0)."""
        if self.sharpness is None or not self.sharpness > 0:
            return None
        return 2.0 / self.sharpness
