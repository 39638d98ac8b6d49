"""Convolutional networks: a :class:`~ntkcheck.models.Conv2d` (images) or :class:`~ntkcheck.models.Conv1d`
(sequences) stack, a readout and a :class:`Linear` head."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ntkcheck._support.validation import check_choice, check_int_sequence, check_positive_int
from ntkcheck.models.family import Family, LayerFactory
from ntkcheck.models.layers import ACTIVATIONS, Conv1d, Conv2d, int_tuple

READOUTS = ("gap", "flatten")


def _output_size(convs: nn.ModuleList, size: tuple[int, ...]) -> tuple[int, ...] | None:
    """The spatial size after ``convs`` for inputs of spatial ``size``; None if some layer's output is empty."""
    for conv in convs:
        assert isinstance(conv, (Conv1d, Conv2d))
        size = conv.output_size(size)
        if min(size) < 1:
            return None
    return size


class CNN(Family):
    """``Conv -> activation`` for each entry of ``channels``, a readout, then a head.

    Images (``dims=2``, the default) go through :class:`~ntkcheck.models.Conv2d` layers,
    sequences (``dims=1``: input (N, C, L), e.g. C features at L time steps) through
    :class:`~ntkcheck.models.Conv1d` layers; everything else is the same.

    Args:
        in_channels: channels C of the input images (N, C, H, W) or sequences (N, C, L).
        channels: output channels of each convolution (at least one).
        out_features: number of outputs O.
        kernel_size, stride, dilation: of every convolution (an int, or a ``dims``-tuple: (h, w) for images).
        padding: ``"same"`` (stride 1 only), ``"valid"`` or an int / ``dims``-tuple.
        readout: ``"gap"`` (global average pooling over the positions: any input size) or
            ``"flatten"`` (all positions into the head: needs ``image_size``).
        image_size: the spatial size, (H, W) or an int for square images, L (an int or a 1-tuple)
            for sequences; fixes ``in_shape``.
        dims: spatial dimensions, 2 (images, Conv2d) or 1 (sequences, Conv1d).
        head_width: ``None`` for a ``Linear`` head, else the width of a
            ``Linear -> activation -> Linear`` head (what :func:`~ntkcheck.double_last_layer` doubles).
        activation, bias, parametrization, weight_std, bias_std, init, generator, dtype, device: as for
            :class:`~ntkcheck.MLP`; the convolutions' fan-in is ``in_channels * kh * kw``
            (``in_channels * k`` for sequences).

    ``model.convs`` holds the convolutions, ``model.head`` the head.
    ``forward`` maps (N, C, H, W) (or (N, C, L)) to (N, out_features).
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        out_features: int = 1,
        *,
        kernel_size: int | tuple[int, ...] = 3,
        stride: int | tuple[int, ...] = 1,
        padding: str | int | tuple[int, ...] = "same",
        dilation: int | tuple[int, ...] = 1,
        readout: str = "gap",
        image_size: int | tuple[int, ...] | None = None,
        dims: int = 2,
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
        if dims not in (1, 2) or isinstance(dims, bool):
            raise ValueError(f"dims must be 1 (sequences, Conv1d) or 2 (images, Conv2d), got {dims!r}")
        self.dims = dims
        kernel = int_tuple(kernel_size, "kernel_size", dims)
        self.readout = check_choice(readout, "readout", READOUTS)
        size = None if image_size is None else int_tuple(image_size, "image_size", dims)
        if readout == "flatten" and size is None:
            raise ValueError("image_size must be given for readout='flatten' (the head's fan-in depends on it)")
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
        self.arch = dict(
            in_channels=in_channels,
            channels=list(self.channels),
            out_features=out_features,
            kernel_size=kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            readout=readout,
            image_size=image_size,
            dims=dims,
            head_width=head_width,
            **make.common(),
        )
        self.activation = make.activation
        sizes = (self.in_channels, *self.channels)
        self.convs = nn.ModuleList(
            make.conv(c_in, c_out, kernel, stride=stride, padding=padding, dilation=dilation)
            for c_in, c_out in zip(sizes[:-1], sizes[1:])
        )
        self.in_shape = (self.in_channels, *(size or (None,) * dims))
        fan_in = self.channels[-1]
        if size is not None:
            out_size = _output_size(self.convs, size)
            if out_size is None:
                raise ValueError(f"image_size {size} is too small for the convolutions")
            if readout == "flatten":
                fan_in *= math.prod(out_size)
        self.head = make.head(fan_in, self.head_width, self.out_features)
        self._phi = ACTIVATIONS[self.activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._check_input(x)
        spatial = tuple(h.shape[2:])
        if self.in_shape[1] is None and _output_size(self.convs, spatial) is None:
            what = "images" if self.dims == 2 else "sequences"
            raise ValueError(f"x has {what} of size {spatial}, too small for the convolutions")
        for conv in self.convs:
            h = self._phi(conv(h))
        h = h.mean(dim=tuple(range(2, h.ndim))) if self.readout == "gap" else h.flatten(1)
        out: torch.Tensor = self.head(h)
        return out
