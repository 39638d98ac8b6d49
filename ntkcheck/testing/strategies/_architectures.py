"""The :func:`architectures` strategy: random :class:`Arch` descriptions of every family."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import strategies as st

from ntkcheck.models import ACTIVATIONS

from ._arch import FAMILY_ORDER, Arch


def _families(families: tuple[str, ...]) -> tuple[str, ...]:
    """``families`` in :data:`FAMILY_ORDER` order (the order draws shrink toward)."""
    families = tuple(families)
    unknown = [f for f in families if f not in FAMILY_ORDER]
    if not families or unknown:
        raise ValueError(f"families must be a nonempty subset of {FAMILY_ORDER}, got {families!r}")
    return tuple(f for f in FAMILY_ORDER if f in families)


def _cnn_padding(padding: str | int, kernel: int, stride: int, image: int, n_convs: int) -> str | int:
    """A padding that every convolution of the drawn CNN accepts and that keeps every feature map nonempty."""
    if padding == "same" and (stride > 1 or kernel % 2 == 0):  # "same": stride 1, odd kernels only
        padding = 1
    size = image
    for _ in range(n_convs):
        pad = (kernel - 1) // 2 if padding == "same" else int(padding)
        size = (size + 2 * pad - kernel) // stride + 1
    if size < 1:  # too small for unpadded strided kernels: pad by 1 (keeps every size >= 1)
        padding = 1
    return padding


def _other_family_fields(draw: st.DrawFn, family: str, max_width: int, in_features: int) -> tuple[dict[str, Any], int]:
    """The fields of a CNN, ResNet or Transformer (empty for an MLP) and the mask of its frozen units.

    Every choice of every family is drawn whatever ``family`` is (see :func:`architectures`)."""
    small = max(2, min(8, max_width))
    n_convs = draw(st.integers(1, 2))
    channels = tuple(draw(st.integers(2, small)) for _ in range(2))[:n_convs]
    kernel = draw(st.integers(1, 3))
    stride = draw(st.integers(1, 2))
    paddings: list[str | int] = ["same", 0, 1]
    padding = draw(st.sampled_from(paddings))
    image = draw(st.integers(4, 6))
    readout = draw(st.sampled_from(["gap", "flatten"]))
    res_width = draw(st.integers(2, max(2, min(16, max_width))))
    res_blocks = draw(st.integers(1, 2))
    res_conv = draw(st.booleans())
    branch_scale = draw(st.sampled_from([None, 0.5, 1.0]))
    d_model = draw(st.sampled_from([4, 8]))
    heads = draw(st.integers(1, 2))
    mlp_width = draw(st.integers(2, small))
    seq_len = draw(st.integers(2, 4))
    tokens = draw(st.booleans())
    vocab = draw(st.integers(3, 8))
    norm = draw(st.sampled_from(["pre", "post"]))
    wide_mask = draw(st.integers(0, 2**6 - 1))
    dims = draw(st.sampled_from([2, 1]))
    layer_norm = draw(st.sampled_from([None, "pre", "post"]))
    channels_in = min(in_features, 3)
    fields: dict[str, Any] = {}
    if family == "cnn":
        fields.update(
            family="cnn",
            in_features=channels_in,
            widths=channels,
            kernel_size=kernel,
            stride=stride,
            padding=_cnn_padding(padding, kernel, stride, image, len(channels)),
            image_size=image,
            readout=readout,
            dims=dims,
        )
    elif family == "resnet":
        fields.update(
            family="resnet", widths=(res_width,), blocks=res_blocks, branch_scale=branch_scale, layer_norm=layer_norm
        )
        if res_conv:
            fields.update(in_features=channels_in, image_size=min(image, 5), kernel_size=kernel | 1, dims=dims)
    elif family == "transformer":
        fields.update(
            family="transformer",
            widths=(mlp_width,),
            d_model=d_model,
            heads=heads,
            blocks=1,
            seq_len=seq_len,
            vocab=vocab if tokens else 0,
            norm=norm,
        )
    return fields, wide_mask


def _with_frozen(arch: Arch, mask: int, freeze_all_draws: bool | None, drawn_freeze: bool) -> Arch:
    """``arch`` with the nonempty proper subset ``mask`` of its units frozen, when ``frozen`` asks for it."""
    n_units = arch.n_units()
    mask = mask % max(2**n_units - 2, 1) + 1  # nonempty proper subset
    freeze = n_units > 1 and (freeze_all_draws is True or (freeze_all_draws is None and drawn_freeze))
    frozen_units = tuple(i for i in range(n_units) if mask >> i & 1) if freeze else ()
    return dataclasses.replace(arch, frozen=frozen_units) if frozen_units else arch


@st.composite
def architectures(
    draw: st.DrawFn,
    *,
    min_depth: int = 1,
    max_depth: int = 4,
    max_width: int = 64,
    max_in: int = 5,
    max_out: int = 3,
    activations: tuple[str, ...] = tuple(ACTIVATIONS),
    parametrizations: tuple[str, ...] = ("ntk", "standard"),
    bias: bool | None = None,
    frozen: bool | None = False,
    families: tuple[str, ...] = FAMILY_ORDER,
) -> Arch:
    """Random network descriptions of the given ``families`` (``"mlp"``, ``"cnn"``, ``"resnet"``,
    ``"transformer"``), shrinking toward the smallest family (mlp < resnet < cnn < transformer) and size.

    MLPs: depth (hidden layers) in [min_depth, max_depth], widths in [1, max_width], 1 to ``max_in``
    inputs.  The other families are kept small enough for exact Jacobians in a property test:
    CNNs of 1-2 convolutions with 2-8 channels (kernel 1-3, stride 1-2, ``"same"`` (odd kernels, stride 1)
    or 0/1 padding,
    average-pooling or flatten readout) on 4x4 to 6x6 images or sequences of 4 to 6 positions, 1-3
    channels; ResNets of 1-2 blocks of width 2-16 (bounded by ``max_width``), dense on (N, d) or
    convolutional (kernel 1 or 3) on 4x4/5x5 images or sequences, default or drawn branch scale, without,
    pre- or post-LayerNorm; Transformers of 1 block, d_model 4 or 8, 1-2 heads, MLP width 2-8,
    pre- or post-norm, on 2-4 positions of integer tokens (vocabulary 3-8) or feature vectors.
    Depth, width and input arguments other than ``max_width``/``max_in`` apply to MLPs only.

    ``bias=None`` draws it (half the draws; a drawn bias always has a nonzero scale, so it
    contributes to the kernel); pass True/False to fix it (seed 001's claims need bias-free nets).
    Standard parametrization draws its init too: fan-in or seed 000 §7's Glorot-style
    ``std = v sqrt(2 / (fan_in + fan_out))``.  ``frozen=None`` freezes a random proper subset
    of the units (:meth:`Arch.units`) in a quarter of the draws, ``True`` in every draw (needs two
    units or more), ``False`` never.
    """
    ordered = _families(families)
    # Every draw below happens in every example (the choices that do not apply are drawn and ignored):
    # a choice sequence of fixed shape keeps Hypothesis from rejecting mutated draws as invalid.
    # MLP-only strategies draw exactly the sequence they always drew (no family draws at all).
    family = draw(st.sampled_from(ordered)) if len(ordered) > 1 else ordered[0]
    depth = draw(st.integers(min_depth, max_depth))
    widths = tuple(draw(st.integers(1, max_width)) for _ in range(max_depth))[:depth]
    drawn_bias = draw(st.booleans())
    with_bias = drawn_bias if bias is None else bias
    parametrization = draw(st.sampled_from(parametrizations))
    drawn_init = draw(st.sampled_from(["fan_in", "glorot"]))
    drawn_freeze = draw(st.integers(0, 3)) == 0
    mask = draw(st.integers(0, 2 ** (max_depth + 1) - 1))
    bias_std = draw(st.sampled_from([0.1, 0.5, 1.0]))
    fields: dict[str, Any] = dict(
        in_features=draw(st.integers(1, max_in)),
        out_features=draw(st.integers(1, max_out)),
        activation=draw(st.sampled_from(activations)),
        bias=with_bias,
        parametrization=parametrization,
        weight_std=draw(st.sampled_from([0.5, 1.0, 1.5, 2.0**0.5])),
        bias_std=bias_std if with_bias else 0.0,
        seed=draw(st.integers(0, 2**31 - 1)),
        init=drawn_init if parametrization == "standard" else "fan_in",
        widths=widths,
    )
    if ordered != ("mlp",):
        other, wide_mask = _other_family_fields(draw, family, max_width, fields["in_features"])
        fields.update(other)
        if family != "mlp":
            mask = wide_mask
    return _with_frozen(Arch(**fields), mask, frozen, drawn_freeze)
