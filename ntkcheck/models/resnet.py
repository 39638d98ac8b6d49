"""Residual networks of dense or convolutional blocks ``h + branch_scale * branch(h)``."""

from __future__ import annotations

import math

import torch
from torch import nn

from ntkcheck._support.validation import check_bool, check_choice, check_nonnegative_float, check_positive_int
from ntkcheck.models.family import Family, LayerFactory
from ntkcheck.models.layers import ACTIVATIONS, LayerNorm, int_tuple

NORM_PLACEMENTS = ("pre", "post")


def channel_norm(norm: LayerNorm, h: torch.Tensor) -> torch.Tensor:
    """``norm`` over the channel axis (dim 1) of ``h``: features (N, C), or each position of (N, C, *spatial)."""
    if h.ndim == 2:
        out: torch.Tensor = norm(h)
        return out
    moved: torch.Tensor = norm(h.movedim(1, -1)).movedim(-1, 1)
    return moved


class ResidualBlock(nn.Module):
    """``h + scale * second(activation(first(h)))``, then the activation if ``post_activation``.

    With a LayerNorm ``norm`` (over the channel axis, see :func:`channel_norm`):
    ``norm_position="pre"``: ``h + scale * branch(norm(h))``; ``"post"``:
    ``norm(h + scale * branch(h))`` (then the activation if ``post_activation``).
    """

    def __init__(
        self,
        first: nn.Module,
        second: nn.Module,
        *,
        scale: float,
        activation: str,
        post_activation: bool,
        norm: LayerNorm | None = None,
        norm_position: str = "pre",
    ) -> None:
        super().__init__()
        self.first, self.second = first, second
        self.scale = scale
        self.post_activation = post_activation
        self.norm = norm
        self.norm_position = check_choice(norm_position, "norm_position", NORM_PLACEMENTS)
        self._phi = ACTIVATIONS[activation]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        norm = self.norm
        pre = norm is not None and self.norm_position == "pre"
        inner = channel_norm(norm, h) if norm is not None and pre else h
        h = h + self.scale * self.second(self._phi(self.first(inner)))
        if norm is not None and not pre:
            h = channel_norm(norm, h)
        return self._phi(h) if self.post_activation else h


class ResNet(Family):
    """A stem to ``width``, ``blocks`` residual blocks, a readout, then a head.

    Dense (``in_features=d``, input (N, d)): the stem is ``Linear(d, width)`` and each
    branch ``Linear(width, width) -> activation -> Linear(width, width)``.
    Convolutional (``in_channels=C``, input (N, C, H, W)): the stem is a
    ``Conv2d(C, width)`` and each branch ``Conv2d -> activation -> Conv2d`` with
    ``kernel_size`` and ``"same"`` padding; global average pooling reads out.
    With ``dims=1`` the same on sequences (N, C, L) with ``Conv1d`` layers.

    Each block computes ``h + branch_scale * branch(h)`` (followed by the activation
    when ``post_activation``; by default it is not, so the residual stream is a sum
    of branch outputs and the stem's, and the activations sit inside the branches).
    In the NTK parametrization every branch adds O(1) variance to the stream, so
    with a constant scale the output variance and the kernel grow geometrically in
    ``blocks``; the default ``branch_scale = 1 / sqrt(blocks)`` keeps both bounded as
    depth grows, so the infinite-width limit stays finite for deep networks too
    (the scaling of Hayou et al. 2021's stable ResNets).

    ``norm`` places a :class:`~ntkcheck.models.LayerNorm` over the features (dense) or
    over the channels at each position (convolutional) in every block: ``"pre"``
    normalises each branch's input, ``h + branch_scale * branch(LN(h))``, and a final
    LayerNorm precedes the readout (as in pre-norm transformers); ``"post"`` normalises
    each block's sum, ``LN(h + branch_scale * branch(h))``.  Without ``post_activation``
    every LayerNorm sees a Gaussian stream in the infinite-width limit (neural-tangents'
    ``stax.LayerNorm`` over the channel axis), which the analytic kernels need.

    Args:
        width: channels / features of the residual stream.
        blocks: number of residual blocks (>= 1).
        out_features: number of outputs O.
        in_features, in_channels: exactly one: dense input of d features, or images of C channels.
        kernel_size: of the convolutions (convolutional networks only).
        image_size: (H, W) or an int for square images, L for sequences: fixes ``in_shape``
            (convolutional only; optional).
        dims: spatial dimensions of a convolutional network: 2 (images) or 1 (sequences).
        norm: ``None`` (no normalisation), ``"pre"`` or ``"post"`` (see above); each LayerNorm
            starts at gain 1 and (with ``bias``) bias 0, both trainable.
        branch_scale: the branch multiplier (default ``1 / sqrt(blocks)``).
        post_activation: apply the activation after each sum.
        head_width: ``None`` for a ``Linear`` head, else the width of a
            ``Linear -> activation -> Linear`` head (what :func:`~ntkcheck.double_last_layer` doubles).
        activation, bias, parametrization, weight_std, bias_std, init, generator, dtype, device: as for
            :class:`~ntkcheck.MLP`.

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
        kernel_size: int | tuple[int, ...] = 3,
        image_size: int | tuple[int, ...] | None = None,
        dims: int = 2,
        norm: str | None = None,
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
            raise ValueError(
                "exactly one of in_features (dense input) and in_channels (images) must be given, "
                f"got in_features={in_features!r}, in_channels={in_channels!r}"
            )
        self.branch_scale = (
            1.0 / math.sqrt(self.blocks)
            if branch_scale is None
            else check_nonnegative_float(branch_scale, "branch_scale")
        )
        if dims not in (1, 2) or isinstance(dims, bool):
            raise ValueError(f"dims must be 1 (sequences, Conv1d) or 2 (images, Conv2d), got {dims!r}")
        if norm is not None:
            check_choice(norm, "norm", NORM_PLACEMENTS)
        self.norm = norm
        check_bool(post_activation, "post_activation")
        self.head_width = None if head_width is None else check_positive_int(head_width, "head_width")
        make = LayerFactory(
            activation=activation,
            bias=bias,
            parametrization=parametrization,
            weight_std=weight_std,
            bias_std=bias_std,
            init=init,
            generator=generator,
            dtype=dtype,
            device=device,
        )
        self.activation = make.activation
        self.arch = dict(
            width=width,
            blocks=blocks,
            out_features=out_features,
            in_features=in_features,
            in_channels=in_channels,
            kernel_size=kernel_size,
            image_size=image_size,
            dims=dims,
            norm=norm,
            branch_scale=branch_scale,
            post_activation=post_activation,
            head_width=head_width,
            **make.common(),
        )
        self.convolutional = in_channels is not None
        if self.convolutional:
            self.in_channels = check_positive_int(in_channels, "in_channels")
            kernel = int_tuple(kernel_size, "kernel_size", dims)
            size = None if image_size is None else int_tuple(image_size, "image_size", dims)
            self.in_shape: tuple[int | None, ...] = (self.in_channels, *(size or (None,) * dims))

            def layer(fan_in: int) -> nn.Module:
                return make.conv(fan_in, self.width, kernel, padding="same")
        else:
            self.in_features = check_positive_int(in_features, "in_features")
            if image_size is not None:
                raise ValueError("image_size applies to convolutional networks (in_channels) only")
            if dims != 2:
                raise ValueError(f"dims applies to convolutional networks (in_channels) only, got dims={dims!r}")
            self.in_shape = (self.in_features,)

            def layer(fan_in: int) -> nn.Module:
                return make.linear(fan_in, self.width)

        self.stem = layer(self.in_shape[0])  # type: ignore[arg-type]
        self.residual = nn.ModuleList(
            ResidualBlock(
                layer(self.width),
                layer(self.width),
                scale=self.branch_scale,
                activation=self.activation,
                post_activation=post_activation,
                norm=None if norm is None else make.layer_norm(self.width),
                norm_position=norm or "pre",
            )
            for _ in range(self.blocks)
        )
        self.final_norm = make.layer_norm(self.width) if norm == "pre" else None
        self.head = make.head(self.width, self.head_width, self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(self._check_input(x))
        for block in self.residual:
            h = block(h)
        if self.final_norm is not None:
            h = channel_norm(self.final_norm, h)
        if self.convolutional:
            h = h.mean(dim=tuple(range(2, h.ndim)))
        out: torch.Tensor = self.head(h)
        return out
