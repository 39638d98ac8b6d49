"""Infinite-width NNGP and NTK of an :class:`~ntkcheck.networks.MLP` in NTK parametrization.

In NTK parametrization (Jacot et al. 2018; seed 001 eq (1)) layer ``l`` computes
``z_l = weight_mult_l * W_l a_{l-1} + bias_mult_l * b_l`` with raw ``W_l, b_l ~ N(0, 1)``.
Write ``sigma_w,l^2 = weight_mult_l^2 * fan_in_l`` and ``beta_l^2 = bias_mult_l^2``
(0 without biases).  As every hidden width tends to infinity, with these scales
fixed, the output's NNGP covariance ``Sigma_L`` and NTK ``Theta_L`` follow the
recursion of Jacot et al. 2018 and Lee et al. 2019::

    Sigma_1(x, x') = weight_mult_1^2 <x, x'> + beta_1^2,       Theta_1 = Sigma_1
    Sigma_{l+1}    = sigma_w,{l+1}^2 E[phi(u) phi(v)] + beta_{l+1}^2
    Theta_{l+1}    = Sigma_{l+1} + sigma_w,{l+1}^2 E[phi'(u) phi'(v)] Theta_l

with ``(u, v) ~ N(0, [[Sigma_l(x, x), Sigma_l(x, x')], [Sigma_l(x, x'), Sigma_l(x', x')]])``.
The kernel of an O-output network is ``Theta_L (x) I_O``: outputs are independent.

The Gaussian expectations have closed forms for relu (arc-cosine kernels, Cho &
Saul 2009), erf (Williams 1997), sin and identity; tanh, gelu and softplus use a
2-D Gauss-Hermite rule with :data:`QUADRATURE_NODES` nodes per dimension.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from numpy.polynomial.hermite_e import hermegauss

from ntkcheck._validation import check_finite_result, check_inputs, check_same_device_dtype
from ntkcheck.networks import MLP, Linear

QUADRATURE_NODES = 128
"""Gauss-Hermite nodes per dimension (a grid of 128^2 per pair of inputs).  Measured
against a 250-node rule and the erf closed form: relative error < 3e-11 for
tanh, gelu, softplus and their derivatives at pre-activation variances q <= 1; for
gelu and softplus < 1e-11 up to q = 4; tanh' (the steepest) degrades to ~1e-7 at
q = 2 and ~6e-6 at q = 3."""

_CHUNK_ELEMENTS = 2**21
"""Grid values evaluated at once (16 MiB of float64): bounds the quadrature's memory."""

Expectation = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``(q1, q2, s12) -> E[f(u) g(v)]`` for ``(u, v)`` centred Gaussian with variances q1, q2, covariance s12."""


def _correlation(q1: torch.Tensor, q2: torch.Tensor, s12: torch.Tensor) -> torch.Tensor:
    """``s12 / sqrt(q1 q2)`` clamped to [-1, 1]; 0 where a variance is 0 (rho undefined)."""
    norm = torch.sqrt(q1 * q2)
    return torch.where(norm > 0, s12 / torch.where(norm > 0, norm, 1.0), 0.0).clamp(-1.0, 1.0)


def _relu(q1: torch.Tensor, q2: torch.Tensor, s12: torch.Tensor) -> torch.Tensor:
    t = torch.arccos(_correlation(q1, q2, s12))
    return torch.sqrt(q1 * q2) / (2 * math.pi) * (torch.sin(t) + (math.pi - t) * torch.cos(t))


def _relu_dot(q1: torch.Tensor, q2: torch.Tensor, s12: torch.Tensor) -> torch.Tensor:
    # relu'(0) = 0 in torch: a zero-variance pre-activation contributes nothing.
    t = torch.arccos(_correlation(q1, q2, s12))
    return torch.where(q1 * q2 > 0, (math.pi - t) / (2 * math.pi), 0.0)


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


_PHI: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]] = {
    "relu": (F.relu, lambda x: (x > 0).to(x.dtype)),
    "tanh": (torch.tanh, lambda x: 1 - torch.tanh(x) ** 2),
    "erf": (torch.erf, lambda x: 2 / math.sqrt(math.pi) * torch.exp(-x * x)),
    "gelu": (F.gelu, _gelu_dot),
    "softplus": (F.softplus, torch.sigmoid),
    "sin": (torch.sin, torch.cos),
    "identity": (lambda x: x, torch.ones_like),
}
"""Activation phi and its derivative phi' (torch's conventions, relu'(0) = 0), by name."""


def _gauss_hermite(
    f: Callable[[torch.Tensor], torch.Tensor],
    q1: torch.Tensor,
    q2: torch.Tensor,
    s12: torch.Tensor,
    nodes: int = QUADRATURE_NODES,
) -> torch.Tensor:
    """``E[f(u) f(v)]`` by a ``nodes x nodes`` Gauss-Hermite grid, in chunks of pairs.

    ``u = sqrt(q1) z1``, ``v = sqrt(q2) (rho z1 + sqrt(1 - rho^2) z2)`` with z1, z2
    independent standard normals (rho = 0 where a variance is 0).  The pair is ordered
    so that q1 <= q2: the result is exactly symmetric in (q1, q2).
    """
    q1, q2, s12 = torch.broadcast_tensors(q1, q2, s12)
    q1, q2 = torch.minimum(q1, q2), torch.maximum(q1, q2)
    z, w = (torch.as_tensor(a, dtype=s12.dtype, device=s12.device) for a in hermegauss(nodes))
    w = w / w.sum()
    rho = _correlation(q1, q2, s12).reshape(-1, 1, 1)
    a, b = torch.sqrt(q1).reshape(-1, 1), torch.sqrt(q2).reshape(-1, 1, 1)
    b1, b2 = b * rho * z[:, None], b * torch.sqrt(1 - rho * rho) * z  # v = b1[z1] + b2[z2]
    out = torch.empty(rho.shape[0], dtype=s12.dtype, device=s12.device)
    step = max(1, _CHUNK_ELEMENTS // nodes**2)
    for i in range(0, out.shape[0], step):
        j = slice(i, i + step)
        inner = f(b1[j] + b2[j]) @ w  # E over z2, at each z1 node
        out[j] = (f(a[j] * z) * inner) @ w
    return out.reshape(s12.shape)


def _by_quadrature(f: Callable[[torch.Tensor], torch.Tensor]) -> Expectation:
    return lambda q1, q2, s12: _gauss_hermite(f, q1, q2, s12)


_EXPECTATIONS: dict[str, tuple[Expectation, Expectation]] = {
    "relu": (_relu, _relu_dot),
    "erf": (_erf, _erf_dot),
    "sin": (_sin, _cos),
    "identity": (lambda q1, q2, s12: s12, lambda q1, q2, s12: torch.ones_like(s12)),
    **{name: (_by_quadrature(_PHI[name][0]), _by_quadrature(_PHI[name][1])) for name in ("tanh", "gelu", "softplus")},
}
"""``name -> (E[phi(u) phi(v)], E[phi'(u) phi'(v)])`` as functions of ``(q1, q2, s12)``."""


def _infinite_width(
    model: MLP, x1: torch.Tensor, x2: torch.Tensor | None, *, quadrature: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Sigma_L, Theta_L)`` of shape (N1, N2) in float64, on x1's device.

    ``quadrature=True`` computes every activation's expectations by Gauss-Hermite
    quadrature, closed forms included (to check one against the other).
    With ``x2`` None the kernels are of x1 with itself and exactly symmetric.
    """
    same = x2 is None or x2 is x1
    a = x1.to(torch.float64)
    b = a if same else x2.to(torch.float64)  # type: ignore[union-attr]

    def bias2(layer: Linear) -> float:
        return layer.bias_mult**2 if layer.bias is not None else 0.0

    first = model.layers[0]
    s = first.weight_mult**2 * (a @ b.T) + bias2(first)
    if same:
        s = (s + s.T) / 2
        q1 = q2 = s.diagonal().clone()
    else:
        q1 = first.weight_mult**2 * (a * a).sum(1) + bias2(first)
        q2 = first.weight_mult**2 * (b * b).sum(1) + bias2(first)
    theta = s
    if quadrature:
        phi, dphi = _PHI[model.activation]
        e_phi, e_dphi = _by_quadrature(phi), _by_quadrature(dphi)
    else:
        e_phi, e_dphi = _EXPECTATIONS[model.activation]
    for layer in model.layers[1:]:
        sigma_w2 = layer.weight_mult**2 * layer.in_features
        v1, v2 = q1[:, None], q2[None, :]
        bound = torch.sqrt(v1 * v2)
        s = torch.minimum(torch.maximum(s, -bound), bound)  # Cauchy-Schwarz, against rounding
        sigma = sigma_w2 * e_phi(v1, v2, s) + bias2(layer)
        theta = sigma + sigma_w2 * e_dphi(v1, v2, s) * theta
        s = sigma
        if same:
            s, theta = (s + s.T) / 2, (theta + theta.T) / 2
            q1 = q2 = s.diagonal().clone()
        else:
            q1 = sigma_w2 * e_phi(q1, q1, q1) + bias2(layer)
            q2 = sigma_w2 * e_phi(q2, q2, q2) + bias2(layer)
    return s, theta


def _checked(model: object, x1: object, x2: object) -> tuple[MLP, torch.Tensor, torch.Tensor | None]:
    if not isinstance(model, MLP):
        raise TypeError(f"model must be an ntkcheck.networks.MLP, got {type(model).__name__}")
    if model.parametrization != "ntk":
        raise ValueError(
            f"model.parametrization must be 'ntk' (the analytic limit is the NTK-parametrization one; "
            f"the standard-parametrization limit differs), got {model.parametrization!r}"
        )
    if model.activation not in _EXPECTATIONS:
        raise ValueError(
            f"model.activation {model.activation!r} has no infinite-width kernel here: "
            f"analytic_ntk and analytic_nngp support {sorted(_EXPECTATIONS)}"
        )
    x1 = check_inputs(x1, "x1", features=model.in_features)
    if x2 is not None:
        x2 = check_inputs(x2, "x2", features=model.in_features)
        check_same_device_dtype(x1, x2, "x1", "x2")
    return model, x1, x2


def _output(kernel: torch.Tensor, model: MLP, x1: torch.Tensor, what: str) -> torch.Tensor:
    if model.out_features > 1:
        kernel = kernel[:, :, None, None] * torch.eye(model.out_features, dtype=kernel.dtype, device=kernel.device)
    return check_finite_result(kernel.to(x1.dtype), what)


def analytic_nngp(model: MLP, x1: torch.Tensor, x2: torch.Tensor | None = None) -> torch.Tensor:
    """Infinite-width NNGP covariance ``Sigma_L(x1, x2)`` of ``model``'s output.

    The limit of ``E[f(x) f(x')]`` over the initialization as all hidden widths
    tend to infinity, in NTK parametrization (Jacot et al. 2018; seed 001 eq (1)).
    Shape (N1, N2) for one output, else (N1, N2, O, O) = ``Sigma_L (x) I_O``; in
    x1's dtype and device (computed in float64).  ``x2=None`` means ``x2 = x1``.
    """
    model, x1, x2 = _checked(model, x1, x2)
    return _output(_infinite_width(model, x1, x2)[0], model, x1, "analytic_nngp")


def analytic_ntk(model: MLP, x1: torch.Tensor, x2: torch.Tensor | None = None) -> torch.Tensor:
    """Infinite-width neural tangent kernel ``Theta_L(x1, x2)`` of ``model``'s output.

    The deterministic limit of ``sum_theta df(x)/dtheta df(x')/dtheta`` at
    initialization as all hidden widths tend to infinity, in NTK parametrization
    (Jacot et al. 2018; seed 001 eq (1)).  Shape (N1, N2) for one output, else
    (N1, N2, O, O) = ``Theta_L (x) I_O``; in x1's dtype and device (computed in
    float64).  ``x2=None`` means ``x2 = x1``.
    """
    model, x1, x2 = _checked(model, x1, x2)
    return _output(_infinite_width(model, x1, x2)[1], model, x1, "analytic_ntk")
