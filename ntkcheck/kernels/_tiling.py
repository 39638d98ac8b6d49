"""Memory budget and row-block tiling shared by the empirical-kernel methods.

A kernel method is described by two *feature* functions (rows of x1 -> features,
rows of x2 -> features) and a *tile* function (two feature blocks -> a dict of
kernel tiles of layout (B1, B2, O, O)).  :func:`tiled_kernel` cuts x1 and x2 into
row blocks sized so that the features of two blocks plus a tile's scratch stay
within the memory budget, caches x2's features when they fit, and writes each
tile into the preallocated result.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import torch

from ntkcheck.errors import KernelMemoryError

Tiles = dict[str, torch.Tensor]


def default_budget(device: torch.device) -> int:
    """Bytes a kernel call may use: half the free memory of the device (CPU: of the available RAM)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(0.5 * free)
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        available = 8 * 2**30
    return int(0.5 * available)


def gib(n_bytes: float) -> str:
    """A byte count in GiB, the unit of memory budgets (3 significant digits)."""
    return f"{n_bytes / 2**30:.3g} GiB ({int(n_bytes)} bytes)"


def plan_blocks(
    n1: int, n2: int, *, row_bytes: int, tile_bytes_per_pair: int, work_budget: int, what: str
) -> tuple[int, int, bool]:
    """Choose row-block sizes (b1, b2) and whether x2's features are cached.

    ``row_bytes``: feature memory of one input row; ``tile_bytes_per_pair``: scratch
    per (row1, row2) pair of a tile.  Raises :class:`KernelMemoryError` with the
    needed size when not even one row per block fits.
    """
    if (n1 + n2) * row_bytes + n1 * n2 * tile_bytes_per_pair <= work_budget:
        return n1, n2, True
    cache_x2 = n2 * row_bytes <= work_budget // 2
    rest = work_budget - (n2 * row_bytes if cache_x2 else 0)
    # largest b with (b rows of x1 [+ b rows of x2]) + b^2 pairs of scratch <= rest
    rows = row_bytes * (1 if cache_x2 else 2)
    disc = rows * rows + 4 * tile_bytes_per_pair * rest
    b = int((-rows + math.sqrt(disc)) / (2 * tile_bytes_per_pair)) if rest > 0 else 0
    if b < 1:
        need = 2 * row_bytes + tile_bytes_per_pair
        raise KernelMemoryError(
            f"{what}: one row block needs {gib(need)} but the memory budget leaves {gib(max(rest, 0))}; "
            "raise memory_budget or use a method with smaller per-row features"
        )
    return min(b, n1), (n2 if cache_x2 else min(b, n2)), cache_x2


def tiled_kernel(
    x1: torch.Tensor,
    x2: torch.Tensor,
    *,
    features1: Callable[[torch.Tensor], Any],
    features2: Callable[[torch.Tensor], Any],
    tile: Callable[[Any, Any], Tiles],
    names: list[str],
    out_dim: int,
    row_bytes: int,
    tile_bytes_per_pair: int,
    budget: int,
    what: str,
    symmetric: bool = False,
    dtype: torch.dtype | None = None,
) -> Tiles:
    """Assemble the kernel dict ``name -> (N1, N2, O, O)`` block by block within ``budget`` bytes.

    ``symmetric=True`` (x2 is x1 and both feature functions are the same) reuses
    a block's features for its diagonal tile and fills tiles below the diagonal
    by transposing those above it: K(x', x) = K(x, x')^T in both sample and output indices.
    ``dtype``: of the result (default x1's; integer inputs give the parameters' dtype).
    """
    dtype = dtype or x1.dtype
    n1, n2, itemsize = x1.shape[0], x2.shape[0], torch.empty((), dtype=dtype).element_size()
    out_bytes = len(names) * n1 * n2 * out_dim * out_dim * itemsize
    if out_bytes >= budget:
        raise KernelMemoryError(
            f"{what}: the result alone needs {gib(out_bytes)} ({len(names)} kernel(s) of shape "
            f"({n1}, {n2}, {out_dim}, {out_dim}) in {dtype}) but the memory budget is {gib(budget)}"
        )
    b1, b2, cache_x2 = plan_blocks(
        n1,
        n2,
        row_bytes=row_bytes,
        tile_bytes_per_pair=tile_bytes_per_pair,
        work_budget=budget - out_bytes,
        what=what,
    )
    if symmetric:
        b1 = b2 = min(b1, b2)
    if b1 >= n1 and b2 >= n2:  # one tile is the whole kernel: no result buffer to fill (and fault in) by copying
        f1 = features1(x1)
        whole = tile(f1, f1 if symmetric else features2(x2))
        if set(whole) == set(names):
            return {name: whole[name].to(dtype).contiguous() for name in names}
    result = {name: torch.empty(n1, n2, out_dim, out_dim, dtype=dtype, device=x1.device) for name in names}
    blocks2 = [(j, min(j + b2, n2)) for j in range(0, n2, b2)]
    cached: dict[int, Any] = {}
    for i in range(0, n1, b1):
        i_end = min(i + b1, n1)
        f1 = features1(x1[i:i_end])
        for j, j_end in blocks2:
            if symmetric and j_end <= i:
                for name in names:
                    result[name][i:i_end, j:j_end] = result[name][j:j_end, i:i_end].permute(1, 0, 3, 2)
                continue
            if symmetric and (j, j_end) == (i, i_end):
                f2 = f1
            elif j in cached:
                f2 = cached[j]
            else:
                f2 = features2(x2[j:j_end])
                if cache_x2:
                    cached[j] = f2
            for name, t in tile(f1, f2).items():
                result[name][i:i_end, j:j_end] = t
            del f2
        del f1
    return result
