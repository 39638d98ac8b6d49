"""The exact empirical NTK, Theta(x, x') = sum_p d f(x)/d theta_p  d f(x')/d theta_p^T.

Seed 000 §3.2 writes it ``k(x, x') = grad_theta h(x, theta_0)^T grad_theta h(x', theta_0)``;
§12 splits it into per-layer kernels (one per parameter tensor), which
``per_layer=True`` returns.  Three exact methods compute the same numbers:

* ``"layerwise"`` — per-layer rules, no Jacobian (:mod:`ntkcheck.kernels._engine`,
  :mod:`ntkcheck.kernels._rules`; a plain stack of linear layers takes the fused path of
  :mod:`ntkcheck.kernels._layerwise`): every trainable parameter must be served by a rule.
* ``"jacobian"`` — torch.func ``vmap(jacrev)`` + contraction, any module.
* ``"ntvp"`` — NTK-vector products (``vjp`` then ``jvp``), any module.

``"auto"`` uses the rules and serves the parameters no rule covers by per-sample
torch.func gradients of just those parameters.  Only parameters with
``requires_grad=True`` count: freezing all but the last layer gives the last-layer
kernel Psi of seed 001 Thm 1.  The kernel is the per-sample one (each row's output
depends on that row alone); models that couple the rows of a batch are refused.

The probes (a forward pass of the first rows, the coupling check, the rules' check
against autograd) run once per model state: their verdicts are kept, per model, for
the next call with the same method, output mode, ``output_fn``, input row shapes and
dtypes, and the same parameters, buffers (their in-place version counters) and
train/eval modes.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, overload

import torch
from torch import nn

from ntkcheck._support.validation import (
    check_batch,
    check_bool,
    check_choice,
    check_finite_result,
    check_matches_parameters,
    check_optional_callable,
    check_same_rows,
)
from ntkcheck.kernels import _autodiff, _layerwise
from ntkcheck.kernels._engine import Engine
from ntkcheck.kernels._features import row_bytes
from ntkcheck.kernels._model_rows import (
    check_independent_rows,
    check_model,
    forward_rows,
    output_rows,
    run_on_rows,
    usable,
)
from ntkcheck.kernels._piece import Piece
from ntkcheck.kernels._rules import register_rule
from ntkcheck.kernels._tiling import default_budget, tiled_kernel

__all__ = ["METHODS", "OUTPUTS", "Piece", "ntk", "register_rule"]

METHODS = ("auto", "layerwise", "jacobian", "ntvp")
OUTPUTS = ("full", "trace", "sum")


@dataclass
class _Verdict:
    """What the probes found for one model state: output count and, for the rules, the parameters
    torch.func serves and the bytes per row / per pair of the features."""

    n_out: int
    uncovered: dict[str, str] | None = None
    sizes: tuple[int, int] | None = None


_VERDICTS: weakref.WeakKeyDictionary[nn.Module, dict[tuple[Any, ...], _Verdict]] = weakref.WeakKeyDictionary()
KEPT_VERDICTS = 8
"""Verdicts kept per model (the most recent ones)."""


def _state_key(
    model: nn.Module, x1: torch.Tensor, x2: torch.Tensor, symmetric: bool, method: str, output: str, output_fn: Any
) -> tuple[Any, ...]:
    """Everything the probes' verdicts depend on, short of the parameter values themselves."""
    rows = tuple((tuple(x.shape[1:]), x.dtype, x.device) for x in (x1, x2))
    params = tuple((id(p), p._version, p.requires_grad, p.dtype) for p in model.parameters())
    buffers = tuple((id(b), b._version) for b in model.buffers())
    modes = tuple(m.training for m in model.modules())
    sizes = (min(x1.shape[0], 3), _block(x1, x2))
    return (method, output, output_fn, symmetric, sizes, rows, params, buffers, modes)


def _block(x1: torch.Tensor, x2: torch.Tensor) -> int:
    """Rows per block the rules' cost model assumes."""
    return min(max(x1.shape[0], x2.shape[0]), 256)


@overload
def ntk(
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    method: str = ...,
    per_layer: Literal[False] = ...,
    memory_budget: int | None = ...,
    output: str = ...,
    output_fn: Callable[[Any], torch.Tensor] | None = ...,
) -> torch.Tensor: ...


@overload
def ntk(
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    method: str = ...,
    per_layer: Literal[True],
    memory_budget: int | None = ...,
    output: str = ...,
    output_fn: Callable[[Any], torch.Tensor] | None = ...,
) -> dict[str, torch.Tensor]: ...


@overload
def ntk(
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    method: str = ...,
    per_layer: bool,
    memory_budget: int | None = ...,
    output: str = ...,
    output_fn: Callable[[Any], torch.Tensor] | None = ...,
) -> torch.Tensor | dict[str, torch.Tensor]: ...


def ntk(
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    method: str = "auto",
    per_layer: bool = False,
    memory_budget: int | None = None,
    output: str = "full",
    output_fn: Callable[[Any], torch.Tensor] | None = None,
) -> torch.Tensor | dict[str, torch.Tensor]:
    """Exact empirical NTK of ``model`` between the rows of ``x1`` and ``x2``.

    Args:
        model: any ``nn.Module`` mapping a batch (N, ...) to outputs (N, ...) whose rows
            depend on their input row alone (checked on a probe of a few rows).
        x1: inputs (N1, ...): floating-point, or integer token ids (only parameters are
            differentiated); x2: inputs (N2, ...) of the same trailing shape, default ``x1``.
        method: ``"auto"`` (layer rules, torch.func for parameters no rule serves),
            ``"layerwise"`` (layer rules only), ``"jacobian"`` or ``"ntvp"``.
        per_layer: return ``{parameter name: kernel}`` (names of
            ``model.named_parameters()``), whose values sum to the total.
        memory_budget: bytes the call may use, result included; default half
            the device's free memory.  Rows are processed in blocks to stay
            under it; a kernel that cannot fit raises
            :class:`ntkcheck.KernelMemoryError` with the size it needs.
        output: ``"full"``: every pair of the O outputs, (N1, N2, O, O); ``"trace"``:
            ``sum_o Theta_oo``, (N1, N2); ``"sum"``: the kernel of ``sum_o f_o / sqrt(O)``,
            (N1, N2), one backward pass.  A scalar output (N,) or (N, 1) gives (N1, N2).
        output_fn: maps the model's output (a dict, a dataclass, a tuple) to a tensor
            (N, ...); trailing dimensions are flattened into the O outputs.

    Returns:
        The kernel in the model's dtype and x1's device, or a dict of such tensors with
        ``per_layer=True``.  Works under ``torch.no_grad()`` and ``torch.inference_mode()``.
    """
    check_model(model)
    x1, x2, symmetric = _check_arguments(model, x1, x2, method, output, per_layer, output_fn)
    budget = default_budget(x1.device) if memory_budget is None else _check_budget(memory_budget)
    with torch.inference_mode(False), torch.enable_grad():
        x1, x2 = usable(x1), usable(x2)
        key = _state_key(model, x1, x2, symmetric, method, output, output_fn)
        kept = _VERDICTS.setdefault(model, {})
        verdict = kept.get(key) or _probe(model, x1, x2, symmetric, output_fn)
        kernels = _compute(model, x1, x2, method, per_layer, verdict, budget, symmetric, output, output_fn)
        kept.pop(key, None)
        kept[key] = verdict
        while len(kept) > KEPT_VERDICTS:
            del kept[next(iter(kept))]
    for name, k in kernels.items():
        check_finite_result(k, f"ntk(method={method!r}) for {name}")
    return kernels if per_layer else kernels["total"]


def _check_arguments(
    model: nn.Module, x1: object, x2: object, method: object, output: object, per_layer: object, output_fn: object
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """The checked ``(x1, x2, symmetric)`` of :func:`ntk` (``x2`` is ``x1`` when not given)."""
    check_choice(method, "method", METHODS)
    check_choice(output, "output", OUTPUTS)
    check_bool(per_layer, "per_layer")
    check_optional_callable(output_fn, "output_fn")
    if isinstance(x1, torch.Tensor):  # a device or dtype mismatch is named before any other property of x1
        check_matches_parameters(x1, "x1", model)
    x1 = check_batch(x1, "x1")
    if x2 is None:
        checked2 = x1
    else:
        checked2 = check_batch(x2, "x2")
        check_same_rows(x1, checked2)
    return x1, checked2, x2 is None


def _check_budget(memory_budget: object) -> int:
    if isinstance(memory_budget, bool) or not isinstance(memory_budget, int) or memory_budget <= 0:
        raise ValueError(f"memory_budget must be a positive int (bytes), got {memory_budget!r}")
    return memory_budget


def _probe(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor, symmetric: bool, output_fn: Any) -> _Verdict:
    """A fresh verdict: the output count, from the first rows, after checking that rows are independent."""
    n_out = run_on_rows(model, x1[:2], "x1", output_fn).shape[1]
    if not symmetric:
        run_on_rows(model, x2[:2], "x2", output_fn)
    probe = torch.cat([x1[:3], x2[: max(0, 3 - x1.shape[0])]]) if not symmetric else x1[:3]
    if probe.shape[0] > 1:
        check_independent_rows(model, probe, output_fn)
    return _Verdict(n_out)


def _reduce(k: torch.Tensor, output: str, n_out: int) -> torch.Tensor:
    """(N1, N2, O', O') -> the requested output mode ((N1, N2) for one output or a reduced mode)."""
    if k.shape[2] == 1:
        return k[:, :, 0, 0]
    if output == "trace":
        return k.diagonal(dim1=2, dim2=3).sum(-1)
    if output == "sum":
        return k.sum((2, 3)) / n_out
    return k


def _compute(
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor,
    method: str,
    per_layer: bool,
    verdict: _Verdict,
    budget: int,
    symmetric: bool,
    output: str,
    output_fn: Any,
) -> dict[str, torch.Tensor]:
    n_out = verdict.n_out
    dtype = next(p for p in model.parameters() if p.requires_grad).dtype
    itemsize = torch.empty((), dtype=dtype).element_size()
    names = [n for n, p in model.named_parameters() if p.requires_grad] if per_layer else ["total"]
    if method in ("auto", "layerwise") and output == "full" and output_fn is None and x1.is_floating_point():
        try:
            layers = _layerwise.linear_layers(model)
        except _layerwise.LayerwiseUnsupportedError:
            layers = None
        if layers is not None:
            names = _layerwise.parameter_names(layers) if per_layer else ["total"]
            kernels = tiled_kernel(
                x1,
                x2,
                features1=partial(_layerwise.layer_features, model, layers),
                features2=partial(_layerwise.layer_features, model, layers),
                tile=partial(_layerwise.layer_tiles, per_layer=per_layer, n_out=n_out),
                names=names,
                out_dim=n_out,
                row_bytes=_layerwise.row_bytes(layers, n_out, itemsize),
                tile_bytes_per_pair=itemsize * (n_out * n_out * (2 + len(names)) + 1),
                budget=budget,
                what=f"ntk(method={method!r})",
                symmetric=symmetric,
            )
            return {n: _reduce(k, output, n_out) for n, k in kernels.items()}
    forward = partial(forward_rows, output_fn=output_fn)
    if method in ("auto", "layerwise"):
        engine = Engine(model, forward, n_out, sum_outputs=output == "sum", block=_block(x1, x2))
        if verdict.uncovered is None:
            engine.prepare(x1[:2])
        else:
            engine.uncovered.update(verdict.uncovered)
        if method == "layerwise" and engine.uncovered:
            why = "; ".join(f"{n}: {w}" for n, w in engine.uncovered.items())
            raise _layerwise.LayerwiseUnsupportedError(
                f"method='layerwise' needs a layer rule for every trainable parameter, but not for {why}; use "
                "method='auto' (torch.func for those parameters), or ntkcheck.register_rule for the layer type"
            )
        if verdict.uncovered is None:
            verdict.uncovered = dict(engine.uncovered)
            verdict.sizes = row_bytes(engine.features(x1[:1]))
        feats, pair = verdict.sizes  # type: ignore[misc]
        out_dim = 1 if output in ("trace", "sum") else n_out
        kernels = tiled_kernel(
            x1,
            x2,
            features1=engine.features,
            features2=engine.features,
            tile=partial(engine.tiles, names=names, trace=output == "trace", per_layer=per_layer),
            names=names,
            out_dim=out_dim,
            row_bytes=3 * feats,
            budget=budget,
            tile_bytes_per_pair=pair + itemsize * (out_dim * out_dim * (2 + len(names)) + 1),
            what=f"ntk(method={method!r})",
            symmetric=symmetric,
            dtype=dtype,
        )
        return {n: _reduce(k, output, n_out) for n, k in kernels.items()}
    fm = _autodiff.FunctionalModel(model, partial(output_rows, output_fn=output_fn))
    # the per-sample Jacobian (and jacrev's intermediates) dominate a row's memory
    row = 3 * n_out * fm.n_params() * itemsize
    if method == "jacobian":
        feats_fn = partial(_autodiff.jacobian_features, fm)
        tile = partial(_autodiff.jacobian_tiles, per_layer=per_layer)
    else:
        feats_fn = partial(_autodiff.vjp_features, fm)
        tile = partial(_autodiff.ntvp_tiles, fm, per_layer=per_layer)
    kernels = tiled_kernel(
        x1,
        x2,
        features1=(lambda xb: xb) if method == "ntvp" else feats_fn,
        features2=feats_fn,
        tile=tile,
        names=names,
        out_dim=n_out,
        row_bytes=row,
        tile_bytes_per_pair=itemsize * (n_out * n_out * (2 + len(names)) + 1),
        budget=budget,
        what=f"ntk(method={method!r})",
        symmetric=symmetric and method != "ntvp",
        dtype=dtype,
    )
    return {n: _reduce(k, output, n_out) for n, k in kernels.items()}
