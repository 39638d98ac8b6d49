"""Residual networks of dense or convolutional blocks ``h + branch_scale * branch(h)``."""

from __future__ import annotations

import math

import torch
from torch import nn

from ntkcheck._validation import check_nonnegative_float, check_positive_int
from ntkcheck.networks._layers import ACTIVATIONS, Family, LayerFactory, int_tuple


class ResidualBlock(nn.Module):
    """``h + scale * second(activation(first(h)))``, then the activation if ``post_activation``."""

    def __init__(self, first: nn.Module, second: nn.Module, *, scale: float, activation: str,
                 post_activation: bool) -> None:
        super().__init__()
        self.first, self.second = first, second
        self.scale = scale
        self.post_activation = post_activation
        self._phi = ACTIVATIONS[activation]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.scale * self.second(self._phi(self.first(h)))
        return self._phi(h) if self.post_activation else h


class ResNet(Family):
    """A stem to ``width``, ``blocks`` residual blocks, a readout, then a head.

    Dense (``in_features=d``, input (N, d)): the stem is ``Linear(d, width)`` and each
    branch ``Linear(width, width) -> activation -> Linear(width, width)``.
    Convolutional (``in_channels=C``, input (N, C, H, W)): the stem is a
    ``Conv2d(C, width)`` and each branch ``Conv2d -> activation -> Conv2d`` with
    ``kernel_size`` and ``"same"`` padding; global average pooling reads out.

    Each block computes ``h + branch_scale * branch(h)`` (followed by the activation
    when ``post_activation``; by default it is not, so the residual stream is a sum
    of branch outputs and the stem's, and the activations sit inside the branches).
    In the NTK parametrization every branch adds O(1) variance to the stream, so
    with a constant scale the output variance and the kernel grow geometrically in
    ``blocks``; the default ``branch_scale = 1 / sqrt(blocks)`` keeps both bounded as
    depth grows, so the infinite-width limit stays finite for deep networks too
    (the scaling of Hayou et al. 2021's stable ResNets).

    Args:
        width: channels / features of the residual stream.
        blocks: number of residual blocks (>= 1).
        out_features: number of outputs O.
        in_features, in_channels: exactly one: dense input of d features, or images of C channels.
        kernel_size: of the convolutions (convolutional networks only).
        image_size: (H, W) or an int for square images: fixes ``in_shape`` (convolutional only; optional).
        branch_scale: the branch multiplier (default ``1 / sqrt(blocks)``).
        post_activation: apply the activation after each sum.
        head_width: ``None`` for a ``Linear`` head, else the width of a
            ``Linear -> activation -> Linear`` head (what :func:`~ntkcheck.double_last_layer` doubles).
        activation, bias, parametrization, weight_std, bias_std, init, generator,
        dtype, device: as for :class:`~ntkcheck.MLP`.

    ``forward`` maps (N, *in_shape) to (N, out_features).
    """

    def __init__(
        self,
        width: int,
        blocks: int,
        out_features: int = 1,
        *,
        in_features: int | None = None,
        in_channels: int | None = None,
        kernel_size: int | tuple[int, int] = 3,
        image_size: int | tuple[int, int] | None = None,
        branch_scale: float | None = None,
        post_activation: bool = False,
        head_width: int | None = None,
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
        self.width = check_positive_int(width, "width")
        self.blocks = check_positive_int(blocks, "blocks")
        self.out_features = check_positive_int(out_features, "out_features")
        if (in_features is None) == (in_channels is None):
            raise ValueError("exactly one of in_features (dense input) and in_channels (images) must be given, "
                             f"got in_features={in_features!r}, in_channels={in_channels!r}")
        self.branch_scale = (1.0 / math.sqrt(self.blocks) if branch_scale is None
                             else check_nonnegative_float(branch_scale, "branch_scale"))
        if not isinstance(post_activation, bool):
            raise TypeError(f"post_activation must be a bool, got {type(post_activation).__name__}")
        self.head_width = None if head_width is None else check_positive_int(head_width, "head_width")
        make = LayerFactory(activation=activation, bias=bias, parametrization=parametrization,
                            weight_std=weight_std, bias_std=bias_std, init=init, generator=generator,
                            dtype=dtype, device=device)
        self.activation = make.activation
        self.arch = dict(width=width, blocks=blocks, out_features=out_features, in_features=in_features,
                         in_channels=in_channels, kernel_size=kernel_size, image_size=image_size,
                         branch_scale=branch_scale, post_activation=post_activation, head_width=head_width,
                         **make.common())
        self.convolutional = in_channels is not None
        if self.convolutional:
            self.in_channels = check_positive_int(in_channels, "in_channels")
            kernel = int_tuple(kernel_size, "kernel_size", 2)
            size = None if image_size is None else int_tuple(image_size, "image_size", 2)
            self.in_shape: tuple[int | None, ...] = (self.in_channels, *(size or (None, None)))

            def layer(fan_in: int) -> nn.Module:
                return make.conv2d(fan_in, self.width, kernel, padding="same")
        else:
            self.in_features = check_positive_int(in_features, "in_features")
            if image_size is not None:
                raise ValueError("image_size applies to convolutional networks (in_channels) only")
            self.in_shape = (self.in_features,)

            def layer(fan_in: int) -> nn.Module:
                return make.linear(fan_in, self.width)
        self.stem = layer(self.in_shape[0])  # type: ignore[arg-type]
        self.residual = nn.ModuleList(
            ResidualBlock(layer(self.width), layer(self.width), scale=self.branch_scale,
                          activation=self.activation, post_activation=post_activation)
            for _ in range(self.blocks)
        )
        self.head = make.head(self.width, self.head_width, self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(self._check_input(x))
        for block in self.residual:
            h = block(h)
        if self.convolutional:
            h = h.mean(dim=(-2, -1))
        return self.head(h)
