"""The kernel rule of convolutions (``nn.Conv1d/2d`` and ntkcheck ``Conv1d/2d``): patches and per-sample gradients."""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch
from torch.nn import grad as nn_grad

from ntkcheck.kernels._piece import Piece, batched, multipliers, trainable

CONV_ROWS = 32
"""Rows per call of the batch-grouped convolution backward that forms per-sample convolution gradients."""


def _same_padding(kernel: tuple[int, ...], dilation: tuple[int, ...]) -> list[int]:
    """torch.nn.functional.pad amounts (last dim first) of torch's ``padding="same"``: the extra pixel goes right."""
    pad: list[int] = []
    for k, d in zip(reversed(kernel), reversed(dilation)):
        total = d * (k - 1)
        pad += [total // 2, total - total // 2]
    return pad


def _padded_input(
    module: Any, x: torch.Tensor, dims: int, kernel: tuple[int, ...], dilation: tuple[int, ...]
) -> tuple[torch.Tensor, tuple[int, ...]]:
    """The convolution's input with any non-zero or ``"same"`` padding applied, and the zero padding left."""
    padding = module.padding
    if getattr(module, "padding_mode", "zeros") != "zeros":
        pad = module._reversed_padding_repeated_twice
        return torch.nn.functional.pad(x, pad, mode=module.padding_mode), (0,) * dims
    if padding == "same":
        return torch.nn.functional.pad(x, _same_padding(kernel, dilation)), (0,) * dims
    if padding == "valid":
        return x, (0,) * dims
    return x, tuple(padding)


def conv_rule(
    module: Any, inputs: tuple[Any, ...], kwargs: dict[str, Any], output: torch.Tensor, batch: int
) -> list[Piece] | None:
    """``nn.Conv1d/2d`` / ntkcheck ``Conv1d/2d``: ``a`` are the input patches (``F.unfold``), positions the
    output pixels, one piece per group.  Per-sample gradients, per chunk of ``CONV_ROWS`` rows: for up to two
    cotangents one convolution backward with the chunk's rows as groups (no patches formed), for more one
    batched matmul of the chunk's patches with the signals of all cotangents (patches shared by them)."""
    if not inputs or not batched(batch, inputs[0], output):
        return None
    x = inputs[0].detach()
    dims = module.weight.ndim - 2
    if dims not in (1, 2) or x.ndim != dims + 2:
        return None
    kernel = tuple(module.weight.shape[2:])
    stride, dilation = tuple(module.stride), tuple(module.dilation)
    x, padding = _padded_input(module, x, dims, kernel, dilation)
    groups = module.groups
    c_out = module.weight.shape[0]
    c_in = x.shape[1] // groups
    m = c_out // groups
    out_size = tuple(output.shape[2:])
    weight_grad = nn_grad.conv1d_weight if dims == 1 else nn_grad.conv2d_weight

    def patches(lo: int = 0, hi: int = batch) -> torch.Tensor:  # (hi - lo, groups, S, k) of rows lo:hi
        x2, k2, s2, d2, p2 = x[lo:hi], kernel, stride, dilation, padding
        if dims == 1:
            x2, k2, s2, d2, p2 = x2.unsqueeze(2), (1, *kernel), (1, *stride), (1, *dilation), (0, *padding)
        cols = torch.nn.functional.unfold(x2, k2, dilation=d2, padding=p2, stride=s2)  # (rows, C*prod(kernel), S)
        return cols.view(hi - lo, groups, -1, cols.shape[-1]).transpose(2, 3)

    cache: list[torch.Tensor] = []

    def group_patches(j: int) -> torch.Tensor:
        if not cache:
            cache.append(patches())
        return cache[0][:, j]

    def per_sample(g: torch.Tensor, j: int) -> torch.Tensor:
        k_cot = g.shape[0]
        width = m * c_in * math.prod(kernel)
        if k_cot > 2:  # measured on CPU: the batch-grouped backward's cost grows with K faster than patches'
            out = torch.empty(k_cot, batch, m, width // m, dtype=g.dtype, device=g.device)
            for lo in range(0, batch, CONV_ROWS):  # row chunks: the patches of a chunk stay in cache
                hi = min(lo + CONV_ROWS, batch)
                part = patches(lo, hi)[:, j] if groups == 1 else group_patches(j)[lo:hi]
                out[:, lo:hi] = torch.einsum("kbsm,bsn->kbmn", g[:, lo:hi], part)
            return out.view(k_cot, batch, width)
        out = torch.empty(batch, k_cot, width, dtype=g.dtype, device=g.device)
        for lo in range(0, batch, CONV_ROWS):  # row chunks: measured faster on CPU than one call of B groups
            hi = min(lo + CONV_ROWS, batch)
            inp = x[lo:hi, j * c_in : (j + 1) * c_in].reshape(1, (hi - lo) * c_in, *x.shape[2:])
            grad = g[:, lo:hi].permute(1, 0, 3, 2).reshape(1, (hi - lo) * k_cot * m, *out_size)
            w = weight_grad(inp, ((hi - lo) * k_cot * m, c_in, *kernel), grad, stride, padding, dilation, hi - lo)
            out[lo:hi] = w.view(hi - lo, k_cot, -1)
        return out.transpose(0, 1)

    w_mult, b_mult = multipliers(module)
    bias = trainable(module.bias)
    pieces = []
    for j in range(groups):
        rows = (j * m, (j + 1) * m) if groups > 1 else None

        def signal(g: torch.Tensor, j: int = j) -> torch.Tensor:
            return g.reshape(batch, c_out, -1)[:, j * m : (j + 1) * m].transpose(1, 2)

        if trainable(module.weight):
            pieces.append(
                Piece(
                    module.weight,
                    "outer",
                    output,
                    signal,
                    partial(group_patches, j),
                    w_mult,
                    rows,
                    (module.bias, b_mult) if bias else None,
                    partial(per_sample, j=j),
                )
            )
        elif bias:
            pieces.append(Piece(module.bias, "diag", output, signal, None, b_mult, rows))
    return pieces
