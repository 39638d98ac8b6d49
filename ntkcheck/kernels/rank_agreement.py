"""What the ranks of a process group must agree on: fingerprints of models and inputs, and shared verdicts.

Before any work every rank checks that it holds the same model (a SHA-256 of the parameters,
buffers, ``requires_grad`` flags and train/eval modes), the same inputs and the same settings
as rank 0 (:class:`~ntkcheck.errors.RankMismatchError` otherwise, naming the ranks that
differ); an error on one rank is reported on every rank instead of leaving the others waiting.
The fingerprints also tell a resumed out-of-core run whether its file belongs to the same kernel.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ntkcheck.errors import RankMismatchError
from ntkcheck.kernels.tile_grid import kernel_layout


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
        raise RuntimeError(
            f"{what} needs an initialised process group: call torch.distributed.init_process_group "
            "(backend 'gloo' on CPU, 'nccl' on GPUs) first, e.g. in a script run by torchrun"
        )
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
    mine = torch.tensor(
        np.frombuffer(b"".join(bytes.fromhex(items[n]) for n in names), dtype=np.int64).copy(), device=group.device
    )
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


def layout_on_every_rank(
    group: Group | None, model: nn.Module, x1: torch.Tensor, x2: torch.Tensor | None, options: dict[str, Any], what: str
) -> tuple[tuple[int, ...], torch.dtype]:
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
