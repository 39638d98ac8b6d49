"""Argument checks shared by the solvers and flows of :mod:`ntkcheck.dynamics`.

Each raises ``TypeError`` (wrong kind of value) or ``ValueError`` (wrong value) naming the argument.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch


def check_float(value: object, name: str, expected: str, ok: Callable[[float], bool]) -> float:
    """``value`` as a float: TypeError unless it is a real number, ValueError unless ``ok(value)``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__} {value!r}")
    if not ok(float(value)):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return float(value)


def _positive_finite(v: float) -> bool:
    return math.isfinite(v) and v > 0


def check_lr(lr: object) -> float:
    """The learning rate as a positive finite float."""
    return check_float(lr, "lr", "a positive finite float", _positive_finite)


def check_positive_finite(value: object, name: str, expected: str) -> float:
    """``value`` as a positive finite float."""
    return check_float(value, name, expected, _positive_finite)


def check_tol(tol: object, name: str = "tol") -> float:
    """A tolerance, a float in (0, 1)."""
    if isinstance(tol, bool) or not isinstance(tol, (int, float)):
        raise TypeError(f"{name} must be a float in (0, 1), got {type(tol).__name__} {tol!r}")
    if not 0 < tol < 1:
        raise ValueError(f"{name} must be a float in (0, 1), got {tol!r}")
    return float(tol)


def check_diag_reg(diag_reg: object) -> float:
    """``diag_reg`` as a finite float >= 0 (TypeError / ValueError naming it otherwise)."""
    if isinstance(diag_reg, bool) or not isinstance(diag_reg, (int, float)):
        raise TypeError(
            f"diag_reg must be a finite float >= 0 (ridge relative to mean(diag K)), "
            f"got {type(diag_reg).__name__} {diag_reg!r}"
        )
    if not (math.isfinite(diag_reg) and diag_reg >= 0):
        raise ValueError(f"diag_reg must be a finite float >= 0 (ridge relative to mean(diag K)), got {diag_reg!r}")
    return float(diag_reg)


def times_array(times: object, name: str = "times") -> np.ndarray:
    """``times`` (a number or a 1-D array, ``inf`` allowed) as a non-empty float64 array of values >= 0."""
    try:
        t = np.asarray(times.detach().cpu() if isinstance(times, torch.Tensor) else times, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a number or a 1-D array of numbers, got {type(times).__name__}") from exc
    t = np.atleast_1d(t)
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {t.shape}")
    if np.isnan(t).any() or (t < 0).any():
        raise ValueError(f"{name} must be >= 0 (inf allowed) and not NaN, got {t.tolist()[:8]}")
    return t
