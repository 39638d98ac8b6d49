"""The frozen description of a network that the strategies draw: :class:`Arch`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, cast

import torch

from ntkcheck.models import CNN, MLP, ResNet, Transformer

FAMILY_ORDER = ("mlp", "resnet", "cnn", "transformer")
"""Families in the order :func:`architectures` shrinks toward (index 0 first)."""


@dataclass(frozen=True)
class Arch:
    """A reproducible network of one family: its constructor arguments, the seed of its initial draw,
    and its frozen layers.

    ``family`` is ``"mlp"`` (:class:`~ntkcheck.MLP`: ``in_features``, hidden ``widths``),
    ``"cnn"`` (:class:`~ntkcheck.CNN`: ``in_features`` input channels, ``widths`` the channels of the
    convolutions, images of ``image_size`` x ``image_size``, or sequences of ``image_size`` positions
    when ``dims`` is 1), ``"resnet"`` (:class:`~ntkcheck.ResNet`: ``widths = (width,)``, ``blocks``
    residual blocks, LayerNorm placed by ``layer_norm`` (None, "pre" or "post"); dense on
    (N, in_features) when ``image_size`` is 0, convolutional on images (or sequences, ``dims`` 1) of
    ``in_features`` channels otherwise) or ``"transformer"``
    (:class:`~ntkcheck.Transformer`: ``d_model``, ``heads``, ``blocks``, ``widths = (mlp_width,)``,
    sequences of ``seq_len`` positions: integer token ids below ``vocab`` when ``vocab`` > 0, else
    feature vectors of ``in_features``).  ``in_shape`` is the shape of one input.

    ``frozen`` lists indices into :meth:`units` (the layers of an MLP; the convolutions then the head
    of a CNN; stem, blocks, head of a ResNet; embeddings, blocks, final norm, head of a Transformer)
    whose parameters get ``requires_grad=False`` (the NTK then counts only the others); it never
    holds every unit.
    """

    in_features: int
    widths: tuple[int, ...]
    out_features: int
    activation: str
    bias: bool
    parametrization: str
    weight_std: float
    bias_std: float
    seed: int
    init: str = "fan_in"
    frozen: tuple[int, ...] = ()
    family: str = "mlp"
    image_size: int = 0
    kernel_size: int = 3
    stride: int = 1
    padding: str | int = "same"
    readout: str = "gap"
    blocks: int = 1
    branch_scale: float | None = None
    d_model: int = 0
    heads: int = 1
    seq_len: int = 0
    vocab: int = 0
    norm: str = "pre"
    dims: int = 2
    layer_norm: str | None = None

    def build(self, *, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> torch.nn.Module:
        """The network this describes, parameters drawn from ``torch.Generator().manual_seed(seed)``."""
        gen = torch.Generator().manual_seed(self.seed)
        common: dict[str, Any] = dict(
            activation=self.activation,
            bias=self.bias,
            parametrization=self.parametrization,
            weight_std=self.weight_std,
            bias_std=self.bias_std,
            init=self.init,
            generator=gen,
            dtype=dtype,
            device=device,
        )
        model = self._construct(common)
        units = self.units(model)
        for index in self.frozen:
            units[index].requires_grad_(False)
        return model

    def _construct(self, common: dict[str, Any]) -> torch.nn.Module:
        """The family's constructor called with this description and ``common`` (init, generator, dtype)."""
        if self.family == "mlp":
            return MLP(self.in_features, self.widths, self.out_features, **common)
        if self.family == "cnn":
            return CNN(
                self.in_features,
                self.widths,
                self.out_features,
                kernel_size=self.kernel_size,
                stride=self.stride,
                padding=self.padding,
                readout=self.readout,
                image_size=self.image_size,
                dims=self.dims,
                **common,
            )
        if self.family == "resnet":
            shape: dict[str, Any] = (
                dict(
                    in_channels=self.in_features,
                    kernel_size=self.kernel_size,
                    image_size=self.image_size,
                    dims=self.dims,
                )
                if self.image_size
                else dict(in_features=self.in_features)
            )
            return ResNet(
                self.widths[0],
                self.blocks,
                self.out_features,
                branch_scale=self.branch_scale,
                norm=self.layer_norm,
                **shape,
                **common,
            )
        if self.family == "transformer":
            source: dict[str, Any] = dict(vocab_size=self.vocab) if self.vocab else dict(in_features=self.in_features)
            return Transformer(
                self.d_model,
                self.heads,
                self.blocks,
                self.widths[0],
                self.out_features,
                max_len=self.seq_len,
                norm=self.norm,
                **source,
                **common,
            )
        raise ValueError(f"family must be one of {FAMILY_ORDER}, got {self.family!r}")

    def units(self, model: torch.nn.Module) -> list[torch.nn.Module]:
        """The modules ``frozen`` indexes, in forward order (see the class docstring)."""
        if self.family == "mlp":
            return list(cast(MLP, model).layers)
        if self.family == "cnn":
            cnn = cast(CNN, model)
            return [*cnn.convs, cnn.head]
        if self.family == "resnet":
            resnet = cast(ResNet, model)
            return [resnet.stem, *resnet.residual, resnet.head]
        net = cast(Transformer, model)
        extra = [net.final_norm] if net.final_norm is not None else []
        position = [net.position] if net.position is not None else []
        return [net.embed, *position, *net.blocks, *extra, net.head]

    def n_units(self) -> int:
        """``len(units(model))`` without building the model."""
        if self.family in ("mlp", "cnn"):
            return len(self.widths) + 1
        if self.family == "resnet":
            return self.blocks + 2
        return 2 + 1 + self.blocks + (self.norm == "pre")  # embed, position, blocks, final norm, head

    @property
    def in_shape(self) -> tuple[int, ...]:
        """The shape of one input: (d,), (C, H, W), (T, d) or, for token ids, (T,)."""
        if self.family == "transformer":
            return (self.seq_len,) if self.vocab else (self.seq_len, self.in_features)
        if self.family in ("cnn", "resnet") and self.image_size:
            return (self.in_features, *(self.image_size,) * self.dims)
        return (self.in_features,)

    def n_params(self) -> int:
        """The number of trainable parameters (frozen units excluded)."""
        if self.family == "mlp":
            sizes = (self.in_features, *self.widths, self.out_features)
            return sum(
                a * b + (b if self.bias else 0)
                for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))
                if i not in self.frozen
            )
        model = self.build(dtype=torch.float64)
        return sum(p.numel() for p in model.parameters() if p.requires_grad)

    def __repr__(self) -> str:
        """``Arch(...)`` with every field an MLP needs and the others only where they differ from their
        defaults: ``eval`` of it rebuilds this description."""
        shown = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.default is dataclasses.MISSING or f.name in ("init", "frozen") or value != f.default:
                shown.append(f"{f.name}={value!r}")
        return f"Arch({', '.join(shown)})"

    def snippet(self) -> str:
        """Python that rebuilds this model (printed by failing properties)."""
        return f"model = {self!r}.build()"
