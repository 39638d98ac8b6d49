"""The exact empirical NTK, Theta(x, x') = sum_p d f(x)/d theta_p  d f(x')/d theta_p^T.

Seed 000 §3.2 writes it ``k(x, x') = grad_theta h(x, theta_0)^T grad_theta h(x', theta_0)``;
§12 splits it into per-layer kernels (one per parameter tensor), which
``per_layer=True`` returns.  Three exact methods compute the same numbers:

* ``"layerwise"`` — per-layer Gram products, no Jacobian (:mod:`ntkcheck._layerwise`);
  fast and memory-lean, for modules whose trainable parameters all sit in linear
  layers with independent batch rows.
* ``"jacobian"`` — torch.func ``vmap(jacrev)`` + contraction, any module.
* ``"ntvp"`` — NTK-vector products (``vjp`` then ``jvp``), any module.

Only parameters with ``requires_grad=True`` count: freezing all but the last
layer gives the last-layer kernel Psi of seed 001 Thm 1.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from ntkcheck import _autodiff, _layerwise
from ntkcheck._tiling import default_budget, tiled_kernel
from ntkcheck._validation import check_choice, check_finite_result, check_inputs, check_same_device_dtype

METHODS = ("auto", "layerwise", "jacobian", "ntvp")


def _in_features(model: nn.Module) -> int | None:
    for m in model.modules():
        if hasattr(m, "in_features") and isinstance(m.in_features, int):
            return m.in_features
    return None


def ntk(
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    method: str = "auto",
    per_layer: bool = False,
    memory_budget: int | None = None,
) -> torch.Tensor | dict[str, torch.Tensor]:
    """Exact empirical NTK of ``model`` between the rows of ``x1`` and ``x2``.

    Args:
        model: any ``nn.Module`` mapping (N, d) to (N, O) or (N,).
        x1: inputs (N1, d); x2: inputs (N2, d), default ``x1``.
        method: ``"auto"`` (layerwise where it applies, else jacobian),
            ``"layerwise"``, ``"jacobian"`` or ``"ntvp"``.
        per_layer: return ``{parameter name: kernel}`` (names of
            ``model.named_parameters()``), whose values sum to the total.
        memory_budget: bytes the call may use, result included; default half
            the device's free memory.  Rows are processed in blocks to stay
            under it; a kernel that cannot fit raises
            :class:`ntkcheck.KernelMemoryError` with the size it needs.

    Returns:
        (N1, N2) for a scalar output, (N1, N2, O, O) for O outputs, in x1's
        dtype and device; or a dict of such tensors with ``per_layer=True``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_choice(method, "method", METHODS)
    if not isinstance(per_layer, bool):
        raise TypeError(f"per_layer must be a bool, got {type(per_layer).__name__}")
    features = _in_features(model)
    check_inputs(x1, "x1", features=features)
    symmetric = x2 is None
    if x2 is None:
        x2 = x1
    else:
        check_inputs(x2, "x2", features=x1.shape[1])
        check_same_device_dtype(x1, x2, "x1", "x2")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters: its NTK is zero by definition")
    for p in params:
        if p.dtype != x1.dtype or p.device != x1.device:
            raise TypeError(
                f"x1 must match the model's parameters ({p.dtype} on {p.device}), got {x1.dtype} on {x1.device}"
            )
    if memory_budget is None:
        memory_budget = default_budget(x1.device)
    elif isinstance(memory_budget, bool) or not isinstance(memory_budget, int) or memory_budget <= 0:
        raise ValueError(f"memory_budget must be a positive int (bytes), got {memory_budget!r}")

    if method == "auto":
        try:
            _layerwise.linear_layers(model)
            method = "layerwise"
        except _layerwise.LayerwiseUnsupportedError:
            method = "jacobian"
    with torch.no_grad():
        n_out = model(x1[:1]).reshape(1, -1).shape[1]
    kernels = _compute(model, x1, x2, method, per_layer, n_out, memory_budget, symmetric)
    for name, k in kernels.items():
        check_finite_result(k, f"ntk(method={method!r}) for {name}")
    if n_out == 1:
        kernels = {name: k[:, :, 0, 0] for name, k in kernels.items()}
    return kernels if per_layer else kernels["total"]


def _compute(
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor,
    method: str,
    per_layer: bool,
    n_out: int,
    budget: int,
    symmetric: bool,
) -> dict[str, torch.Tensor]:
    itemsize = x1.element_size()
    if method == "layerwise":
        layers = _layerwise.linear_layers(model)
        names = _layerwise.parameter_names(layers) if per_layer else ["total"]
        feats = partial(_layerwise.layer_features, model, layers)
        tile = partial(_layerwise.layer_tiles, per_layer=per_layer, n_out=n_out)
        row = _layerwise.row_bytes(layers, n_out, itemsize)
    else:
        fm = _autodiff.FunctionalModel(model)
        names = list(fm.params) if per_layer else ["total"]
        # the per-sample Jacobian (and jacrev's intermediates) dominate a row's memory
        row = 3 * n_out * fm.n_params() * itemsize
        if method == "jacobian":
            feats = partial(_autodiff.jacobian_features, fm)
            tile = partial(_autodiff.jacobian_tiles, per_layer=per_layer)
        else:
            feats = partial(_autodiff.vjp_features, fm)
            tile = lambda xb, cols: _autodiff.ntvp_tiles(fm, xb, cols, per_layer=per_layer)  # noqa: E731
    scratch = itemsize * (n_out * n_out * (2 + len(names)) + 1)
    return tiled_kernel(
        x1,
        x2,
        features1=(lambda xb: xb) if method == "ntvp" else feats,
        features2=feats,
        tile=tile,
        names=names,
        out_dim=n_out,
        row_bytes=row,
        tile_bytes_per_pair=scratch,
        budget=budget,
        what=f"ntk(method={method!r})",
        symmetric=symmetric and method != "ntvp",
    )
