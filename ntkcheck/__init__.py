"""ntkcheck: executable evidence for neural-tangent-kernel theory.

Networks and zero-output transforms, exact empirical NTKs (per layer, tiled),
analytic infinite-width kernels, kernel solvers and training, checked against
the claims of the seed papers by Hypothesis properties.
"""

from ntkcheck.dynamics.curvature import sharpness
from ntkcheck.dynamics.flows import ConvergenceWarning, DivergenceWarning, mse_flow, mse_gd, ode_flow
from ntkcheck.dynamics.gp import GaussianPrediction, analytic_ensemble, ensemble_predict, gp_inference
from ntkcheck.dynamics.iterative.blocked_cholesky import blocked_cholesky_solve
from ntkcheck.dynamics.iterative.cg import cg_interpolate, cg_solve
from ntkcheck.dynamics.iterative.krylov import krylov_mse_flow
from ntkcheck.dynamics.linearization import Linearized, jacobian, linearize, min_norm_linearized
from ntkcheck.dynamics.losses import MSE, CrossEntropy, DistLoss, Loss, LpLoss, Mixture, check_conditions
from ntkcheck.dynamics.results import Decomposition, TrainResult
from ntkcheck.dynamics.solvers import (
    SingularKernelError,
    check_consistent,
    condition_number,
    decompose,
    interpolate,
    max_stable_lr,
    min_norm_parameters,
)
from ntkcheck.dynamics.training import CurvatureError, TrainingDivergedError, train
from ntkcheck.errors import FlowLimitError, IterativeConvergenceError, RankMismatchError
from ntkcheck.kernels._layerwise import LayerwiseUnsupportedError
from ntkcheck.kernels._tiling import KernelMemoryError
from ntkcheck.kernels.analytic import analytic_nngp, analytic_ntk
from ntkcheck.kernels.distributed import RowBlock, distributed_ntk
from ntkcheck.kernels.empirical import ntk, register_rule
from ntkcheck.kernels.kernel_operator import KernelOperator, as_kernel_operator
from ntkcheck.kernels.monte_carlo import monte_carlo_nngp, monte_carlo_ntk
from ntkcheck.kernels.operator import NTKOperator, ntk_operator
from ntkcheck.kernels.out_of_core import KernelFile, ntk_to_file
from ntkcheck.kernels.spectral import SpectralConvergenceError, condition_estimate, top_eigenpairs, trace_estimate
from ntkcheck.models import (
    ACTIVATIONS,
    CNN,
    MLP,
    Conv1d,
    Conv2d,
    Embedding,
    LayerNorm,
    Linear,
    ResNet,
    SelfAttention,
    Transformer,
)
from ntkcheck.models.transforms import AntiSymmetric, asi, double_last_layer, merge_branches, rnd

__all__ = [
    "ACTIVATIONS",
    "AntiSymmetric",
    "CNN",
    "Conv1d",
    "Conv2d",
    "ConvergenceWarning",
    "CrossEntropy",
    "CurvatureError",
    "Decomposition",
    "DistLoss",
    "DivergenceWarning",
    "Embedding",
    "FlowLimitError",
    "GaussianPrediction",
    "IterativeConvergenceError",
    "KernelFile",
    "KernelMemoryError",
    "KernelOperator",
    "LayerNorm",
    "LayerwiseUnsupportedError",
    "Linear",
    "Linearized",
    "Loss",
    "LpLoss",
    "MLP",
    "MSE",
    "Mixture",
    "NTKOperator",
    "RankMismatchError",
    "ResNet",
    "RowBlock",
    "SelfAttention",
    "SingularKernelError",
    "SpectralConvergenceError",
    "TrainResult",
    "TrainingDivergedError",
    "Transformer",
    "analytic_ensemble",
    "analytic_nngp",
    "analytic_ntk",
    "as_kernel_operator",
    "asi",
    "blocked_cholesky_solve",
    "cg_interpolate",
    "cg_solve",
    "check_conditions",
    "check_consistent",
    "condition_estimate",
    "condition_number",
    "decompose",
    "distributed_ntk",
    "double_last_layer",
    "ensemble_predict",
    "gp_inference",
    "interpolate",
    "jacobian",
    "krylov_mse_flow",
    "linearize",
    "max_stable_lr",
    "merge_branches",
    "min_norm_linearized",
    "min_norm_parameters",
    "monte_carlo_nngp",
    "monte_carlo_ntk",
    "mse_flow",
    "mse_gd",
    "ntk",
    "ntk_operator",
    "ntk_to_file",
    "ode_flow",
    "register_rule",
    "rnd",
    "sharpness",
    "top_eigenpairs",
    "trace_estimate",
    "train",
]

__version__ = "0.1.0"
