"""Convolutional networks: a :class:`~ntkcheck.networks.Conv2d` stack, a readout and a :class:`Linear` head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ntkcheck._validation import check_choice, check_int_sequence, check_positive_int
from ntkcheck.networks._layers import ACTIVATIONS, Family, LayerFactory, int_tuple

READOUTS = ("gap", "flatten")


def _output_size(convs: nn.ModuleList, size: tuple[int, ...]) -> tuple[int, ...] | None:
    """The spatial size after ``convs`` for inputs of spatial ``size``; None if some layer's output is empty."""
    for conv in convs:
        size = conv.output_size(size)
        if min(size) < 1:
            return None
    return size


class CNN(Family):
    """``Conv2d -> activation`` for each entry of ``channels``, a readout, then a head.

    Args:
        in_channels: channels C of the input images (N, C, H, W).
        channels: output channels of each convolution (at least one).
        out_features: number of outputs O.
        kernel_size, stride, dilation: of every convolution (an int or an (h, w) pair).
        padding: ``"same"`` (stride 1 only), ``"valid"`` or an int / (h, w) pair.
        readout: ``"gap"`` (global average pooling over H, W: any image size) or
            ``"flatten"`` (all positions into the head: needs ``image_size``).
        image_size: (H, W) or an int for square images; fixes ``in_shape``.
        head_width: ``None`` for a ``Linear`` head, else the width of a
            ``Linear -> activation -> Linear`` head (what :func:`~ntkcheck.double_last_layer` doubles).
        activation, bias, parametrization, weight_std, bias_std, init, generator,
        dtype, device: as for :class:`~ntkcheck.MLP`; the convolutions' fan-in is
        ``in_channels * kh * kw``.

    ``model.convs`` holds the convolutions, ``model.head`` the head.
    ``forward`` maps (N, C, H, W) to (N, out_features).
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        out_features: int = 1,
        *,
        kernel_size: int | tuple[int, int] = 3,
        stride: int | tuple[int, int] = 1,
        padding: str | int | tuple[int, int] = "same",
        dilation: int | tuple[int, int] = 1,
        readout: str = "gap",
        image_size: int | tuple[int, int] | None = None,
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
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.channels = check_int_sequence(channels, "channels")
        if not self.channels:
            raise ValueError("channels must hold at least one convolution's channel count, got []")
        self.out_features = check_positive_int(out_features, "out_features")
        kernel = int_tuple(kernel_size, "kernel_size", 2)
        self.readout = check_choice(readout, "readout", READOUTS)
        size = None if image_size is None else int_tuple(image_size, "image_size", 2)
        if readout == "flatten" and size is None:
            raise ValueError("image_size must be given for readout='flatten' (the head's fan-in depends on it)")
        self.head_width = None if head_width is None else check_positive_int(head_width, "head_width")
        make = LayerFactory(activation=activation, bias=bias, parametrization=parametrization,
                            weight_std=weight_std, bias_std=bias_std, init=init, generator=generator,
                            dtype=dtype, device=device)
        self.arch = dict(in_channels=in_channels, channels=list(self.channels), out_features=out_features,
                         kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation,
                         readout=readout, image_size=image_size, head_width=head_width, **make.common())
        self.activation = make.activation
        sizes = (self.in_channels, *self.channels)
        self.convs = nn.ModuleList(
            make.conv2d(c_in, c_out, kernel, stride=stride, padding=padding, dilation=dilation)
            for c_in, c_out in zip(sizes[:-1], sizes[1:])
        )
        self.in_shape = (self.in_channels, *(size or (None, None)))
        fan_in = self.channels[-1]
        if size is not None:
            out_size = _output_size(self.convs, size)
            if out_size is None:
                raise ValueError(f"image_size {size} is too small for the convolutions")
            if readout == "flatten":
                fan_in *= out_size[0] * out_size[1]
        self.head = make.head(fan_in, self.head_width, self.out_features)
        self._phi = ACTIVATIONS[self.activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._check_input(x)
        if self.in_shape[1] is None and _output_size(self.convs, tuple(h.shape[-2:])) is None:
            raise ValueError(f"x has images of size {tuple(h.shape[-2:])}, too small for the convolutions")
        for conv in self.convs:
            h = self._phi(conv(h))
        h = h.mean(dim=(-2, -1)) if self.readout == "gap" else h.flatten(1)
        return self.head(h)
