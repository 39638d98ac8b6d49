"""Parametrised layers with stored multipliers, and the factory every family draws them from.

Every layer computes ``weight_mult * (op with raw weight) + bias_mult * (raw bias)``
with the two multipliers stored as plain floats on the layer, so every consumer
(layerwise kernel rules, analytic kernels, zero-output transforms) reads the numbers
the forward pass uses.  :class:`LayerFactory` turns a parametrization into raw draws
and multipliers, the same way for every layer type:

* ``parametrization="ntk"``: raw parameters ``N(0, 1)``, ``weight_mult =
  weight_std / sqrt(fan_in)``, ``bias_mult = bias_std``;
* ``parametrization="standard"``: multipliers 1, the scale in the draw:
  ``init="fan_in"``: ``W ~ N(0, weight_std^2 / fan_in)``, ``b ~ N(0, bias_std^2)``;
  ``init="glorot"``: weights and biases ``~ N(0, weight_std^2 * 2 / (fan_in + fan_out))``.

Fan-in and fan-out follow torch's convention: ``in_features`` / ``out_features`` for
:class:`Linear`; ``in_channels / groups * prod(kernel_size)`` and ``out_channels *
prod(kernel_size) / groups`` for a convolution.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ntkcheck._support.validation import (
    check_choice,
    check_device,
    check_dtype,
    check_generator,
    check_nonnegative_float,
    check_positive_int,
)

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "tanh": torch.tanh,
    "erf": torch.erf,
    "gelu": F.gelu,
    "softplus": F.softplus,
    "sin": torch.sin,
    "identity": lambda t: t,
}
"""The activations every network accepts, by name (gelu is the exact, erf-based one)."""

PARAMETRIZATIONS = ("ntk", "standard")
INITS = ("fan_in", "glorot")


class Linear(nn.Module):
    """Affine map ``weight_mult * x @ weight.T + bias_mult * bias`` with stored multipliers.

    ``weight`` has shape (out_features, in_features); ``bias`` is (out_features,)
    or ``None``.  The multipliers are plain floats (the ``c_l`` and ``b_l`` of the
    layerwise kernel formula) and are not trained.  ``x`` may have any rank
    ``(..., in_features)`` (tokens, positions): the map acts on the last dimension.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        *,
        weight_mult: float = 1.0,
        bias_mult: float = 1.0,
    ) -> None:
        super().__init__()
        if weight.ndim != 2:
            raise ValueError(f"weight must have shape (out, in), got {tuple(weight.shape)}")
        if bias is not None and bias.shape != (weight.shape[0],):
            raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias) if bias is not None else None
        self.weight_mult = check_nonnegative_float(weight_mult, "weight_mult")
        self.bias_mult = check_nonnegative_float(bias_mult, "bias_mult")

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is not None and x.ndim == 2:
            # One fused op on the batch.  The multiplier scales the weight (out x in) rather than the product
            # (batch x out): the backward pass to the input is then one matmul, with no rescaling of the
            # batch-sized gradient.
            weight = self.weight if self.weight_mult == 1.0 else torch.mul(self.weight, self.weight_mult)
            return torch.addmm(self.bias, x, weight.T, beta=self.bias_mult)
        out = F.linear(x, self.weight)
        if self.weight_mult != 1.0:
            out = out * self.weight_mult
        if self.bias is not None:
            out = out + (self.bias if self.bias_mult == 1.0 else self.bias_mult * self.bias)
        return out

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, weight_mult={self.weight_mult:.6g}, bias_mult={self.bias_mult:.6g}"
        )


def _scaled(t: torch.Tensor | None, mult: float) -> torch.Tensor | None:
    return t if t is None or mult == 1.0 else t * mult


class _ConvNd(nn.Module):
    """``weight_mult * conv(x, weight) + bias_mult * bias`` over ``_dims`` spatial dimensions.

    ``weight`` is (out_channels, in_channels / groups, *kernel_size) and ``bias``
    (out_channels,) or ``None``; ``stride``, ``padding`` (an int, a tuple, or
    ``"same"``/``"valid"``), ``dilation`` and ``groups`` mean what they mean for
    ``torch.nn.functional.conv{1,2}d``.  Input (N, in_channels, *spatial).
    """

    _dims = 0
    _conv: Callable[..., torch.Tensor]

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        *,
        weight_mult: float = 1.0,
        bias_mult: float = 1.0,
        stride: int | tuple[int, ...] = 1,
        padding: int | tuple[int, ...] | str = 0,
        dilation: int | tuple[int, ...] = 1,
        groups: int = 1,
    ) -> None:
        super().__init__()
        shape = "(out_channels, in_channels/groups" + ", k" * self._dims + ")"
        if weight.ndim != self._dims + 2:
            raise ValueError(f"weight must have shape {shape}, got {tuple(weight.shape)}")
        self.groups = check_positive_int(groups, "groups")
        if weight.shape[0] % self.groups:
            raise ValueError(f"groups ({groups}) must divide out_channels ({weight.shape[0]})")
        if bias is not None and bias.shape != (weight.shape[0],):
            raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
        self.stride = int_tuple(stride, "stride", self._dims)
        self.dilation = int_tuple(dilation, "dilation", self._dims)
        if isinstance(padding, str):
            check_choice(padding, "padding", ("same", "valid"))
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError(f"padding='same' needs stride 1, got stride {self.stride}")
            self.padding: tuple[int, ...] | str = padding
        else:
            self.padding = int_tuple(padding, "padding", self._dims, minimum=0)
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias) if bias is not None else None
        self.weight_mult = check_nonnegative_float(weight_mult, "weight_mult")
        self.bias_mult = check_nonnegative_float(bias_mult, "bias_mult")

    @property
    def in_channels(self) -> int:
        return self.weight.shape[1] * self.groups

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    @property
    def kernel_size(self) -> tuple[int, ...]:
        return tuple(self.weight.shape[2:])

    def output_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        """The spatial size of the output for an input of spatial size ``size``."""
        if self.padding == "same":
            return size
        pad = (0,) * self._dims if self.padding == "valid" else self.padding
        return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1
                     for n, p, d, k, s in zip(size, pad, self.dilation, self.kernel_size, self.stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != self._dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape (N, {self.in_channels}" + ", size" * self._dims
                             + f"), got {tuple(x.shape)}")
        return self._conv(x, _scaled(self.weight, self.weight_mult), _scaled(self.bias, self.bias_mult),
                          self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding!r}, dilation={self.dilation}, groups={self.groups}, "
            f"bias={self.bias is not None}, weight_mult={self.weight_mult:.6g}, bias_mult={self.bias_mult:.6g}"
        )


class Conv1d(_ConvNd):
    """One-dimensional :class:`_ConvNd`: input (N, in_channels, length)."""

    _dims = 1
    _conv = staticmethod(F.conv1d)


class Conv2d(_ConvNd):
    """Two-dimensional :class:`_ConvNd`: input (N, in_channels, height, width)."""

    _dims = 2
    _conv = staticmethod(F.conv2d)


class Embedding(nn.Module):
    """Lookup ``weight_mult * weight[x]`` of integer ids ``x`` (any shape) in a (num, dim) table."""

    def __init__(self, weight: torch.Tensor, *, weight_mult: float = 1.0) -> None:
        super().__init__()
        if weight.ndim != 2:
            raise ValueError(f"weight must have shape (num_embeddings, embedding_dim), got {tuple(weight.shape)}")
        self.weight = nn.Parameter(weight)
        self.weight_mult = check_nonnegative_float(weight_mult, "weight_mult")

    @property
    def num_embeddings(self) -> int:
        return self.weight.shape[0]

    @property
    def embedding_dim(self) -> int:
        return self.weight.shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _scaled(F.embedding(x, self.weight), self.weight_mult)  # type: ignore[return-value]

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, weight_mult={self.weight_mult:.6g}"


class LayerNorm(nn.Module):
    """``weight_mult * weight * (x - mean) / sqrt(var + eps) + bias_mult * bias`` over the last dimension.

    ``weight`` (the gain) starts at 1 and ``bias`` at 0 in both parametrizations, and
    both multipliers are 1: the affine map acts on one coordinate each (fan-in 1), so
    there is no width to scale by, and at init the layer is the parameter-free
    normalisation.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, *, eps: float = 1e-5,
                 weight_mult: float = 1.0, bias_mult: float = 1.0) -> None:
        super().__init__()
        if weight.ndim != 1:
            raise ValueError(f"weight must have shape (features,), got {tuple(weight.shape)}")
        if bias is not None and bias.shape != weight.shape:
            raise ValueError(f"bias must have shape {tuple(weight.shape)}, got {tuple(bias.shape)}")
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias) if bias is not None else None
        self.eps = check_nonnegative_float(eps, "eps")
        self.weight_mult = check_nonnegative_float(weight_mult, "weight_mult")
        self.bias_mult = check_nonnegative_float(bias_mult, "bias_mult")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, _scaled(self.weight, self.weight_mult),
                            _scaled(self.bias, self.bias_mult), self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps:g}, bias={self.bias is not None}"


QK_SCALINGS = ("sqrt", "linear")


class SelfAttention(nn.Module):
    """Multi-head self-attention ``out(concat_h softmax(s q_h k_h^T) v_h)`` with :class:`Linear` projections.

    ``q``, ``k``, ``v`` and ``out`` map d_model -> d_model; ``n_heads`` divides d_model
    into heads of ``head_dim`` coordinates.  The logit scale ``s`` is
    ``1/sqrt(head_dim)`` for ``qk_scaling="sqrt"`` (Vaswani et al. 2017) or
    ``1/head_dim`` for ``qk_scaling="linear"`` (the NTK-parametrised attention of
    Hron et al. 2020 and Yang's muP, under which the logits, not only their variance,
    stay O(1) as head_dim grows: with ``"sqrt"`` the logits of an NTK-parametrised
    network are O(1) Gaussian at init, with ``"linear"`` they vanish and the attention
    is uniform in the infinite-width limit).  Input and output (N, T, d_model).
    """

    def __init__(self, q: Linear, k: Linear, v: Linear, out: Linear, n_heads: int, *,
                 qk_scaling: str = "sqrt") -> None:
        super().__init__()
        self.q, self.k, self.v, self.out = q, k, v, out
        self.n_heads = check_positive_int(n_heads, "n_heads")
        d_model = q.in_features
        if d_model % self.n_heads:
            raise ValueError(f"n_heads ({n_heads}) must divide d_model ({d_model})")
        self.head_dim = d_model // self.n_heads
        self.qk_scaling = check_choice(qk_scaling, "qk_scaling", QK_SCALINGS)
        self.logit_scale = 1.0 / (math.sqrt(self.head_dim) if qk_scaling == "sqrt" else self.head_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape

        def heads(proj: Linear) -> torch.Tensor:
            return proj(x).reshape(n, t, self.n_heads, self.head_dim).transpose(1, 2)

        logits = (heads(self.q) @ heads(self.k).transpose(-2, -1)) * self.logit_scale
        mixed = torch.softmax(logits, dim=-1) @ heads(self.v)
        return self.out(mixed.transpose(1, 2).reshape(n, t, d))

    def extra_repr(self) -> str:
        return f"n_heads={self.n_heads}, head_dim={self.head_dim}, qk_scaling={self.qk_scaling!r}"


class Head(nn.Module):
    """The readout ``Linear`` or ``Linear -> activation -> Linear`` (``layers`` holds them in order)."""

    def __init__(self, layers: list[Linear], activation: str) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.activation = activation
        self._phi = ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = self._phi(layer(x))
        return self.layers[-1](x)


def int_tuple(value: object, name: str, dims: int, *, minimum: int = 1) -> tuple[int, ...]:
    """``value`` (an int or a ``dims``-tuple of ints >= ``minimum``) as a ``dims``-tuple; else raise naming it."""
    if not isinstance(value, (tuple, list)):
        return (check_positive_int(value, name, minimum=minimum),) * dims
    if len(value) != dims:
        raise ValueError(f"{name} must be an int or a sequence of {dims} ints, got {value!r}")
    return tuple(check_positive_int(v, f"{name}[{i}]", minimum=minimum) for i, v in enumerate(value))


class LayerFactory:
    """Draws the layers of one network from one generator in one parametrization.

    Validates and holds the arguments every family shares (their meaning is the
    module docstring's); each ``linear``/``conv``/``embedding``/``layer_norm`` call
    draws its raw parameters from ``generator`` in call order.
    """

    def __init__(self, *, activation: object, bias: object, parametrization: object, weight_std: object,
                 bias_std: object, init: object, generator: object, dtype: object, device: object) -> None:
        self.activation = check_choice(activation, "activation", list(ACTIVATIONS))
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be a bool, got {type(bias).__name__}")
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
        return dict(activation=self.activation, bias=self.bias, parametrization=self.parametrization,
                    weight_std=self.weight_std, bias_std=self.bias_std, init=self.init)

    def draw(self, *shape: int) -> torch.Tensor:
        gen_device = self.generator.device if self.generator is not None else torch.device("cpu")
        return torch.randn(*shape, generator=self.generator, dtype=self.dtype, device=gen_device).to(self.device)

    def _affine(self, w_shape: tuple[int, ...], fan_in: int, fan_out: int,
                bias: bool | None) -> tuple[torch.Tensor, torch.Tensor | None, float, float]:
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
        w, b, wm, bm = self._affine((out_channels, in_channels // groups, *kernel_size),
                                    in_channels // groups * area, out_channels * area // groups, None)
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

    def reinitialized(self, generator: torch.Generator | None = None) -> "Family":
        """A copy with every parameter drawn afresh from this network's init distribution."""
        p = next(self.parameters())
        return type(self)(**self.arch, generator=generator, dtype=p.dtype, device=p.device)

    def spec(self) -> str:
        """A Python expression that rebuilds this architecture (the generator aside)."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.arch.items())
        return f"ntkcheck.{type(self).__name__}({args})"

    def _check_input(self, x: object, *, tokens: bool = False) -> torch.Tensor:
        """Raise naming ``x`` unless it is a batch (N, *in_shape) of the model's dtype (integer ids if ``tokens``)."""
        expected = "(N, " + ", ".join("size" if s is None else str(s) for s in self.in_shape) + ")"
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor of shape {expected}, got {type(x).__name__}")
        dtype = next(self.parameters()).dtype
        if tokens and (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool):
            raise TypeError(f"x must hold integer token ids, got dtype {x.dtype}")
        if not tokens and x.dtype != dtype:
            raise TypeError(f"x must have the model's dtype {dtype}, got {x.dtype}")
        shape = tuple(x.shape)
        if len(shape) != len(self.in_shape) + 1 or shape[0] == 0 or any(
                n == 0 or (s is not None and n != s) for n, s in zip(shape[1:], self.in_shape)):
            raise ValueError(f"x must have shape {expected} with N >= 1, got {shape}")
        return x
