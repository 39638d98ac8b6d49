"""Argument checks shared by the public functions.

Every check raises ``TypeError`` or ``ValueError`` with a message that names
the offending argument and says what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def check_positive_int(value: object, name: str, *, minimum: int = 1) -> int:
    """Return ``value`` as an int, or raise if it is not an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return value


def check_int_sequence(values: object, name: str) -> tuple[int, ...]:
    """Return a tuple of positive ints, or raise naming ``name`` and the bad entry."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a sequence of positive ints, got {type(values).__name__}")
    return tuple(check_positive_int(v, f"{name}[{i}]") for i, v in enumerate(values))


def check_nonnegative_float(value: object, name: str) -> float:
    """Return ``value`` as a finite float >= 0, or raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a finite float >= 0, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite float >= 0, got {value}")
    return value


def check_choice(value: object, name: str, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise naming ``name``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value  # type: ignore[return-value]


def check_inputs(x: object, name: str, *, features: int | None = None) -> torch.Tensor:
    """Check a batch of inputs: a finite floating tensor of shape (N, features), N >= 1."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, features), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (N, features) (2 dimensions), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one input, got shape {tuple(x.shape)}")
    if features is not None and x.shape[1] != features:
        raise ValueError(f"{name} must have {features} features (the model's in_features), got {x.shape[1]}")
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite entries")
    return x


def check_same_device_dtype(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    """Raise unless two tensors share dtype and device."""
    if a.dtype != b.dtype:
        raise TypeError(f"{name_b} must have the dtype of {name_a} ({a.dtype}), got {b.dtype}")
    if a.device != b.device:
        raise ValueError(f"{name_b} must be on the device of {name_a} ({a.device}), got {b.device}")


def check_finite_result(t: torch.Tensor, what: str) -> torch.Tensor:
    """Raise ``FloatingPointError`` if a computed tensor holds NaN or inf (never return it silently)."""
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise FloatingPointError(f"{what} produced {bad} non-finite entries (overflow or NaN in the model)")
    return t
