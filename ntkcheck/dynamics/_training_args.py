"""The arguments of :func:`ntkcheck.dynamics.training.train` and :func:`ntkcheck.dynamics.curvature.sharpness`:
model, data, loss and optimizer, checked."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ntkcheck._support.validation import check_inputs, check_same_device_dtype
from ntkcheck.dynamics._model_checks import _in_features

OPTIMIZERS = ("gd", "sgd", "adam")

LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""Any loss ``loss(h, y) -> 0-dim tensor`` (e.g. an instance of :class:`ntkcheck.dynamics.losses.Loss`)."""


def _trainable(model: object) -> list[nn.Parameter]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters (requires_grad=True): nothing to train")
    return params


def _data(
    model: nn.Module, ref: torch.Tensor, x: object, y: object, xname: str, yname: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check (x, y) against the model and its parameters ``ref``: the dtype of floating data and the device of
    both must be the parameters' (``ValueError`` naming both otherwise; nothing is moved)."""
    check_inputs(x, xname, features=_in_features(model))
    assert isinstance(x, torch.Tensor)
    check_same_device_dtype(ref, x, "the model's parameters", xname)
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{yname} must be a torch.Tensor, got {type(y).__name__}")
    if y.ndim == 0 or y.shape[0] != x.shape[0]:
        raise ValueError(f"{yname} must have one row per row of {xname} ({x.shape[0]}), got shape {tuple(y.shape)}")
    if y.is_complex():
        raise TypeError(f"{yname} must be a real tensor, got {y.dtype}")
    if y.is_floating_point():
        check_same_device_dtype(ref, y, "the model's parameters", yname)
        if not bool(torch.isfinite(y).all()):
            raise ValueError(f"{yname} contains {int((~torch.isfinite(y)).sum())} NaN or infinite entries")
    elif y.device != ref.device:
        raise ValueError(
            f"{yname} must be on the device of the model's parameters ({ref.device}), got {y.device} "
            f"(the model's parameters: {ref.device}, {yname}: {y.device})"
        )
    return x, y


def _aligned(out: torch.Tensor, y: torch.Tensor, yname: str) -> torch.Tensor:
    """The outputs in the shape the loss sees: ``y``'s shape for floating targets, raw otherwise."""
    if not y.is_floating_point():
        return out
    if out.numel() != y.numel():
        raise ValueError(
            f"{yname} has shape {tuple(y.shape)} but the model's outputs have shape {tuple(out.shape)}: "
            f"{yname} needs {out.numel()} entries, one per output"
        )
    return out.reshape(y.shape)


def _check_real(value: object, name: str, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a finite float, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value) or (positive and value <= 0) or (not positive and value < 0):
        raise ValueError(f"{name} must be a finite float {'> 0' if positive else '>= 0'}, got {value}")
    return value


def _loss_value(loss: LossFunction, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    value = loss(h, y)
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        raise TypeError(
            f"loss must return a scalar (0-dim) tensor, got "
            f"{type(value).__name__}"
            f"{'' if not isinstance(value, torch.Tensor) else ' of shape ' + str(tuple(value.shape))}"
        )
    return value.reshape(())


def _make_optimizer(
    optimizer: object, lr: float | None, params: list[nn.Parameter], model: nn.Module
) -> tuple[torch.optim.Optimizer, str, float | None]:
    """(optimizer, kind, lr of plain SGD or None)."""
    if isinstance(optimizer, torch.optim.Optimizer):
        if lr is not None:
            raise ValueError("lr must be None when optimizer is an Optimizer instance (its param groups carry lr)")
        if isinstance(optimizer, torch.optim.LBFGS):
            raise TypeError("optimizer LBFGS needs a closure and is not supported by train()")
        owned = {id(p) for p in model.parameters()}
        stray = sum(1 for g in optimizer.param_groups for p in g["params"] if id(p) not in owned)
        if stray:
            raise ValueError(
                f"optimizer holds {stray} tensors that are not parameters of model (built for another module?)"
            )
        plain = type(optimizer) is torch.optim.SGD and all(
            g.get("momentum", 0) == 0 and g.get("weight_decay", 0) == 0 for g in optimizer.param_groups
        )
        lr_plain = max(float(g["lr"]) for g in optimizer.param_groups) if plain else None
        return optimizer, "instance", lr_plain
    if not isinstance(optimizer, str):
        raise TypeError(
            f"optimizer must be one of {list(OPTIMIZERS)} or a torch.optim.Optimizer instance (built on "
            f"the model's parameters), got {type(optimizer).__name__} {optimizer!r}"
        )
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)} or a torch.optim.Optimizer, got {optimizer!r}")
    if lr is None:
        raise TypeError(f"lr is required with optimizer={optimizer!r}")
    lr = _check_real(lr, "lr", positive=True)
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr), optimizer, None
    return torch.optim.SGD(params, lr=lr, momentum=0.0), optimizer, lr
