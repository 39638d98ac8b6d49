"""The report of the 1-d ASI experiment (seed 000 Fig 2): verdicts, tables, notes and the panels of Fig 2.

``runs`` holds one dict per seed from :mod:`ntkcheck.experiments.asi_1d`: the data, the trained
outputs of the four networks, eq (6)'s terms from the initial NTK, loss curves and steps to
the speed loss, kernel drift and the initial output's scale.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ntkcheck.experiments._result import Reproduction, WidthTrend, mean_spread, spread_text, verdict
from ntkcheck.experiments._scale import predicted_scale_ratio, scale_rows
from ntkcheck.experiments._seed000 import FIG2_HIDDEN_LAYERS, FIG2_V_STD, FIG2_WIDTH

if TYPE_CHECKING:
    from ntkcheck.experiments.asi_1d import Config

PLOT_TOLERANCE = 0.1
"""Relative L2 gap at which two curves of Fig 2(a) no longer read as one."""
MUCH_FASTER = 2.0
"""'Much faster' read as at least twice as fast (half the steps or fewer); the paper gives no number."""

COLORS = {"original": "tab:blue", "ASI": "c", "doubling": "tab:green", "RND": "black"}
LOSS_COLORS = {"original": "tab:blue", "ASI": "tab:red", "doubling": "gold", "RND": "black"}  # Fig 2(c)'s legend


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def figures(run: dict[str, Any], *, title: str, speed_loss: float) -> dict[str, Any]:
    """Fig 2 (a) trained outputs with eq (6), (b) the prior h_ini adds, (c) training losses; and eq (6)'s gap.

    ``run`` holds one seed's data (``x``, ``y``), test grid ``xt``, trained outputs per network,
    eq (6)'s terms (a :class:`ntkcheck.dynamics.solvers.Decomposition`) and loss curves per network.
    """
    from matplotlib.figure import Figure

    x, y, xt, trained, eq6, curves = (run[k] for k in ("x", "y", "xt", "trained", "eq6", "curves"))
    xs, ys, grid = _np(x).ravel(), _np(y), _np(xt).ravel()
    figs: dict[str, Any] = {}

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot(grid, _np(trained["original"]), color=COLORS["original"], lw=2, label="original")
    ax.plot(grid, _np(trained["doubling"]), color=COLORS["doubling"], ls="--", lw=1.5, label="doubling")
    ax.plot(grid, _np(eq6.total), color="tab:red", ls="--", lw=1.2, label="RHS of eq (6)")
    ax.plot(grid, _np(trained["ASI"]), color=COLORS["ASI"], ls="-.", lw=2.2, label="ASI", zorder=5)
    ax.plot(xs, ys, "k*", ms=9, label="training data", zorder=6)
    ax.set(xlabel="x", ylabel="output after training", title=f"(a) {title}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    figs["a-outputs"] = fig

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot(grid, _np(eq6.fit_of_init), color="tab:blue", label="h_k(x; 0, X, h_ini(X))")
    ax.plot(grid, _np(eq6.h_ini), color="tab:red", ls="--", label="h_ini")
    ax.plot(grid, 20 * _np(eq6.init_bias.abs()), color="c", label="20 |h_ini - h_k(x; 0, X, h_ini(X))|")
    ax.set(xlabel="x", ylabel="output", title="(b) the prior added by h_ini")
    ax.legend(fontsize=8)
    fig.tight_layout()
    figs["b-init-prior"] = fig

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for name, (steps, losses) in curves.items():
        ax.semilogy(steps, losses, color=LOSS_COLORS.get(name), label=name)
    ax.axhline(speed_loss, color="gray", lw=0.8, ls=":")
    ax.set(xlabel="gradient-descent step", ylabel="training MSE", title="(c) training loss, one step size")
    ax.legend(fontsize=8)
    fig.tight_layout()
    figs["c-loss"] = fig

    fig = Figure(figsize=(6, 5))
    ax1, ax2 = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1])
    ax1.plot(grid, _np(trained["original"]), color="tab:blue", lw=2, label="trained original")
    ax1.plot(grid, _np(eq6.total), color="tab:red", ls="--", lw=1.2, label="RHS of eq (6), initial NTK")
    ax1.plot(xs, ys, "k*", ms=9)
    ax1.set(ylabel="output", title="eq (6) vs the trained original network (not a panel of the paper)")
    ax1.legend(fontsize=8)
    ax2.plot(grid, _np(trained["original"] - eq6.total), color="k", lw=1)
    ax2.set(xlabel="x", ylabel="network - eq (6)")
    fig.tight_layout()
    figs["eq6-gap"] = fig
    return figs


def verdicts(config: Config, runs: list[dict[str, Any]], sweep: dict[int, list[float]], result: Reproduction) -> None:
    """The verdicts of Fig 2 and eq (6) on the per-seed runs; eq (6)'s gap carries its width sweep."""
    m = config.width
    widths = sorted(sweep)
    trend = (
        WidthTrend(
            tuple(widths),
            tuple(tuple(sweep[w]) for w in widths),
            FIG2_WIDTH,
            note=f"Eq (6)'s gap ‖h_net - h_eq6‖ / ‖h_eq6‖ at each width, each at v_std = "
            f"{FIG2_V_STD:g} (w / {FIG2_WIDTH})^(1/6) (h_ini at the paper's scale); the same seeds "
            f"(data) at every width.",
        )
        if len(widths) >= 2
        else None
    )

    def ratio(run: dict, other: str) -> float:
        s = run["speed"]
        return s[other] / s["ASI"] if math.isfinite(s["ASI"]) else math.nan

    result.verdicts = [
        verdict(
            "ASI output at init is 0 (Thm 4): max abs(h_ASI(x; Theta_0)) over training and test points",
            [r["asi_init"] for r in runs],
            0.0,
            "<=",
            "the two branches are bit-identical copies, so s*(h - h) is exactly 0 in floating point",
        ),
        verdict(
            "RHS of eq (6) from the initial NTK predicts the trained original network (Fig 2a, red dashed on "
            "blue): ‖h_net - h_eq6‖ / ‖h_eq6‖ on the test points",
            [r["err_l2"] for r in runs],
            PLOT_TOLERANCE,
            "<=",
            "the paper's claim is that the two curves coincide on the plot; curves a tenth of their size apart are "
            "visibly different there. A large-width claim: see the width sweep",
            trend=trend,
        ),
        verdict(
            "the trained original network is the limit of its linearization up to the kernel regime's error: "
            "‖h_net - h_eq6‖ / ‖h_eq6 - h_ini‖ on the test points",
            [r["err_move"] for r in runs],
            1.0 / math.sqrt(m),
            "<=",
            f"eq (6) is exact for the linearized network, and a trained network leaves its linearization by at most "
            f"the relative kernel drift, O(m^-1/2) (Lee et al. 2019), times the distance training moves the "
            f"function: 1/sqrt(m) = {1 / math.sqrt(m):.3g} at unit constant",
        ),
        verdict(
            "the original network reached the stop loss (premise of eq (6) at t = inf)",
            [r["final_original"] for r in runs],
            config.stop_loss,
            "<=",
            "eq (6) describes the end of training; the residual left at this loss is far below the targets' scale",
        ),
    ]
    why = (
        f"'much faster' (§7.2.1, Fig 2c) is not quantified in the paper; read as at least {MUCH_FASTER:g}x "
        f"(half the steps or fewer), the reading used for every 'much' in these reports"
    )
    for other in ("original", "RND"):
        result.verdicts.append(
            verdict(
                f"ASI trains much faster than {other} (Fig 2c): steps to MSE < {config.speed_loss:g}, {other} / ASI",
                [ratio(r, other) for r in runs],
                MUCH_FASTER,
                ">=",
                why,
            )
        )
    predicted = [r["predicted"]["doubling"] / r["predicted"]["ASI"] for r in runs]
    result.verdicts.append(
        verdict(
            f"ASI trains much faster than doubling (Fig 2c): steps to MSE < {config.speed_loss:g}, doubling / ASI",
            [ratio(r, "doubling") for r in runs],
            MUCH_FASTER,
            ">=",
            why,
            information=(
                f"seed 000's theory gives the doubling trick's kernel (Thm 10: layers L-1 and L doubled, the "
                f"lower ones gone) but no ordering of training speeds, and the linearized networks (each with "
                f"its own initial NTK, the same step) give doubling / ASI = {spread_text(predicted)}: a kernel "
                f"of the same order trains about as fast; not scored"
            ),
        )
    )


def tables(config: Config, runs: list[dict[str, Any]], paper_rms: list[float] | None, result: Reproduction) -> None:
    """The scale, training, eq (6) and kernel tables of the run, and its notes."""
    m = config.width
    result.tables["Initial output scale (seed 000 §7 init)"] = scale_rows(
        [r["h_ini_rms"] for r in runs],
        paper_rms,
        runs[0]["target_rms"],
        run_label=f"this run: width {m}, v_std {config.v_std:g}",
        paper_label=f"paper: width {FIG2_WIDTH}, v_std {FIG2_V_STD:g} (RMS on 100 grid points)",
        predicted=predicted_scale_ratio(config.v_std, m, FIG2_V_STD, FIG2_WIDTH, FIG2_HIDDEN_LAYERS),
    )
    result.tables["Training (one step size for all networks)"] = [row for r in runs for row in r["rows"]]
    result.tables["Eq (6) against the trained networks (test points)"] = [
        {
            "seed": r["seed"],
            "‖h_orig - eq6‖ / ‖eq6‖": r["err_l2"],
            "‖h_orig - eq6‖ / ‖eq6 - h_ini‖": r["err_move"],
            "‖eq6 - h_ini‖ / ‖eq6‖": r["moved_ratio"],
            "1/sqrt(m)": 1 / math.sqrt(m),
            "‖h_ASI - h_k(0,X,Y)‖ / ‖h_k(0,X,Y)‖": r["asi_vs_unbiased"],
            "‖(h_orig - h_ASI) - prior‖ / ‖prior‖": r["prior_err"],
        }
        for r in runs
    ]
    result.tables["Kernels"] = [
        {
            "seed": r["seed"],
            "cond(K) at init": r["cond"],
            "‖K_ASI - K‖ / ‖K‖": r["asi_kernel_gap"],
            "‖K_end - K‖ / ‖K‖ (original)": r["drift"],
            "lambda_min(K_end) / lambda_min(K)": r["lam_min_ratio"],
            "RMS of h_ini on test points": r["h_ini_rms"],
            "lr": r["lr"],
        }
        for r in runs
    ]
    first = runs[0]
    moved = mean_spread([r["moved_ratio"] for r in runs])[0]
    result.notes += [
        f"Training points: {config.n_train} uniform draws on [-1, 1] per seed (redrawn until neighbours are at least "
        f"{config.min_gap:g} x 2/n apart); test points: an even grid of {config.n_test} on [-1, 1].",
        f"Step size {config.lr_fraction:g} x the smallest MSE stability limit n/lambda_max(K) of the four networks "
        f"(first seed: {', '.join(f'{k} {v:.3g}' for k, v in first['limits'].items())}). Steps to a loss level are "
        f"read from the history, recorded every {config.record_every} steps; the linearized networks' are from "
        f"ntkcheck.mse_gd on a 10-step grid.",
        "‖.‖ is the Euclidean norm over the test points; prior = h_ini - h_k(.; 0, X, h_ini(X)), the term eq (6) "
        "adds to h_k(.; 0, X, Y).",
        f"Eq (6) vs the trained original: the gap is {spread_text([r['err_move'] for r in runs])} of the distance "
        f"training moved the function (‖h_eq6 - h_ini‖), while the original's kernel on X moved by "
        f"{spread_text([r['drift'] for r in runs])} (relative Frobenius). That distance, set by h_ini, is {moved:.3g} "
        f"times the size of the trained output, so the same gap is a large part of the output itself; it shrinks with "
        f"the width (sweep above).",
        "The figures show the first seed.",
    ]
    bad = sorted({n for r in runs for n in r["unconverged"]})
    if bad:
        result.notes.append(f"Not converged to stop_loss within {config.max_steps} steps (some seed): {bad}.")
