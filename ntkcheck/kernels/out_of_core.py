"""Kernels larger than memory: written tile by tile to a ``.npy`` file, resumable after an interruption.

:func:`ntk_to_file` computes the tiles of :mod:`ntkcheck.kernels.tile_grid` (a tile is
``ntk(model, x1[rows], x2[cols])``; the symmetric kernel computes the tiles on and
above the diagonal and writes each one's mirror too) and writes them into a ``.npy``
file opened with ``numpy.lib.format.open_memmap``, so the kernel never has to fit in
memory.  Files, for ``path = "K.npy"``:

* ``K.npy.partial`` — the kernel being written (a valid ``.npy`` header, then the
  values; tiles not yet computed read as zeros);
* ``K.npy.tiles.json`` — the record of the run: shape, dtype, tile side, method and
  output mode, and SHA-256 digests of the model (parameters, buffers, ``requires_grad``
  flags, train/eval modes) and of the inputs; written atomically (temporary file,
  fsync, ``os.replace``) once, when the run starts;
* ``K.npy.tiles.npy`` — one byte per tile of the grid, set to 1 once the tile's values
  (and its mirror) are flushed to ``K.npy.partial`` (``msync``), then flushed itself,
  so a set byte always means a tile whose values are on disk.

A run that finds a record resumes: it checks the record against its own arguments
(a ``ValueError`` naming every field that differs otherwise) and computes only the
tiles whose byte is 0, so an interrupted run restarted with the same arguments ends
with the same bytes as an uninterrupted one.  When every tile is recorded,
``K.npy.partial`` is renamed to ``K.npy`` (atomic) and the two sidecars are removed:
``K.npy`` exists only complete, and an existing ``K.npy`` stays as it was until then.

Under a process group (``process_group``, or the default group of an initialised
``torch.distributed`` with more than one rank) every rank writes its own tiles
(the assignment rule of :mod:`ntkcheck.kernels.tile_grid`, over the tiles not yet recorded)
into the same files, which must lie on a file system all ranks share.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from ntkcheck._support.validation import check_bool, check_module, check_positive_int
from ntkcheck.errors import KernelMemoryError
from ntkcheck.kernels._tiling import default_budget, gib
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
from ntkcheck.kernels.tile_grid import Tile, assign, compute_tile, kernel_options, mirror, tile_grid
from ntkcheck.kernels.tile_record import finish_files, prepare_files, sidecar_paths

__all__ = ["KernelFile", "ntk_to_file", "plan_tile"]

RECORD_FORMAT = 1
"""Version of the ``.tiles.json`` record; a record of another version is not resumed."""
TILE_SHARE = 4
"""A tile's values take at most 1/TILE_SHARE of the memory the budget leaves after the inputs and the model;
ntk gets the rest less one more tile (the copy written to the file), i.e. at least half of it, for its
features and scratch, which it keeps within that budget itself."""
_NUMPY_DTYPES = {torch.float64: np.float64, torch.float32: np.float32, torch.float16: np.float16}


@dataclass(frozen=True)
class KernelFile:
    """What :func:`ntk_to_file` wrote: the ``.npy`` file, the kernel's shape and dtype, the tile side, the
    number of tiles in the grid, how many were already recorded when the call started, how many this
    call (this rank) computed, and the call's wall time in seconds."""

    path: Path
    shape: tuple[int, ...]
    dtype: str
    tile: int
    tiles: int
    done_before: int
    computed: int
    seconds: float


def plan_tile(n1: int, n2: int, pair_bytes: int, budget: int, fixed_bytes: int) -> tuple[int, int]:
    """The tile side and the budget of each tile's ``ntk`` call, from ``budget`` bytes in all.

    ``fixed_bytes`` (the inputs and the model, held for the whole run) come off first;
    of the rest, a tile's values (``side**2 * pair_bytes``) take at most 1/TILE_SHARE, and
    ``ntk`` gets the rest less one tile (the copy written to the file) as its
    ``memory_budget``: the kernel values, features and scratch of one tile, which ntk
    keeps within it by its own accounting (raising KernelMemoryError if it cannot).
    The file's pages live in the page cache, which the system writes back and reclaims.
    Memory the C allocator keeps after a tile frees it is not counted: with glibc's
    adaptive mmap threshold the resident size can grow past the budget (an N = 16,384
    MLP kernel under 64 MiB grew 105 MiB, 59 MiB with ``MALLOC_MMAP_THRESHOLD_=131072``).
    The side is then evened out so that the tiles of a row have equal sizes, to within one.
    """
    avail = budget - fixed_bytes
    side = math.isqrt(max(avail, 0) // TILE_SHARE // pair_bytes)
    if side < 1:
        raise KernelMemoryError(
            f"memory_budget {gib(budget)} is too small: the inputs and the model take {gib(fixed_bytes)} and one "
            f"kernel entry {pair_bytes} bytes, so not even a 1x1 tile fits in 1/{TILE_SHARE} of what is left "
            f"(need at least {gib(fixed_bytes + TILE_SHARE * pair_bytes)})"
        )
    n = max(n1, n2)
    side = min(side, n)
    side = -(-n // -(-n // side))
    return side, avail - side * side * pair_bytes


def _fixed_bytes(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor | None) -> int:
    held = [x1, *([] if x2 is None else [x2]), *model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in held)


def _check_path(path: object) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike naming a .npy file, got {type(path).__name__}")
    p = Path(path)
    if not str(path).strip() or p.name in ("", ".", ".."):
        raise ValueError(f"path must name a file, got {str(path)!r}")
    if p.is_dir():
        raise IsADirectoryError(f"path must name a file, but {p} is a directory")
    return p


def _group(process_group: Any) -> Group | None:
    if process_group is not None:
        return resolve_group(process_group, "ntk_to_file")
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return resolve_group(None, "ntk_to_file")
    return None


def ntk_to_file(
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    path: str | os.PathLike[str],
    memory_budget: int | None = None,
    tile: int | None = None,
    method: str = "auto",
    output: str = "full",
    output_fn: Callable[[Any], torch.Tensor] | None = None,
    process_group: Any = None,
    progress: bool = True,
) -> KernelFile:
    """Write the exact empirical NTK ``ntk(model, x1, x2)`` to the ``.npy`` file ``path``, tile by tile.

    Resumes an interrupted run with the same arguments (see the module docstring); the
    finished file loads with ``np.load(path)`` (``mmap_mode="r"`` to keep it on disk) and
    holds the kernel ``ntk`` returns: (N1, N2) or (N1, N2, O, O).

    Args:
        model, x1, x2, method, output, output_fn: as for :func:`ntkcheck.ntk`.
        path: the ``.npy`` file to write (its folder is created); replaced only when complete.
        memory_budget: bytes the run may hold in memory (default: half the device's free
            memory); the tile side comes from it as :func:`plan_tile` says.  A resumed run
            keeps the record's tile side if it fits this budget.
        tile: rows (and columns) per square tile, instead of the side the budget gives
            (checked against ``memory_budget`` when that is given too).
        process_group: share the tiles among the ranks of this ``torch.distributed``
            group; None: the default group if torch.distributed is initialised with more
            than one rank, else this process alone.
        progress: show a tqdm progress bar (rank 0's tiles under a process group).

    Returns:
        A :class:`KernelFile` (every rank gets one; ``computed`` counts this rank's tiles).
    """
    start = time.perf_counter()
    options = _check_call(model, method, output, output_fn, tile, memory_budget, progress)
    path = _check_path(path)
    group = _group(process_group)
    rank, world = (group.rank, group.world) if group else (0, 1)
    trailing, dtype = layout_on_every_rank(group, model, x1, x2, options, "ntk_to_file")
    plan = _plan(model, x1, x2, trailing, dtype, memory_budget, tile)
    symmetric = x2 is None
    n1, n2 = plan.shape[0], plan.shape[1]
    wanted: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "shape": list(plan.shape),
        "dtype": plan.dtype,
        "symmetric": symmetric,
        "tile": plan.side,
        "tiles": len(tile_grid(n1, n2, plan.side, symmetric)),
        "method": method,
        "output": output,
        "output_fn": describe_fn(output_fn),
        "model": model_digest(model),
        "x1": tensor_digest(x1),
        "x2": tensor_digest(x2),
    }
    if group:
        settings = repr((str(path.resolve()), tile, memory_budget, method, output, describe_fn(output_fn)))
        check_same_on_every_rank(
            group,
            {
                "model parameters": wanted["model"],
                "x1": wanted["x1"],
                "x2": wanted["x2"],
                "settings": hashlib.sha256(settings.encode()).hexdigest(),
            },
        )
    _on_rank0(rank, group, lambda: prepare_files(path, wanted, plan.tile_fits, explicit_tile=tile is not None))
    side, data, bits, done = _open_files(path, rank, group)
    tiles = tile_grid(n1, n2, side, symmetric)
    todo = [t for t in tiles if not done[t.index]]
    mine = assign(todo, world)[rank]
    options["memory_budget"] = plan.ntk_budget(side) if memory_budget is not None or tile is None else None
    bar = tqdm(
        total=len(tiles) if world == 1 else len(mine),
        initial=len(tiles) - len(todo) if world == 1 else 0,
        desc=f"ntk tiles -> {path.name}" + (f" (rank 0 of {world})" if world > 1 else ""),
        unit="tile",
        disable=not progress or rank != 0,
    )
    computed = _write_tiles(model, x1, x2, mine, options, data, bits, bar, group)
    _on_rank0(rank, group, lambda: finish_files(path, len(tiles)))
    return KernelFile(
        path, plan.shape, plan.dtype, side, len(tiles), len(tiles) - len(todo), computed, time.perf_counter() - start
    )


def _check_call(
    model: object,
    method: str,
    output: str,
    output_fn: Callable[[Any], torch.Tensor] | None,
    tile: object,
    memory_budget: object,
    progress: object,
) -> dict[str, Any]:
    """Check the arguments of :func:`ntk_to_file` (the path aside); return every tile's ``ntk`` options."""
    check_module(model, "model")
    options = kernel_options(method, output, output_fn, None)
    if tile is not None:
        check_positive_int(tile, "tile")
    if memory_budget is not None:
        check_positive_int(memory_budget, "memory_budget")
    check_bool(progress, "progress")
    return options


@dataclass(frozen=True)
class _Plan:
    """The kernel's shape and ``.npy`` dtype, the bytes of one entry, the budget and the tile side."""

    shape: tuple[int, ...]
    dtype: str
    pair_bytes: int
    budget: int
    fixed: int
    side: int

    def ntk_budget(self, side: int) -> int:
        """The ``memory_budget`` of each tile's ``ntk`` call with tiles of ``side`` rows."""
        return self.budget - self.fixed - side * side * self.pair_bytes

    def tile_fits(self, side: int) -> bool:
        """Whether a tile of ``side`` rows takes at most 1/TILE_SHARE of the budget left for tiles."""
        return side * side * self.pair_bytes * TILE_SHARE <= self.budget - self.fixed


def _plan(
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor | None,
    trailing: tuple[int, ...],
    dtype: torch.dtype,
    memory_budget: int | None,
    tile: int | None,
) -> _Plan:
    if dtype not in _NUMPY_DTYPES:
        raise TypeError(
            f"the kernel's dtype {dtype} has no .npy equivalent: use a model of dtype float64, float32 or float16"
        )
    n1, n2 = x1.shape[0], (x1 if x2 is None else x2).shape[0]
    np_dtype = np.dtype(_NUMPY_DTYPES[dtype])
    pair_bytes = math.prod(trailing) * np_dtype.itemsize
    budget = memory_budget if memory_budget is not None else default_budget(x1.device)
    fixed = _fixed_bytes(model, x1, x2)
    side = plan_tile(n1, n2, pair_bytes, budget, fixed)[0] if tile is None else tile
    plan = _Plan((n1, n2, *trailing), np_dtype.name, pair_bytes, budget, fixed, side)
    if tile is not None and memory_budget is not None and not plan.tile_fits(side):
        raise KernelMemoryError(
            f"tile={tile} does not fit memory_budget {gib(budget)}: a tile's values take "
            f"{gib(side * side * pair_bytes)}, more than 1/{TILE_SHARE} of the {gib(budget - fixed)} left after "
            f"the inputs and the model; use a smaller tile or leave tile=None"
        )
    return plan


def _agree(group: Group | None, error: BaseException | None) -> None:
    """Report ``error`` (this rank's, or None) on every rank of ``group``; without a group, raise it."""
    if group:
        agree_no_error(group, error, "ntk_to_file")
    elif error is not None:
        raise error


def _on_rank0(rank: int, group: Group | None, step: Callable[[], None]) -> None:
    """Run ``step`` on rank 0, its error reported on every rank."""
    error: BaseException | None = None
    if rank == 0:
        try:
            step()
        except Exception as exc:  # reported on every rank
            if not group:
                raise
            error = exc
    _agree(group, error)


def _open_files(path: Path, rank: int, group: Group | None) -> tuple[int, np.memmap, np.memmap, np.ndarray]:
    """The recorded tile side, the kernel being written and the tile bitmap (both memory-mapped, writable), and
    a copy of the bitmap read before any rank adds to it."""
    partial, record_p, bits_p = sidecar_paths(path)
    error: BaseException | None = None
    opened: tuple[int, np.memmap, np.memmap, np.ndarray] | None = None
    try:
        side = int(json.loads(record_p.read_text())["tile"])
        bits = np.lib.format.open_memmap(bits_p, mode="r+")
        opened = side, np.lib.format.open_memmap(partial, mode="r+"), bits, bits.copy()
    except (OSError, ValueError, KeyError) as exc:
        error = FileNotFoundError(
            f"ntk_to_file on rank {rank}: cannot open the files rank 0 prepared for {path} "
            f"({exc}); every rank must see the same file system"
        )
    # every rank has read the record of finished tiles before any rank adds to it
    _agree(group, error)
    assert opened is not None
    return opened


def _write_tiles(
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor | None,
    mine: list[Tile],
    options: dict[str, Any],
    data: np.memmap,
    bits: np.memmap,
    bar: tqdm,
    group: Group | None,
) -> int:
    """Compute this rank's tiles and record each once its values are on disk; the number computed."""
    computed = 0
    error: BaseException | None = None
    try:
        for t in mine:
            value = compute_tile(model, x1, x2, t, options).detach().to("cpu").numpy()
            data[t.r0 : t.r1, t.c0 : t.c1] = value
            if t.mirrored:
                data[t.c0 : t.c1, t.r0 : t.r1] = mirror(value)
            data.flush()  # the values reach the file before the tile is recorded
            bits[t.index] = 1
            bits.flush()
            computed += 1
            bar.update(1)
    except Exception as exc:
        if not group:
            raise
        error = exc
    finally:
        bar.close()
        del data, bits
    if group:
        agree_no_error(group, error, "ntk_to_file")
    return computed
