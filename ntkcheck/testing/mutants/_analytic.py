"""Mutants of the analytic area (see :mod:`ntkcheck.testing.mutants`): the infinite-width NNGP / NTK."""

from __future__ import annotations

import functools
import math

from ntkcheck.testing.mutants import Mutant


def _scaled_ntk(original):
    """Theta_L returned 5% too small (a dropped factor, a wrong normalisation): the NNGP stays right."""

    @functools.wraps(original)
    def _infinite_width(model, x1, x2, *, quadrature=False):
        sigma, theta = original(model, x1, x2, quadrature=quadrature)
        return sigma, 0.95 * theta

    return _infinite_width


def _relu_arccos_5pct(original):
    """E[relu(u) relu(v)] (the degree-1 arc-cosine kernel) 5% too small: sqrt(q1 q2) / (2.1 pi) instead of / (2 pi)."""
    table = dict(original)
    e_phi, e_dphi = table["relu"]
    table["relu"] = (lambda q1, q2, s12: e_phi(q1, q2, s12) / 1.05, e_dphi)
    return table


def _relu_dot_one_over_pi(original):
    """E[relu'(u) relu'(v)] = (pi - t) / pi instead of (pi - t) / (2 pi) (the wrong constant of the degree-0
    arc-cosine kernel)."""
    table = dict(original)
    e_phi, e_dphi = table["relu"]
    table["relu"] = (e_phi, lambda q1, q2, s12: 2 * e_dphi(q1, q2, s12))
    return table


def _bias_not_squared(original):
    """The recursion adds beta = bias_mult instead of beta^2 = bias_mult^2 (the std used as a variance)."""

    @functools.wraps(original)
    def _infinite_width(model, x1, x2, *, quadrature=False):
        saved = [layer.bias_mult for layer in model.layers]
        try:
            for layer in model.layers:
                layer.bias_mult = math.sqrt(layer.bias_mult)  # so bias_mult**2 inside is the old bias_mult
            return original(model, x1, x2, quadrature=quadrature)
        finally:
            for layer, value in zip(model.layers, saved):
                layer.bias_mult = value

    return _infinite_width


MUTANTS: list[Mutant] = [
    Mutant(
        "analytic_kernel_5pct",
        "analytic NTK Theta_L 5% too small (NNGP unchanged)",
        "ntkcheck.kernels.analytic:_infinite_width",
        _scaled_ntk,
    ),
    Mutant(
        "analytic_relu_arccos_5pct",
        "ReLU arc-cosine expectation E[relu(u) relu(v)] 5% too small (NNGP and NTK)",
        "ntkcheck.kernels.gaussian:_EXPECTATIONS",
        _relu_arccos_5pct,
    ),
    Mutant(
        "analytic_relu_dot_one_over_pi",
        "ReLU derivative kernel (pi - t) / pi instead of (pi - t) / (2 pi)",
        "ntkcheck.kernels.gaussian:_EXPECTATIONS",
        _relu_dot_one_over_pi,
    ),
    Mutant(
        "analytic_bias_not_squared",
        "analytic recursion adds bias_mult instead of bias_mult^2",
        "ntkcheck.kernels.analytic:_infinite_width",
        _bias_not_squared,
    ),
]
