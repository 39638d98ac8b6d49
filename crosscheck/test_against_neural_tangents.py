"""ntkcheck's analytic NNGP and NTK against neural-tangents' stax ``kernel_fn``, architecture by architecture.

Hypothesis draws networks of every family the analytic limit covers (MLPs in both
parametrizations; CNNs on images and on sequences with SAME / VALID padding, stride 1 / 2,
pooling or flatten readouts; dense and convolutional ResNets, with and without LayerNorm)
and inputs.  :func:`stax_layers` translates the *built* ntkcheck model (its modules and
settings) to a stax description that ``_nt_worker.py`` runs in a python with neural-tangents
(``NTKCHECK_NT_PYTHON``); both sides compute in float64 and share nothing but the inputs.

Tolerance on ``max|ntkcheck - nt| / max|nt|`` over the N1 x N2 kernel:

* ``CLOSED_RTOL = 1e-9`` when every activation has a closed form on both sides (relu:
  arc-cosine; erf: arcsin) and ``gelu`` (neural-tangents' closed form against ntkcheck's polar
  rule, accurate to ~3e-15): only rounding separates them;
* ``QUADRATURE_RTOL = 1e-5`` with tanh: both sides integrate numerically (neural-tangents by a
  2-D Gauss-Hermite rule of ``TANH_DEG`` nodes per axis, whose error for tanh is ~5e-8 relative
  and does not shrink with more nodes; ntkcheck's polar rule is accurate to ~1e-13).

* relu networks whose error exceeds ``CLOSED_RTOL``: neural-tangents computes the arc-cosine
  kernel's angle as ``arctan2(sqrt(prod - nngp^2), nngp)``; where the correlation is 1 (an input
  with itself at one position) ``nngp`` and ``sqrt(prod)`` come from different roundings, so
  the angle is ~1e-8 instead of 0, and through the next convolutions and activations it moves
  other entries too (measured up to 4e-8 relative on a 2-convolution VALID CNN on 6x6 images;
  this is the flatten-readout discrepancy once noted at 7e-10).  ntkcheck's correlation is
  exactly 1 there.  Such a case passes at ``RELU_RTOL = 1e-7`` only if ntkcheck's closed form
  also equals its own polar quadrature (no arc-cosine involved) to ``OWN_RULE_RTOL = 1e-12``;
* with ``x2`` None, the diagonal (each input with itself) at ``DIAGONAL_RTOL = 1e-7``, for the
  same reason.

Not collected by the default test run (``testpaths`` in pyproject.toml); run it with
``tox -e crosscheck`` or ``NTKCHECK_NT_PYTHON=/path/to/python pytest crosscheck``.  The
number of examples per test is ``NTKCHECK_CROSSCHECK_EXAMPLES`` (default 25); the
terminal summary lists the worst errors per family.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

from ntkcheck.kernels.analytic import _infinite_width, analytic_nngp, analytic_ntk
from ntkcheck.models import CNN, MLP, Conv1d, Conv2d, LayerNorm, Linear, ResNet

DTYPE = torch.float64
CLOSED_RTOL = 1e-9
QUADRATURE_RTOL = 1e-5
DIAGONAL_RTOL = 1e-7
RELU_RTOL = 1e-7
OWN_RULE_RTOL = 1e-12
TANH_DEG = 150
ACTIVATIONS = ("relu", "erf", "gelu", "tanh")

EXAMPLES = int(os.environ.get("NTKCHECK_CROSSCHECK_EXAMPLES", "25"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ---------------------------------------------------------------- translation to stax


def _setting(model: nn.Module, key: str) -> object:
    return getattr(model, key) if isinstance(model, MLP) else model.arch[key]  # type: ignore[index]


def _affine(layer: nn.Module, model: nn.Module) -> dict:
    """A stax Dense / Conv with the model's ``weight_std``, ``bias_std`` and parametrization."""
    spec = dict(
        out=layer.out_features if isinstance(layer, Linear) else layer.out_channels,
        W_std=float(_setting(model, "weight_std")),
        b_std=None if layer.bias is None else float(_setting(model, "bias_std")),
        parameterization=_setting(model, "parametrization"),
    )
    if isinstance(layer, Linear):
        return dict(type="dense", **spec)
    if not isinstance(layer, (Conv1d, Conv2d)):
        raise TypeError(f"no stax counterpart for {type(layer).__name__}")
    if layer.padding not in ("same", "valid") or set(layer.dilation) != {1} or layer.groups != 1:
        raise ValueError(f"stax.Conv has no counterpart for {layer!r} (string padding, no dilation, one group)")
    return dict(
        type="conv", filter=list(layer.kernel_size), strides=list(layer.stride), padding=layer.padding.upper(), **spec
    )


def _act(name: str) -> dict:
    return dict(type="act", name=name, deg=TANH_DEG)


def _norm(norm: LayerNorm) -> dict:
    if norm.weight.requires_grad or (norm.bias is not None and norm.bias.requires_grad):
        raise ValueError("stax.LayerNorm has no affine parameters: freeze the LayerNorm's gain and bias")
    return dict(type="layer_norm", eps=norm.eps)


def _head(model: nn.Module) -> list[dict]:
    out: list[dict] = []
    for i, layer in enumerate(model.head.layers):
        out += ([_act(model.activation)] if i else []) + [_affine(layer, model)]
    return out


def stax_layers(model: nn.Module) -> list[dict]:
    """The stax description (``_nt_worker.py``'s format) of an ntkcheck MLP, CNN or ResNet as built."""
    act = _act(model.activation)
    if isinstance(model, MLP):
        out: list[dict] = []
        for i, layer in enumerate(model.layers):
            out += ([act] if i else []) + [_affine(layer, model)]
        return out
    if isinstance(model, CNN):
        out = []
        for conv in model.convs:
            out += [_affine(conv, model), act]
        return out + [dict(type=model.readout)] + _head(model)
    if isinstance(model, ResNet):
        out = [_affine(model.stem, model)]
        for block in model.residual:
            pre = block.norm is not None and block.norm_position == "pre"
            branch = ([_norm(block.norm)] if pre else []) + [
                _affine(block.first, model),
                act,
                _affine(block.second, model),
                dict(type="scale", value=block.scale),
            ]
            out.append(dict(type="residual", branch=branch))
            if block.norm is not None and not pre:
                out.append(_norm(block.norm))
            if block.post_activation:
                out.append(act)
        if model.final_norm is not None:
            out.append(_norm(model.final_norm))
        if model.convolutional:
            out.append(dict(type="gap"))
        return out + _head(model)
    raise TypeError(f"no stax translation for {type(model).__name__}")


def channel_last(x: torch.Tensor) -> list:
    return (x if x.ndim == 2 else x.movedim(1, -1)).tolist()


# ---------------------------------------------------------------- the comparison


def relative_error(ours: torch.Tensor, theirs: torch.Tensor, scale: torch.Tensor) -> float:
    return float((ours - theirs).abs().max() / scale) if ours.numel() else 0.0


def assert_agrees(
    neural_tangents, report: Callable, family: str, model: nn.Module, x1: torch.Tensor, x2: torch.Tensor | None
) -> None:
    """ntkcheck's kernels of ``model`` equal neural-tangents' to the tolerance of its activation.

    With ``x2`` None the diagonal (each input with itself) is held to :data:`DIAGONAL_RTOL`:
    there neural-tangents' closed forms take ``sqrt(prod - nngp^2)`` of two numbers equal up to
    rounding (module docstring).
    """
    nngp, ntk = neural_tangents.kernels(stax_layers(model), channel_last(x1), None if x2 is None else channel_last(x2))
    theirs = [torch.tensor(nngp, dtype=DTYPE), torch.tensor(ntk, dtype=DTYPE)]
    ours = [analytic_nngp(model, x1, x2), analytic_ntk(model, x1, x2)]
    assert all(a.shape == b.shape for a, b in zip(ours, theirs)), ([a.shape for a in ours], theirs[0].shape)
    assert theirs[0].abs().max() > 0 and theirs[1].abs().max() > 0  # never pass on an all-zero kernel
    off = torch.ones_like(theirs[0], dtype=torch.bool)
    if x2 is None:
        off.fill_diagonal_(False)
    errors = [relative_error(a[off], b[off], b.abs().max()) for a, b in zip(ours, theirs)]
    diagonal = [relative_error(a[~off], b[~off], b.abs().max()) for a, b in zip(ours, theirs)]
    report(family, *errors, *diagonal, model.spec())
    rtol = QUADRATURE_RTOL if model.activation == "tanh" else CLOSED_RTOL
    if model.activation == "relu" and max(errors + diagonal) > rtol:
        # neural-tangents' arc-cosine kernel takes sqrt(prod - nngp^2) where the correlation is 1 up to
        # rounding (an input with itself at one position): ~1e-8 angles instead of 0, which spread through
        # the next layers.  Then ntkcheck's closed form must equal its own polar quadrature (no arc-cosine).
        sigma_q, theta_q = _infinite_width(model, x1, x2, quadrature=True)
        own = [relative_error(a, b, b.abs().max()) for a, b in zip(ours, (sigma_q, theta_q))]
        report(family + "-relu-vs-own-rule", *own, 0.0, 0.0, model.spec())
        assert max(own) <= OWN_RULE_RTOL, (f"{family}: closed form vs polar rule {own}", ours)
        rtol = RELU_RTOL
    assert max(errors) <= rtol and max(diagonal) <= max(rtol, DIAGONAL_RTOL), (
        f"{family}: relative error nngp {errors[0]:.3e}, ntk {errors[1]:.3e} (diagonal {diagonal[0]:.3e}, "
        f"{diagonal[1]:.3e}) > {rtol:g}",
        ours,
        theirs,
    )


def _inputs(seed: int, n: int, shape: tuple[int, ...]) -> torch.Tensor:
    """``n`` standard normal inputs rescaled to ``|x|^2 / size`` in [0.25, 2.25]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g, dtype=DTYPE).reshape(n, -1)
    scale = (0.5 + torch.rand(n, generator=g, dtype=DTYPE)) * math.sqrt(x.shape[1])
    return (x / x.norm(dim=1, keepdim=True) * scale[:, None]).reshape(n, *shape)


def _well_separated(*xs: torch.Tensor) -> bool:
    """No two inputs (flattened) have a cosine beyond 0.99 in absolute value."""
    x = torch.cat([t.reshape(t.shape[0], -1) for t in xs])
    x = x / x.norm(dim=1, keepdim=True)
    cos = (x @ x.T).fill_diagonal_(0.0)
    return bool(cos.abs().max() <= 0.99)


@st.composite
def _common(draw: st.DrawFn) -> dict:
    activation = draw(st.sampled_from(ACTIVATIONS))
    # tanh: neural-tangents' Gauss-Hermite rule loses accuracy as the variances grow (at q = 36 its
    # E[tanh' tanh'] is off by tens of percent): keep the pre-activation variances of order 1.
    w_max, b_max = (1.0, 0.5) if activation == "tanh" else (2.0, 1.0)
    return dict(
        activation=activation,
        parametrization=draw(st.sampled_from(["ntk", "standard"])),
        bias=draw(st.booleans()),
        weight_std=draw(st.floats(0.5, w_max)),
        bias_std=draw(st.floats(0.0, b_max)),
        dtype=DTYPE,
        generator=torch.Generator().manual_seed(draw(st.integers(0, 2**16))),
    )


@st.composite
def _batches(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor | None]:
    seed = draw(st.integers(0, 2**16))
    x1 = _inputs(seed, draw(st.integers(1, 4)), shape)
    x2 = _inputs(seed + 1, draw(st.integers(1, 3)), shape) if draw(st.booleans()) else None
    # Near-parallel inputs make the arc-cosine kernels ill-conditioned on both sides (d theta / d rho =
    # 1 / sqrt(1 - rho^2)): rounding alone would then separate them by more than CLOSED_RTOL.
    assume(_well_separated(x1, *(() if x2 is None else (x2,))))
    return x1, x2


def _required(size: int, kernel: int, stride: int, depth: int, padding: str) -> int:
    """The smallest input size whose VALID/SAME convolutions leave at least ``size`` positions."""
    for _ in range(depth):
        size = size if padding == "same" else (size - 1) * stride + kernel
    return size


@SETTINGS
@given(data=st.data())
def test_mlp(neural_tangents, report, data: st.DataObject) -> None:
    common = data.draw(_common())
    d = data.draw(st.integers(3, 6))
    model = MLP(d, data.draw(st.lists(st.integers(1, 64), min_size=1, max_size=3)), **common)
    x1, x2 = data.draw(_batches((d,)))
    family = "mlp-quadrature" if common["activation"] == "tanh" else "mlp-closed"
    assert_agrees(neural_tangents, report, f"{family}-{common['parametrization']}", model, x1, x2)


@SETTINGS
@given(data=st.data(), dims=st.sampled_from([1, 2]))
def test_cnn(neural_tangents, report, data: st.DataObject, dims: int) -> None:
    common = data.draw(_common())
    padding = data.draw(st.sampled_from(["same", "valid"]))
    stride = 1 if padding == "same" else data.draw(st.sampled_from([1, 2]))
    kernel = data.draw(st.integers(1, 3))
    depth = data.draw(st.integers(1, 2))
    readout = data.draw(st.sampled_from(["gap", "flatten"]))
    low = _required(1, kernel, stride, depth, padding)
    size = data.draw(st.integers(low, low + (6 if dims == 1 else 2)))
    c = data.draw(st.integers(1, 3))
    model = CNN(
        c,
        data.draw(st.lists(st.integers(1, 16), min_size=depth, max_size=depth)),
        kernel_size=kernel,
        stride=stride,
        padding=padding,
        readout=readout,
        image_size=size,
        dims=dims,
        head_width=data.draw(st.none() | st.integers(1, 16)),
        **common,
    )
    x1, x2 = data.draw(_batches((c,) + (size,) * dims))
    assert_agrees(neural_tangents, report, "cnn-sequences" if dims == 1 else "cnn-images", model, x1, x2)


@SETTINGS
@given(
    data=st.data(), shape=st.sampled_from(["dense", "sequences", "images"]), norm=st.sampled_from([None, "pre", "post"])
)
def test_resnet(neural_tangents, report, data: st.DataObject, shape: str, norm: str | None) -> None:
    common = data.draw(_common())
    c = data.draw(st.integers(3, 5) if shape == "dense" else st.integers(1, 3))
    if shape == "dense":
        kw: dict = dict(in_features=c)
        x_shape: tuple[int, ...] = (c,)
    else:
        dims = 1 if shape == "sequences" else 2
        size = data.draw(st.integers(2, 8 if dims == 1 else 4))
        kw = dict(in_channels=c, dims=dims, kernel_size=data.draw(st.sampled_from([1, 2, 3])))
        x_shape = (c,) + (size,) * dims
    width, blocks = data.draw(st.integers(1, 16)), data.draw(st.integers(1, 3))
    # stax.FanInSum needs Gaussian inputs: an activation after a block may only precede the readout.
    post_activation = norm is None and blocks == 1 and data.draw(st.booleans())
    model = ResNet(
        width,
        blocks,
        norm=norm,
        post_activation=post_activation,
        branch_scale=None if common["activation"] == "tanh" else data.draw(st.none() | st.floats(0.3, 1.5)),
        head_width=data.draw(st.none() | st.integers(1, 16)),
        **kw,
        **common,
    )
    for module in model.modules():
        if isinstance(module, LayerNorm):  # stax.LayerNorm has no gain and bias
            module.requires_grad_(False)
    x1, x2 = data.draw(_batches(x_shape))
    family = ("layernorm-" if norm else "resnet-") + shape
    assert_agrees(neural_tangents, report, family, model, x1, x2)


def test_relu_cnn_where_neural_tangents_rounds(neural_tangents, report) -> None:
    # The case that shows neural-tangents' arc-cosine rounding (module docstring): two VALID 3x3
    # convolutions, relu, flatten readout, 6x6 images.
    x = torch.randn(4, 2, 6, 6, dtype=DTYPE, generator=torch.Generator().manual_seed(0))
    model = CNN(2, [8, 8], padding="valid", readout="flatten", image_size=6, weight_std=1.3, bias_std=0.2, dtype=DTYPE)
    assert_agrees(neural_tangents, report, "cnn-relu-known-case", model, x, None)


def test_translation_refuses_what_stax_cannot_express() -> None:
    # A dilated convolution or trainable LayerNorm parameters have no stax counterpart: the translator says so
    # instead of comparing against a different network.
    with pytest.raises(ValueError, match="stax.Conv has no counterpart"):
        stax_layers(CNN(2, [4], dilation=2, dtype=DTYPE))
    with pytest.raises(ValueError, match="freeze the LayerNorm"):
        stax_layers(ResNet(4, 1, in_features=3, norm="pre", dtype=DTYPE))
