"""Kernel features of a block of rows, as the engine forms them, and the cost model that chooses their form.

A parameter group contributes either per-sample gradients (:class:`Vec`) or Gram-of-Grams
features (:class:`Gram`), by the cheaper of the two exact contractions under this cost model
(per pair of rows, K cotangents, S positions, G of width m, A of width k, rows per block B,
b bytes per number):

* Gram-of-Grams: ``Theta = sum_{s,t} (G_s . G'_t) (A_s . A'_t)``.
  Flops ``S^2 (2 K^2 m + 2 k + 3 K^2)``; scratch ``(K^2 + 1) S^2 b`` bytes per pair,
  features ``(K S m + S k) b`` bytes per row.  For an embedding ``A_s . A'_t`` is
  ``[id_s == id'_t]`` (k counted as 1).
* per-sample gradients ``g_n = sum_s G_{n,s} (x) A_{n,s}`` then ``g g'^T``.
  Flops ``2 K^2 m k + 4 K S m k / B`` (the Gram, and forming g once per row on each
  side); features ``K m k b`` bytes per row.  For an embedding k is the table's
  row count and forming g is a scatter of ``K S m`` numbers.

Gram-of-Grams is chosen when its flops are not larger (a dense layer, S = 1: always
for widths over ~2; a convolution with many output pixels: per-sample).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ntkcheck.kernels._piece import Piece


@dataclass
class Vec:
    """Per-sample gradients ``scale * g``, g (K, B, P), of parameter ``name`` (or of some of its rows)."""

    name: str
    g: torch.Tensor
    rows: tuple[int, int] | None = None
    scale: float = 1.0


@dataclass
class Gram:
    """Gram-of-Grams features of one parameter: G (K, B, S, m) and A (B, S, k) or ids (B, S)."""

    name: str
    g: torch.Tensor
    a: torch.Tensor
    index: bool
    bias_name: str | None = None
    bias_mult2: float = 0.0
    mult2: float = 1.0


Term = Vec | Gram


def cost_model(k_cot: int, s: int, m: int, k: int, block: int, *, index: bool) -> tuple[float, float]:
    """Flops per pair of rows of the two contractions of the module docstring: (Gram-of-Grams, per-sample)."""
    gram = s * s * (2 * k_cot * k_cot * m + (1 if index else 2 * k) + 3 * k_cot * k_cot)
    forming = k_cot * s * m if index else 2 * k_cot * s * m * k
    per_sample = 2 * k_cot * k_cot * m * k + 2 * forming / max(block, 1)
    return float(gram), float(per_sample)


def use_gram(k_cot: int, s: int, m: int, k: int, block: int, *, index: bool) -> bool:
    """The cost model of the module docstring: True when Gram-of-Grams takes no more flops."""
    gram, per_sample = cost_model(k_cot, s, m, k, block, index=index)
    return gram <= per_sample


def rows_key(piece: Piece) -> tuple[int, int]:
    """The rows ``(lo, hi)`` of its parameter that a piece describes (all of them when it names none)."""
    return piece.rows if piece.rows is not None else (0, piece.param.shape[0] if piece.param.ndim else 1)


def block_rows(terms: list[Term]) -> int:
    """The number of rows of a block's features."""
    return int(terms[0].g.shape[1])


def alloc_rows(t: Term, n: int) -> Term:
    """An empty term like ``t`` for ``n`` rows (rows: axis 1 of ``g``, axis 0 of ``a``)."""
    g = t.g.new_empty((t.g.shape[0], n, *t.g.shape[2:]))
    if isinstance(t, Vec):
        return replace(t, g=g)
    return replace(t, g=g, a=t.a.new_empty((n, *t.a.shape[1:])))


def cat(parts: list[torch.Tensor], dim: int) -> torch.Tensor:
    """``torch.cat`` without a copy for a single part."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=dim)


def weighted_sum(parts: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """``sum_i weights[i] * parts[i]``, without copies for a single unit-weight part."""
    total = parts[0] if weights[0] == 1.0 else parts[0] * weights[0]
    for part, w in zip(parts[1:], weights[1:]):
        total = total + (part if w == 1.0 else part * w)
    return total


def weighted(g: torch.Tensor, a: torch.Tensor | None) -> torch.Tensor:
    """``g * a`` broadcast over the cotangents, or ``g`` when there is no ``a``."""
    return g if a is None else g * a[None]


def outer_per_sample(piece: Piece, g: torch.Tensor) -> torch.Tensor:
    """One call's per-sample gradients (K, B, m * k) of an ``"outer"`` piece, without its multiplier."""
    if piece.per_sample is not None:
        return piece.per_sample(g)
    return torch.einsum("kbsm,bsn->kbmn", g, piece.required_activations()).reshape(g.shape[0], g.shape[1], -1)


def scatter_per_sample(g: torch.Tensor, ids: torch.Tensor, width: int) -> torch.Tensor:
    """Per-sample gradients (K, B, width * m) of an embedding table of ``width`` rows looked up at ``ids``."""
    k_cot, b, s, m = g.shape
    flat = (torch.arange(b, device=ids.device)[:, None] * width + ids).reshape(-1)
    out = torch.zeros(k_cot, b * width, m, dtype=g.dtype, device=g.device)
    out.index_add_(1, flat, g.reshape(k_cot, b * s, m))
    return out.view(k_cot, b, width * m)


def row_bytes(terms: list[Term]) -> tuple[int, int]:
    """Bytes per row of a block's features, and scratch bytes per pair of rows of a tile."""
    b = block_rows(terms)
    feats = (
        sum(
            t.g.numel() * t.g.element_size() + (t.a.numel() * t.a.element_size() if isinstance(t, Gram) else 0)
            for t in terms
        )
        // b
    )
    pair = 0
    for t in terms:
        if isinstance(t, Gram):
            k, _, s, _ = t.g.shape
            pair = max(pair, 2 * (k * k + 1) * s * s * t.g.element_size())
    return feats, pair
