"""Kernels larger than memory: written tile by tile to a ``.npy`` file, resumable after an interruption.

:func:`ntk_to_file` computes the tiles of :mod:`ntkcheck.kernels.distributed` (a tile is
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
(the assignment rule of :mod:`ntkcheck.kernels.distributed`, over the tiles not yet recorded)
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

from ntkcheck._support.validation import check_positive_int
from ntkcheck.kernels._tiling import KernelMemoryError, default_budget, gib
from ntkcheck.kernels.distributed import (
    Group,
    agree_no_error,
    assign,
    check_same_on_every_rank,
    compute_tile,
    describe_fn,
    kernel_options,
    layout_on_every_rank,
    mirror,
    model_digest,
    resolve_group,
    tensor_digest,
    tile_grid,
)

__all__ = ["KernelFile", "ntk_to_file", "plan_tile", "sidecar_paths"]

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


def sidecar_paths(path: str | os.PathLike[str]) -> tuple[Path, Path, Path]:
    """The files of a run writing ``path``: the kernel being written, the record, the tile bitmap."""
    p = Path(path)
    return p.with_name(p.name + ".partial"), p.with_name(p.name + ".tiles.json"), p.with_name(p.name + ".tiles.npy")


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


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _short(value: Any) -> str:
    text = str(value)
    return text[:12] + "..." if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else text


def _compare(record: dict[str, Any], wanted: dict[str, Any], files: tuple[Path, Path, Path], path: Path) -> None:
    """Raise ValueError naming every field (bar the tile side) in which ``record`` differs from ``wanted``."""
    names = {"model": "model (parameters, buffers, requires_grad, train/eval modes)", "x1": "x1 (values)",
             "x2": "x2 (values)"}
    diffs = [f"{names.get(k, k)}: recorded {_short(record.get(k))}, now {_short(v)}"
             for k, v in wanted.items() if k != "tile" and record.get(k) != v]
    if diffs:
        raise ValueError(
            f"cannot resume writing {path}: the record {files[1]} of an interrupted run was made with other arguments "
            f"({'; '.join(diffs)}). Rerun with the recorded arguments to resume it, or delete {files[0]}, {files[1]} "
            f"and {files[2]} to start afresh"
        )


def _readable(p: Path, shape: tuple[int, ...], dtype: Any) -> bool:
    try:
        m = np.load(p, mmap_mode="r")
    except (OSError, ValueError):
        return False
    ok = m.shape == shape and m.dtype == np.dtype(dtype)
    del m
    return ok


def _prepare(path: Path, wanted: dict[str, Any], tile_fits: Callable[[int], bool], explicit_tile: bool) -> None:
    """Rank 0: keep a matching record (checking the tile side it holds), or create fresh files and record."""
    files = partial, record_p, bits_p = sidecar_paths(path)
    shape, n_tiles = tuple(wanted["shape"]), wanted["tiles"]
    if record_p.exists():
        try:
            record = json.loads(record_p.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot resume writing {path}: its record {record_p} cannot be read ({exc}); delete "
                             f"{partial}, {record_p} and {bits_p} to start afresh") from exc
        if not isinstance(record, dict):
            raise ValueError(f"cannot resume writing {path}: its record {record_p} is not a JSON object; delete "
                             f"{partial}, {record_p} and {bits_p} to start afresh")
        if record.get("tile") != wanted["tile"]:
            if explicit_tile:
                raise ValueError(f"cannot resume writing {path}: its record {record_p} has tiles of "
                                 f"{record.get('tile')} rows, the call asks for tile={wanted['tile']}; pass "
                                 f"tile={record.get('tile')} to resume, or delete {partial}, {record_p} and {bits_p}")
            side = record.get("tile")
            if not isinstance(side, int) or side < 1 or not tile_fits(side):
                raise ValueError(f"cannot resume writing {path}: its record {record_p} has tiles of {side} rows, "
                                 "which do not fit in this call's memory_budget; raise it, or delete "
                                 f"{partial}, {record_p} and {bits_p} to start afresh")
            n1, n2 = shape[:2]
            wanted = {**wanted, "tile": side, "tiles": len(tile_grid(n1, n2, side, wanted["symmetric"]))}
        _compare(record, wanted, files, path)
        if _readable(partial, shape, wanted["dtype"]) and _readable(bits_p, (wanted["tiles"],), np.uint8):
            return
        # the record outlived its data (an interruption right after the rename of a finished run): start afresh
    for p in (record_p, bits_p, partial):  # the record first: no record may point at files being replaced
        p.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.lib.format.open_memmap(partial, mode="w+", dtype=wanted["dtype"], shape=shape)
    data.flush()
    del data
    bits = np.lib.format.open_memmap(bits_p, mode="w+", dtype=np.uint8, shape=(n_tiles,))
    bits.flush()
    del bits
    _write_json_atomic(record_p, wanted)


def _finish(path: Path, n_tiles: int) -> None:
    """Rank 0: check every tile is recorded, put the kernel in place, remove the sidecars."""
    partial, record_p, bits_p = sidecar_paths(path)
    bits = np.load(bits_p, mmap_mode="r")
    missing = int(n_tiles - np.count_nonzero(bits))
    del bits
    if missing:
        raise RuntimeError(f"ntk_to_file: {missing} of {n_tiles} tiles of {path} are not recorded after every rank "
                           "finished; rerun the same call to compute them")
    os.replace(partial, path)
    _fsync_dir(path.parent)
    record_p.unlink()
    bits_p.unlink()


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
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    options = kernel_options(method, output, output_fn, None)
    path = _check_path(path)
    if tile is not None:
        check_positive_int(tile, "tile")
    if memory_budget is not None:
        check_positive_int(memory_budget, "memory_budget")
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool, got {type(progress).__name__}")
    group = _group(process_group)
    rank, world = (group.rank, group.world) if group else (0, 1)
    trailing, dtype = layout_on_every_rank(group, model, x1, x2, options, "ntk_to_file")
    if dtype not in _NUMPY_DTYPES:
        raise TypeError(f"the kernel's dtype {dtype} has no .npy equivalent: use a model of dtype float64, float32 "
                        "or float16")
    symmetric = x2 is None
    n1, n2 = x1.shape[0], (x1 if x2 is None else x2).shape[0]
    shape = (n1, n2, *trailing)
    pair_bytes = math.prod(trailing) * np.dtype(_NUMPY_DTYPES[dtype]).itemsize
    budget = memory_budget if memory_budget is not None else default_budget(x1.device)
    fixed = _fixed_bytes(model, x1, x2)

    def ntk_budget(side: int) -> int:
        return budget - fixed - side * side * pair_bytes

    def tile_fits(side: int) -> bool:
        return side * side * pair_bytes * TILE_SHARE <= budget - fixed

    if tile is None:
        side = plan_tile(n1, n2, pair_bytes, budget, fixed)[0]
    else:
        side = tile
        if memory_budget is not None and not tile_fits(side):
            raise KernelMemoryError(
                f"tile={tile} does not fit memory_budget {gib(budget)}: a tile's values take "
                f"{gib(side * side * pair_bytes)}, more than 1/{TILE_SHARE} of the {gib(budget - fixed)} left after "
                f"the inputs and the model; use a smaller tile or leave tile=None"
            )
    wanted: dict[str, Any] = {
        "format": RECORD_FORMAT, "shape": list(shape), "dtype": np.dtype(_NUMPY_DTYPES[dtype]).name,
        "symmetric": symmetric, "tile": side, "tiles": len(tile_grid(n1, n2, side, symmetric)),
        "method": method, "output": output, "output_fn": describe_fn(output_fn),
        "model": model_digest(model), "x1": tensor_digest(x1), "x2": tensor_digest(x2),
    }
    if group:
        settings = repr((str(path.resolve()), tile, memory_budget, method, output, describe_fn(output_fn)))
        check_same_on_every_rank(group, {"model parameters": wanted["model"], "x1": wanted["x1"],
                                         "x2": wanted["x2"], "settings": hashlib.sha256(settings.encode()).hexdigest()})
    partial, record_p, bits_p = sidecar_paths(path)

    error: BaseException | None = None
    if rank == 0:
        try:
            _prepare(path, wanted, tile_fits, explicit_tile=tile is not None)
        except Exception as exc:  # reported on every rank
            error = exc
    if group:
        agree_no_error(group, error, "ntk_to_file")
    elif error is not None:
        raise error

    try:
        side = int(json.loads(record_p.read_text())["tile"])
        data = np.lib.format.open_memmap(partial, mode="r+")
        bits = np.lib.format.open_memmap(bits_p, mode="r+")
        done = bits.copy()
    except (OSError, ValueError, KeyError) as exc:
        error = FileNotFoundError(f"ntk_to_file on rank {rank}: cannot open the files rank 0 prepared for {path} "
                                  f"({exc}); every rank must see the same file system")
    # every rank has read the record of finished tiles before any rank adds to it
    if group:
        agree_no_error(group, error, "ntk_to_file")
    elif error is not None:
        raise error
    tiles = tile_grid(n1, n2, side, symmetric)
    todo = [t for t in tiles if not done[t.index]]
    done_before = len(tiles) - len(todo)
    mine = assign(todo, world)[rank]
    options["memory_budget"] = ntk_budget(side) if memory_budget is not None or tile is None else None
    computed = 0
    bar = tqdm(total=len(tiles) if world == 1 else len(mine), initial=done_before if world == 1 else 0,
               desc=f"ntk tiles -> {path.name}" + (f" (rank 0 of {world})" if world > 1 else ""), unit="tile",
               disable=not progress or rank != 0)
    try:
        for t in mine:
            value = compute_tile(model, x1, x2, t, options).detach().to("cpu").numpy()
            data[t.r0:t.r1, t.c0:t.c1] = value
            if t.mirrored:
                data[t.c0:t.c1, t.r0:t.r1] = mirror(value)
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
    if rank == 0:
        try:
            _finish(path, len(tiles))
        except Exception as exc:
            if not group:
                raise
            error = exc
    if group:
        agree_no_error(group, error, "ntk_to_file")
    return KernelFile(path, shape, wanted["dtype"], side, len(tiles), done_before, computed,
                      time.perf_counter() - start)
