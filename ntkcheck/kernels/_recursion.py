"""The layer-by-layer recursion of the infinite-width NNGP and NTK (the maps of :mod:`ntkcheck.kernels.analytic`).

:class:`_State` holds the kernels of one layer's output over (input, position) pairs; :func:`_propagate`
carries them through an MLP, CNN or ResNet: affine maps (dense or convolutional), activations (through
their Gaussian expectations, :mod:`ntkcheck.kernels.gaussian`), LayerNorm and readouts.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ntkcheck.kernels.gaussian import Expectation, _relu, _relu_both, _relu_dot
from ntkcheck.models import CNN, MLP, Conv1d, Conv2d, LayerNorm, Linear, ResidualBlock, ResNet

AffineLayer = Linear | Conv1d | Conv2d


class _State:
    """Kernels of one layer's output over (input, position) pairs, positions flattened.

    ``cross`` (N1, N2, P, P) and ``ntk`` (N1, N2, P, P) pair x1 with x2; ``self1`` (N1, P, P) and
    ``self2`` (N2, P, P) pair each input with itself (what the activations' variances need);
    ``spatial`` the (H, W) of the positions, ``()`` for dense features (P = 1).
    """

    def __init__(
        self,
        cross: torch.Tensor,
        ntk: torch.Tensor,
        self1: torch.Tensor,
        self2: torch.Tensor | None,
        spatial: tuple[int, ...],
    ) -> None:
        self.cross, self.ntk, self.self1, self.self2, self.spatial = cross, ntk, self1, self2, spatial

    def selves(self) -> list[torch.Tensor]:
        return [self.self1] if self.self2 is None else [self.self1, self.self2]

    def map(self, f: Callable[[torch.Tensor], torch.Tensor], spatial: tuple[int, ...]) -> _State:
        """Apply the same linear map (on the trailing (P, P)) to every kernel."""
        return _State(f(self.cross), f(self.ntk), f(self.self1), None if self.self2 is None else f(self.self2), spatial)


def _input_state(a: torch.Tensor, b: torch.Tensor | None, shared: int = 0) -> _State:
    """Per-coordinate (per-channel) covariance of the inputs: ``<x, x'> / d`` or ``sum_c x_c x'_c / C``.

    ``b`` None pairs ``a`` with itself; otherwise the first ``shared`` rows of ``b`` are the rows of
    ``a``.  The variances of an input paired with itself are read off the cross kernel, so that
    its correlation with itself is exactly 1 at every layer: the same arithmetic then carries
    both, whereas two contractions can differ in the last bit, and a correlation of 1 - 1e-16
    moves the arc-cosine kernels' angle by 1.5e-8 (a relative error ~1e-9 on the diagonal).
    """

    def rows(x: torch.Tensor) -> torch.Tensor:  # (N, C, P)
        return x.reshape(x.shape[0], x.shape[1], -1) if x.ndim > 2 else x[:, :, None]

    ra = rows(a)
    c = ra.shape[1]
    rb = ra if b is None else rows(b)
    cross = torch.einsum("ncp,mcq->nmpq", ra, rb) / c
    k = a.shape[0] if b is None else shared
    self1 = torch.einsum("ncp,ncq->npq", ra, ra) / c
    self1[:k] = cross[:k, :k].diagonal(dim1=0, dim2=1).permute(2, 0, 1)
    self2 = None
    if b is not None:
        self2 = torch.einsum("ncp,ncq->npq", rb, rb) / c
        self2[:k] = self1[:k]
    return _State(cross, torch.zeros_like(cross), self1, self2, tuple(a.shape[2:]))


def _patch_mean(t: torch.Tensor, conv: Conv1d | Conv2d, size: tuple[int, ...]) -> torch.Tensor:
    """``A(K)(p, p') = mean over offsets d of K(s p + D d - pad, s p' + D d - pad)`` on t's trailing (P, P).

    The positions are those of ``size`` (one or two spatial dimensions) flattened; the same
    offset ``d`` moves p and p' (the filter is shared across positions, independent across offsets).
    """
    lead, dims = t.shape[:-2], len(size)
    out_size = conv.output_size(size)
    pads: list[int] = []  # torch.nn.functional.pad's order: last dimension first
    for i in reversed(range(dims)):
        k, d = conv.kernel_size[i], conv.dilation[i]
        if conv.padding == "same":
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        else:
            p = 0 if isinstance(conv.padding, str) else conv.padding[i]
            pads += [p, p]
    grid = torch.nn.functional.pad(t.reshape(-1, *size, *size), pads + pads)
    out = torch.zeros(grid.shape[0], *out_size, *out_size, dtype=t.dtype, device=t.device)
    for offset in itertools.product(*(range(k) for k in conv.kernel_size)):
        index = tuple(
            slice(o * d, o * d + s * (n - 1) + 1, s) for o, d, s, n in zip(offset, conv.dilation, conv.stride, out_size)
        )
        out += grid[(slice(None), *index, *index)]
    positions = math.prod(out_size)
    return (out / math.prod(conv.kernel_size)).reshape(*lead, positions, positions)


def _setting(model: MLP | CNN | ResNet, key: str) -> Any:
    """An init setting (activation, parametrization, init, weight_std, bias_std): an MLP attribute or a family's
    ``arch``."""
    return getattr(model, key) if isinstance(model, MLP) else model.arch[key]


def _draw_variances(model: MLP | CNN | ResNet, layer: AffineLayer) -> tuple[float, float]:
    """``(v_w, v_b)``: the raw parameters' variances at init (1 in NTK parametrization)."""
    if _setting(model, "parametrization") == "ntk":
        return 1.0, 1.0
    return float(_setting(model, "weight_std")) ** 2 / _fan_in(layer), float(_setting(model, "bias_std")) ** 2


def _fan_in(layer: AffineLayer) -> int:
    if isinstance(layer, Linear):
        return layer.in_features
    return layer.in_channels // layer.groups * math.prod(layer.kernel_size)


def _affine(state: _State, layer: nn.Module, model: MLP | CNN | ResNet) -> _State:
    """The kernels after ``layer`` (Linear, Conv1d or Conv2d), frozen parameters adding nothing to the NTK."""
    assert isinstance(layer, (Linear, Conv1d, Conv2d)), f"no affine kernel map for {type(layer).__name__}"
    if isinstance(layer, (Conv1d, Conv2d)):
        size = state.spatial
        spatial = layer.output_size(size)
        state = state.map(lambda t: _patch_mean(t, layer, size), spatial)
    v_w, v_b = _draw_variances(model, layer)
    fan_in = _fan_in(layer)
    sigma_w2 = layer.weight_mult**2 * v_w * fan_in
    has_bias = layer.bias is not None
    beta2 = layer.bias_mult**2 * v_b if has_bias else 0.0
    ntk = sigma_w2 * state.ntk  # a new tensor: the in-place updates below leave the input state intact
    if layer.weight.requires_grad:
        ntk.add_(state.cross, alpha=layer.weight_mult**2 * fan_in)
    if layer.bias is not None and layer.bias.requires_grad:
        ntk.add_(layer.bias_mult**2)
    return _State(
        (sigma_w2 * state.cross).add_(beta2),
        ntk,
        sigma_w2 * state.self1 + beta2,
        None if state.self2 is None else sigma_w2 * state.self2 + beta2,
        state.spatial,
    )


def _variances(k: torch.Tensor) -> torch.Tensor:
    return k.diagonal(dim1=-2, dim2=-1)  # (N, P)


def _activation(state: _State, e_phi: Expectation, e_dphi: Expectation, same: bool) -> _State:
    """``K' = E[phi(u) phi(v)]``, ``Theta' = E[phi'(u) phi'(v)] Theta`` entrywise over (input, position) pairs."""

    def expect(s: torch.Tensor, v1: torch.Tensor, v2: torch.Tensor, dot: bool) -> tuple[torch.Tensor, ...]:
        if dot and e_phi is _relu and e_dphi is _relu_dot:  # one angle for both (clamps the correlation itself)
            return _relu_both(v1, v2, s)
        bound = torch.sqrt(v1 * v2)
        s = torch.minimum(torch.maximum(s, -bound), bound)  # Cauchy-Schwarz, against rounding
        return (e_phi(v1, v2, s),) + ((e_dphi(v1, v2, s),) if dot else ())

    def symmetric(t: torch.Tensor, perm: tuple[int, ...]) -> torch.Tensor:
        return (t + t.permute(perm)) / 2

    q1 = _variances(state.self1)
    q2 = q1 if state.self2 is None else _variances(state.self2)
    selves = [
        symmetric(expect(s, q[:, :, None], q[:, None, :], False)[0], (0, 2, 1))
        for s, q in zip(state.selves(), (q1, q2))
    ]
    cross, dot = expect(state.cross, q1[:, None, :, None], q2[None, :, None, :], True)
    ntk = dot * state.ntk
    if same:
        cross, ntk = symmetric(cross, (1, 0, 3, 2)), symmetric(ntk, (1, 0, 3, 2))
    return _State(cross, ntk, selves[0], selves[1] if len(selves) > 1 else None, state.spatial)


def _layer_norm(state: _State, norm: LayerNorm) -> _State:
    """The kernels after ``norm`` over the channels of a Gaussian stream, at its initial gain 1 and bias 0.

    Per position the channels' mean tends to 0 and their variance to ``K(x, p; x, p)``, so the
    normalised features are ``u / sqrt(K(x, p; x, p) + eps)`` and both kernels take the factor
    ``1 / sqrt((K(x, p; x, p) + eps) (K(x', p'; x', p') + eps))`` (the Jacobian's projections on
    the mean and on the normalised vector are rank two: their share of the NTK vanishes with
    the width), neural-tangents' ``stax.LayerNorm`` rule.  The affine map ``weight_mult gamma
    u_hat + bias_mult beta`` then scales both by ``weight_mult^2`` and adds to the NTK the
    gain's term ``weight_mult^2 rho`` and the bias's ``bias_mult^2`` where they are trainable
    (each acts on one channel: fan-in 1).
    """
    eps = norm.eps
    v1 = _variances(state.self1) + eps
    v2 = v1 if state.self2 is None else _variances(state.self2) + eps
    scale = torch.sqrt(v1[:, None, :, None] * v2[None, :, None, :])
    cross, ntk = state.cross / scale, state.ntk / scale
    selves = [s / torch.sqrt(v[:, :, None] * v[:, None, :]) for s, v in zip(state.selves(), (v1, v2))]
    g2 = norm.weight_mult**2
    ntk = g2 * ntk
    if norm.weight.requires_grad:
        ntk = ntk + g2 * cross
    if norm.bias is not None and norm.bias.requires_grad:
        ntk = ntk + norm.bias_mult**2
    return _State(g2 * cross, ntk, g2 * selves[0], g2 * selves[1] if len(selves) > 1 else None, state.spatial)


def _readout(state: _State, readout: str) -> _State:
    """Global average pooling (mean over all (p, p')) or flatten (mean over p of K(p, p)) to dense features."""
    if readout == "gap":
        return state.map(lambda t: t.mean((-2, -1))[..., None, None], ())
    return state.map(lambda t: t.diagonal(dim1=-2, dim2=-1).mean(-1)[..., None, None], ())


def _propagate(model: MLP | CNN | ResNet, state: _State, e_phi: Expectation, e_dphi: Expectation, same: bool) -> _State:
    """The kernels of ``model``'s output from those of its input, layer by layer (module docstring)."""

    def act(s: _State) -> _State:
        return _activation(s, e_phi, e_dphi, same)

    if isinstance(model, MLP):
        for i, layer in enumerate(model.layers):
            state = _affine(act(state) if i else state, layer, model)
        return state
    if isinstance(model, CNN):
        for i, conv in enumerate(model.convs):
            state = _affine(act(state) if i else state, conv, model)
        state = _readout(act(state), model.readout)
    else:  # ResNet
        state = _affine(state, model.stem, model)
        for block in model.residual:
            assert isinstance(block, ResidualBlock)
            state = _residual(state, block, model, act)
        if model.final_norm is not None:
            state = _layer_norm(state, model.final_norm)
        if model.convolutional:
            state = _readout(state, "gap")
    for i, layer in enumerate(model.head.layers):
        state = _affine(act(state) if i else state, layer, model)
    return state


def _residual(state: _State, block: ResidualBlock, model: ResNet, act: Callable[[_State], _State]) -> _State:
    """``h + s branch(h)``: the branch's kernels times ``s^2`` added to those of ``h`` (its last weights are
    independent of ``h``), with the block's LayerNorm before the branch or after the sum, and its activation."""
    norm = block.norm
    pre = norm is not None and block.norm_position == "pre"
    inner = _layer_norm(state, norm) if norm is not None and pre else state
    branch = _affine(act(_affine(inner, block.first, model)), block.second, model)
    s2 = block.scale**2
    self2 = None
    if state.self2 is not None and branch.self2 is not None:
        self2 = state.self2 + s2 * branch.self2
    state = _State(
        state.cross + s2 * branch.cross,
        state.ntk + s2 * branch.ntk,
        state.self1 + s2 * branch.self1,
        self2,
        state.spatial,
    )
    if norm is not None and not pre:
        state = _layer_norm(state, norm)
    return act(state) if block.post_activation else state
