"""Empirical NTKs shared among the ranks of a ``torch.distributed`` process group.

The kernel is cut into square tiles of ``tile`` rows by ``tile`` columns; a tile is
``ntk(model, x1[rows], x2[cols])``, the public single-process kernel of those rows, so
the tile boundaries change nothing but the order of floating-point sums inside
:func:`ntkcheck.ntk` (float64 results equal the single-process kernel to rounding).
For the symmetric kernel (``x2=None``) only the tiles on and above the diagonal are
computed (a diagonal tile as ``ntk(model, x1[rows])``); the one below is the mirror
``K(x', x) = K(x, x')^T`` in both the sample and the output indices.

Assignment rule (the same on every rank, no communication): the tiles, each costed by
the kernel entries it computes (``rows * cols``; ``r (r + 1) / 2`` for a symmetric
diagonal tile), are taken from the most to the least costly (ties in grid order) and
each goes to the rank with the least cost so far (ties to the lowest rank) — the
longest-processing-time rule, so no rank's total exceeds another's by more than
one tile's cost.

The same code serves gloo (CPU tensors) and nccl (each rank's current CUDA device):
tiles travel by point-to-point ``send``/``recv`` in one global order every rank
follows, so no rank waits on another out of turn.  Before any work every rank checks
that it holds the same model (a SHA-256 of the parameters, buffers,
``requires_grad`` flags and train/eval modes), the same inputs and the same settings
as rank 0 (:class:`RankMismatchError` otherwise, naming the ranks that differ); an
error on one rank while computing its tiles is reported on every rank instead of
leaving the others waiting.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from ntkcheck._support.validation import check_module, check_positive_int
from ntkcheck.kernels.rank_agreement import (
    Group,
    agree_no_error,
    check_same_on_every_rank,
    describe_fn,
    layout_on_every_rank,
    model_digest,
    resolve_group,
    tensor_digest,
)
from ntkcheck.kernels.tile_grid import (
    Tile,
    assign,
    compute_tile,
    default_tile,
    kernel_options,
    mirror,
    row_shares,
    tile_grid,
)

if TYPE_CHECKING:
    from ntkcheck.kernels.out_of_core import KernelFile

__all__ = ["RowBlock", "distributed_ntk"]


@dataclass(frozen=True)
class RowBlock:
    """One rank's share of a kernel sharded by rows: ``kernel[k]`` is row ``rows[k]`` of the full kernel."""

    kernel: torch.Tensor
    rows: range


def distributed_ntk(
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    process_group: Any = None,
    tile: int | None = None,
    result: str | os.PathLike[str] = "gather",
    method: str = "auto",
    output: str = "full",
    output_fn: Callable[[Any], torch.Tensor] | None = None,
    memory_budget: int | None = None,
    progress: bool = False,
) -> torch.Tensor | RowBlock | KernelFile | None:
    """The exact empirical NTK ``ntk(model, x1, x2)``, its tiles computed by all ranks of a process group.

    Every rank of ``process_group`` calls this with the same model, inputs and arguments;
    each computes the tiles the rule of the module docstring assigns it.

    Args:
        model, x1, x2, method, output, output_fn: as for :func:`ntkcheck.ntk` (x1, x2 on
            the device the rank computes on).
        process_group: a ``torch.distributed`` process group; None: the default group.
        tile: rows (and columns) per square tile; default: :func:`default_tile`, at
            least ``TILES_PER_RANK`` tiles per rank.
        result: ``"gather"``: the full kernel on group rank 0, None on the others;
            ``"rows"``: every rank gets a :class:`RowBlock`, the kernel's rows of its
            contiguous share of the row blocks (an equal number of row blocks per rank,
            to within one; a rank with none gets zero rows); a path: the kernel is
            written to that ``.npy`` file by :func:`ntkcheck.ntk_to_file` (every rank
            writes its own tiles into it; the ranks must share the file system; the run
            resumes if interrupted), and every rank gets its :class:`~ntkcheck.KernelFile`.
        memory_budget: bytes one tile's ``ntk`` call may use (default: ntk's own); with
            a path ``result``, also the budget ``ntk_to_file`` sizes tiles from when
            ``tile`` is None.
        progress: show a progress bar of rank 0's tiles.

    Returns:
        As ``result`` says; kernels in the model's dtype on x1's device.
    """
    options = kernel_options(method, output, output_fn, memory_budget)
    check_module(model, "model")
    if tile is not None:
        check_positive_int(tile, "tile")
    if isinstance(result, str) and result not in ("gather", "rows") and not result.endswith(".npy"):
        raise ValueError(
            f"result must be 'gather', 'rows' or the path of a .npy file (a str ending in .npy, or an "
            f"os.PathLike), got {result!r}"
        )
    if isinstance(result, os.PathLike) or (isinstance(result, str) and result not in ("gather", "rows")):
        from ntkcheck.kernels.out_of_core import ntk_to_file

        resolve_group(process_group, "distributed_ntk")  # refuse without a group, as the other results do
        return ntk_to_file(
            model,
            x1,
            x2,
            path=result,
            memory_budget=memory_budget,
            tile=tile,
            method=method,
            output=output,
            output_fn=output_fn,
            process_group=process_group,
            progress=progress,
        )
    if not isinstance(result, str):
        raise TypeError(f"result must be 'gather', 'rows' or a path (str or os.PathLike), got {type(result).__name__}")
    group = resolve_group(process_group, "distributed_ntk")
    trailing, dtype = layout_on_every_rank(group, model, x1, x2, options, "distributed_ntk")
    n1, n2 = x1.shape[0], (x1 if x2 is None else x2).shape[0]
    symmetric = x2 is None
    side = tile if tile is not None else default_tile(n1, n2, symmetric, group.world)
    check_same_on_every_rank(
        group,
        {
            "model parameters": model_digest(model),
            "x1": tensor_digest(x1),
            "x2": tensor_digest(x2),
            "settings": hashlib.sha256(
                repr((side, result, method, output, describe_fn(output_fn))).encode()
            ).hexdigest(),
        },
    )
    tiles = tile_grid(n1, n2, side, symmetric)
    owned = assign(tiles, group.world)
    owner = {t.index: r for r, ts in enumerate(owned) for t in ts}
    mine: dict[int, torch.Tensor] = {}
    error: BaseException | None = None
    try:
        for t in tqdm(
            owned[group.rank],
            desc=f"ntk tiles (rank 0 of {group.world})",
            unit="tile",
            disable=not progress or group.rank != 0,
        ):
            mine[t.index] = compute_tile(model, x1, x2, t, options)
    except Exception as exc:  # reported on every rank by agree_no_error
        error = exc
    agree_no_error(group, error, "distributed_ntk")
    shape = partial(_tile_shape, trailing=trailing)
    if result == "gather":
        return _gather(group, tiles, owner, mine, shape, (n1, n2, *trailing), dtype, x1.device)
    return _rows(group, tiles, owner, mine, shape, n1, n2, trailing, dtype, x1.device)


def _tile_shape(t: Tile, trailing: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of tile ``t``'s kernel: its rows, its columns, then the kernel's trailing shape."""
    return (t.r1 - t.r0, t.c1 - t.c0, *trailing)


def _send(t: torch.Tensor, group: Group, dst: int) -> None:
    dist.send(t.to(group.device).contiguous(), dst=group.ranks[dst], group=group.handle)


def _recv(group: Group, src: int, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    buf = torch.empty(shape, dtype=dtype, device=group.device)
    dist.recv(buf, src=group.ranks[src], group=group.handle)
    return buf.to(device)


def _gather(
    group: Group,
    tiles: list[Tile],
    owner: dict[int, int],
    mine: dict[int, torch.Tensor],
    shape: Callable[[Tile], tuple[int, ...]],
    full: tuple[int, ...],
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor | None:
    """Every tile to rank 0, in grid order; rank 0 places each (and its mirror)."""
    kernel = torch.empty(full, dtype=dtype, device=device) if group.rank == 0 else None
    for t in tiles:
        src = owner[t.index]
        if group.rank == 0:
            value = mine.pop(t.index) if src == 0 else _recv(group, src, shape(t), dtype, device)
            assert kernel is not None
            kernel[t.r0 : t.r1, t.c0 : t.c1] = value
            if t.mirrored:
                kernel[t.c0 : t.c1, t.r0 : t.r1] = mirror(value)
        elif group.rank == src:
            _send(mine.pop(t.index), group, 0)
    return kernel


def _rows(
    group: Group,
    tiles: list[Tile],
    owner: dict[int, int],
    mine: dict[int, torch.Tensor],
    shape: Callable[[Tile], tuple[int, ...]],
    n1: int,
    n2: int,
    trailing: tuple[int, ...],
    dtype: torch.dtype,
    device: torch.device,
) -> RowBlock:
    """Every tile to the rank whose rows it fills (a mirrored tile also to the owner of its columns)."""
    starts = sorted({(t.i, t.r0, t.r1) for t in tiles})
    shares = row_shares(len(starts), group.world)
    holder = {i: r for r, share in enumerate(shares) for i in share}
    me = group.rank
    share = shares[me]
    if len(share):
        lo, hi = starts[share.start][1], starts[share.stop - 1][2]
    else:
        lo = hi = starts[share.start][1] if share.start < len(starts) else n1
    block = torch.empty((hi - lo, n2, *trailing), dtype=dtype, device=device)
    for t in tiles:
        src = owner[t.index]
        direct, flipped = holder[t.i], (holder[t.j] if t.mirrored else None)
        for dst in sorted({direct} | ({flipped} if flipped is not None else set())):
            if dst == me:
                value = mine[t.index] if src == me else _recv(group, src, shape(t), dtype, device)
                if direct == me:
                    block[t.r0 - lo : t.r1 - lo, t.c0 : t.c1] = value
                if flipped == me:
                    block[t.c0 - lo : t.c1 - lo, t.r0 : t.r1] = mirror(value)
            elif src == me:
                _send(mine[t.index], group, dst)
        mine.pop(t.index, None)
    return RowBlock(block, range(lo, hi))
