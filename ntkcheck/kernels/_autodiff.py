"""Empirical NTK of arbitrary modules through torch.func.

* ``jacobian``: per-sample Jacobians by ``vmap(jacrev)`` (the torch.func recipe),
  contracted parameter by parameter: Theta = sum_p J_p(x1) J_p(x2)^T.
* ``ntvp``: NTK-vector products, no Jacobian of x1 formed: for each basis
  cotangent e (an (x2-row, output) pair), ``vjp`` gives J(x2)^T e and ``jvp`` at
  x1 along it gives J(x1) J(x2)^T e, one kernel column per e.
Both treat a row block of inputs at a time (see :mod:`ntkcheck.kernels._tiling`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap


class FunctionalModel:
    """``model`` as a function of (its trainable parameters, a batch of inputs) -> (B, O).

    ``rows``: maps the model's output and the batch size to the (B, O) matrix of outputs
    (default: ``out.reshape(B, -1)``).
    """

    def __init__(self, model: nn.Module, rows: Callable[[Any, int], torch.Tensor] | None = None) -> None:
        self.model = model
        self.rows = rows if rows is not None else (lambda out, n: out.reshape(n, -1))
        self.params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
        self.frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
        self.buffers = dict(model.named_buffers())

    def __call__(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        out = functional_call(self.model, {**params, **self.frozen, **self.buffers}, (x,))
        return self.rows(out, x.shape[0])

    def n_params(self) -> int:
        return sum(p.numel() for p in self.params.values())


def jacobian_features(fm: FunctionalModel, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample Jacobians ``name -> (B, O, numel)`` of a row block (torch.func recipe)."""

    def single(params: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
        return fm(params, xi.unsqueeze(0)).squeeze(0)

    jac = vmap(jacrev(single), (None, 0))(fm.params, x)
    return {n: j.flatten(2) for n, j in jac.items()}


def jacobian_tiles(
    j1: dict[str, torch.Tensor], j2: dict[str, torch.Tensor], *, per_layer: bool
) -> dict[str, torch.Tensor]:
    """Contract two Jacobian blocks: ``name -> (B1, B2, O, O)`` or their sum as ``"total"``."""
    tiles: dict[str, torch.Tensor] = {}
    total: torch.Tensor | None = None
    for name, a in j1.items():
        b = j2[name]
        t = torch.einsum("aop,bqp->aboq", a, b)
        if per_layer:
            tiles[name] = t
        else:
            total = t if total is None else total.add_(t)
    if total is not None:
        tiles["total"] = total
    return tiles


def vjp_features(fm: FunctionalModel, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """J(x)^T e for every basis cotangent e of the block: ``name -> (O * B, *param_shape)``, output-major."""
    out, pullback = vjp(partial(fm, x=x), fm.params)[:2]
    b, n_out = out.shape
    basis = torch.eye(n_out * b, dtype=out.dtype, device=out.device).view(n_out * b, n_out, b).transpose(1, 2)
    cols: dict[str, torch.Tensor]
    (cols,) = vmap(pullback)(basis)
    return cols


def ntvp_tiles(
    fm: FunctionalModel, x1: torch.Tensor, cols: dict[str, torch.Tensor], *, per_layer: bool
) -> dict[str, torch.Tensor]:
    """J(x1) times each column of ``cols``: kernel tiles (B1, B2, O, O) (per parameter or ``"total"``)."""
    some = next(iter(cols.values()))
    n_cols = some.shape[0]

    def push(tangent: dict[str, torch.Tensor]) -> torch.Tensor:
        tangent_out: torch.Tensor = jvp(lambda p: fm(p, x1), (fm.params,), (tangent,))[1]
        return tangent_out

    def assemble(k: torch.Tensor) -> torch.Tensor:  # (O2 * B2, B1, O1) -> (B1, B2, O1, O2)
        n_out = k.shape[2]
        return k.view(n_out, n_cols // n_out, *k.shape[1:]).permute(2, 1, 3, 0)

    if not per_layer:
        return {"total": assemble(vmap(push)(cols))}
    tiles = {}
    for name in cols:
        only = {n: (c if n == name else torch.zeros_like(c)) for n, c in cols.items()}
        tiles[name] = assemble(vmap(push)(only))
    return tiles
