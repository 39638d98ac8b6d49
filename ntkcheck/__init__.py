"""ntkcheck: executable evidence for neural-tangent-kernel theory.

Networks and zero-output transforms, exact empirical NTKs (per layer, tiled),
analytic infinite-width kernels, kernel solvers and training, checked against
the claims of the seed papers by Hypothesis properties.
"""

from ntkcheck._layerwise import LayerwiseUnsupportedError
from ntkcheck._tiling import KernelMemoryError
from ntkcheck.analytic import analytic_nngp, analytic_ntk
from ntkcheck.empirical import ntk, register_rule
from ntkcheck.flows import ConvergenceWarning, DivergenceWarning, FlowLimitError, mse_flow, mse_gd, ode_flow
from ntkcheck.linearize import Linearized, jacobian, linearize, min_norm_linearized
from ntkcheck.losses import MSE, CrossEntropy, DistLoss, Loss, LpLoss, Mixture, check_conditions
from ntkcheck.networks import (
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
from ntkcheck.solvers import (
    Decomposition,
    SingularKernelError,
    check_consistent,
    condition_number,
    decompose,
    interpolate,
    max_stable_lr,
    min_norm_parameters,
)
from ntkcheck.training import CurvatureError, TrainingDivergedError, TrainResult, sharpness, train
from ntkcheck.transforms import AntiSymmetric, asi, double_last_layer, merge_branches, rnd

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
    "KernelMemoryError",
    "LayerNorm",
    "LayerwiseUnsupportedError",
    "Linear",
    "Linearized",
    "Loss",
    "LpLoss",
    "MLP",
    "MSE",
    "Mixture",
    "ResNet",
    "SelfAttention",
    "SingularKernelError",
    "TrainResult",
    "TrainingDivergedError",
    "Transformer",
    "analytic_nngp",
    "analytic_ntk",
    "asi",
    "check_conditions",
    "check_consistent",
    "condition_number",
    "decompose",
    "double_last_layer",
    "interpolate",
    "jacobian",
    "linearize",
    "max_stable_lr",
    "merge_branches",
    "min_norm_linearized",
    "min_norm_parameters",
    "mse_flow",
    "mse_gd",
    "ntk",
    "ode_flow",
    "register_rule",
    "rnd",
    "sharpness",
    "train",
]

__version__ = "0.1.0"
