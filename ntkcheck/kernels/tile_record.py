"""The files of a kernel written tile by tile: the kernel being written, the run's record, the tile bitmap.

For ``path = "K.npy"`` (see :mod:`ntkcheck.kernels.out_of_core`): ``K.npy.partial`` (the kernel
being written), ``K.npy.tiles.json`` (the record of the run, written atomically once) and
``K.npy.tiles.npy`` (one byte per tile, set once its values are on disk).  Rank 0 prepares them
(:func:`prepare_files`: resuming a matching record, or starting afresh) and, when every tile is
recorded, puts the kernel in place (:func:`finish_files`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ntkcheck.kernels.tile_grid import tile_grid

__all__ = ["finish_files", "prepare_files", "sidecar_paths"]


def sidecar_paths(path: str | os.PathLike[str]) -> tuple[Path, Path, Path]:
    """The files of a run writing ``path``: the kernel being written, the record, the tile bitmap."""
    p = Path(path)
    return p.with_name(p.name + ".partial"), p.with_name(p.name + ".tiles.json"), p.with_name(p.name + ".tiles.npy")


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
    names = {
        "model": "model (parameters, buffers, requires_grad, train/eval modes)",
        "x1": "x1 (values)",
        "x2": "x2 (values)",
    }
    diffs = [
        f"{names.get(k, k)}: recorded {_short(record.get(k))}, now {_short(v)}"
        for k, v in wanted.items()
        if k != "tile" and record.get(k) != v
    ]
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
    ok = bool(m.shape == shape and m.dtype == np.dtype(dtype))
    del m
    return ok


def prepare_files(path: Path, wanted: dict[str, Any], tile_fits: Callable[[int], bool], explicit_tile: bool) -> None:
    """Rank 0: keep a matching record (checking the tile side it holds), or create fresh files and record."""
    files = partial, record_p, bits_p = sidecar_paths(path)
    shape, n_tiles = tuple(wanted["shape"]), wanted["tiles"]
    if record_p.exists():
        try:
            record = json.loads(record_p.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"cannot resume writing {path}: its record {record_p} cannot be read ({exc}); delete "
                f"{partial}, {record_p} and {bits_p} to start afresh"
            ) from exc
        if not isinstance(record, dict):
            raise ValueError(
                f"cannot resume writing {path}: its record {record_p} is not a JSON object; delete "
                f"{partial}, {record_p} and {bits_p} to start afresh"
            )
        if record.get("tile") != wanted["tile"]:
            if explicit_tile:
                raise ValueError(
                    f"cannot resume writing {path}: its record {record_p} has tiles of "
                    f"{record.get('tile')} rows, the call asks for tile={wanted['tile']}; pass "
                    f"tile={record.get('tile')} to resume, or delete {partial}, {record_p} and {bits_p}"
                )
            side = record.get("tile")
            if not isinstance(side, int) or side < 1 or not tile_fits(side):
                raise ValueError(
                    f"cannot resume writing {path}: its record {record_p} has tiles of {side} rows, "
                    "which do not fit in this call's memory_budget; raise it, or delete "
                    f"{partial}, {record_p} and {bits_p} to start afresh"
                )
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


def finish_files(path: Path, n_tiles: int) -> None:
    """Rank 0: check every tile is recorded, put the kernel in place, remove the sidecars."""
    partial, record_p, bits_p = sidecar_paths(path)
    bits = np.load(bits_p, mmap_mode="r")
    missing = int(n_tiles - np.count_nonzero(bits))
    del bits
    if missing:
        raise RuntimeError(
            f"ntk_to_file: {missing} of {n_tiles} tiles of {path} are not recorded after every rank "
            "finished; rerun the same call to compute them"
        )
    os.replace(partial, path)
    _fsync_dir(path.parent)
    record_p.unlink()
    bits_p.unlink()
