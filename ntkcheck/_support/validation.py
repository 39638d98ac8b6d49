"""Argument checks shared by the public functions.

Every check raises ``TypeError`` or ``ValueError`` with a message that names
the offending argument and says what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
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
    """Return ``value`` if it is one of the strings ``choices``, else raise naming ``name``."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {list(choices)} (a str), got {type(value).__name__} {value!r}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_inputs(x: object, name: str, *, features: int | None = None) -> torch.Tensor:
    """Check a batch of inputs: a finite floating tensor of shape (N, features), N >= 1."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, features), got {type(x).__name__}")
    if x.is_meta:
        raise ValueError(f"{name} is on the meta device: it holds no values (move it to a real device first)")
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


DTYPES: dict[str, torch.dtype] = {"float64": torch.float64, "float32": torch.float32}
"""The dtypes claims are checked in and reproductions train in, by name: float64 for the claims, float32
with its own tolerances (the columns of the tolerance table)."""

FLOAT_DTYPES: dict[str, torch.dtype] = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}
"""The floating dtypes accepted for parameters and data, by name."""


def check_dtype(value: object, name: str) -> torch.dtype | None:
    """Return a floating ``torch.dtype`` (given as one or by its name in :data:`FLOAT_DTYPES`), or None."""
    if value is None:
        return None
    if isinstance(value, str):
        if value not in FLOAT_DTYPES:
            raise ValueError(f"{name} must be a floating dtype, one of {list(FLOAT_DTYPES)}, got {value!r}")
        return FLOAT_DTYPES[value]
    if not isinstance(value, torch.dtype):
        raise TypeError(f"{name} must be a torch.dtype or one of {list(FLOAT_DTYPES)}, got {type(value).__name__}")
    if value not in FLOAT_DTYPES.values():
        raise TypeError(f"{name} must be a floating dtype, one of {list(FLOAT_DTYPES)}, got {value}")
    return value


def available_devices() -> list[str]:
    """The devices tensors can be created on here: cpu, meta, each CUDA device, mps where present."""
    names = ["cpu", "meta", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    if torch.backends.mps.is_available():
        names.append("mps")
    return names


def check_device(value: object, name: str) -> torch.device | None:
    """Return ``value`` as a ``torch.device`` this machine has, or None; else raise naming ``name``."""
    if value is None:
        return None
    if not isinstance(value, (str, torch.device)):
        raise TypeError(
            f"{name} must be a torch.device, a str such as 'cpu' or 'cuda:0', or None, "
            f"got {type(value).__name__} {value!r}"
        )
    try:
        device = torch.device(value)
    except RuntimeError as err:
        raise ValueError(f"{name} {value!r} is not a device name; available here: {available_devices()}") from err
    if device.type in ("cpu", "meta"):
        return device
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0 or (device.index is not None and device.index >= count):
            raise ValueError(
                f"{name} {str(device)!r} is not available: this machine has {count} CUDA devices; "
                f"available here: {available_devices()}"
            )
        return device
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as err:  # torch raises AssertionError for a backend it was built without
        raise ValueError(
            f"{name} {str(device)!r} is not available on this machine; available here: {available_devices()}"
        ) from err
    return device


def check_generator(value: object, name: str = "generator") -> torch.Generator | None:
    """Return ``value`` if it is a ``torch.Generator`` or None, else raise ``TypeError`` naming ``name``."""
    if value is not None and not isinstance(value, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {type(value).__name__} {value!r}")
    return value


def check_finite_float(value: object, name: str) -> float:
    """Return ``value`` as a finite float, or raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a finite float, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite float, got {value}")
    return value


def check_same_device_dtype(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    """Raise ``ValueError`` naming both tensors and both dtypes or devices unless ``b`` has the dtype and the
    device of ``a``."""
    if a.dtype != b.dtype:
        raise ValueError(
            f"{name_b} must have the dtype of {name_a} ({a.dtype}), got {b.dtype} "
            f"({name_a}: {a.dtype}, {name_b}: {b.dtype})"
        )
    if a.device != b.device:
        raise ValueError(
            f"{name_b} must be on the device of {name_a} ({a.device}), got {b.device} "
            f"({name_a}: {a.device}, {name_b}: {b.device})"
        )


def check_matches_parameters(
    x: torch.Tensor, name: str, model: torch.nn.Module, *, trainable_only: bool = True
) -> None:
    """Raise ``ValueError`` naming ``name`` and both dtypes and devices unless ``x`` is on the device of every
    parameter of ``model`` (every trainable one with ``trainable_only``) and, when ``x`` is floating-point (not
    token ids), has its dtype."""
    for p in model.parameters():
        if trainable_only and not p.requires_grad:
            continue
        if p.device != x.device or (x.is_floating_point() and p.dtype != x.dtype):
            raise ValueError(
                f"{name} must match the model's parameters ({p.dtype} on {p.device}), "
                f"got {x.dtype} on {x.device} ({name}: {x.dtype} on {x.device}, "
                f"parameters: {p.dtype} on {p.device})"
            )


def check_same_rows(x1: torch.Tensor, x2: torch.Tensor) -> None:
    """Raise ``ValueError`` naming both unless ``x2`` has the row shape, dtype and device of ``x1``."""
    if x2.shape[1:] != x1.shape[1:]:
        raise ValueError(f"x2 must have x1's row shape {tuple(x1.shape[1:])}, got {tuple(x2.shape[1:])}")
    check_same_device_dtype(x1, x2, "x1", "x2")


def check_finite_result(t: torch.Tensor, what: str) -> torch.Tensor:
    """Raise ``FloatingPointError`` if a computed tensor holds NaN or inf (never return it silently)."""
    # One reduction first: a NaN or inf entry makes the sum NaN or inf; only then (or if a finite sum
    # overflows) is every entry examined.
    if not bool(torch.isfinite(t.sum())) and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise FloatingPointError(f"{what} produced {bad} non-finite entries (overflow or NaN in the model)")
    return t


def check_seed(value: object, name: str = "seed", *, maximum: int = 2**64 - 1) -> int:
    """Return ``value`` as an int seed in [0, maximum] (torch's ``manual_seed`` takes up to 2**64 - 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int in [0, {maximum}], got {type(value).__name__} {value!r}")
    if not 0 <= int(value) <= maximum:
        raise ValueError(f"{name} must be an int in [0, {maximum}], got {value}")
    return int(value)


def check_batch(x: object, name: str) -> torch.Tensor:
    """Check a batch (N, ...) of N >= 1 model inputs: finite floats of any row shape, or integer ids."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, ...), got {type(x).__name__}")
    if x.is_meta:
        raise ValueError(f"{name} is on the meta device: it holds no values (move it to a real device first)")
    if x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"{name} must be a floating-point or integer tensor, got dtype {x.dtype}")
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, ...) with N >= 1 rows, got shape {tuple(x.shape)}")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite entries")
    return x


def check_kernel_tensor(x: object, name: str, ndims: tuple[int, ...], shape_doc: str) -> torch.Tensor:
    """``x`` as a dense, finite, non-empty float32/float64 tensor of one of ``ndims`` dimensions (kernels, targets,
    outputs)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {shape_doc}, got {type(x).__name__}")
    if x.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {x.layout}")
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(
            f"{name} must have dtype torch.float32 or torch.float64 (the dtypes the solvers support), got {x.dtype}"
        )
    if x.is_meta:
        raise ValueError(f"{name} is on the meta device: it holds no values (move it to a real device first)")
    if x.ndim not in ndims:
        raise ValueError(f"{name} must have shape {shape_doc}, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains {int((~torch.isfinite(x)).sum())} NaN or infinite entries")
    return x


def check_bool(value: object, name: str) -> bool:
    """Return ``value`` if it is a bool, else raise ``TypeError`` naming ``name``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def check_optional_callable(value: object, name: str) -> Callable[..., Any] | None:
    """Return ``value`` if it is callable or None, else raise ``TypeError`` naming ``name``."""
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, got {type(value).__name__}")
    return value


def check_module(value: object, name: str = "model") -> torch.nn.Module:
    """Return ``value`` if it is a ``torch.nn.Module``, else raise ``TypeError`` naming ``name``."""
    if not isinstance(value, torch.nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(value).__name__}")
    return value


def check_same_device(a: torch.Tensor, b: object, name_a: str, name_b: str) -> None:
    """``ValueError`` naming both when ``b`` is a tensor on another device than ``a`` (checked before anything
    else about ``b``, so that a tensor on the meta device is reported as a device mismatch)."""
    if isinstance(b, torch.Tensor) and a.device != b.device:
        raise ValueError(
            f"{name_b} must be on the device of {name_a} ({a.device}), got {b.device} "
            f"({name_a}: {a.device}, {name_b}: {b.device})"
        )
