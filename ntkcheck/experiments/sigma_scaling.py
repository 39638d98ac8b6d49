"""Seed 001 §4.2 and §5, Fig 1: the test loss of wide ReLU nets grows like sigma^(2L) with the init scale.

Bias-free ReLU networks in NTK parametrization with initial std ``sigma``
(seed 001 eq (1): every layer computes ``sigma / sqrt(fan_in) W a``, raw
``W ~ N(0, 1)``) are trained by gradient descent on the MSE to the paper's
stopping loss, for a grid of ``sigma``.  Such a net is positively homogeneous of
degree L (the number of weight layers) in its parameters, so (seed 001 Lemma 2,
eq (14); §4.2)

    f_lin(x) = f_int(x) + (1/L) phi(x) [I - P] theta_0,

the first term the NTK interpolant (independent of sigma: the kernel scales as
sigma^(2L) and cancels), the second, zero on the training inputs, scaling as
sigma^L.  The test loss is therefore flat at the interpolant's loss for small
sigma and grows like sigma^(2L) (like (sigma^2)^L in the paper's variance axis)
for large sigma, while the training loss stays at the stopping value.

Settings (seed 001 §5, App. E): the 2D bump ``exp(-|x|^2)`` with N = 10 training
and 300 test points, one hidden layer (L = 2, width 10000); MNIST digits 0 and 1
(labels 0 and 1 as regression targets, squared loss), 100 training and 100 test
images scaled to unit norm (inputs in the unit ball, seed 001 §1.2), one hidden
layer (L = 2, width 4000) and two (L = 3, width 1500).

What runs for every sigma and repetition (the same raw draw theta_0 for all sigma
of a repetition):

* the trained linearization, exactly: ``h_ini + k(x, X) K^{-1} (Y - h_ini(X))``
  from the float64 empirical NTK (:func:`ntkcheck.decompose`, whose ``unbiased``
  term is the interpolant and ``init_bias`` term the init term of eq (14));
* the network itself, trained by full-batch heavy-ball gradient descent until the
  training MSE is below the paper's stopping value (1e-5 bump, 1e-4 MNIST).

Choices that differ from the paper, and why:

* The bump's inputs carry a constant third coordinate 1, i.e. the first layer has
  a bias realised as a weight, so the net stays homogeneous of degree L in
  theta (Lemma 2 and the sigma^(2L) law are exact).  Without it a bias-free net is
  positively homogeneous in x and cannot fit a bump centred at the origin from
  10 points: the kernel is badly conditioned and the min-norm interpolant lies
  far outside the kernel regime (relative parameter change of order 1).  The
  paper's nets had biases (initialised at 0, App. E).
* Heavy-ball momentum (``momentum``, default 0.9) instead of plain gradient
  descent: its updates stay in the span of past gradients, i.e. in the row space
  of the Jacobian for the linearized model, so the limit is the same min-norm
  interpolant (seed 000 Thm 5's argument); only the number of steps shrinks.
* The sigma grid of each setting is derived from sigma = 1: it spans the sigma
  at which the init term's test loss is ``ratio_range[0]`` to ``ratio_range[1]``
  times the interpolant's (both measured at sigma = 1, scaled by sigma^(2L)), so
  that the plateau and the growth are both on the plot.

Verdicts, per setting, each on the repetitions' values (mean ± spread): the log-log slope of
the test loss against sigma, fitted per repetition over the sigmas where the measured init
term's loss is at least ``fit_ratio`` times the plateau (>= 4 of them by default), is within
``slope_band`` (relative) of 2L, for the trained networks and for the linearization; every
network in that range reached the stopping loss; the trained network's test loss is its
linearization's within a factor 2 over the fit range (Lemma 1, Fig 1 left: "both curves are
very close"); at the small sigmas (init term <= 10% of the interpolant's loss) the network's
test loss is the interpolant's within a factor 2 (Thm 3, the plateau of Fig 1 right).

Scale.  In NTK parametrization the initial output has a width-independent scale (variance
= the NNGP kernel's diagonal, times sigma^(2L)), so narrower quick networks keep the
paper's h_ini; the report prints its RMS at sigma = 1 at the run's width and at the
paper's (measured, same draws of the raw weights' distribution).
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from ntkcheck._support.seeding import child_seed
from ntkcheck.experiments._common import cpu_threads, dtype_named
from ntkcheck.experiments._result import Reproduction, Stopwatch, WidthTrend, mode_of
from ntkcheck.experiments._sigma_scaling_measure import measure, scale_row
from ntkcheck.experiments._sigma_scaling_summary import Point, Setting, figure, per_rep, plateau_gap, summarise
from ntkcheck.experiments.data import DataUnavailableError, gaussian_bump, mnist

NAME = "sigma-scaling"
TITLE = "Test loss vs initialization scale: growth like sigma^(2L) (seed 001 Fig 1)"
REFERENCE = "seed 001 (001_bc58afba9c06bcd2.txt) Lemma 2 eq (14), Thm 3, Thm 4, §4.2, §5 Fig 1, App. E"

F64 = torch.float64
PAPER_BUMP_WIDTH = 10_000
PAPER_MNIST_WIDTHS = {1: (4000,), 2: (1500, 1500)}


@dataclass(frozen=True)
class Config:
    """Sizes and settings of the sigma-scaling experiment.

    Attributes:
        seed: seed of the data and every initial draw.
        bump_width: hidden width of the 2D-bump net (paper: 10000).
        bump_n_train, bump_n_test: bump sample sizes (paper: 10, 300).
        mnist_widths: hidden widths of the MNIST 0/1 nets, one tuple per setting
            (paper: (4000,) and (1500, 1500)); empty to leave MNIST out.
        mnist_n_train, mnist_n_test: MNIST 0/1 sample sizes (paper: 100, 100).
        repetitions: initial draws per sigma (paper: 10).
        n_sigmas: grid points per setting.
        ratio_range: init-term loss / interpolant loss at the two ends of the grid.
        fit_ratio: the slope is fitted where the init term's loss is at least this
            multiple of the interpolant's.
        bump_tol, mnist_tol: stopping training MSE (paper: 1e-5, 1e-4).
        max_steps: step budget per network.
        lr_fraction: step size as a fraction of the gradient-descent limit n / lambda_max(K).
        momentum: heavy-ball momentum (0 = plain gradient descent).
        max_move: training stops once |theta - theta_0| > max_move |theta_0|: the network
            has left the kernel regime the theory is about; it counts as not converged.
        slope_band: accepted relative deviation of the fitted slope from 2L.
        plateau_sweep: when the plateau verdict does not hold at the run's widths, the small-sigma
            networks are trained again at the widths times each of these factors (the width sweep).
        train_dtype: dtype of the trained networks ("float32" or "float64"); kernels,
            the linearization and every solve are float64.
        train_networks: False measures the (exact) linearization only: no networks
            are trained and only the linearization's verdicts are given.
        cpu_threads: intra-op threads torch may use on CPU during the run (None: torch's setting).
        progress: show tqdm bars.
    """

    seed: int = 0
    bump_width: int = 10_000
    bump_n_train: int = 10
    bump_n_test: int = 300
    mnist_widths: tuple[tuple[int, ...], ...] = ((4000,), (1500, 1500))
    mnist_n_train: int = 100
    mnist_n_test: int = 100
    repetitions: int = 10
    n_sigmas: int = 10
    ratio_range: tuple[float, float] = (1e-2, 3e4)
    fit_ratio: float = 100.0
    bump_tol: float = 1e-5
    mnist_tol: float = 1e-4
    max_steps: int = 5000
    lr_fraction: float = 0.5
    momentum: float = 0.9
    max_move: float = 1.0
    slope_band: float = 0.1
    plateau_sweep: tuple[int, ...] = (2, 4)
    train_dtype: str = "float64"
    train_networks: bool = True
    cpu_threads: int | None = 1
    progress: bool = True

    @classmethod
    def quick(cls, seed: int = 0) -> Config:
        """Narrower nets (2000; 256; 512-512), 3 repetitions, 10 sigmas, float32 training.

        The three-layer MNIST net is the widest: Lemma 1's closeness of network and linearization at
        large sigma degrades fastest with depth (at 256-256 one repetition in three measured a factor 5).
        """
        return cls(
            seed=seed,
            bump_width=2000,
            mnist_widths=((256,), (512, 512)),
            repetitions=3,
            max_steps=4000,
            train_dtype="float32",
        )

    @classmethod
    def full(cls, seed: int = 0) -> Config:
        """The paper's widths (10000; 4000; 1500-1500) and 10 repetitions, 10 sigmas (meant for a GPU)."""
        return cls(seed=seed, plateau_sweep=(), cpu_threads=None)


def run(config: Config, *, device: str = "cpu") -> Reproduction:
    """Test loss of trained nets and of their linearizations across the sigma grid; fit the slopes."""
    recorded = {k: v for k, v in asdict(config).items() if k != "progress"}
    result = Reproduction(NAME, TITLE, REFERENCE, mode_of(config), str(device), recorded)
    lo, hi = config.ratio_range
    if not 0 < lo < config.fit_ratio < hi:
        raise ValueError(
            f"config must satisfy 0 < ratio_range[0] < fit_ratio < ratio_range[1], got "
            f"ratio_range={config.ratio_range}, fit_ratio={config.fit_ratio}"
        )
    dtype_named(config.train_dtype, "train_dtype")
    if config.n_sigmas < 3:
        raise ValueError(f"config.n_sigmas must be >= 3, got {config.n_sigmas}")
    with cpu_threads(config.cpu_threads), Stopwatch() as clock:
        result.settings["torch CPU threads during the run"] = torch.get_num_threads()
        result.settings["TF32 matmul"] = torch.backends.cuda.matmul.allow_tf32
        dev = torch.device(device)
        settings = [_bump_setting(config, dev)]
        if config.mnist_widths:
            try:
                digits = mnist(
                    config.mnist_n_train,
                    config.mnist_n_test,
                    (0, 1),
                    seed=config.seed,
                    scale="unit_norm",
                    dtype=F64,
                    device=dev,
                )
            except DataUnavailableError as err:
                result.notes.append(f"MNIST settings not run: {err}")
            else:
                digits = digits._replace(y_train=digits.y_train.to(F64), y_test=digits.y_test.to(F64))
                for widths in config.mnist_widths:
                    label = f"MNIST 0/1, widths {list(widths)}"
                    paper = PAPER_MNIST_WIDTHS.get(len(widths), tuple(widths))
                    settings.append(Setting(label, tuple(widths), digits, config.mnist_tol, paper))
        _run(config, settings, dev, result)
    result.seconds = clock.seconds
    return result


def _bump_setting(config: Config, device: torch.device) -> Setting:
    b = gaussian_bump(config.bump_n_train, config.bump_n_test, seed=config.seed, dtype=F64, device=device)

    def lift(x: torch.Tensor) -> torch.Tensor:  # (x, 1): a first-layer bias that keeps f homogeneous in theta
        return torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)], dim=1)

    split = b._replace(x_train=lift(b.x_train), x_test=lift(b.x_test))
    return Setting(
        f"2D bump, width {config.bump_width}", (config.bump_width,), split, config.bump_tol, (PAPER_BUMP_WIDTH,)
    )


def _run(config: Config, settings: list[Setting], device: torch.device, result: Reproduction) -> None:
    """Every setting's sigma grid, measured and summarised into ``result``; the plateau's width sweep if it fails."""
    from tqdm import tqdm

    reps = range(config.repetitions)
    rows: list[dict[str, object]] = []
    plateau_rows: list[dict[str, object]] = []
    scale: list[dict[str, object]] = []
    panels: list[dict[str, Any]] = []
    bar = tqdm(
        total=len(settings) * config.n_sigmas * config.repetitions,
        desc="sigma-scaling",
        leave=False,
        disable=not config.progress,
    )
    try:
        for k, setting in enumerate(settings):
            L = setting.n_layers
            seeds = [child_seed(config.seed, k, r) for r in reps]
            # the grid: where the init term's loss is ratio_range[0] .. ratio_range[1] times the plateau,
            # from the measured sigma = 1 values and the sigma^(2L) law
            pilot = [measure(config, setting, 1.0, s, device, train_network=False) for s in seeds]
            scale.append(scale_row(setting, pilot, seeds, device))
            plateau1 = float(np.mean([p.interp_test for p in pilot]))
            init1 = float(np.mean([p.init_term for p in pilot]))
            ends = [(r * plateau1 / init1) ** (1.0 / (2 * L)) for r in config.ratio_range]
            sigmas = np.geomspace(ends[0], ends[1], config.n_sigmas)
            points: list[list[Point]] = []
            for sigma in sigmas:
                points.append(
                    [
                        measure(config, setting, float(sigma), s, device, train_network=config.train_networks)
                        for s in seeds
                    ]
                )
                bar.update(config.repetitions)
            panels.append(summarise(config, setting, sigmas, points, rows, plateau_rows, result))
            if config.train_networks and config.plateau_sweep and not result.verdicts[-1].holds:
                result.verdicts[-1] = dataclasses.replace(
                    result.verdicts[-1],
                    trend=_plateau_trend(
                        config, setting, sigmas[panels[-1]["flat"]], seeds, result.verdicts[-1].values, device
                    ),
                )
    finally:
        bar.close()
    result.tables["Initial output scale at sigma = 1 (NTK parametrization: width-independent)"] = scale
    caption = "Small-sigma plateau (sigma where the init term's loss is <= 10% of the interpolant's)"
    result.tables[caption] = plateau_rows
    result.tables["Per sigma (means over repetitions; train MSE and steps: worst repetition)"] = rows
    result.figures["test-loss"] = figure(panels)
    result.notes += [
        "Slopes are d log(test loss) / d log(sigma); against the variance sigma^2 (the paper's axis) they are half.",
        "Test loss is the mean squared error on the test points, averaged over repetitions (for the network: over "
        "the repetitions that reached the stopping loss); 'plateau' is the interpolant's test loss (the unbiased "
        "term of seed 000 eq (6), which is sigma-independent).",
        "param move: |theta - theta_0| / |theta_0| after training (network) and |theta_inf - theta_0| / |theta_0| of "
        "the min-norm solution (predicted); the kernel regime needs both small.",
    ]


def _plateau_trend(
    config: Config,
    setting: Setting,
    sigmas: np.ndarray,
    seeds: list[int],
    values: tuple[float, ...],
    device: torch.device,
) -> WidthTrend:
    """The plateau quantity |log2(network / interpolant)| at the run's widths times each of ``config.plateau_sweep``."""
    widths = [setting.widths[0]]
    per_width = [tuple(values)]
    for factor in config.plateau_sweep:
        wider = dataclasses.replace(setting, widths=tuple(w * factor for w in setting.widths))
        points = [[measure(config, wider, float(sig), s, device) for s in seeds] for sig in sigmas]
        per_width.append(tuple(per_rep(points, np.ones(len(sigmas), dtype=bool), plateau_gap)))
        widths.append(wider.widths[0])
    return WidthTrend(
        tuple(widths),
        tuple(per_width),
        setting.paper_widths[0],
        note=f"The plateau quantity at hidden widths {', '.join(map(str, widths))} (every hidden layer), "
        f"sigma = {', '.join(f'{v:.3g}' for v in sigmas)}, the same seeds; the paper's width is "
        f"{setting.paper_widths[0]}.",
    )
