"""Frequency content of sampled functions (seed 002): the NUDFT, energy spectra and Gaussian low/high filtering."""

from __future__ import annotations

import math

import numpy as np
import torch

from ntkcheck._support.fitting import loglog_slope


def nudft(values: torch.Tensor, points: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Seed 002's non-uniform DFT ``y_hat(k) = (1/N) sum_i y_i exp(-i 2 pi k . x_i)``.

    ``values`` (N,), ``points`` (N,) or (N, D), ``freqs`` (F,) scalars (for 1-D points, or
    multiples of a unit direction already projected: pass ``points @ direction``) or
    (F, D) frequency vectors.  Returns the (F,) complex coefficients.
    """
    if points.ndim == 1:
        phase = torch.outer(freqs.to(points.dtype), points)
    else:
        phase = freqs.to(points.dtype) @ points.T
    basis = torch.exp(-2j * math.pi * phase)
    return basis @ values.to(basis.dtype) / values.shape[0]


def energy_spectrum(values: torch.Tensor, angles: torch.Tensor, kmax: int) -> np.ndarray:
    """One-sided energy ``E(k) = |c_k|^2 (x2 for k >= 1)`` of a function of the angle, k = 0..kmax.

    ``c_k`` is the NUDFT along the angle (points ``angles / 2 pi``, integer k); on a uniform
    grid of angles it is the Fourier series coefficient, and ``sum_k E(k)`` is the mean square.
    """
    k = torch.arange(kmax + 1, dtype=angles.dtype, device=angles.device)
    c = nudft(values, angles / (2 * math.pi), k)
    e = c.abs() ** 2
    e[1:] *= 2
    return e.cpu().numpy()


def centroid(energy: np.ndarray) -> float:
    """Energy-weighted mean frequency over k >= 1 (the constant left out)."""
    k = np.arange(len(energy))
    return float((k[1:] * energy[1:]).sum() / energy[1:].sum())


def decay_exponent(energy: np.ndarray, lo: int, hi: int) -> float:
    """Exponent p of the least-squares power law ``E(k) ~ k^(-p)`` over ``lo <= k <= hi``."""
    return -loglog_slope(np.arange(lo, hi + 1), energy[lo : hi + 1])


def gaussian_split(values: torch.Tensor, points: torch.Tensor, delta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Seed 002's filtering: ``(low, high)``.

    ``low`` is the normalised Gaussian average of width ``delta`` over ``points``, ``high = values - low``.
    """
    d2 = torch.cdist(points, points) ** 2
    w = torch.exp(-d2 / (2 * delta * delta))
    low = (w @ values) / w.sum(dim=1)
    return low, values - low


def gap_cutoff(angles: np.ndarray) -> float:
    """``pi / (largest gap between neighbouring angles on the circle)``: the degree below which the samples pin a
    trigonometric polynomial down (Gröchenig 1992: degree-K polynomials are stably determined by samples whose
    largest gap is below pi / K)."""
    a = np.sort(np.mod(angles, 2 * math.pi))
    gaps = np.diff(np.concatenate([a, a[:1] + 2 * math.pi]))
    return float(math.pi / gaps.max())
