"""Kernel tiles from the features of two blocks of rows: the per-sample Gram and the Gram-of-Grams.

``Theta = g g'^T`` for per-sample gradients (:class:`~ntkcheck.kernels._features.Vec`) and
``Theta = sum_{s,t} (G_s . G'_t) (A_s . A'_t)`` for Gram-of-Grams features
(:class:`~ntkcheck.kernels._features.Gram`).  On a diagonal tile (the same features on both
sides) the Gram products multiply only row slabs on and above the diagonal and mirror the rest.
"""

from __future__ import annotations

import torch
from torch.profiler import record_function

from ntkcheck.kernels._features import Gram, Term, Vec, block_rows

SLAB_ROWS = 32
"""Rows per slab of a symmetric Gram: slabs of at least this many rows keep the matmuls efficient."""


def gram(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """``x1 @ x2.T``; when ``x2`` is ``x1``, only slabs on and above the diagonal are multiplied and the rest
    mirrored (``(q + 1) / (2 q)`` of the flops with q slabs, up to 8)."""
    r = x1.shape[0]
    slabs = min(8, r // SLAB_ROWS)
    if x2 is not x1 or slabs < 2:
        return x1 @ x2.T
    out = torch.empty(r, r, dtype=x1.dtype, device=x1.device)
    edges = [r * i // slabs for i in range(slabs + 1)]
    for lo, hi in zip(edges, edges[1:]):
        out[lo:hi, lo:] = x1[lo:hi] @ x1[lo:].T
        out[hi:, lo:hi] = out[lo:hi, hi:].T
    return out


def vec_tile(g1: torch.Tensor, g2: torch.Tensor, trace: bool) -> torch.Tensor:
    """The tile (B1, B2, K', K') of per-sample gradients g1 (K, B1, P) and g2 (K, B2, P)."""
    k, b1, p = g1.shape
    b2 = g2.shape[1]
    if trace:
        x1 = g1.transpose(0, 1).reshape(b1, k * p)
        return gram(x1, x1 if g1 is g2 else g2.transpose(0, 1).reshape(b2, k * p))[:, :, None, None]
    x1 = g1.reshape(k * b1, p)
    return gram(x1, x1 if g1 is g2 else g2.reshape(k * b2, p)).view(k, b1, k, b2).permute(1, 3, 0, 2)


def signal_grams(g1: torch.Tensor, g2: torch.Tensor, trace: bool) -> torch.Tensor:
    """``G_s . G'_t`` of signals (K, B, S, m), shaped (K', B1, S1, K', B2, S2) (K' = 1 for ``trace``)."""
    k, b1, s1, m = g1.shape
    b2, s2 = g2.shape[1], g2.shape[2]
    if trace:
        x1 = g1.permute(1, 2, 0, 3).reshape(b1 * s1, k * m)
        gg = gram(x1, x1 if g1 is g2 else g2.permute(1, 2, 0, 3).reshape(b2 * s2, k * m))
        return gg.view(1, b1, s1, 1, b2, s2)
    x1 = g1.reshape(k * b1 * s1, m)
    return gram(x1, x1 if g1 is g2 else g2.reshape(k * b2 * s2, m)).view(k, b1, s1, k, b2, s2)


def activation_grams(t1: Gram, t2: Gram) -> torch.Tensor:
    """``A_s . A'_t`` (B1, S1, B2, S2); for ids, ``[id_s == id'_t]``."""
    b1, s1 = t1.a.shape[:2]
    b2, s2 = t2.a.shape[:2]
    if t1.index:
        return (t1.a.reshape(-1)[:, None] == t2.a.reshape(-1)[None, :]).to(t1.g.dtype).view(b1, s1, b2, s2)
    return (t1.a.reshape(b1 * s1, -1) @ t2.a.reshape(b2 * s2, -1).T).view(b1, s1, b2, s2)


class _TileSum:
    """Tiles accumulated per parameter name, or into one ``"total"``."""

    def __init__(self, per_layer: bool) -> None:
        self.per_layer = per_layer
        self.out: dict[str, torch.Tensor] = {}

    def add(self, name: str, t: torch.Tensor) -> None:
        key = name if self.per_layer else "total"
        self.out[key] = t if key not in self.out else self.out[key].add_(t)


def _add_gram_tile(acc: _TileSum, t1: Gram, t2: Gram, trace: bool) -> None:
    gg = signal_grams(t1.g, t2.g, trace)  # (K', B1, S1, K', B2, S2)
    aa = activation_grams(t1, t2)  # (B1, S1, B2, S2)
    if t1.mult2 != 1.0:
        aa = aa * t1.mult2
    if t1.bias_name is not None and acc.per_layer:
        acc.add(t1.bias_name, (gg.sum((2, 5)) * t1.bias_mult2).permute(1, 3, 0, 2))
    elif t1.bias_name is not None:
        aa = aa + t1.bias_mult2
    acc.add(t1.name, (gg * aa[None, :, :, None]).sum((2, 5)).permute(1, 3, 0, 2))


def feature_tiles(
    f1: list[Term], f2: list[Term], *, names: list[str], trace: bool, per_layer: bool
) -> dict[str, torch.Tensor]:
    """Kernel tiles (B1, B2, K', K') (K' = 1 for ``trace``): per parameter of ``names``, or their sum as
    ``"total"``; a parameter without features gets a zero tile."""
    acc = _TileSum(per_layer)
    for t1, t2 in zip(f1, f2):
        with record_function(f"ntkcheck.tile:{t1.name}"):
            if isinstance(t1, Vec) and isinstance(t2, Vec):
                tile = vec_tile(t1.g, t2.g, trace)
                acc.add(t1.name, tile if t1.scale * t2.scale == 1.0 else tile.mul_(t1.scale * t2.scale))
            elif isinstance(t1, Gram) and isinstance(t2, Gram):
                _add_gram_tile(acc, t1, t2, trace)
    out = acc.out
    for n in names:
        if n not in out:
            k = 1 if trace else f1[0].g.shape[0]
            out[n] = torch.zeros(block_rows(f1), block_rows(f2), k, k, dtype=f1[0].g.dtype, device=f1[0].g.device)
    return out
