"""Gaussian expectations ``E[f(u) g(v)]`` of activations and their derivatives, for ``(u, v)`` centred Gaussian.

The infinite-width recursion of :mod:`ntkcheck.kernels.analytic` needs, per pair of inputs,
``E[phi(u) phi(v)]`` and ``E[phi'(u) phi'(v)]`` with variances ``q1``, ``q2`` and covariance ``s12``.
Closed forms serve relu (arc-cosine kernels, Cho & Saul 2009), abs and leaky relu (as ABReLU), sign,
erf (Williams 1997), sin and identity; every other elementwise activation uses a 2-D Gauss rule in
polar coordinates split at the activation's possible kink at 0 (:func:`_polar_quadrature`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import torch

from ntkcheck.models import ACTIVATIONS

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
    "leaky_relu": (torch.nn.functional.leaky_relu, lambda x: torch.where(x > 0, 1.0, 0.01).to(x.dtype)),
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
    f: Activation,
    q1: torch.Tensor,
    q2: torch.Tensor,
    s12: torch.Tensor,
    radial: int = RADIAL_NODES,
    angular: int = ANGULAR_NODES,
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
    cuts = (
        torch.stack(
            [half_pi, 3 * half_pi, (a0 + math.pi / 2) % (2 * math.pi), (a0 + 3 * math.pi / 2) % (2 * math.pi)], 1
        )
        .sort(1)
        .values
    )
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
