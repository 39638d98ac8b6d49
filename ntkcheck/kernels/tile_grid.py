"""The tiles of a kernel computed in pieces: the grid, the assignment of tiles to ranks, one tile's value.

The kernel is cut into square tiles of ``tile`` rows by ``tile`` columns; a tile is
``ntk(model, x1[rows], x2[cols])``.  For the symmetric kernel (``x2=None``) only the tiles on
and above the diagonal are computed; the one below is the mirror ``K(x', x) = K(x, x')^T`` in
both the sample and the output indices.

Assignment rule (the same on every rank, no communication): the tiles, each costed by
the kernel entries it computes (``rows * cols``; ``r (r + 1) / 2`` for a symmetric
diagonal tile), are taken from the most to the least costly (ties in grid order) and
each goes to the rank with the least cost so far (ties to the lowest rank) — the
longest-processing-time rule, so no rank's total exceeds another's by more than
one tile's cost.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ntkcheck._support.validation import check_choice, check_optional_callable, check_positive_int
from ntkcheck.kernels.empirical import METHODS, OUTPUTS, ntk

TILES_PER_RANK = 4
"""The default tile side (:func:`default_tile`) gives at least this many tiles per rank (where the kernel has
that many rows), so the longest-processing-time assignment can balance the ranks' work."""


@dataclass(frozen=True)
class Tile:
    """Tile ``index`` of the grid: rows ``r0:r1`` (row block ``i``) by columns ``c0:c1`` (column block ``j``)."""

    index: int
    i: int
    j: int
    r0: int
    r1: int
    c0: int
    c1: int
    symmetric: bool

    @property
    def diagonal(self) -> bool:
        """A diagonal tile of the symmetric kernel: ``ntk`` of one row block with itself."""
        return self.symmetric and self.i == self.j

    @property
    def mirrored(self) -> bool:
        """Whether the tile also fills its mirror below the diagonal (symmetric kernel, off the diagonal)."""
        return self.symmetric and self.i != self.j

    @property
    def cost(self) -> int:
        """Kernel entries the tile computes (a symmetric diagonal tile computes its upper half)."""
        rows = self.r1 - self.r0
        return rows * (rows + 1) // 2 if self.diagonal else rows * (self.c1 - self.c0)


def tile_grid(n1: int, n2: int, tile: int, symmetric: bool) -> list[Tile]:
    """The tiles of an (n1, n2) kernel with square tiles of side ``tile``, in row-major order.

    ``symmetric=True`` (n1 == n2, x2 is x1) keeps only the tiles on and above the diagonal.
    """
    rows = [(r, min(r + tile, n1)) for r in range(0, n1, tile)]
    cols = [(c, min(c + tile, n2)) for c in range(0, n2, tile)]
    out: list[Tile] = []
    for i, (r0, r1) in enumerate(rows):
        for j, (c0, c1) in enumerate(cols):
            if symmetric and j < i:
                continue
            out.append(Tile(len(out), i, j, r0, r1, c0, c1, symmetric))
    return out


def assign(tiles: Iterable[Tile], world: int) -> list[list[Tile]]:
    """Each rank's tiles (in grid order) under the longest-processing-time rule of the module docstring."""
    loads = [(0, r) for r in range(world)]
    heapq.heapify(loads)
    owned: list[list[Tile]] = [[] for _ in range(world)]
    for t in sorted(tiles, key=lambda t: -t.cost):  # stable: ties keep grid order
        load, r = heapq.heappop(loads)
        owned[r].append(t)
        heapq.heappush(loads, (load + t.cost, r))
    return [sorted(ts, key=lambda t: t.index) for ts in owned]


def default_tile(n1: int, n2: int, symmetric: bool, world: int) -> int:
    """The tile side ``ceil(n / k)`` (n = max(n1, n2)) of the fewest row blocks k (blocks of equal size, to
    within one) that give at least ``TILES_PER_RANK * world`` tiles; 1 if even single rows give fewer."""
    want = TILES_PER_RANK * world
    n = max(n1, n2)
    for k in range(1, n + 1):
        side = -(-n // k)
        if len(tile_grid(n1, n2, side, symmetric)) >= want:
            return side
    return 1


def compute_tile(
    model: nn.Module, x1: torch.Tensor, x2: torch.Tensor | None, t: Tile, options: dict[str, Any]
) -> torch.Tensor:
    """``ntk(model, x1[rows], x2[cols])`` for tile ``t`` (``x2=None``: the symmetric kernel of x1)."""
    kernel: torch.Tensor
    if t.diagonal:
        kernel = ntk(model, x1[t.r0 : t.r1], **options)
    else:
        other = x1 if x2 is None else x2
        kernel = ntk(model, x1[t.r0 : t.r1], other[t.c0 : t.c1], **options)
    return kernel


def mirror(k: torch.Tensor | np.ndarray) -> Any:
    """A tile's mirror below the diagonal: rows and columns swapped, and the two output indices too."""
    if isinstance(k, np.ndarray):
        return k.transpose(1, 0, 3, 2) if k.ndim == 4 else k.T
    return k.permute(1, 0, 3, 2) if k.ndim == 4 else k.transpose(0, 1)


def kernel_layout(
    model: nn.Module, x1: torch.Tensor, x2: torch.Tensor | None, options: dict[str, Any]
) -> tuple[tuple[int, ...], torch.dtype]:
    """The trailing shape (``()`` or ``(O, O)``) and dtype of the kernel, from ``ntk`` of one pair of rows."""
    if not isinstance(x1, torch.Tensor):
        raise TypeError(f"x1 must be a torch.Tensor (N1, ...), got {type(x1).__name__}")
    if x2 is not None and not isinstance(x2, torch.Tensor):
        raise TypeError(f"x2 must be a torch.Tensor (N2, ...) or None, got {type(x2).__name__}")
    for name, x in (("x1", x1), ("x2", x2)):
        if x is not None and (x.ndim == 0 or x.shape[0] == 0):
            raise ValueError(f"{name} must be a batch (N, ...) with N >= 1, got shape {tuple(x.shape)}")
    probe = ntk(model, x1[:1], None if x2 is None else x2[:1], **options)
    assert isinstance(probe, torch.Tensor)
    return tuple(probe.shape[2:]), probe.dtype


def kernel_options(
    method: str, output: str, output_fn: Callable[[Any], torch.Tensor] | None, memory_budget: int | None
) -> dict[str, Any]:
    """The keyword arguments every tile's ``ntk`` call takes, checked."""
    check_choice(method, "method", METHODS)
    check_choice(output, "output", OUTPUTS)
    check_optional_callable(output_fn, "output_fn")
    if memory_budget is not None:
        check_positive_int(memory_budget, "memory_budget")
    return {"method": method, "output": output, "output_fn": output_fn, "memory_budget": memory_budget}


def row_shares(n_blocks: int, world: int) -> list[range]:
    """Each rank's contiguous range of row blocks: an equal number, to within one."""
    return [range(r * n_blocks // world, (r + 1) * n_blocks // world) for r in range(world)]
