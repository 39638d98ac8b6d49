"""Parametrised layers with stored multipliers.

Every layer computes ``weight_mult * (op with raw weight) + bias_mult * (raw bias)``
with the two multipliers stored as plain floats on the layer, so every consumer
(layerwise kernel rules, analytic kernels, zero-output transforms) reads the numbers
the forward pass uses.  :class:`~ntkcheck.models.family.LayerFactory` turns a
parametrization into raw draws and multipliers, the same way for every layer type:

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

import torch
from torch import nn
from torch.nn import functional

from ntkcheck._support.validation import check_choice, check_nonnegative_float, check_positive_int

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": functional.relu,
    "tanh": torch.tanh,
    "erf": torch.erf,
    "gelu": functional.gelu,
    "softplus": functional.softplus,
    "sin": torch.sin,
    "identity": lambda t: t,
}
"""The activations every network accepts, by name (gelu is the exact, erf-based one)."""


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
        out = functional.linear(x, self.weight)
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
        pad = self.padding if isinstance(self.padding, tuple) else (0,) * self._dims
        return tuple(
            (n + 2 * p - d * (k - 1) - 1) // s + 1
            for n, p, d, k, s in zip(size, pad, self.dilation, self.kernel_size, self.stride)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != self._dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"x must have shape (N, {self.in_channels}" + ", size" * self._dims + f"), got {tuple(x.shape)}"
            )
        return self._conv(
            x,
            _scaled(self.weight, self.weight_mult),
            _scaled(self.bias, self.bias_mult),
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding!r}, dilation={self.dilation}, groups={self.groups}, "
            f"bias={self.bias is not None}, weight_mult={self.weight_mult:.6g}, bias_mult={self.bias_mult:.6g}"
        )


class Conv1d(_ConvNd):
    """One-dimensional :class:`_ConvNd`: input (N, in_channels, length)."""

    _dims = 1
    _conv = staticmethod(functional.conv1d)


class Conv2d(_ConvNd):
    """Two-dimensional :class:`_ConvNd`: input (N, in_channels, height, width)."""

    _dims = 2
    _conv = staticmethod(functional.conv2d)


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
        return _scaled(functional.embedding(x, self.weight), self.weight_mult)  # type: ignore[return-value]

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, weight_mult={self.weight_mult:.6g}"


class LayerNorm(nn.Module):
    """``weight_mult * weight * (x - mean) / sqrt(var + eps) + bias_mult * bias`` over the last dimension.

    ``weight`` (the gain) starts at 1 and ``bias`` at 0 in both parametrizations, and
    both multipliers are 1: the affine map acts on one coordinate each (fan-in 1), so
    there is no width to scale by, and at init the layer is the parameter-free
    normalisation.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        *,
        eps: float = 1e-5,
        weight_mult: float = 1.0,
        bias_mult: float = 1.0,
    ) -> None:
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
        return functional.layer_norm(
            x, self.weight.shape, _scaled(self.weight, self.weight_mult), _scaled(self.bias, self.bias_mult), self.eps
        )

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

    def __init__(self, q: Linear, k: Linear, v: Linear, out: Linear, n_heads: int, *, qk_scaling: str = "sqrt") -> None:
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
            out: torch.Tensor = proj(x).reshape(n, t, self.n_heads, self.head_dim).transpose(1, 2)
            return out

        logits = (heads(self.q) @ heads(self.k).transpose(-2, -1)) * self.logit_scale
        mixed = torch.softmax(logits, dim=-1) @ heads(self.v)
        out: torch.Tensor = self.out(mixed.transpose(1, 2).reshape(n, t, d))
        return out

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
        out: torch.Tensor = self.layers[-1](x)
        return out


def int_tuple(value: object, name: str, dims: int, *, minimum: int = 1) -> tuple[int, ...]:
    """``value`` (an int or a ``dims``-tuple of ints >= ``minimum``) as a ``dims``-tuple; else raise naming it."""
    if not isinstance(value, (tuple, list)):
        return (check_positive_int(value, name, minimum=minimum),) * dims
    if len(value) != dims:
        raise ValueError(f"{name} must be an int or a sequence of {dims} ints, got {value!r}")
    return tuple(check_positive_int(v, f"{name}[{i}]", minimum=minimum) for i, v in enumerate(value))
