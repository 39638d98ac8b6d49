"""ntkcheck: executable evidence for neural-tangent-kernel theory.

Networks and zero-output transforms, exact empirical NTKs (per layer, tiled),
analytic infinite-width kernels, kernel solvers and training, checked against
the claims of the seed papers by Hypothesis properties.
"""

from ntkcheck._tiling import KernelMemoryError
from ntkcheck._layerwise import LayerwiseUnsupportedError
from ntkcheck.empirical import ntk
from ntkcheck.networks import ACTIVATIONS, MLP, Linear
from ntkcheck.transforms import AntiSymmetric, asi, double_last_layer, merge_branches, rnd

__all__ = [
    "ACTIVATIONS",
    "AntiSymmetric",
    "KernelMemoryError",
    "LayerwiseUnsupportedError",
    "Linear",
    "MLP",
    "asi",
    "double_last_layer",
    "merge_branches",
    "ntk",
    "rnd",
]

__version__ = "0.1.0"
