"""Seeds 000 §5 and 002: the init-induced term of a trained network sits at high frequencies.

Seed 000 §5 (Thm 2, eq (6)): the long-time output of a network trained in the
kernel regime from the initial function ``h_ini`` is
``h_k(.; 0, X, Y) + [h_ini - h_k(.; 0, X, h_ini(X))]``, and "by the F-Principle ...
``h_ini - h_k(.; 0, X, h_ini(X))`` consists mainly of the high frequencies of
``h_ini`` which cannot be well constrained at X".  Seed 002 measures frequency
content by the non-uniform DFT ``y_hat_k = (1/n) sum_i y_i exp(-i 2 pi k . x_i)``
along a direction, and in high dimension by splitting a function into a low part
(Gaussian filter of width delta) and a high part (the rest).

Both views, on real ReLU networks at initialization (NTK parametrization, biases,
float64) with their own empirical NTK (:func:`ntkcheck.ntk`), so that
:func:`ntkcheck.decompose` gives exactly the long-time output of the trained
linearized network (seed 000 Thm 6) and its term ``init_bias = h_ini - fit_of_init``:

* **Circle.**  Inputs ``x = sqrt(2) (cos phi, sin phi)``; functions of the angle are
  periodic, so the NUDFT along the angle (``k`` integer, evaluated on a uniform grid
  of angles) is their exact Fourier series, free of edge leakage.  ``n`` training
  angles are uniform at random; their average spacing resolves frequencies up to
  the Nyquist frequency ``n/2``.
* **Sphere S^d.**  Seed 002's filtering: ``v_low = sum_j v_j G(z_i - z_j) / sum_j G(z_i - z_j)``
  over the test points, ``G`` Gaussian of width ``delta`` = the median distance from a
  training point to its nearest neighbour (the finest scale the sample resolves),
  ``v_high = v - v_low``.

The constant (k = 0, the mean) is left out of every energy: the biases give ``h_ini``
a large constant that the fit removes at once, which would make the comparison
easy for the wrong reason.

The claim is checked in two readings, every quantity per draw (``seeds`` draws of the
network and the training set; verdicts on the mean, with the spread).  Relative to
``h_ini``: the term's spectral centroid is higher, the share of ``h_ini``'s energy left in
it is small well below the Nyquist frequency, and (sphere) its high-frequency fraction is
larger.  Literally ("consists mainly of the high frequencies ... which cannot be well
constrained at X"): more than half of the term's own energy lies above the draw's
constrained band, ``k >= pi / (largest gap between training angles)`` — the degree below
which samples with that largest gap determine a trigonometric polynomial stably
(Gröchenig 1992), about ``n / (2 log n)`` for random angles.  The share of ``h_ini``'s
energy left well above the sample's resolution (k >= n) is reported two-sided, as
information: there the fit's own roughness (kernel functions rougher than ``h_ini``), not
``h_ini``, sets it.  An equispaced design of the same size is reported as a control.

Scale: NTK parametrization, so ``h_ini``'s scale does not depend on the width; neither seed
states a width.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from ntkcheck._support.seeding import torch_generator
from ntkcheck.dynamics.solvers import decompose
from ntkcheck.experiments._common import cpu_threads
from ntkcheck.experiments._fourier import centroid, decay_exponent, energy_spectrum, gap_cutoff, gaussian_split
from ntkcheck.experiments._frequency_report import report
from ntkcheck.experiments._result import Reproduction, Stopwatch, mode_of
from ntkcheck.experiments._sphere import uniform_sphere
from ntkcheck.kernels.empirical import ntk
from ntkcheck.models.mlp import MLP

NAME = "frequency"
TITLE = "Frequency content of the init-induced term h_ini - h_k(.; 0, X, h_ini(X)) (seeds 000 §5, 002)"
REFERENCE = (
    "seed 000 (000_4d798787af19209b.txt) §5 Thm 2 eq (6) and the paragraph after Thm 3; "
    "seed 002 (002_c932e76d04d34432.txt) NUDFT and low/high filtering"
)


@dataclass(frozen=True)
class Config:
    """Sizes and settings of the frequency experiment.

    Attributes:
        seed: seed of every random draw (networks, training angles and points).
        seeds: independent (network, training set) draws; spectra are averaged over them.
        width, depth: hidden width and number of hidden layers of the ReLU networks.
        weight_std, bias_std: sigma_w and sigma_b of the NTK parametrization.
        n_train: training angles on the circle.
        grid: uniform evaluation angles on the circle (frequencies up to grid/2).
        sphere_dim: d of the sphere S^d for the filtering view (0 skips it).
        sphere_train, sphere_test: training and test points on S^d.
        cpu_threads: intra-op threads torch may use on CPU during the run (None: torch's setting; on a
            shared machine one thread is faster than two that wait on each other).
    """

    seed: int = 0
    seeds: int = 32
    width: int = 4096
    depth: int = 2
    weight_std: float = math.sqrt(2.0)
    bias_std: float = 1.0
    n_train: int = 64
    grid: int = 1024
    sphere_dim: int = 5
    sphere_train: int = 1000
    sphere_test: int = 4000
    cpu_threads: int | None = 1

    def __post_init__(self) -> None:
        if self.seeds < 1 or self.width < 1 or self.depth < 1:
            raise ValueError("config.seeds, width and depth must be >= 1")
        if self.n_train < 4:
            raise ValueError(f"config.n_train must be >= 4 (bands up to n/4 need it), got {self.n_train}")
        if self.grid < 4 * self.n_train:
            raise ValueError(
                f"config.grid must be >= 4 * n_train (to resolve frequencies above the sample's "
                f"Nyquist n/2 up to 2n), got grid={self.grid}, n_train={self.n_train}"
            )
        if self.sphere_dim < 0 or (self.sphere_dim and (self.sphere_train < 2 or self.sphere_test < 10)):
            raise ValueError("config.sphere_dim must be >= 0; with it, sphere_train >= 2 and sphere_test >= 10")

    @classmethod
    def quick(cls, seed: int = 0) -> Config:
        """Width 512, 8 draws, 32 training angles, S^5 with 200/1000 points: seconds on 2 CPU cores."""
        return cls(seed=seed, seeds=8, width=512, n_train=32, grid=512, sphere_train=200, sphere_test=1000)

    @classmethod
    def full(cls, seed: int = 0) -> Config:
        """Width 4096, 32 draws, 64 training angles, S^5 with 1000/4000 points (meant for a GPU)."""
        return cls(seed=seed, cpu_threads=None)


CIRCLE_STREAM, SPHERE_STREAM = 1, 2
"""Stream keys of the circle's and the sphere's draws: draw ``s`` of the circle is ``torch_generator(seed, 1, s)``."""


def _network(in_features: int, config: Config, gen: torch.Generator, device: torch.device) -> MLP:
    return MLP(
        in_features,
        [config.width] * config.depth,
        activation="relu",
        bias=True,
        weight_std=config.weight_std,
        bias_std=config.bias_std,
        generator=gen,
        dtype=torch.float64,
        device=device,
    )


def _circle(phi: torch.Tensor) -> torch.Tensor:
    return math.sqrt(2.0) * torch.stack([torch.cos(phi), torch.sin(phi)], dim=1)


# ------------------------------------------------------------------------------------------------
# the experiment


def run(config: Config, *, device: str = "cpu") -> Reproduction:
    """Spectra of h_ini and of the init-induced term on the circle; low/high filtering on S^d."""
    from tqdm import tqdm

    result = Reproduction(NAME, TITLE, REFERENCE, mode_of(config), str(device), asdict(config))
    dev = torch.device(device)
    with cpu_threads(config.cpu_threads), Stopwatch() as clock:
        bar = tqdm(total=config.seeds * (3 if config.sphere_dim else 2), desc="frequency", unit="net", leave=False)
        circle = _run_circle(config, dev, bar)
        control = _run_circle(config, dev, bar, design="equispaced")
        sphere = _run_sphere(config, dev, bar) if config.sphere_dim else None
        bar.close()
        report(config, circle, control, sphere, result)
    result.seconds = clock.seconds
    return result


def _run_circle(config: Config, device: torch.device, bar: Any, design: str = "random") -> dict[str, Any]:
    """Spectra on the circle, per draw and seed-averaged; ``design`` "random" (uniform angles) or "equispaced"."""
    n, kmax = config.n_train, config.grid // 2
    grid = torch.arange(config.grid, dtype=torch.float64, device=device) * (2 * math.pi / config.grid)
    xg = _circle(grid)
    e_ini, e_bias, e_fit = (np.zeros((config.seeds, kmax + 1)) for _ in range(3))
    cutoffs = np.zeros(config.seeds)
    at_train, example = 0.0, None
    for s in range(config.seeds):
        gen = torch_generator(config.seed, CIRCLE_STREAM, s)  # the same draw for both designs
        if design == "random":
            phi = (2 * math.pi * torch.rand(n, generator=gen, dtype=torch.float64)).to(device)
        else:
            shift = float(torch.rand(1, generator=gen, dtype=torch.float64))
            phi = ((torch.arange(n, dtype=torch.float64) + shift) * (2 * math.pi / n)).to(device)
        model = _network(2, config, gen, device)
        x = _circle(phi)
        with torch.no_grad():
            h_train, h_grid = model(x).reshape(-1), model(xg).reshape(-1)
        # rows: the grid, then the training points themselves (where the init-induced term must vanish)
        k_train, k_rows = ntk(model, x), ntk(model, torch.cat([xg, x]), x)
        y = torch.sin(2 * phi)  # any labels: the init-induced term does not depend on Y (eq (6))
        both = decompose(k_train, y, k_test_train=k_rows, h_ini_train=h_train, h_ini_test=torch.cat([h_grid, h_train]))
        on_grid = {
            "h_ini": both.h_ini[: config.grid],
            "fit": both.fit_of_init[: config.grid],
            "bias": both.init_bias[: config.grid],
        }
        at_train = max(at_train, float(both.init_bias[config.grid :].abs().max() / h_train.abs().max()))
        e_ini[s] = energy_spectrum(on_grid["h_ini"], grid, kmax)
        e_bias[s] = energy_spectrum(on_grid["bias"], grid, kmax)
        e_fit[s] = energy_spectrum(on_grid["fit"], grid, kmax)
        cutoffs[s] = gap_cutoff(phi.cpu().numpy())
        if example is None:
            example = {
                k: v.cpu().numpy() for k, v in (("grid", grid), ("phi", phi), *on_grid.items(), ("h_train", h_train))
            }
        bar.update(1)
    low = slice(1, n // 4 + 1)
    high = slice(n, kmax + 1)
    k = np.arange(kmax + 1)

    def above(e: np.ndarray, cut: float) -> float:
        return float(e[k > cut].sum() / e[1:].sum())

    mean_ini, mean_bias, mean_fit = e_ini.mean(0), e_bias.mean(0), e_fit.mean(0)
    return {
        "e_ini": mean_ini,
        "e_bias": mean_bias,
        "e_fit": mean_fit,
        "example": example,
        "at_train": at_train,
        "cutoffs": cutoffs,
        "centroid_ini": centroid(mean_ini),
        "centroid_bias": centroid(mean_bias),
        "centroid_ratio": [centroid(b) / centroid(i) for b, i in zip(e_bias, e_ini)],
        "transfer_low": [float(b[low].sum() / i[low].sum()) for b, i in zip(e_bias, e_ini)],
        "transfer_high": [float(b[high].sum() / i[high].sum()) for b, i in zip(e_bias, e_ini)],
        "above_cut_bias": [above(b, c) for b, c in zip(e_bias, cutoffs)],
        "above_cut_ini": [above(i, c) for i, c in zip(e_ini, cutoffs)],
        "above_nyquist_bias": [above(b, n / 2) for b in e_bias],
        "decay_ini": decay_exponent(mean_ini, n, kmax),
        "decay_fit": decay_exponent(mean_fit, n, kmax),
    }


def _run_sphere(config: Config, device: torch.device, bar: Any) -> dict[str, Any]:
    d, n, m = config.sphere_dim, config.sphere_train, config.sphere_test
    fracs: dict[str, list[float]] = {"ini": [], "bias": []}  # high-frequency energy fraction (mean removed), per draw
    deltas = []
    for s in range(config.seeds):
        gen = torch_generator(config.seed, SPHERE_STREAM, s)
        x = uniform_sphere(n, d, gen).to(device)
        z = uniform_sphere(m, d, gen).to(device)
        model = _network(d + 1, config, gen, device)
        with torch.no_grad():
            h_train, h_test = model(x).reshape(-1), model(z).reshape(-1)
        dec = decompose(ntk(model, x), x[:, 0], k_test_train=ntk(model, z, x), h_ini_train=h_train, h_ini_test=h_test)
        dist = torch.cdist(x, x)
        dist.fill_diagonal_(math.inf)
        delta = float(dist.min(dim=1).values.median())
        deltas.append(delta)
        for key, v in (("ini", dec.h_ini), ("bias", dec.init_bias)):
            v = v - v.mean()
            _, high = gaussian_split(v, z, delta)
            fracs[key].append(float((high**2).sum() / (v**2).sum()))
        bar.update(1)
    return {
        "frac_ini": fracs["ini"],
        "frac_bias": fracs["bias"],
        "delta": float(np.median(deltas)),
        "ratio": [b / i for b, i in zip(fracs["bias"], fracs["ini"])],
    }
