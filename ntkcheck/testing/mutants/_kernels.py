"""Mutants of the kernels area (see :mod:`ntkcheck.testing.mutants`): the empirical NTK and the linearization."""

from __future__ import annotations

import dataclasses
import functools
import math

from torch.func import functional_call, jvp

from ntkcheck.testing.mutants import Mutant


def _bias_mult_not_squared(original):
    """The layerwise bias kernel uses b_mult G G^T instead of b_mult^2 G G^T."""

    @functools.wraps(original)
    def layer_features(model, layers, x):
        return [dataclasses.replace(f, bias_mult2=math.sqrt(f.bias_mult2)) for f in original(model, layers, x)]

    return layer_features


def _drops_first_layer(original):
    """The layerwise sum starts at the second linear layer (an off-by-one over the layers)."""

    @functools.wraps(original)
    def layer_features(model, layers, x):
        feats = original(model, layers, x)
        return feats[1:] if len(feats) > 1 else feats

    return layer_features


def _per_layer_keys_swapped(original):
    """Per-layer kernels stored under swapped names: the weight's kernel as ``.bias`` and vice versa."""

    @functools.wraps(original)
    def layer_tiles(f1, f2, *, per_layer, n_out):
        tiles = original(f1, f2, per_layer=per_layer, n_out=n_out)
        if per_layer:
            for f in f1:
                if f.weight_name is not None and f.bias_name is not None:
                    tiles[f.weight_name], tiles[f.bias_name] = tiles[f.bias_name], tiles[f.weight_name]
        return tiles

    return layer_tiles


def _ntvp_outputs_transposed(original):
    """The ntvp method assembles its (B1, B2, O, O) tiles with the two output axes swapped."""

    @functools.wraps(original)
    def ntvp_tiles(fm, x1, cols, *, per_layer):
        return {name: t.transpose(2, 3) for name, t in original(fm, x1, cols, per_layer=per_layer).items()}

    return ntvp_tiles


def _linearized_is_network(original):
    """``Linearized.forward`` evaluates the network at theta: f(x; theta) instead of
    f(x; theta_0) + J (theta - theta_0)."""

    @functools.wraps(original)
    def forward(self, x):
        theta = {n: _get(self, n) for n in self.names}
        fixed = {n: _get(self._modules["_fixed"], n) for n in self._fixed_names}
        return functional_call(self.base, {**theta, **fixed}, (x,))

    return forward


def _linearized_expands_at_theta(original):
    """``Linearized.forward`` expands at the current theta: f(x; theta) + J(theta) (theta - theta_0)."""

    @functools.wraps(original)
    def forward(self, x):
        theta0 = self.theta0
        theta = {n: _get(self, n) for n in self.names}
        tangent = {n: theta[n] - theta0[n] for n in self.names}
        fixed = {n: _get(self._modules["_fixed"], n) for n in self._fixed_names}
        out, dout = jvp(lambda p: functional_call(self.base, {**p, **fixed}, (x,)), (theta,), (tangent,))
        return out + dout

    return forward


def _get(root, dotted):
    obj = root
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


MUTANTS: list[Mutant] = [
    Mutant(
        "layerwise_bias_mult_not_squared",
        "layerwise bias kernel scaled by b_mult instead of b_mult^2",
        "ntkcheck.kernels._layerwise:layer_features",
        _bias_mult_not_squared,
    ),
    Mutant(
        "layerwise_drops_first_layer",
        "layerwise kernel omits the first linear layer's contribution",
        "ntkcheck.kernels._layerwise:layer_features",
        _drops_first_layer,
    ),
    Mutant(
        "layerwise_per_layer_keys_swapped",
        "per-layer kernels of a layer's weight and bias under each other's name",
        "ntkcheck.kernels._layerwise:layer_tiles",
        _per_layer_keys_swapped,
    ),
    Mutant(
        "ntvp_outputs_transposed",
        "ntvp kernel with the output axes (o, q) swapped",
        "ntkcheck.kernels._autodiff:ntvp_tiles",
        _ntvp_outputs_transposed,
    ),
    Mutant(
        "linearized_is_network",
        "Linearized.forward returns the network f(x; theta) itself",
        "ntkcheck.dynamics.linearization:Linearized.forward",
        _linearized_is_network,
    ),
    Mutant(
        "linearized_expands_at_theta",
        "Linearized.forward expands at theta instead of theta_0",
        "ntkcheck.dynamics.linearization:Linearized.forward",
        _linearized_expands_at_theta,
    ),
]
