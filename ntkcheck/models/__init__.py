"""Networks of every family in NTK and standard parametrization, built from layers with stored multipliers.

:class:`MLP`, :class:`CNN`, :class:`ResNet` and :class:`Transformer` share the
conventions of :mod:`ntkcheck.models.layers` and :mod:`ntkcheck.models.family`: raw parameters drawn from one
``generator``, the parametrization's scale in multipliers (``"ntk"``) or in the draw
(``"standard"``), ``reinitialized(generator)`` and ``spec()``, and ``in_shape`` /
``out_features`` describing what a model takes and gives.
"""

from ntkcheck.models.cnn import CNN
from ntkcheck.models.family import INITS, PARAMETRIZATIONS
from ntkcheck.models.layers import (
    ACTIVATIONS,
    Conv1d,
    Conv2d,
    Embedding,
    Head,
    LayerNorm,
    Linear,
    SelfAttention,
)
from ntkcheck.models.mlp import MLP
from ntkcheck.models.resnet import ResidualBlock, ResNet
from ntkcheck.models.transformer import Transformer, TransformerBlock

FAMILIES = (MLP, CNN, ResNet, Transformer)
"""The model classes ``asi``/``rnd``/``double_last_layer`` know by structure."""

__all__ = [
    "ACTIVATIONS",
    "CNN",
    "FAMILIES",
    "INITS",
    "MLP",
    "PARAMETRIZATIONS",
    "Conv1d",
    "Conv2d",
    "Embedding",
    "Head",
    "LayerNorm",
    "Linear",
    "ResNet",
    "ResidualBlock",
    "SelfAttention",
    "Transformer",
    "TransformerBlock",
]
