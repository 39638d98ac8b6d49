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

import math

import torch
from torch import nn

from ntkcheck._support.validation import check_batch, check_finite_result, check_inputs, check_same_device_dtype
from ntkcheck.kernels._recursion import _input_state, _propagate, _setting
from ntkcheck.kernels.gaussian import Activation, _expectations
from ntkcheck.models import CNN, MLP, Conv1d, Conv2d, ResNet, Transformer

Network = MLP | CNN | ResNet
"""The networks with an infinite-width limit here."""

_ROW_ELEMENTS = 2**24
"""Kernel entries (x1 rows x N2 x P x P) of one block of x1's rows (128 MiB of float64 per
kernel tensor): bounds the memory of image kernels, whose covariance pairs every position."""


def _infinite_width(
    model: Network,
    x1: torch.Tensor,
    x2: torch.Tensor | None,
    *,
    quadrature: bool = False,
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
    b = a if x2 is None or same else x2.to(torch.float64)
    e_phi, e_dphi = _expectations(_setting(model, "activation") if activation is None else activation, quadrature)
    rows = max(1, _ROW_ELEMENTS // (b.shape[0] * math.prod(a.shape[2:]) ** 2))
    if same and rows >= a.shape[0]:
        state = _propagate(model, _input_state(a, None), e_phi, e_dphi, True)
        return state.cross[:, :, 0, 0], state.ntk[:, :, 0, 0]
    if not same:
        blocks = [
            _propagate(model, _input_state(a[i : i + rows], b), e_phi, e_dphi, False)
            for i in range(0, a.shape[0], rows)
        ]
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


def _check_family_input(model: CNN | ResNet, x: object, name: str) -> torch.Tensor:
    x = check_batch(x, name)
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    shape, expected = tuple(x.shape[1:]), model.in_shape
    if len(shape) != len(expected) or any(s is not None and n != s for n, s in zip(shape, expected)):
        want = "(N, " + ", ".join("size" if s is None else str(s) for s in expected) + ")"
        raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")
    convs = list(model.convs) if isinstance(model, CNN) else []
    size = shape[1:]
    for conv in convs:
        assert isinstance(conv, (Conv1d, Conv2d))
        size = conv.output_size(size)
        if min(size) < 1:
            what = "sequences" if len(size) == 1 else "images"
            raise ValueError(f"{name} has {what} of size {tuple(shape[1:])}, too small for the convolutions")
    return x


def _checked(model: object, x1: object, x2: object) -> tuple[Network, torch.Tensor, torch.Tensor | None]:
    if isinstance(model, Transformer):
        raise ValueError(
            "model is a Transformer: no infinite-width limit implemented for SelfAttention "
            "(analytic kernels cover MLP, CNN and ResNet)"
        )
    if not isinstance(model, (MLP, CNN, ResNet)):
        raise TypeError(f"model must be an ntkcheck MLP, CNN or ResNet, got {type(model).__name__}")
    if _setting(model, "parametrization") == "standard" and _setting(model, "init") == "glorot":
        raise ValueError(
            "model.init 'glorot' has no infinite-width limit here: its first layer's variance 2 v^2 / (d + m) and "
            "every bias variance vanish as the width m grows (use init='fan_in', or parametrization='ntk' with "
            "the Glorot stds as multipliers for the Gaussian kernel at these widths)"
        )
    if (
        isinstance(model, ResNet)
        and model.norm is not None
        and model.arch["post_activation"]
        and (model.norm == "pre" or model.blocks > 1)
    ):
        raise ValueError(
            f"model has norm={model.norm!r} with post_activation=True: a LayerNorm then normalises an "
            "activation's output, whose channel mean E[phi(u)] does not vanish; that limit (it needs the "
            "per-position means) is not implemented, nor is it in neural-tangents (stax.LayerNorm needs a "
            "Gaussian input): use post_activation=False"
        )
    checked1 = _check_input(model, x1, "x1")
    checked2 = None if x2 is None else _check_input(model, x2, "x2")
    if checked2 is not None:
        check_same_device_dtype(checked1, checked2, "x1", "x2")
    return model, checked1, checked2


def _check_input(model: Network, x: object, name: str) -> torch.Tensor:
    if isinstance(model, MLP):
        return check_inputs(x, name, features=model.in_features)
    return _check_family_input(model, x, name)


def _output(kernel: torch.Tensor, model: Network, x1: torch.Tensor, what: str) -> torch.Tensor:
    if model.out_features > 1:
        kernel = kernel[:, :, None, None] * torch.eye(model.out_features, dtype=kernel.dtype, device=kernel.device)
    return check_finite_result(kernel.to(x1.dtype), what)


def _kernels(
    model: Network, x1: torch.Tensor, x2: torch.Tensor | None, activation: str | Activation | None
) -> tuple[torch.Tensor, torch.Tensor]:
    if activation is None:
        return _infinite_width(model, x1, x2)
    return _infinite_width(model, x1, x2, activation=activation)


def analytic_nngp(
    model: nn.Module, x1: torch.Tensor, x2: torch.Tensor | None = None, *, activation: str | Activation | None = None
) -> torch.Tensor:
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


def analytic_ntk(
    model: nn.Module, x1: torch.Tensor, x2: torch.Tensor | None = None, *, activation: str | Activation | None = None
) -> torch.Tensor:
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
