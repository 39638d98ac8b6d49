"""Least-squares fits shared by the properties, the experiments and the benchmarks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LogLogFit:
    """The least-squares line ``log y = intercept + slope log x``: ``slope`` is the exponent p of
    ``y ~ C x^p`` (C = exp(intercept)); ``slope_se`` its standard error (NaN with two points)."""

    slope: float
    intercept: float
    slope_se: float


def loglog_fit(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> LogLogFit:
    """Least-squares fit of ``log y`` on ``log x``, with the slope's standard error.

    Raises ``ValueError`` naming the offending values when fewer than two points are given or any
    ``x`` or ``y`` is not positive and finite (a logarithm of it would be NaN or infinite).
    """
    xs, ys = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if xs.shape != ys.shape or xs.size < 2:
        raise ValueError(f"x and y must hold the same number (at least 2) of points, got {xs.size} and {ys.size}")
    bad = ~(np.isfinite(xs) & np.isfinite(ys) & (xs > 0) & (ys > 0))
    if bad.any():
        raise ValueError(
            f"x and y must be positive and finite for a log-log fit, got x={xs[bad].tolist()}, y={ys[bad].tolist()}"
        )
    lx, ly = np.log(xs), np.log(ys)
    slope, intercept = np.polyfit(lx, ly, 1)
    dof = lx.size - 2
    sxx = float(((lx - lx.mean()) ** 2).sum())
    residual = float(((ly - (intercept + slope * lx)) ** 2).sum())
    se = math.sqrt(residual / dof / sxx) if dof > 0 and sxx > 0 else math.nan
    return LogLogFit(float(slope), float(intercept), se)


def loglog_slope(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Slope of the least-squares line through ``(log x, log y)``: the exponent p of ``y ~ C x^p``
    (:func:`loglog_fit`'s ``slope``, with its errors)."""
    return loglog_fit(x, y).slope
