"""Infinite-width NNGP and NTK of the :class:`~ntkcheck.models.MLP`, :class:`~ntkcheck.models.CNN` and
:class:`~ntkcheck.models.ResNet` families (images or sequences, with or without LayerNorm), in NTK and
standard parametrization.

Every affine layer computes ``z = weight_mult * W a + bias_mult * b`` (a convolution: over a
patch) with raw ``W ~ N(0, v_w)``, ``b ~ N(0, v_b)``: ``v_w = v_b = 1`` in NTK parametrization,
``v_w = weight_std^2 / fan_in``, ``v_b = bias_std^2`` (multipliers 1) in standard
parametrization with ``init="fan_in"``.  Write ``sigma_w^2 = weight_mult^2 v_w fan_in`` and
``beta^2 = bias_mult^2 v_b`` (0 without a bias).  The state is the per-channel covariance
``K`` of a layer's input over (input, position) pairs and the NTK ``Theta`` accumulated so
far; as every hidden width (channel count) tends to infinity (Jacot et al. 2018; Lee et al.
2019; Novak et al. 2019; Arora et al. 2019)::

    affine:      Sigma' = sigma_w^2 A(K) + beta^2
                 Theta' = sigma_w^2 A(Theta) + [W trainable] weight_mult^2 fan_in A(K)
                          + [b trainable] bias_mult^2
    activation:  K' = E[phi(u) phi(v)],   Theta' = E[phi'(u) phi'(v)] Theta

with ``(u, v)`` centred Gaussian of covariance ``[[Sigma(x, p; x, p), Sigma(x, p; x', p')], [.,
Sigma(x', p'; x', p')]]``.  ``A`` is the identity for a dense layer; for a convolution
``A(K)(p, p') = mean over kernel offsets d of K(s p + D d - pad, s p' + D d - pad)`` (stride
``s``, dilation ``D``, zero padding contributes 0).  The input's ``K`` is ``<x, x'> / d``
(images: ``sum_c x_c(p) x'_c(p') / C``); its ``Theta`` is 0.  Readouts: global average
pooling takes the mean over all (p, p'), flatten the mean over p of K(p, p) (its head has
fan-in ``C P``).  A residual block ``h + s branch(h)`` adds ``s^2`` times the branch's
kernels to those of ``h`` (the branch's last weights are independent of ``h``).

Sequences (``dims=1``: Conv1d layers on (N, C, L)) are the same construction over the L
positions.  A LayerNorm over the channels (ResNet ``norm="pre"`` / ``"post"``) of a Gaussian
stream divides both kernels per pair of positions by ``sqrt((K(x,p;x,p) + eps)(K(x',p';x',p')
+ eps))`` (neural-tangents' ``stax.LayerNorm``), then adds its gain's term ``rho`` and its
bias's ``1`` to the NTK where they are trainable (:func:`_layer_norm`); a LayerNorm of an
activation's output (``post_activation=True``) is refused: its channel mean does not vanish.

Only parameters with ``requires_grad`` contribute their gradient terms to the NTK (the
bracketed terms); every parameter contributes to the NNGP.

NTK parametrization: ``weight_mult^2 fan_in = sigma_w^2`` so the weight term is
``sigma_w^2 A(K)`` and the NTK has a finite limit.  Standard parametrization with
``init="fan_in"`` (neural-tangents' ``Dense/Conv(parameterization="standard")``, Sohl-Dickstein
et al. 2020): the NNGP equals the NTK-parametrization one with ``sigma_w = weight_std``,
``beta = bias_std``, while the weight term is ``fan_in A(K)`` and the bias term ``1``: the
gradient with respect to the raw parameters, at the layer's actual fan-in (neural-tangents'
``ntk = input_width * nngp + W_std^2 ntk (+ 1 with a bias)``).  This kernel grows linearly with
the widths: it is the expectation of the standard-parametrization empirical NTK in the
Gaussian limit, each layer weighted by its fan-in, as in neural-tangents.
``init="glorot"`` (weights and biases ``~ N(0, v^2 2 / (fan_in + fan_out))``) is refused: as
the widths grow the first layer's variance ``2 v^2 d / (d + m) |x|^2 / d -> 0`` and the biases'
``2 v^2 / (2 m) -> 0``, so the limit is the kernel of a network whose first pre-activations
vanish, independent of the inputs.

The Gaussian expectations have closed forms for relu (arc-cosine kernels, Cho & Saul 2009),
abs and leaky relu (as ABReLU, from the same kernels), sign, erf (Williams 1997), sin and
identity; every other elementwise activation (tanh, gelu, softplus, an activation registered
in :data:`~ntkcheck.models.ACTIVATIONS`, a callable given as ``activation=``) uses a 2-D
Gauss rule in polar coordinates split at the activation's possible kink at 0
(:data:`ANGULAR_NODES`, :data:`RADIAL_NODES`, float64), its derivative by autograd where it
is not known.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ntkcheck._support.validation import check_batch, check_finite_result, check_inputs, check_same_device_dtype
from ntkcheck.models import ACTIVATIONS, CNN, MLP, Conv1d, Conv2d, LayerNorm, Linear, ResNet, Transformer

RADIAL_NODES = 64
"""Gauss nodes in the radius r of the polar rule (weight ``r exp(-r^2 / 2)`` on [0, inf))."""

ANGULAR_NODES = 32
"""Gauss-Legendre nodes in the angle on each of the 4 arcs between the lines u = 0 and v = 0.

The polar rule (:func:`_polar_quadrature`, 4 x 32 x 64 = 8192 points per pair) is exact for
positively homogeneous activations up to rounding (relu, abs, leaky relu, sign: < 1e-13
absolute against the closed forms at variances q <= 4) because the kinks and jumps at 0 lie on
the arcs' ends, and against erf's closed form and a 160 x 64-node rule for tanh the error is
< 1e-13 (phi) and < 6e-14 (phi') at q <= 2; neural-tangents' gelu closed form agrees to 3e-15."""

_CHUNK_ELEMENTS = 2**21
"""Grid values evaluated at once (16 MiB of float64): bounds the quadrature's memory."""

_ROW_ELEMENTS = 2**24
"""Kernel entries (x1 rows x N2 x P x P) of one block of x1's rows (128 MiB of float64 per
kernel tensor): bounds the memory of image kernels, whose covariance pairs every position."""

Expectation = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``(q1, q2, s12) -> E[f(u) g(v)]`` for ``(u, v)`` centred Gaussian with variances q1, q2, covariance s12."""

Activation = Callable[[torch.Tensor], torch.Tensor]


def _correlation(q1: torch.Tensor, q2: torch.Tensor, s12: torch.Tensor) -> torch.Tensor:
    """``s12 / sqrt(q1 q2)`` clamped to [-1, 1]; 0 where a variance is 0 (rho undefined)."""
    norm = torch.sqrt(q1 * q2)
    return torch.where(norm > 0, s12 / torch.where(norm > 0, norm, 1.0), 0.0).clamp(-1.0, 1.0)


def _relu(q1: torch.Tensor, q2: torch.Tensor, s12: torch.Tensor) -> torch.Tensor:
    # The arithmetic of _relu_both, so that the diagonal of a kernel and the variances the next
    # layer divides it by are equal to the last bit (a correlation 1 - 1e-16 moves the angle by 1.5e-8).
    return _relu_both(q1, q2, s12)[0]


def _relu_dot(q1: torch.Tensor, q2: torch.Tensor, s12: torch.Tensor) -> torch.Tensor:
    # relu'(0) = 0 in torch: a zero-variance pre-activation contributes nothing.
    t = torch.arccos(_correlation(q1, q2, s12))
    return torch.where(q1 * q2 > 0, (math.pi - t) / (2 * math.pi), 0.0)


def _relu_both(q1: torch.Tensor, q2: torch.Tensor, s12: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(E[relu(u) relu(v)], E[relu'(u) relu'(v)])`` in one pass: the same arc-cosine angle serves both.

    ``sqrt(q1 q2) / (2 pi) (sin t + (pi - t) rho)`` and ``(pi - t) / (2 pi)`` with
    ``rho = cos t`` the clamped correlation, ``sin t = sqrt((1 - rho) (1 + rho))`` (accurate at
    rho near 1, where ``1 - rho`` is exact); 0 where a variance is 0, as :func:`_relu` and
    :func:`_relu_dot`.  Temporaries are reused in place: the kernels of images pair every
    position, so these tensors are the largest of the recursion.
    """
    norm = (q1 * q2).sqrt_()
    positive = norm > 0
    rho = torch.where(positive, s12, 0.0).div_(torch.where(positive, norm, 1.0)).clamp_(-1.0, 1.0)
    t = torch.arccos(rho)
    pi_minus_t = torch.neg(t).add_(math.pi)
    sin_t = torch.sub(1.0, rho).mul_(torch.add(rho, 1.0)).sqrt_()
    phi = rho.mul_(pi_minus_t).add_(sin_t).mul_(norm).mul_(1 / (2 * math.pi))
    dphi = pi_minus_t.mul_(1 / (2 * math.pi)).masked_fill_(~positive, 0.0)
    return phi, dphi


def _abrelu(a: float, b: float, slope_at_0: float) -> tuple[Expectation, Expectation]:
    """Expectations of ``phi(x) = a min(x, 0) + b max(x, 0)`` (``phi'(0) = slope_at_0``, torch's choice).

    ``phi(x) = b relu(x) - a relu(-x)``, so with the arc-cosine kernel R:
    ``E[phi phi] = (a^2 + b^2) R(s) - 2 a b R(-s)``; ``E[phi' phi'] = (a^2 + b^2) (pi - t) / (2 pi)
    + 2 a b t / (2 pi)``; where a variance is 0, ``phi'(0)`` times the other side's mean slope.
    """

    def e_phi(q1: torch.Tensor, q2: torch.Tensor, s12: torch.Tensor) -> torch.Tensor:
        return (a * a + b * b) * _relu(q1, q2, s12) - 2 * a * b * _relu(q1, q2, -s12)

    def e_dphi(q1: torch.Tensor, q2: torch.Tensor, s12: torch.Tensor) -> torch.Tensor:
        t = torch.arccos(_correlation(q1, q2, s12))
        both = ((a * a + b * b) * (math.pi - t) + 2 * a * b * t) / (2 * math.pi)
        mean1 = torch.where(q1 > 0, (a + b) / 2, slope_at_0)
        mean2 = torch.where(q2 > 0, (a + b) / 2, slope_at_0)
        return torch.where(q1 * q2 > 0, both, mean1 * mean2)

    return e_phi, e_dphi


def _sign(q1: torch.Tensor, q2: torch.Tensor, s12: torch.Tensor) -> torch.Tensor:
    # E[sign u sign v] = (2 / pi) arcsin(rho); sign(0) = 0 where a variance is 0
    return torch.where(q1 * q2 > 0, 2 / math.pi * torch.arcsin(_correlation(q1, q2, s12)), 0.0)


def _erf(q1: torch.Tensor, q2: torch.Tensor, s12: torch.Tensor) -> torch.Tensor:
    return 2 / math.pi * torch.arcsin((2 * s12 / torch.sqrt((1 + 2 * q1) * (1 + 2 * q2))).clamp(-1.0, 1.0))


def _erf_dot(q1: torch.Tensor, q2: torch.Tensor, s12: torch.Tensor) -> torch.Tensor:
    # (1 + 2 q1)(1 + 2 q2) - 4 s12^2 = 1 + 2 (q1 + q2) + 4 (q1 q2 - s12^2) >= 1
    return 4 / math.pi / torch.sqrt(1 + 2 * (q1 + q2) + 4 * (q1 * q2 - s12 * s12).clamp_min(0.0))


def _sin(q1: torch.Tensor, q2: torch.Tensor, s12: torch.Tensor) -> torch.Tensor:
    # exp(-(q1 + q2)/2) sinh(s12), written with non-positive exponents (no overflow)
    return 0.5 * (torch.exp(-(q1 + q2 - 2 * s12) / 2) - torch.exp(-(q1 + q2 + 2 * s12) / 2))


def _cos(q1: torch.Tensor, q2: torch.Tensor, s12: torch.Tensor) -> torch.Tensor:
    # E[cos u cos v] = exp(-(q1 + q2)/2) cosh(s12)
    return 0.5 * (torch.exp(-(q1 + q2 - 2 * s12) / 2) + torch.exp(-(q1 + q2 + 2 * s12) / 2))


def _gelu_dot(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1 + torch.erf(x / math.sqrt(2))) + x * torch.exp(-x * x / 2) / math.sqrt(2 * math.pi)


_PHI: dict[str, tuple[Activation, Activation]] = {
    "relu": (ACTIVATIONS["relu"], lambda x: (x > 0).to(x.dtype)),
    "tanh": (ACTIVATIONS["tanh"], lambda x: 1 - torch.tanh(x) ** 2),
    "erf": (ACTIVATIONS["erf"], lambda x: 2 / math.sqrt(math.pi) * torch.exp(-x * x)),
    "gelu": (ACTIVATIONS["gelu"], _gelu_dot),
    "softplus": (ACTIVATIONS["softplus"], torch.sigmoid),
    "sin": (ACTIVATIONS["sin"], torch.cos),
    "identity": (ACTIVATIONS["identity"], torch.ones_like),
    "abs": (torch.abs, torch.sign),
    "sign": (torch.sign, torch.zeros_like),
    "leaky_relu": (F.leaky_relu, lambda x: torch.where(x > 0, 1.0, 0.01).to(x.dtype)),
}
"""Activation phi and its derivative phi' (torch's conventions: relu'(0) = 0, abs'(0) = 0), by name.
``"abs"``, ``"sign"`` and ``"leaky_relu"`` (slope 0.01, torch's default) are not network activations
by default: register the function here under that name in ``ACTIVATIONS``, or pass it as ``activation=``."""


@functools.cache
def _radial_rule(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss rule for the weight ``r exp(-r^2 / 2)`` on [0, inf) (total mass 1), ``nodes`` points.

    The Jacobi matrix of the weight comes from the Lanczos process (Stieltjes' procedure) on a
    2000-point Gauss-Legendre discretisation of [0, 16] (the weight beyond is < 1e-55), its
    eigen-decomposition gives the nodes and weights (Golub-Welsch).
    """
    x, w = np.polynomial.legendre.leggauss(2000)
    r = (x + 1) * 8.0
    w = w * 8.0 * r * np.exp(-r * r / 2)
    q, q_prev, b = np.sqrt(w) / np.sqrt(w.sum()), np.zeros_like(x), 0.0
    alpha, beta = [], []
    for _ in range(nodes):
        v = r * q - b * q_prev
        a = q @ v
        v = v - a * q
        b = float(np.linalg.norm(v))
        alpha.append(a)
        beta.append(b)
        q_prev, q = q, v / b
    eigval, eigvec = np.linalg.eigh(np.diag(alpha) + np.diag(beta[:-1], 1) + np.diag(beta[:-1], -1))
    return eigval, eigvec[0] ** 2


def _polar_quadrature(
    f: Activation, q1: torch.Tensor, q2: torch.Tensor, s12: torch.Tensor,
    radial: int = RADIAL_NODES, angular: int = ANGULAR_NODES,
) -> torch.Tensor:
    """``E[f(u) f(v)]`` by a product Gauss rule in polar coordinates, in chunks of pairs.

    ``(u, v) = (sqrt(q1) r cos a, sqrt(q2) r cos(a - a0))`` with ``(z1, z2) = r (cos a, sin a)``
    standard normal and ``cos a0 = rho``: ``E = (1 / 2 pi) int da int r exp(-r^2/2) f(u) f(v) dr``.
    The angle is split where u = 0 or v = 0 (a = pi/2, 3 pi/2, a0 +- pi/2), so a kink or a jump
    of f at 0 lies on an arc's end; each arc gets ``angular`` Gauss-Legendre nodes, the radius
    ``radial`` Gauss nodes of its weight.  Equal inputs (rho = 1) and zero variances are
    ordinary points of the rule.  The pair is ordered so that q1 <= q2: the result is exactly
    symmetric in (q1, q2).
    """
    q1, q2, s12 = torch.broadcast_tensors(q1, q2, s12)
    q1, q2 = torch.minimum(q1, q2), torch.maximum(q1, q2)
    shape, dtype, device = s12.shape, s12.dtype, s12.device
    rho = _correlation(q1, q2, s12).reshape(-1)
    a0 = torch.atan2(torch.sqrt((1 - rho * rho).clamp_min(0.0)), rho)
    half_pi = torch.full_like(a0, math.pi / 2)
    cuts = torch.stack([half_pi, 3 * half_pi, (a0 + math.pi / 2) % (2 * math.pi),
                        (a0 + 3 * math.pi / 2) % (2 * math.pi)], 1).sort(1).values
    ends = torch.cat([cuts[:, 1:], cuts[:, :1] + 2 * math.pi], 1)
    xl, wl = (torch.as_tensor(v, dtype=dtype, device=device) for v in np.polynomial.legendre.leggauss(angular))
    half = (ends - cuts) / 2
    angle = ((cuts + half)[:, :, None] + half[:, :, None] * xl).reshape(len(rho), -1)
    w_angle = (half[:, :, None] * wl / (2 * math.pi)).reshape(len(rho), -1)
    r, w_r = (torch.as_tensor(v, dtype=dtype, device=device) for v in _radial_rule(radial))
    a = torch.sqrt(q1).reshape(-1, 1) * torch.cos(angle)
    b = torch.sqrt(q2).reshape(-1, 1) * torch.cos(angle - a0[:, None])
    out = torch.empty(len(rho), dtype=dtype, device=device)
    step = max(1, _CHUNK_ELEMENTS // (angle.shape[1] * radial))
    with torch.no_grad():
        for i in range(0, len(rho), step):
            j = slice(i, i + step)
            values = f(a[j, :, None] * r) * f(b[j, :, None] * r)
            out[j] = ((values @ w_r) * w_angle[j]).sum(1)
    return out.reshape(shape)


def _by_quadrature(f: Activation) -> Expectation:
    return lambda q1, q2, s12: _polar_quadrature(f, q1, q2, s12)


def _derivative(f: Activation) -> Activation:
    """``f'`` of an elementwise ``f`` by autograd (a non-differentiable point gets torch's subgradient)."""

    def df(x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            t = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(f(t).sum(), t, allow_unused=True)
        return torch.zeros_like(x) if grad is None else grad

    return df


_EXPECTATIONS: dict[str, tuple[Expectation, Expectation]] = {
    "relu": (_relu, _relu_dot),
    "erf": (_erf, _erf_dot),
    "sin": (_sin, _cos),
    "identity": (lambda q1, q2, s12: s12, lambda q1, q2, s12: torch.ones_like(s12)),
    "abs": _abrelu(-1.0, 1.0, 0.0),
    "leaky_relu": _abrelu(0.01, 1.0, 0.01),
    "sign": (_sign, lambda q1, q2, s12: torch.zeros_like(s12)),
    **{name: (_by_quadrature(_PHI[name][0]), _by_quadrature(_PHI[name][1])) for name in ("tanh", "gelu", "softplus")},
}
"""``name -> (E[phi(u) phi(v)], E[phi'(u) phi'(v)])`` as functions of ``(q1, q2, s12)``."""


def _expectations(activation: str | Activation, quadrature: bool) -> tuple[Expectation, Expectation]:
    """The expectations of ``activation`` (a name or an elementwise callable).

    A closed form is used when the function is the one :data:`_PHI` knows under that name
    (so an activation registered under a known name but different is not mistaken for it);
    anything else goes to quadrature, ``phi'`` by autograd when it is not known.
    ``quadrature=True`` forces quadrature (to check the closed forms against it).
    """
    if isinstance(activation, str):
        if activation in ACTIVATIONS:
            phi = ACTIVATIONS[activation]
        elif activation in _PHI:
            phi = _PHI[activation][0]
        else:
            raise ValueError(
                f"activation {activation!r} is unknown: give a callable, or one of "
                f"{sorted(set(ACTIVATIONS) | set(_PHI))}"
            )
    elif callable(activation):
        phi = activation
    else:
        raise TypeError(f"activation must be a name or a callable, got {type(activation).__name__}")
    name = next((n for n, (f, _) in _PHI.items() if f is phi), None)
    dphi = _PHI[name][1] if name is not None else _derivative(phi)
    if not quadrature and name is not None and name in _EXPECTATIONS:
        return _EXPECTATIONS[name]
    return _by_quadrature(phi), _by_quadrature(dphi)


class _State:
    """Kernels of one layer's output over (input, position) pairs, positions flattened.

    ``cross`` (N1, N2, P, P) and ``ntk`` (N1, N2, P, P) pair x1 with x2; ``self1`` (N1, P, P) and
    ``self2`` (N2, P, P) pair each input with itself (what the activations' variances need);
    ``spatial`` the (H, W) of the positions, ``()`` for dense features (P = 1).
    """

    def __init__(self, cross: torch.Tensor, ntk: torch.Tensor, self1: torch.Tensor, self2: torch.Tensor | None,
                 spatial: tuple[int, ...]) -> None:
        self.cross, self.ntk, self.self1, self.self2, self.spatial = cross, ntk, self1, self2, spatial

    def selves(self) -> list[torch.Tensor]:
        return [self.self1] if self.self2 is None else [self.self1, self.self2]

    def map(self, f: Callable[[torch.Tensor], torch.Tensor], spatial: tuple[int, ...]) -> "_State":
        """Apply the same linear map (on the trailing (P, P)) to every kernel."""
        return _State(f(self.cross), f(self.ntk), f(self.self1), None if self.self2 is None else f(self.self2),
                      spatial)


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
    pads: list[int] = []  # F.pad's order: last dimension first
    for i in reversed(range(dims)):
        k, d = conv.kernel_size[i], conv.dilation[i]
        if conv.padding == "same":
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        else:
            p = 0 if conv.padding == "valid" else conv.padding[i]  # type: ignore[index]
            pads += [p, p]
    grid = F.pad(t.reshape(-1, *size, *size), pads + pads)
    out = torch.zeros(grid.shape[0], *out_size, *out_size, dtype=t.dtype, device=t.device)
    for offset in itertools.product(*(range(k) for k in conv.kernel_size)):
        index = tuple(slice(o * d, o * d + s * (n - 1) + 1, s)
                      for o, d, s, n in zip(offset, conv.dilation, conv.stride, out_size))
        out += grid[(slice(None), *index, *index)]
    positions = math.prod(out_size)
    return (out / math.prod(conv.kernel_size)).reshape(*lead, positions, positions)


def _setting(model: nn.Module, key: str) -> object:
    """An init setting (parametrization, init, weight_std, bias_std): an MLP attribute or a family's ``arch``."""
    return getattr(model, key) if isinstance(model, MLP) else model.arch[key]  # type: ignore[index]


def _draw_variances(model: nn.Module, layer: nn.Module) -> tuple[float, float]:
    """``(v_w, v_b)``: the raw parameters' variances at init (1 in NTK parametrization)."""
    if _setting(model, "parametrization") == "ntk":
        return 1.0, 1.0
    return _setting(model, "weight_std") ** 2 / _fan_in(layer), _setting(model, "bias_std") ** 2  # type: ignore[operator]


def _fan_in(layer: nn.Module) -> int:
    if isinstance(layer, Linear):
        return layer.in_features
    return layer.in_channels // layer.groups * math.prod(layer.kernel_size)  # type: ignore[attr-defined]


def _affine(state: _State, layer: nn.Module, model: nn.Module) -> _State:
    """The kernels after ``layer`` (Linear, Conv1d or Conv2d), frozen parameters adding nothing to the NTK."""
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
    if has_bias and layer.bias.requires_grad:
        ntk.add_(layer.bias_mult**2)
    return _State((sigma_w2 * state.cross).add_(beta2), ntk, sigma_w2 * state.self1 + beta2,
                  None if state.self2 is None else sigma_w2 * state.self2 + beta2, state.spatial)


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
    selves = [symmetric(expect(s, q[:, :, None], q[:, None, :], False)[0], (0, 2, 1))
              for s, q in zip(state.selves(), (q1, q2))]
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


def _propagate(model: nn.Module, state: _State, e_phi: Expectation, e_dphi: Expectation, same: bool) -> _State:
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
            pre = block.norm is not None and block.norm_position == "pre"
            branch = _affine(act(_affine(_layer_norm(state, block.norm) if pre else state, block.first, model)),
                             block.second, model)
            s2 = block.scale**2
            state = _State(state.cross + s2 * branch.cross, state.ntk + s2 * branch.ntk,
                           state.self1 + s2 * branch.self1,
                           None if state.self2 is None else state.self2 + s2 * branch.self2, state.spatial)
            if block.norm is not None and not pre:
                state = _layer_norm(state, block.norm)
            if block.post_activation:
                state = act(state)
        if model.final_norm is not None:
            state = _layer_norm(state, model.final_norm)
        if model.convolutional:
            state = _readout(state, "gap")
    for i, layer in enumerate(model.head.layers):
        state = _affine(act(state) if i else state, layer, model)
    return state


def _infinite_width(
    model: nn.Module, x1: torch.Tensor, x2: torch.Tensor | None, *, quadrature: bool = False,
    activation: str | Activation | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Sigma_L, Theta_L)`` of shape (N1, N2) in float64, on x1's device.

    ``quadrature=True`` computes every activation's expectations by the polar
    quadrature, closed forms included (to check one against the other); ``activation``
    replaces the model's (a name or a callable).  With ``x2`` None the kernels are of x1
    with itself and exactly symmetric.  Rows of x1 go through in blocks of at most
    :data:`_ROW_ELEMENTS` kernel entries (N2 P^2 per row for P input positions); for x1 with
    itself each block pairs only with the columns from its first row on.
    """
    same = x2 is None or x2 is x1
    a = x1.to(torch.float64)
    b = a if same else x2.to(torch.float64)  # type: ignore[union-attr]
    e_phi, e_dphi = _expectations(model.activation if activation is None else activation, quadrature)
    rows = max(1, _ROW_ELEMENTS // (b.shape[0] * math.prod(a.shape[2:]) ** 2))
    if same and rows >= a.shape[0]:
        state = _propagate(model, _input_state(a, None), e_phi, e_dphi, True)
        return state.cross[:, :, 0, 0], state.ntk[:, :, 0, 0]
    if not same:
        blocks = [_propagate(model, _input_state(a[i : i + rows], b), e_phi, e_dphi, False)
                  for i in range(0, a.shape[0], rows)]
        return torch.cat([k.cross[:, :, 0, 0] for k in blocks]), torch.cat([k.ntk[:, :, 0, 0] for k in blocks])
    # x1 with itself: each block of rows against the columns from its first row on (the upper
    # triangle, at most 1/2 + rows / (2 N) of the pairs), mirrored below the diagonal.
    n = a.shape[0]
    rows = min(rows, max(1, math.ceil(n / 8)))
    sigma = torch.empty(n, n, dtype=a.dtype, device=a.device)
    theta = torch.empty_like(sigma)
    for i in range(0, n, rows):
        block = _propagate(model, _input_state(a[i : i + rows], a[i:], shared=rows), e_phi, e_dphi, False)
        sigma[i : i + rows, i:], theta[i : i + rows, i:] = block.cross[:, :, 0, 0], block.ntk[:, :, 0, 0]
        sigma[i + rows :, i : i + rows] = block.cross[:, rows:, 0, 0].T
        theta[i + rows :, i : i + rows] = block.ntk[:, rows:, 0, 0].T
    return (sigma + sigma.T) / 2, (theta + theta.T) / 2


def _check_family_input(model: nn.Module, x: object, name: str) -> torch.Tensor:
    x = check_batch(x, name)
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    shape, expected = tuple(x.shape[1:]), model.in_shape  # type: ignore[attr-defined]
    if len(shape) != len(expected) or any(s is not None and n != s for n, s in zip(shape, expected)):
        want = "(N, " + ", ".join("size" if s is None else str(s) for s in expected) + ")"
        raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")
    convs = list(model.convs) if isinstance(model, CNN) else []
    size = shape[1:]
    for conv in convs:
        size = conv.output_size(size)
        if min(size) < 1:
            what = "sequences" if len(size) == 1 else "images"
            raise ValueError(f"{name} has {what} of size {tuple(shape[1:])}, too small for the convolutions")
    return x


def _checked(model: object, x1: object, x2: object) -> tuple[nn.Module, torch.Tensor, torch.Tensor | None]:
    if isinstance(model, Transformer):
        raise ValueError("model is a Transformer: no infinite-width limit implemented for SelfAttention "
                         "(analytic kernels cover MLP, CNN and ResNet)")
    if not isinstance(model, (MLP, CNN, ResNet)):
        raise TypeError(f"model must be an ntkcheck MLP, CNN or ResNet, got {type(model).__name__}")
    if _setting(model, "parametrization") == "standard" and _setting(model, "init") == "glorot":
        raise ValueError(
            "model.init 'glorot' has no infinite-width limit here: its first layer's variance 2 v^2 / (d + m) and "
            "every bias variance vanish as the width m grows (use init='fan_in', or parametrization='ntk' with "
            "the Glorot stds as multipliers for the Gaussian kernel at these widths)"
        )
    if isinstance(model, ResNet) and model.norm is not None and model.arch["post_activation"] and (
            model.norm == "pre" or model.blocks > 1):
        raise ValueError(
            f"model has norm={model.norm!r} with post_activation=True: a LayerNorm then normalises an "
            "activation's output, whose channel mean E[phi(u)] does not vanish; that limit (it needs the "
            "per-position means) is not implemented, nor is it in neural-tangents (stax.LayerNorm needs a "
            "Gaussian input): use post_activation=False"
        )
    if isinstance(model, MLP):
        x1 = check_inputs(x1, "x1", features=model.in_features)
        if x2 is not None:
            x2 = check_inputs(x2, "x2", features=model.in_features)
    else:
        x1 = _check_family_input(model, x1, "x1")
        if x2 is not None:
            x2 = _check_family_input(model, x2, "x2")
    if x2 is not None:
        check_same_device_dtype(x1, x2, "x1", "x2")  # type: ignore[arg-type]
    return model, x1, x2  # type: ignore[return-value]


def _output(kernel: torch.Tensor, model: nn.Module, x1: torch.Tensor, what: str) -> torch.Tensor:
    if model.out_features > 1:  # type: ignore[operator]
        kernel = kernel[:, :, None, None] * torch.eye(model.out_features, dtype=kernel.dtype,  # type: ignore[arg-type]
                                                      device=kernel.device)
    return check_finite_result(kernel.to(x1.dtype), what)


def _kernels(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor | None,
             activation: str | Activation | None) -> tuple[torch.Tensor, torch.Tensor]:
    if activation is None:
        return _infinite_width(model, x1, x2)
    return _infinite_width(model, x1, x2, activation=activation)


def analytic_nngp(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor | None = None, *,
                  activation: str | Activation | None = None) -> torch.Tensor:
    """Infinite-width NNGP covariance ``Sigma_L(x1, x2)`` of ``model``'s output (see the module docstring).

    The limit of ``E[f(x) f(x')]`` over the initialization as all hidden widths (channels)
    tend to infinity (Jacot et al. 2018; seed 001 eq (1); Novak et al. 2019 for convolutions),
    for an :class:`~ntkcheck.models.MLP`, :class:`~ntkcheck.models.CNN` or
    :class:`~ntkcheck.models.ResNet` in NTK or standard (``init="fan_in"``) parametrization.
    ``activation`` (a name or an elementwise callable) replaces the model's.  Shape (N1, N2) for
    one output, else (N1, N2, O, O) = ``Sigma_L (x) I_O``; in x1's dtype and device (computed in
    float64).  ``x2=None`` means ``x2 = x1``.
    """
    model, x1, x2 = _checked(model, x1, x2)
    return _output(_kernels(model, x1, x2, activation)[0], model, x1, "analytic_nngp")


def analytic_ntk(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor | None = None, *,
                 activation: str | Activation | None = None) -> torch.Tensor:
    """Infinite-width neural tangent kernel ``Theta_L(x1, x2)`` of ``model``'s output (see the module docstring).

    The deterministic limit of ``sum_theta df(x)/dtheta df(x')/dtheta`` over the parameters
    with ``requires_grad`` at initialization as all hidden widths (channels) tend to infinity
    (Jacot et al. 2018; seed 001 eq (1); Arora et al. 2019 for convolutions).  In standard
    parametrization it is neural-tangents' ``parameterization="standard"`` kernel: each layer's
    weight term weighted by its fan-in.  ``activation`` (a name or an elementwise callable)
    replaces the model's.  Shape (N1, N2) for one output, else (N1, N2, O, O) =
    ``Theta_L (x) I_O``; in x1's dtype and device (computed in float64).  ``x2=None`` means
    ``x2 = x1``.
    """
    model, x1, x2 = _checked(model, x1, x2)
    return _output(_kernels(model, x1, x2, activation)[1], model, x1, "analytic_ntk")
