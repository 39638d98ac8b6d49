"""Fully connected networks in NTK and standard parametrization.

A layer of an :class:`MLP` computes ``weight_mult * W a + bias_mult * b`` with raw
parameters ``W`` (out, in) and ``b`` (out,).  The two multipliers are stored on
the layer, so every consumer (the layerwise kernel, the analytic kernel, the
zero-output transforms) reads the same numbers the forward pass uses.

* ``parametrization="ntk"`` (seed 001 eq (1); Jacot et al. 2018; neural-tangents'
  ``Dense(parameterization="ntk")``): raw ``W, b ~ N(0, 1)``,
  ``weight_mult = weight_std / sqrt(fan_in)``, ``bias_mult = bias_std``.
* ``parametrization="standard"``: the layer computes ``W a + b``
  (multipliers 1) with the scale put into the initial draw:

  - ``init="fan_in"`` (He/LeCun style): ``W ~ N(0, weight_std^2 / fan_in)``,
    ``b ~ N(0, bias_std^2)``;
  - ``init="glorot"`` (seed 000 §7): every parameter, weights and biases,
    ``~ N(0, weight_std^2 * 2 / (fan_in + fan_out))``, ``weight_std`` playing
    the paper's ``v_std``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ntkcheck._support.validation import (
    check_bool,
    check_choice,
    check_device,
    check_dtype,
    check_generator,
    check_int_sequence,
    check_nonnegative_float,
    check_positive_int,
)
from ntkcheck.models.family import INITS, PARAMETRIZATIONS
from ntkcheck.models.layers import ACTIVATIONS, Linear


class MLP(nn.Module):
    """Fully connected network ``in_features -> widths... -> out_features``.

    Args:
        in_features: input dimension d.
        widths: hidden-layer widths (possibly empty: a linear model).
        out_features: number of outputs O.
        activation: one of :data:`ACTIVATIONS`, applied after every hidden layer.
        bias: whether layers have biases.
        parametrization: ``"ntk"`` or ``"standard"`` (see the module docstring).
        weight_std: sigma_w (ntk) / the weight scale of the initial draw
            (standard; seed 000's ``v_std`` with ``init="glorot"``).
        bias_std: sigma_b (ntk) / the std of the initial bias draw (standard, fan_in init).
        init: for ``parametrization="standard"``: ``"fan_in"`` or ``"glorot"``.
        generator: the ``torch.Generator`` every initial draw comes from.
        dtype: of the parameters: a floating ``torch.dtype`` or its name
            (``"float32"``, ``"float64"``, ``"float16"``, ``"bfloat16"``); default
            ``torch.get_default_dtype()``.
        device: of the parameters, one this machine has (``"meta"`` included).

    ``model.layers`` holds the :class:`Linear` layers in order.  ``forward``
    maps (N, in_features) to (N, out_features).
    """

    def __init__(
        self,
        in_features: int,
        widths: Sequence[int],
        out_features: int = 1,
        *,
        activation: str = "relu",
        bias: bool = True,
        parametrization: str = "ntk",
        weight_std: float = 1.0,
        bias_std: float = 0.1,
        init: str = "fan_in",
        generator: torch.Generator | None = None,
        dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.in_features = check_positive_int(in_features, "in_features")
        self.widths = check_int_sequence(widths, "widths")
        self.out_features = check_positive_int(out_features, "out_features")
        self.activation = check_choice(activation, "activation", list(ACTIVATIONS))
        check_bool(bias, "bias")
        self.parametrization = check_choice(parametrization, "parametrization", PARAMETRIZATIONS)
        self.weight_std = check_nonnegative_float(weight_std, "weight_std")
        self.bias_std = check_nonnegative_float(bias_std, "bias_std")
        self.init = check_choice(init, "init", INITS)
        if parametrization == "ntk" and init != "fan_in":
            raise ValueError(f"init={init!r} applies to parametrization='standard' only; ntk draws N(0, 1)")
        check_generator(generator, "generator")
        dtype = check_dtype(dtype, "dtype") or torch.get_default_dtype()
        device = check_device(device, "device")
        self.has_bias = bias
        sizes = (self.in_features, *self.widths, self.out_features)
        layers = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            layers.append(self._make_layer(fan_in, fan_out, generator, dtype, device))
        self.layers = nn.ModuleList(layers)
        self._phi = ACTIVATIONS[self.activation]

    def _make_layer(
        self,
        fan_in: int,
        fan_out: int,
        generator: torch.Generator | None,
        dtype: torch.dtype,
        device: torch.device | None,
    ) -> Linear:
        gen_device = generator.device if generator is not None else torch.device("cpu")

        def draw(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=generator, dtype=dtype, device=gen_device).to(device)

        w, b = draw(fan_out, fan_in), (draw(fan_out) if self.has_bias else None)
        if self.parametrization == "ntk":
            return Linear(w, b, weight_mult=self.weight_std / math.sqrt(fan_in), bias_mult=self.bias_std)
        if self.init == "glorot":
            w_scale = b_scale = self.weight_std * math.sqrt(2.0 / (fan_in + fan_out))
        else:
            w_scale, b_scale = self.weight_std / math.sqrt(fan_in), self.bias_std
        return Linear(w * w_scale, None if b is None else b * b_scale)

    @property
    def in_shape(self) -> tuple[int]:
        """The shape one input takes, without the batch dimension."""
        return (self.in_features,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have shape (N, {self.in_features}), got {tuple(x.shape)}")
        for layer in self.layers[:-1]:
            x = self._phi(layer(x))
        out: torch.Tensor = self.layers[-1](x)
        return out

    def reinitialized(self, generator: torch.Generator | None = None) -> MLP:
        """A copy with every parameter drawn afresh from this network's init distribution."""
        p = next(self.parameters())
        return MLP(
            self.in_features,
            self.widths,
            self.out_features,
            activation=self.activation,
            bias=self.has_bias,
            parametrization=self.parametrization,
            weight_std=self.weight_std,
            bias_std=self.bias_std,
            init=self.init,
            generator=generator,
            dtype=p.dtype,
            device=p.device,
        )

    def spec(self) -> str:
        """A Python expression that rebuilds this architecture (the generator aside)."""
        return (
            f"ntkcheck.MLP({self.in_features}, {list(self.widths)}, {self.out_features}, "
            f"activation={self.activation!r}, bias={self.has_bias}, parametrization={self.parametrization!r}, "
            f"weight_std={self.weight_std!r}, bias_std={self.bias_std!r}, init={self.init!r})"
        )
