"""The scale of the initial output ``h_ini`` under seed 000's initialization, and width-faithful ``v_std``.

Seed 000 §7 draws every parameter (weights and biases) of a ReLU network in standard
parametrization from ``N(0, v^2 * 2 / (fan_in + fan_out))``, ``v = v_std``.  For hidden
widths ``m`` much larger than the input and output dimensions:

* first layer (fan_in d, fan_out m): weights and biases have variance ``2 v^2 / m``, so a
  pre-activation has variance ``(2 v^2 / m)(|x|^2 + 1)`` = O(v^2 / m);
* a hidden-to-hidden layer (fan_in = fan_out = m): variance ``v^2 / m``; a ReLU halves the
  second moment, so the pre-activation's variance is ``m * (v^2 / m) * (1/2) * var_in``
  plus the bias's ``v^2 / m``: it is multiplied by ``v^2 / 2`` (+ lower order);
* output layer (fan_in m, fan_out 1): variance ``2 v^2 / m``, so
  ``var h = m * (2 v^2 / m) * (1/2) * var_in = v^2 var_in``.

With L hidden layers, ``var h_ini = C_L(x) v^(2 (L + 1)) / m`` (plus terms of lower order
in v from the biases): ``h_ini ∝ v^2 / sqrt(m)`` for one hidden layer, ``v^3 / sqrt(m)`` for
two, ``v^(L+1) / sqrt(m)`` in general.  A run at width ``m`` therefore has the paper's
h_ini scale (width ``m_p``, ``v_p``) at

    v(m) = v_p (m / m_p)^(1 / (2 (L + 1))),

the rescaling the quick configurations use.  What it does not keep: the laziness of
training.  With these fan_in + fan_out scalings a unit's pre-activation moves by a
fraction of order ``1 / v^2`` when the output moves by O(1), whatever the width, so a
smaller ``v`` is a less lazy network; the reports print how far the trained networks
moved from their linearization.

In NTK parametrization (seeds 001, 003, 002's experiments) ``h_ini`` has a
width-independent scale (its variance is the NNGP kernel's diagonal), so no rescaling
is needed there; those reports give the measured scale at the run's width and the
infinite-width value.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ntkcheck.experiments._result import mean_spread


def faithful_v_std(v_paper: float, width: int, paper_width: int, hidden_layers: int) -> float:
    """The ``v_std`` at ``width`` giving h_ini the paper's scale at ``paper_width``: ``v_p (m/m_p)^(1/(2(L+1)))``."""
    if hidden_layers < 1 or width < 1 or paper_width < 1 or not v_paper > 0:
        raise ValueError(
            f"need v_paper > 0, widths >= 1 and hidden_layers >= 1, got v_paper={v_paper}, "
            f"width={width}, paper_width={paper_width}, hidden_layers={hidden_layers}"
        )
    return v_paper * (width / paper_width) ** (1.0 / (2 * (hidden_layers + 1)))


def predicted_scale_ratio(v: float, width: int, v_paper: float, paper_width: int, hidden_layers: int) -> float:
    """h_ini's scale at (v, width) over the paper's, by the law ``v^(L+1) / sqrt(m)``."""
    return (v / v_paper) ** (hidden_layers + 1) * math.sqrt(paper_width / width)


def rms(t: torch.Tensor) -> float:
    """Root mean square of the entries of ``t``."""
    return float(t.double().pow(2).mean().sqrt())


@torch.no_grad()
def output_rms(model: nn.Module, x: torch.Tensor) -> float:
    """RMS of ``model(x)`` over the points (and outputs)."""
    p = next(model.parameters())
    return rms(model(x.to(device=p.device, dtype=p.dtype)))


def scale_rows(
    run: list[float],
    paper: list[float] | None,
    target: float,
    *,
    run_label: str,
    paper_label: str = "",
    predicted: float | None = None,
) -> list[dict[str, object]]:
    """Table rows: h_ini's RMS (mean ± spread over seeds) at the run's setting and at the paper's, and the target's.

    ``paper`` None: the run is at the paper's setting, one row says so.
    """
    rows: list[dict[str, object]] = []
    pairs = [(run_label + (" = the paper's setting" if paper is None else ""), run)]
    if paper is not None:
        pairs.append((paper_label, paper))
    for label, vals in pairs:
        mean, std = mean_spread(vals)
        rows.append(
            {
                "network": label,
                "RMS of h_ini (mean over seeds)": mean,
                "spread (std)": std,
                "per seed": ", ".join(f"{v:.3g}" for v in vals),
                "/ RMS of the target": mean / target,
            }
        )
    if paper is not None and predicted is not None:
        rows.append(
            {
                "network": "ratio run / paper: measured (predicted by v^(L+1)/sqrt(m))",
                "RMS of h_ini (mean over seeds)": mean_spread(run)[0] / mean_spread(paper)[0],
                "spread (std)": "",
                "per seed": f"predicted {predicted:.3g}",
                "/ RMS of the target": "",
            }
        )
    return rows
