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
import heapq
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from ntkcheck._support.validation import check_choice, check_positive_int
from ntkcheck.errors import RankMismatchError
from ntkcheck.kernels.empirical import METHODS, OUTPUTS, ntk

if TYPE_CHECKING:
    from ntkcheck.kernels.out_of_core import KernelFile

__all__ = ["RankMismatchError", "RowBlock", "distributed_ntk"]

TILES_PER_RANK = 4
"""The default tile side (:func:`default_tile`) gives at least this many tiles per rank (where the kernel has
that many rows), so the longest-processing-time assignment can balance the ranks' work."""


class RowBlock(NamedTuple):
    """One rank's share of a kernel sharded by rows: ``kernel[k]`` is row ``rows[k]`` of the full kernel."""

    kernel: torch.Tensor
    rows: range


# ---------------------------------------------------------------------------------------------
# tiles: the grid, the assignment, one tile's value


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


def compute_tile(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor | None, t: Tile,
                 options: dict[str, Any]) -> torch.Tensor:
    """``ntk(model, x1[rows], x2[cols])`` for tile ``t`` (``x2=None``: the symmetric kernel of x1)."""
    if t.diagonal:
        return ntk(model, x1[t.r0:t.r1], **options)  # type: ignore[return-value]
    other = x1 if x2 is None else x2
    return ntk(model, x1[t.r0:t.r1], other[t.c0:t.c1], **options)  # type: ignore[return-value]


def mirror(k: torch.Tensor | np.ndarray) -> Any:
    """A tile's mirror below the diagonal: rows and columns swapped, and the two output indices too."""
    if isinstance(k, np.ndarray):
        return k.transpose(1, 0, 3, 2) if k.ndim == 4 else k.T
    return k.permute(1, 0, 3, 2) if k.ndim == 4 else k.transpose(0, 1)


def kernel_layout(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor | None,
                  options: dict[str, Any]) -> tuple[tuple[int, ...], torch.dtype]:
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


def kernel_options(method: str, output: str, output_fn: Callable[[Any], torch.Tensor] | None,
                   memory_budget: int | None) -> dict[str, Any]:
    """The keyword arguments every tile's ``ntk`` call takes, checked."""
    check_choice(method, "method", METHODS)
    check_choice(output, "output", OUTPUTS)
    if output_fn is not None and not callable(output_fn):
        raise TypeError(f"output_fn must be callable or None, got {type(output_fn).__name__}")
    if memory_budget is not None:
        check_positive_int(memory_budget, "memory_budget")
    return {"method": method, "output": output, "output_fn": output_fn, "memory_budget": memory_budget}


# ---------------------------------------------------------------------------------------------
# fingerprints: what must agree between ranks, and between a run and its resumption


def _hash_tensor(h: Any, name: str, t: torch.Tensor) -> None:
    data = t.detach().to("cpu").contiguous().reshape(-1)
    h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")


def model_digest(model: nn.Module) -> str:
    """SHA-256 of everything of ``model`` its kernel depends on, short of its code: parameter values,
    shapes, dtypes and ``requires_grad`` flags, buffers, and the train/eval mode of every submodule."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        _hash_tensor(h, f"param:{name}:{p.requires_grad}", p)
    for name, b in model.named_buffers():
        _hash_tensor(h, f"buffer:{name}", b)
    h.update(("modes:" + "".join("1" if m.training else "0" for m in model.modules())).encode())
    return h.hexdigest()


def tensor_digest(x: torch.Tensor | None) -> str:
    """SHA-256 of a tensor's dtype, shape and values (of the bytes ``none`` for None)."""
    if x is None:
        return hashlib.sha256(b"none").hexdigest()
    h = hashlib.sha256()
    _hash_tensor(h, "x", x)
    return h.hexdigest()


def describe_fn(fn: Callable[..., Any] | None) -> str | None:
    """A callable's ``module.qualname`` (what a fingerprint can record of it), or None."""
    if fn is None:
        return None
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


# ---------------------------------------------------------------------------------------------
# the process group


@dataclass(frozen=True)
class Group:
    """A process group as this module uses it: the handle, this rank, the size, the global rank of each
    group rank, and the device its collectives take tensors on (CUDA for nccl, else the CPU)."""

    handle: Any
    rank: int
    world: int
    ranks: list[int]
    device: torch.device


def resolve_group(process_group: Any, what: str) -> Group:
    """``process_group`` (None: the default group) as a :class:`Group`; raise if there is none."""
    if not dist.is_available():
        raise RuntimeError(f"{what} needs torch.distributed, which this torch build ({torch.__version__}) lacks")
    if not dist.is_initialized():
        raise RuntimeError(f"{what} needs an initialised process group: call torch.distributed.init_process_group "
                           "(backend 'gloo' on CPU, 'nccl' on GPUs) first, e.g. in a script run by torchrun")
    handle = process_group if process_group is not None else dist.group.WORLD
    rank = dist.get_rank(handle)
    if rank < 0:
        raise ValueError(f"process_group does not contain this process (global rank {dist.get_rank()})")
    backend = str(dist.get_backend(handle)).lower()
    device = torch.device("cuda", torch.cuda.current_device()) if "nccl" in backend else torch.device("cpu")
    return Group(handle, rank, dist.get_world_size(handle), dist.get_process_group_ranks(handle), device)


def check_same_on_every_rank(group: Group, items: dict[str, str]) -> None:
    """Raise :class:`RankMismatchError` on every rank unless each rank's ``items`` (name -> hex SHA-256)
    equal rank 0's: rank 0 broadcasts its digests, each rank compares, and the verdicts are summed."""
    names = list(items)
    mine = torch.tensor(np.frombuffer(b"".join(bytes.fromhex(items[n]) for n in names), dtype=np.int64).copy(),
                        device=group.device)
    theirs = mine.clone()
    dist.broadcast(theirs, src=group.ranks[0], group=group.handle)
    per_item = (mine.view(len(names), -1) != theirs.view(len(names), -1)).any(1).tolist()
    mask = sum(1 << k for k, bad in enumerate(per_item) if bad)
    verdicts = torch.zeros(group.world, dtype=torch.int64, device=group.device)
    verdicts[group.rank] = mask
    dist.all_reduce(verdicts, group=group.handle)
    bad = {r: [n for k, n in enumerate(names) if int(v) >> k & 1] for r, v in enumerate(verdicts.tolist()) if v}
    if bad:
        lines = "; ".join(f"rank {r} differs from rank 0 in {', '.join(what)}" for r, what in bad.items())
        raise RankMismatchError(
            f"{lines}. Every rank must hold the same model parameters (and buffers, requires_grad flags, "
            "train/eval modes), the same inputs and the same settings: load the same checkpoint or seed on every "
            "rank, or broadcast rank 0's state_dict before the call"
        )


def agree_no_error(group: Group, error: BaseException | None, what: str) -> None:
    """Tell every rank whether any rank failed; re-raise this rank's error, or report the ranks that failed."""
    flags = torch.zeros(group.world, dtype=torch.int64, device=group.device)
    flags[group.rank] = error is not None
    dist.all_reduce(flags, group=group.handle)
    failed = [r for r, f in enumerate(flags.tolist()) if f]
    if error is not None:
        raise error
    if failed:
        raise RuntimeError(f"{what}: rank(s) {failed} failed (their own error says why); no result")


def layout_on_every_rank(group: Group | None, model: nn.Module, x1: torch.Tensor, x2: torch.Tensor | None,
                         options: dict[str, Any], what: str) -> tuple[tuple[int, ...], torch.dtype]:
    """:func:`kernel_layout`, its error (bad input on some rank) reported on every rank of ``group``."""
    if group is None:
        return kernel_layout(model, x1, x2, options)
    error: BaseException | None = None
    try:
        layout = kernel_layout(model, x1, x2, options)
    except Exception as exc:  # reported on every rank
        error = exc
    agree_no_error(group, error, what)
    return layout


# ---------------------------------------------------------------------------------------------
# the public function


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
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if tile is not None:
        check_positive_int(tile, "tile")
    if isinstance(result, str) and result not in ("gather", "rows") and not result.endswith(".npy"):
        raise ValueError(f"result must be 'gather', 'rows' or the path of a .npy file (a str ending in .npy, or an "
                         f"os.PathLike), got {result!r}")
    if isinstance(result, os.PathLike) or (isinstance(result, str) and result not in ("gather", "rows")):
        from ntkcheck.kernels.out_of_core import ntk_to_file

        resolve_group(process_group, "distributed_ntk")  # refuse without a group, as the other results do
        return ntk_to_file(model, x1, x2, path=result, memory_budget=memory_budget, tile=tile, method=method,
                           output=output, output_fn=output_fn, process_group=process_group, progress=progress)
    if not isinstance(result, str):
        raise TypeError(f"result must be 'gather', 'rows' or a path (str or os.PathLike), got {type(result).__name__}")
    group = resolve_group(process_group, "distributed_ntk")
    trailing, dtype = layout_on_every_rank(group, model, x1, x2, options, "distributed_ntk")
    n1, n2 = x1.shape[0], (x1 if x2 is None else x2).shape[0]
    symmetric = x2 is None
    side = tile if tile is not None else default_tile(n1, n2, symmetric, group.world)
    check_same_on_every_rank(group, {
        "model parameters": model_digest(model),
        "x1": tensor_digest(x1),
        "x2": tensor_digest(x2),
        "settings": hashlib.sha256(repr((side, result, method, output, describe_fn(output_fn))).encode()).hexdigest(),
    })
    tiles = tile_grid(n1, n2, side, symmetric)
    owned = assign(tiles, group.world)
    owner = {t.index: r for r, ts in enumerate(owned) for t in ts}
    mine: dict[int, torch.Tensor] = {}
    error: BaseException | None = None
    try:
        for t in tqdm(owned[group.rank], desc=f"ntk tiles (rank 0 of {group.world})", unit="tile",
                      disable=not progress or group.rank != 0):
            mine[t.index] = compute_tile(model, x1, x2, t, options)
    except Exception as exc:  # reported on every rank by agree_no_error
        error = exc
    agree_no_error(group, error, "distributed_ntk")
    shape = lambda t: (t.r1 - t.r0, t.c1 - t.c0, *trailing)  # noqa: E731
    if result == "gather":
        return _gather(group, tiles, owner, mine, shape, (n1, n2, *trailing), dtype, x1.device)
    return _rows(group, tiles, owner, mine, shape, n1, n2, trailing, dtype, x1.device)


def _send(t: torch.Tensor, group: Group, dst: int) -> None:
    dist.send(t.to(group.device).contiguous(), dst=group.ranks[dst], group=group.handle)


def _recv(group: Group, src: int, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    buf = torch.empty(shape, dtype=dtype, device=group.device)
    dist.recv(buf, src=group.ranks[src], group=group.handle)
    return buf.to(device)


def _gather(group: Group, tiles: list[Tile], owner: dict[int, int], mine: dict[int, torch.Tensor],
            shape: Callable[[Tile], tuple[int, ...]], full: tuple[int, ...], dtype: torch.dtype,
            device: torch.device) -> torch.Tensor | None:
    """Every tile to rank 0, in grid order; rank 0 places each (and its mirror)."""
    kernel = torch.empty(full, dtype=dtype, device=device) if group.rank == 0 else None
    for t in tiles:
        src = owner[t.index]
        if group.rank == 0:
            value = mine.pop(t.index) if src == 0 else _recv(group, src, shape(t), dtype, device)
            assert kernel is not None
            kernel[t.r0:t.r1, t.c0:t.c1] = value
            if t.mirrored:
                kernel[t.c0:t.c1, t.r0:t.r1] = mirror(value)
        elif group.rank == src:
            _send(mine.pop(t.index), group, 0)
    return kernel


def row_shares(n_blocks: int, world: int) -> list[range]:
    """Each rank's contiguous range of row blocks: an equal number, to within one."""
    return [range(r * n_blocks // world, (r + 1) * n_blocks // world) for r in range(world)]


def _rows(group: Group, tiles: list[Tile], owner: dict[int, int], mine: dict[int, torch.Tensor],
          shape: Callable[[Tile], tuple[int, ...]], n1: int, n2: int, trailing: tuple[int, ...],
          dtype: torch.dtype, device: torch.device) -> RowBlock:
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
                    block[t.r0 - lo:t.r1 - lo, t.c0:t.c1] = value
                if flipped == me:
                    block[t.c0 - lo:t.c1 - lo, t.r0:t.r1] = mirror(value)
            elif src == me:
                _send(mine[t.index], group, dst)
        mine.pop(t.index, None)
    return RowBlock(block, range(lo, hi))

