"""Models and data as :mod:`ntkcheck.dynamics.linearization` takes them, checked: trainable floating parameters,
batches the model runs on, targets matching its outputs."""

from __future__ import annotations

import torch
from torch import nn

from ntkcheck._support.validation import check_batch, check_inputs, check_same_device_dtype


def _in_features(model: nn.Module) -> int | None:
    """The ``in_features`` of the model's first layer that has one (None if none has)."""
    for m in model.modules():
        if hasattr(m, "in_features") and isinstance(m.in_features, int):
            return m.in_features
    return None


def _check_model(model: object, name: str = "model") -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(model).__name__}")
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise ValueError(f"{name} has no trainable parameters (requires_grad=True): nothing to linearize")
    bad = [n for n, p in trainable if not p.is_floating_point()]
    if bad:
        raise TypeError(f"{name} has non-floating-point trainable parameters {bad}")
    return model


def _check_x(model: nn.Module, x: object, name: str) -> torch.Tensor:
    """A batch (N, ...) the model runs on (checked on two rows), floats of its dtype or integer ids."""
    x = check_batch(x, name)
    p = next(p for p in model.parameters() if p.requires_grad)
    if x.is_floating_point():
        check_same_device_dtype(p, x, "the model's parameters", name)
    elif x.device != p.device:
        raise ValueError(
            f"{name} must be on the device of the model's parameters ({p.device}), got {x.device} "
            f"(the model's parameters: {p.device}, {name}: {x.device})"
        )
    try:
        with torch.no_grad():
            model(x[:2])
    except Exception as err:  # the model's own complaint, whatever its type
        features = _in_features(model)
        if x.is_floating_point() and features is not None:  # the specific message, if the model takes (N, features)
            try:
                with torch.no_grad():
                    model(x.new_zeros(1, features))
            except Exception:
                features = None
        if features is not None:
            check_inputs(x, name, features=features)
        raise ValueError(
            f"{name} (rows of shape {tuple(x.shape[1:])}, {x.dtype}) does not fit the model: "
            f"running it on {min(2, x.shape[0])} row(s) raised {type(err).__name__}: {err}"
        ) from err
    return x


def _align_targets(out: torch.Tensor, y: object, name: str, x: torch.Tensor) -> torch.Tensor:
    """``y`` as a flat, sample-major vector matching ``out`` (N, O); raise naming ``name``."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(y).__name__}")
    # targets carry the model's float dtype; integer token ids as x_train have none to match
    ref, ref_name = (x, "x_train") if x.is_floating_point() else (out, "model(x_train)")
    check_same_device_dtype(ref, y, ref_name, name)
    n = out.shape[0]
    if y.ndim == 0 or y.shape[0] != n or y.numel() != out.numel():
        raise ValueError(
            f"{name} must have shape ({n},) or {tuple(out.shape)} to match the model's outputs, got {tuple(y.shape)}"
        )
    if not bool(torch.isfinite(y).all()):
        raise ValueError(f"{name} contains {int((~torch.isfinite(y)).sum())} NaN or infinite entries")
    return y.reshape(-1)
