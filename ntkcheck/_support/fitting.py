"""Least-squares fits shared by the properties, the experiments and the benchmarks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def loglog_slope(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Slope of the least-squares line through ``(log x, log y)``: the exponent p of ``y ~ C x^p``.

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
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])
