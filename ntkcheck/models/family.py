"""The factory every network family draws its layers from, and what the families share.

:class:`LayerFactory` validates the arguments every family takes and turns a parametrization
into raw draws and multipliers, the same way for every layer type of
:mod:`ntkcheck.models.layers`:

* ``parametrization="ntk"``: raw parameters ``N(0, 1)``, ``weight_mult =
  weight_std / sqrt(fan_in)``, ``bias_mult = bias_std``;
* ``parametrization="standard"``: multipliers 1, the scale in the draw:
  ``init="fan_in"``: ``W ~ N(0, weight_std^2 / fan_in)``, ``b ~ N(0, bias_std^2)``;
  ``init="glorot"``: weights and biases ``~ N(0, weight_std^2 * 2 / (fan_in + fan_out))``.

:class:`Family` is the base of the CNN, ResNet and Transformer: rebuilding, description, input checks.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ntkcheck._support.validation import (
    check_bool,
    check_choice,
    check_device,
    check_dtype,
    check_generator,
    check_matches_parameters,
    check_nonnegative_float,
)
from ntkcheck.models.layers import ACTIVATIONS, Conv1d, Conv2d, Embedding, Head, LayerNorm, Linear, _ConvNd

PARAMETRIZATIONS = ("ntk", "standard")
INITS = ("fan_in", "glorot")


class LayerFactory:
    """Draws the layers of one network from one generator in one parametrization.

    Validates and holds the arguments every family shares (their meaning is the
    module docstring's); each ``linear``/``conv``/``embedding``/``layer_norm`` call
    draws its raw parameters from ``generator`` in call order.
    """

    def __init__(
        self,
        *,
        activation: object,
        bias: object,
        parametrization: object,
        weight_std: object,
        bias_std: object,
        init: object,
        generator: object,
        dtype: object,
        device: object,
    ) -> None:
        self.activation = check_choice(activation, "activation", list(ACTIVATIONS))
        check_bool(bias, "bias")
        self.bias = bias
        self.parametrization = check_choice(parametrization, "parametrization", PARAMETRIZATIONS)
        self.weight_std = check_nonnegative_float(weight_std, "weight_std")
        self.bias_std = check_nonnegative_float(bias_std, "bias_std")
        self.init = check_choice(init, "init", INITS)
        if parametrization == "ntk" and init != "fan_in":
            raise ValueError(f"init={init!r} applies to parametrization='standard' only; ntk draws N(0, 1)")
        self.generator = check_generator(generator, "generator")
        self.dtype = check_dtype(dtype, "dtype") or torch.get_default_dtype()
        self.device = check_device(device, "device")

    def common(self) -> dict[str, Any]:
        """The shared arguments as keywords (generator, dtype and device aside)."""
        return dict(
            activation=self.activation,
            bias=self.bias,
            parametrization=self.parametrization,
            weight_std=self.weight_std,
            bias_std=self.bias_std,
            init=self.init,
        )

    def draw(self, *shape: int) -> torch.Tensor:
        gen_device = self.generator.device if self.generator is not None else torch.device("cpu")
        return torch.randn(*shape, generator=self.generator, dtype=self.dtype, device=gen_device).to(self.device)

    def _affine(
        self, w_shape: tuple[int, ...], fan_in: int, fan_out: int, bias: bool | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, float, float]:
        w = self.draw(*w_shape)
        b = self.draw(w_shape[0]) if (self.bias if bias is None else bias) else None
        if self.parametrization == "ntk":
            return w, b, self.weight_std / math.sqrt(fan_in), self.bias_std
        if self.init == "glorot":
            w_scale = b_scale = self.weight_std * math.sqrt(2.0 / (fan_in + fan_out))
        else:
            w_scale, b_scale = self.weight_std / math.sqrt(fan_in), self.bias_std
        return w * w_scale, None if b is None else b * b_scale, 1.0, 1.0

    def linear(self, fan_in: int, fan_out: int, *, bias: bool | None = None) -> Linear:
        """A :class:`Linear` fan_in -> fan_out (with a bias when ``bias``, default the network's)."""
        w, b, wm, bm = self._affine((fan_out, fan_in), fan_in, fan_out, bias)
        return Linear(w, b, weight_mult=wm, bias_mult=bm)

    def conv(self, in_channels: int, out_channels: int, kernel_size: tuple[int, ...], **kwargs: Any) -> _ConvNd:
        """A :class:`Conv1d` (one kernel size) or :class:`Conv2d` (two); ``kwargs`` (stride, padding,
        dilation, groups) go to its constructor."""
        groups = kwargs.get("groups", 1)
        area = math.prod(kernel_size)
        w, b, wm, bm = self._affine(
            (out_channels, in_channels // groups, *kernel_size),
            in_channels // groups * area,
            out_channels * area // groups,
            None,
        )
        cls = {1: Conv1d, 2: Conv2d}[len(kernel_size)]
        return cls(w, b, weight_mult=wm, bias_mult=bm, **kwargs)

    def conv2d(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int], **kwargs: Any) -> Conv2d:
        """A :class:`Conv2d`; ``kwargs`` (stride, padding, dilation, groups) go to its constructor."""
        return self.conv(in_channels, out_channels, kernel_size, **kwargs)  # type: ignore[return-value]

    def embedding(self, num: int, dim: int) -> Embedding:
        """An :class:`Embedding`: ntk raw N(0, 1) times ``weight_std``; standard N(0, weight_std^2)."""
        w = self.draw(num, dim)
        if self.parametrization == "ntk":
            return Embedding(w, weight_mult=self.weight_std)
        return Embedding(w * self.weight_std)

    def layer_norm(self, dim: int) -> LayerNorm:
        """A :class:`LayerNorm` with gain 1 and (if the network has biases) bias 0."""
        ones = torch.ones(dim, dtype=self.dtype, device=self.device)
        return LayerNorm(ones, torch.zeros_like(ones) if self.bias else None)

    def head(self, fan_in: int, head_width: int | None, out_features: int) -> Head:
        """``Linear(fan_in, out)``, or ``Linear(fan_in, head_width) -> activation -> Linear(head_width, out)``."""
        sizes = (fan_in, out_features) if head_width is None else (fan_in, head_width, out_features)
        return Head([self.linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])], self.activation)


class Family(nn.Module):
    """What the CNN, ResNet and Transformer share: rebuilding, description, input checks.

    A subclass stores its architecture keywords in ``self.arch`` (everything but
    generator, dtype and device), so :meth:`reinitialized` and :meth:`spec` rebuild it.
    """

    arch: dict[str, Any]
    in_shape: tuple[int | None, ...]
    """The shape one input takes, without the batch dimension; ``None`` where any size >= 1 goes."""
    out_features: int
    head: Head
    head_width: int | None

    def reinitialized(self, generator: torch.Generator | None = None) -> Family:
        """A copy with every parameter drawn afresh from this network's init distribution."""
        p = next(self.parameters())
        return type(self)(**self.arch, generator=generator, dtype=p.dtype, device=p.device)

    def spec(self) -> str:
        """A Python expression that rebuilds this architecture (the generator aside)."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.arch.items())
        return f"ntkcheck.{type(self).__name__}({args})"

    def _check_input(self, x: object, *, tokens: bool = False) -> torch.Tensor:
        """Raise naming ``x`` unless it is a batch (N, *in_shape) of the model's dtype (integer ids if ``tokens``)
        on its device."""
        expected = "(N, " + ", ".join("size" if s is None else str(s) for s in self.in_shape) + ")"
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor of shape {expected}, got {type(x).__name__}")
        if tokens and (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool):
            raise TypeError(f"x must hold integer token ids, got dtype {x.dtype}")
        if not tokens and not x.is_floating_point():
            dtype = next(self.parameters()).dtype
            raise TypeError(f"x must be a floating-point tensor of the model's dtype {dtype}, got {x.dtype}")
        check_matches_parameters(x, "x", self, trainable_only=False)
        shape = tuple(x.shape)
        if (
            len(shape) != len(self.in_shape) + 1
            or shape[0] == 0
            or any(n == 0 or (s is not None and n != s) for n, s in zip(shape[1:], self.in_shape))
        ):
            raise ValueError(f"x must have shape {expected} with N >= 1, got {shape}")
        return x
