"""The networks and 1-d data of seed 000 §7: its Gaussian initialization and the sin(4x) training sets."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ntkcheck.models.mlp import MLP

FIG2_WIDTH, FIG2_V_STD, FIG2_HIDDEN_LAYERS = 5000, 10.0, 2
"""Seed 000 Fig 2's network: 1-5000-5000-1 (two hidden layers) at v_std = 10."""


def seed000_mlp(
    in_features: int,
    widths: Sequence[int],
    out_features: int,
    v_std: float,
    generator: torch.Generator,
    *,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> MLP:
    """A ReLU network in standard parametrization with seed 000 §7's init.

    Every weight and bias is drawn from ``N(0, (v_std sqrt(2 / (fan_in + fan_out)))^2)``
    (``MLP(init="glorot", weight_std=v_std)``), all from ``generator``.
    """
    return MLP(
        in_features,
        list(widths),
        out_features,
        activation="relu",
        parametrization="standard",
        weight_std=v_std,
        init="glorot",
        generator=generator,
        dtype=dtype,
        device=device,
    )


def sin_data(
    n: int, generator: torch.Generator, *, min_gap: float = 0.0, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` sorted points uniform on [-1, 1] and their targets sin(4x) (seed 000 §7.1), as (n, 1) and (n,).

    The draw is repeated (from the same ``generator``) until neighbouring points are at
    least ``min_gap * 2 / n`` apart.
    """
    if not 0.0 <= min_gap < 1.0:
        raise ValueError(f"min_gap must lie in [0, 1) (a fraction of the mean spacing 2/n), got {min_gap}")
    for _ in range(10_000):
        x = (torch.rand(n, 1, generator=generator, dtype=dtype) * 2 - 1).sort(dim=0).values
        if n < 2 or float((x[1:] - x[:-1]).min()) >= min_gap * 2 / n:
            return x, torch.sin(4 * x).squeeze(1)
    raise RuntimeError(f"no draw of {n} points with gaps >= {min_gap * 2 / n:.3g} in 10000 tries; lower min_gap")
