"""A model's outputs as the rows of a kernel: one row of outputs per input row, checked on probe rows.

Every empirical kernel differentiates the (N, O) matrix of a model's outputs (:func:`output_rows`); a model
whose output row depends on other rows of the batch has no per-sample kernel, which
:func:`check_independent_rows` detects on a few probe rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ntkcheck._support.validation import check_module

COUPLING_TOL = {torch.float64: 1e-9, torch.float32: 1e-4}
"""How far (relative to the outputs' scale) a row run alone may differ from the same row in a batch."""


def check_model(model: object) -> nn.Module:
    """``model`` if it is an ``nn.Module`` with trainable parameters, else raise naming it."""
    module = check_module(model, "model")
    if not any(p.requires_grad for p in module.parameters()):
        raise ValueError("model has no trainable parameters: its NTK is zero by definition")
    return module


def output_rows(out: Any, n: int, output_fn: Callable[[Any], torch.Tensor] | None) -> torch.Tensor:
    """The model's output as the (n, O) matrix of its n rows' outputs; refuse outputs without n rows."""
    if output_fn is not None:
        out = output_fn(out)
    if not isinstance(out, torch.Tensor):
        hint = "output_fn must return" if output_fn is not None else "pass output_fn= mapping it to"
        raise TypeError(f"the model's output is a {type(out).__name__}, not a tensor: {hint} a tensor (N, ...)")
    if out.ndim == 0:
        raise ValueError(
            "the model's output is a 0-d scalar (one number for the whole batch): the NTK needs "
            f"one output row per input row, shape (N,) or (N, ...) with N = {n}"
        )
    if out.shape[0] != n:
        raise ValueError(f"the model's output must have one row per input row (N = {n}), got shape {tuple(out.shape)}")
    return out.reshape(n, -1)


def forward_rows(call: Callable[[torch.Tensor], Any], x: torch.Tensor, *, output_fn: Any) -> torch.Tensor:
    return output_rows(call(x), x.shape[0], output_fn)


def run_on_rows(model: nn.Module, x: torch.Tensor, name: str, output_fn: Any) -> torch.Tensor:
    """The model on probe rows of ``name``; a failure inside the model names the argument."""
    try:
        out = model(x)
    except Exception as err:  # the model's own complaint, whatever its type
        training_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules())
        hint = "; BatchNorm in training mode couples the rows of a batch: call model.eval()" if training_bn else ""
        raise ValueError(
            f"{name} (rows of shape {tuple(x.shape[1:])}, {x.dtype}) does not fit the model: "
            f"running it on {x.shape[0]} row(s) raised {type(err).__name__}: {err}{hint}"
        ) from err
    return output_rows(out, x.shape[0], output_fn)


def check_independent_rows(model: nn.Module, xp: torch.Tensor, output_fn: Any) -> None:
    """Refuse a model whose output row n depends on other rows of the batch (checked on probe rows)."""
    together = run_on_rows(model, xp, "x1", output_fn).detach()
    if not bool(torch.isfinite(together).all()):
        return  # overflow: the kernel's own finiteness check reports it
    scale = float(together.abs().max())
    tol = COUPLING_TOL.get(together.dtype, 1e-2)
    for i in range(xp.shape[0]):
        why = None
        try:
            raw = model(xp[i : i + 1])
        except Exception as err:  # a model that cannot run one row alone couples rows
            why = f"running row {i} alone raised {type(err).__name__}: {err}"
        else:
            gap = float((output_rows(raw, 1, output_fn).detach()[0] - together[i]).abs().max())
            if not gap <= tol * max(scale, 1.0):
                why = f"row {i} of a {xp.shape[0]}-row batch differs from the same row run alone by {gap:.3g}"
        if why:
            raise ValueError(
                f"model couples the rows of a batch ({why}): its output for one input depends on the other "
                "inputs, so it has no per-sample NTK. Typical causes: BatchNorm in training mode or dropout "
                "(call model.eval()), or a statistic over the batch dimension (e.g. a mean over dim 0; compute "
                "it per row). method='jacobian' would not give the per-sample kernel either: it differentiates "
                "each row alone"
            )


def usable(x: torch.Tensor) -> torch.Tensor:
    """``x`` outside inference mode (inference tensors cannot enter an autograd graph)."""
    return x.clone() if x.is_inference() else x
