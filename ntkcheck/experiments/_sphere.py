"""Spherical harmonics on ``S^d`` (radius ``sqrt(d+1)`` in ``R^(d+1)``): uniform samples, Funk-Hecke eigenvalues.

A zonal function of the sphere (a function of ``t = cos(angle)`` to a pole) acts on the
degree-k harmonics through its Gegenbauer coefficients; these give the spectra of the
analytic NTK and NNGP on the sphere (seed 003 eq (3): NTK eigenvalues ``k^(-(d+1))``)
and the energy of a zonal target in each degree.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ntkcheck.kernels.analytic import analytic_nngp, analytic_ntk


def uniform_sphere(n: int, d: int, generator: torch.Generator, *, radius: float | None = None) -> torch.Tensor:
    """``n`` points uniform on the sphere ``S^d`` in ``R^(d+1)`` (radius ``sqrt(d+1)`` by default), float64, CPU."""
    z = torch.randn(n, d + 1, generator=generator, dtype=torch.float64)
    r = math.sqrt(d + 1) if radius is None else radius
    return z / z.norm(dim=1, keepdim=True) * r


def pole(d: int) -> torch.Tensor:
    """The point ``sqrt(d+1) e_1`` of ``S^d`` as a (1, d+1) float64 tensor."""
    x0 = torch.zeros(1, d + 1, dtype=torch.float64)
    x0[0, 0] = math.sqrt(d + 1)
    return x0


def quadrature(d: int, nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Jacobi nodes ``t`` and weights (summing to 1) of the law of ``cos(angle)`` on ``S^d``.

    The law has density proportional to ``(1 - t^2)^((d-2)/2)`` on [-1, 1].
    """
    from scipy.special import roots_jacobi

    alpha = (d - 2) / 2
    t, w = roots_jacobi(nodes, alpha, alpha)
    return t, w / w.sum()


def funk_hecke(values: np.ndarray, t: np.ndarray, w: np.ndarray, d: int, degrees: int) -> np.ndarray:
    """Funk-Hecke eigenvalues ``mu_k = sum_j w_j kappa(t_j) P_k(t_j)``, k = 0..degrees, of a zonal ``kappa``.

    ``values`` are ``kappa`` at the quadrature nodes ``t`` (weights ``w``, :func:`quadrature`);
    ``P_k`` is the Gegenbauer polynomial ``C_k^((d-1)/2)`` normalised to ``P_k(1) = 1``.
    """
    from scipy.special import eval_gegenbauer

    lam = (d - 1) / 2
    return np.array(
        [(values * w * eval_gegenbauer(k, lam, t)).sum() / eval_gegenbauer(k, lam, 1.0) for k in range(degrees + 1)]
    )


def multiplicities(d: int, degrees: int) -> np.ndarray:
    """Dimension of the degree-k spherical harmonics on ``S^d``: ``(2k+d-1) (k+d-2)! / (k! (d-1)!)``."""
    from scipy.special import comb

    return np.array([1.0] + [(2 * k + d - 1) / k * comb(k + d - 2, k - 1, exact=False) for k in range(1, degrees + 1)])


def sphere_spectrum(
    kernel: str, model: nn.Module, d: int, degrees: int, nodes: int = 1500
) -> tuple[np.ndarray, np.ndarray]:
    """Funk-Hecke eigenvalues ``mu_k`` (k <= degrees) of ``model``'s analytic kernel on ``S^d``; multiplicities ``N_k``.

    ``kernel`` is ``"ntk"`` or ``"nngp"``.
    The kernel restricted to the sphere of radius ``sqrt(d+1)`` is a function of
    ``t = cos(angle)``; its integral operator w.r.t. the uniform probability measure has
    eigenvalue ``mu_k = c int kappa(t) P_k(t) (1 - t^2)^((d-2)/2) dt`` on the degree-k
    harmonics, ``P_k`` the Gegenbauer polynomial ``C_k^((d-1)/2)`` normalised to ``P_k(1) = 1``
    and ``c`` the weight's normalisation (Gauss-Jacobi quadrature with ``nodes`` nodes).
    ``sum_k N_k mu_k = kappa(1)`` is the trace.
    """
    t, w = quadrature(d, nodes)
    r = math.sqrt(d + 1)
    xt = torch.zeros(nodes, d + 1, dtype=torch.float64)
    xt[:, 0] = torch.from_numpy(t) * r
    xt[:, 1] = torch.from_numpy(np.sqrt(1 - t * t)) * r
    fn = analytic_ntk if kernel == "ntk" else analytic_nngp
    kappa = fn(model, xt, pole(d))[:, 0].numpy()
    return funk_hecke(kappa, t, w, d, degrees), multiplicities(d, degrees)


def zonal_energy(profile: Callable[[np.ndarray], np.ndarray], d: int, degrees: int, nodes: int = 1500) -> np.ndarray:
    """``e_k``, k = 0..degrees: the squared norm (uniform probability measure) of the degree-k part of ``f(x) =
    profile(x_1)``, ``x_1 = sqrt(d+1) t`` the first coordinate on ``S^d``."""
    t, w = quadrature(d, nodes)
    c = funk_hecke(profile(math.sqrt(d + 1) * t), t, w, d, degrees)
    return multiplicities(d, degrees) * c * c
