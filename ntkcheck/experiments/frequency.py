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

import numpy as np
import torch

import ntkcheck as nk
from ntkcheck.experiments._result import Reproduction, Stopwatch, mode_of, spread_text, verdict
from ntkcheck.experiments.init_rates import uniform_sphere
from ntkcheck.experiments.loss_invariance import cpu_threads

NAME = "frequency"
TITLE = "Frequency content of the init-induced term h_ini - h_k(.; 0, X, h_ini(X)) (seeds 000 §5, 002)"
REFERENCE = ("seed 000 (000_4d798787af19209b.txt) §5 Thm 2 eq (6) and the paragraph after Thm 3; "
             "seed 002 (002_c932e76d04d34432.txt) NUDFT and low/high filtering")


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
            raise ValueError(f"config.grid must be >= 4 * n_train (to resolve frequencies above the sample's "
                             f"Nyquist n/2 up to 2n), got grid={self.grid}, n_train={self.n_train}")
        if self.sphere_dim < 0 or (self.sphere_dim and (self.sphere_train < 2 or self.sphere_test < 10)):
            raise ValueError("config.sphere_dim must be >= 0; with it, sphere_train >= 2 and sphere_test >= 10")

    @classmethod
    def quick(cls, seed: int = 0) -> "Config":
        """Width 512, 8 draws, 32 training angles, S^5 with 200/1000 points: seconds on 2 CPU cores."""
        return cls(seed=seed, seeds=8, width=512, n_train=32, grid=512, sphere_train=200, sphere_test=1000)

    @classmethod
    def full(cls, seed: int = 0) -> "Config":
        """Width 4096, 32 draws, 64 training angles, S^5 with 1000/4000 points (meant for a GPU)."""
        return cls(seed=seed, cpu_threads=None)




# ------------------------------------------------------------------------------------------------
# spectral tools


def nudft(values: torch.Tensor, points: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Seed 002's non-uniform DFT ``y_hat(k) = (1/N) sum_i y_i exp(-i 2 pi k . x_i)``.

    ``values`` (N,), ``points`` (N,) or (N, D), ``freqs`` (F,) scalars (for 1-D points, or
    multiples of a unit direction already projected: pass ``points @ direction``) or
    (F, D) frequency vectors.  Returns the (F,) complex coefficients.
    """
    if points.ndim == 1:
        phase = torch.outer(freqs.to(points.dtype), points)
    else:
        phase = freqs.to(points.dtype) @ points.T
    basis = torch.exp(-2j * math.pi * phase)
    return basis @ values.to(basis.dtype) / values.shape[0]


def energy_spectrum(values: torch.Tensor, angles: torch.Tensor, kmax: int) -> np.ndarray:
    """One-sided energy ``E(k) = |c_k|^2 (x2 for k >= 1)`` of a function of the angle, k = 0..kmax.

    ``c_k`` is the NUDFT along the angle (points ``angles / 2 pi``, integer k); on a uniform
    grid of angles it is the Fourier series coefficient, and ``sum_k E(k)`` is the mean square.
    """
    k = torch.arange(kmax + 1, dtype=angles.dtype, device=angles.device)
    c = nudft(values, angles / (2 * math.pi), k)
    e = c.abs() ** 2
    e[1:] *= 2
    return e.cpu().numpy()


def centroid(energy: np.ndarray) -> float:
    """Energy-weighted mean frequency over k >= 1 (the constant left out)."""
    k = np.arange(len(energy))
    return float((k[1:] * energy[1:]).sum() / energy[1:].sum())


def gaussian_split(values: torch.Tensor, points: torch.Tensor, delta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Seed 002's filtering: ``(low, high)``, ``low`` the normalised Gaussian average of width ``delta`` over ``points``."""
    d2 = torch.cdist(points, points) ** 2
    w = torch.exp(-d2 / (2 * delta * delta))
    low = (w @ values) / w.sum(dim=1)
    return low, values - low


def _draw_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def _network(in_features: int, config: Config, gen: torch.Generator, device: torch.device) -> nk.MLP:
    return nk.MLP(in_features, [config.width] * config.depth, activation="relu", bias=True,
                  weight_std=config.weight_std, bias_std=config.bias_std, generator=gen,
                  dtype=torch.float64, device=device)


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
        _report(config, circle, control, sphere, result)
    result.seconds = clock.seconds
    return result


def gap_cutoff(angles: np.ndarray) -> float:
    """``pi / (largest gap between neighbouring angles on the circle)``: the degree below which the samples pin a
    trigonometric polynomial down (Gröchenig 1992: degree-K polynomials are stably determined by samples whose
    largest gap is below pi / K)."""
    a = np.sort(np.mod(angles, 2 * math.pi))
    gaps = np.diff(np.concatenate([a, a[:1] + 2 * math.pi]))
    return float(math.pi / gaps.max())


def _run_circle(config: Config, device: torch.device, bar, design: str = "random") -> dict:
    """Spectra on the circle, per draw and seed-averaged; ``design`` "random" (uniform angles) or "equispaced"."""
    n, kmax = config.n_train, config.grid // 2
    grid = torch.arange(config.grid, dtype=torch.float64, device=device) * (2 * math.pi / config.grid)
    xg = _circle(grid)
    e_ini, e_bias, e_fit = (np.zeros((config.seeds, kmax + 1)) for _ in range(3))
    cutoffs = np.zeros(config.seeds)
    at_train, example = 0.0, None
    for s in range(config.seeds):
        gen = torch.Generator().manual_seed(_draw_seed(config.seed, 1, s))
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
        k_train, k_rows = nk.ntk(model, x), nk.ntk(model, torch.cat([xg, x]), x)
        y = torch.sin(2 * phi)  # any labels: the init-induced term does not depend on Y (eq (6))
        both = nk.decompose(k_train, y, k_rows, h_train, torch.cat([h_grid, h_train]))
        dec = type(both)(*(t[: config.grid] for t in both))
        at_train = max(at_train, float(both.init_bias[config.grid:].abs().max() / h_train.abs().max()))
        e_ini[s] = energy_spectrum(dec.h_ini, grid, kmax)
        e_bias[s] = energy_spectrum(dec.init_bias, grid, kmax)
        e_fit[s] = energy_spectrum(dec.fit_of_init, grid, kmax)
        cutoffs[s] = gap_cutoff(phi.cpu().numpy())
        if example is None:
            example = {k: v.cpu().numpy() for k, v in
                       (("grid", grid), ("phi", phi), ("h_ini", dec.h_ini), ("fit", dec.fit_of_init),
                        ("bias", dec.init_bias), ("h_train", h_train))}
        bar.update(1)
    low = slice(1, n // 4 + 1)
    high = slice(n, kmax + 1)
    k = np.arange(kmax + 1)

    def above(e: np.ndarray, cut: float) -> float:
        return float(e[k > cut].sum() / e[1:].sum())

    mean_ini, mean_bias, mean_fit = e_ini.mean(0), e_bias.mean(0), e_fit.mean(0)
    return {
        "e_ini": mean_ini, "e_bias": mean_bias, "e_fit": mean_fit, "example": example, "at_train": at_train,
        "cutoffs": cutoffs,
        "centroid_ini": centroid(mean_ini), "centroid_bias": centroid(mean_bias),
        "centroid_ratio": [centroid(b) / centroid(i) for b, i in zip(e_bias, e_ini)],
        "transfer_low": [float(b[low].sum() / i[low].sum()) for b, i in zip(e_bias, e_ini)],
        "transfer_high": [float(b[high].sum() / i[high].sum()) for b, i in zip(e_bias, e_ini)],
        "above_cut_bias": [above(b, c) for b, c in zip(e_bias, cutoffs)],
        "above_cut_ini": [above(i, c) for i, c in zip(e_ini, cutoffs)],
        "above_nyquist_bias": [above(b, n / 2) for b in e_bias],
        "decay_ini": _decay(mean_ini, n, kmax), "decay_fit": _decay(mean_fit, n, kmax),
    }


def _decay(e: np.ndarray, lo: int, hi: int) -> float:
    """Exponent p of the fitted power law ``E(k) ~ k^(-p)`` over ``lo <= k <= hi``."""
    k = np.arange(lo, hi + 1)
    return -float(np.polyfit(np.log(k), np.log(e[lo:hi + 1]), 1)[0])


def _run_sphere(config: Config, device: torch.device, bar) -> dict:
    d, n, m = config.sphere_dim, config.sphere_train, config.sphere_test
    fracs: dict[str, list[float]] = {"ini": [], "bias": []}  # high-frequency energy fraction (mean removed), per draw
    deltas = []
    for s in range(config.seeds):
        gen = torch.Generator().manual_seed(_draw_seed(config.seed, 2, s))
        x = uniform_sphere(n, d, gen).to(device)
        z = uniform_sphere(m, d, gen).to(device)
        model = _network(d + 1, config, gen, device)
        with torch.no_grad():
            h_train, h_test = model(x).reshape(-1), model(z).reshape(-1)
        dec = nk.decompose(nk.ntk(model, x), x[:, 0], nk.ntk(model, z, x), h_train, h_test)
        dist = torch.cdist(x, x)
        dist.fill_diagonal_(math.inf)
        delta = float(dist.min(dim=1).values.median())
        deltas.append(delta)
        for key, v in (("ini", dec.h_ini), ("bias", dec.init_bias)):
            v = v - v.mean()
            _, high = gaussian_split(v, z, delta)
            fracs[key].append(float((high**2).sum() / (v**2).sum()))
        bar.update(1)
    return {"frac_ini": fracs["ini"], "frac_bias": fracs["bias"], "delta": float(np.median(deltas)),
            "ratio": [b / i for b, i in zip(fracs["bias"], fracs["ini"])]}


def _report(config: Config, c: dict, ctl: dict, sph: dict | None, result: Reproduction) -> None:
    n = config.n_train
    cut = spread_text(list(c["cutoffs"]))
    result.verdicts += [
        verdict(
            "circle: spectral centroid of the init-induced term / centroid of h_ini (per draw)",
            c["centroid_ratio"], 1.0, ">=",
            "A frequency-blind residual (init term = c h_ini) has ratio exactly 1; seed 000 §5 says the fit removes "
            "the low frequencies, which moves the centroid up, so the claim is a ratio above 1.",
        ),
        verdict(
            "circle: fraction of the init-induced term's own energy above the draw's constrained band, "
            f"k > pi / (largest gap between training angles) (per draw; cutoff {cut})",
            c["above_cut_bias"], 0.5, ">=",
            "Seed 000 §5 read literally: the term 'consists mainly of the high frequencies of h_ini which cannot be "
            "well constrained at X'; 'mainly' = more than half; 'constrained at X' = below pi / (largest gap), the "
            "degree up to which samples with that largest gap determine a trigonometric polynomial stably "
            "(Gröchenig 1992); for random angles the largest gap is about 2 pi log(n) / n, so the cutoff is near "
            "n / (2 log n), below the Nyquist frequency n/2 of an equispaced design.",
        ),
        verdict(
            f"circle: share of h_ini's energy at 1 <= k <= n/4 = {n // 4} left in the init-induced term (per draw)",
            c["transfer_low"], 0.5, "<=",
            "Frequencies well below the sample's Nyquist frequency n/2 (a factor 2 margin for the random design) "
            "are constrained by the n samples (seed 000 §5), so most of h_ini's energy there is fitted away.",
        ),
        verdict(
            f"circle: share of h_ini's energy at k >= n = {n} left in the init-induced term, two-sided: "
            "|log2(share)| (per draw)",
            [abs(math.log2(v)) for v in c["transfer_high"]], 1.0, "<=",
            "'Cannot be constrained' means h_ini's energy there stays in h_ini - h_k(.;0,X,h_ini(X)): a share near 1, "
            "read as within a factor 2 either way",
            information=(f"the fit h_k(.; 0, X, h_ini(X)) is a combination of the kernel functions k(., x_i), which "
                         f"are rougher than h_ini: above n their spectrum decays like k^-{c['decay_fit']:.2f} against "
                         f"h_ini's k^-{c['decay_ini']:.2f} (fitted on the seed-averaged spectra; the infinite-width "
                         f"ReLU NTK has a kink at x = x_i, the NNGP is smoother, and at finite width the empirical "
                         f"NTK also jumps where a neuron switches), so the share measures the fit's own roughness, "
                         f"not the unconstrained part of h_ini (shares {spread_text(c['transfer_high'])}); not scored"),
        ),
    ]
    if sph is not None:
        result.verdicts.append(verdict(
            f"S^{config.sphere_dim}: high-frequency energy fraction (Gaussian filter, delta = {sph['delta']:.3g}) "
            "of the init-induced term / that of h_ini (per draw)",
            sph["ratio"], 1.0, ">=",
            "Seed 002's filtering: a frequency-blind residual keeps h_ini's high/low split (ratio 1); removing the "
            "low frequencies (seed 000 §5) raises the high-frequency fraction, a ratio above 1.",
        ))
    term = "init-induced term"
    quantities = [
        ("circle: spectral centroid of h_ini (k >= 1), seed-averaged spectrum", c["centroid_ini"]),
        (f"circle: spectral centroid of the {term} (k >= 1), seed-averaged spectrum", c["centroid_bias"]),
        ("circle: gap cutoff pi / (largest gap) per draw", spread_text(list(c["cutoffs"]))),
        ("circle: energy fraction of h_ini above the gap cutoff", spread_text(c["above_cut_ini"])),
        (f"circle: energy fraction of the {term} above the gap cutoff", spread_text(c["above_cut_bias"])),
        (f"circle: energy fraction of the {term} above Nyquist n/2 = {n // 2}", spread_text(c["above_nyquist_bias"])),
        (f"circle: share of h_ini's energy left at 1 <= k <= {n // 4}", spread_text(c["transfer_low"])),
        (f"circle: share of h_ini's energy left at k >= {n}", spread_text(c["transfer_high"])),
        (f"circle: fitted decay exponent p (E ~ k^-p, k >= {n}) of h_ini / of the fit of h_ini",
         f"{c['decay_ini']:.3g} / {c['decay_fit']:.3g}"),
        (f"circle: max abs({term}) at the training points / max abs(h_ini)", c["at_train"]),
        ("circle, equispaced control: centroid of h_ini (k >= 1)", ctl["centroid_ini"]),
        (f"circle, equispaced control: centroid of the {term} (k >= 1)", ctl["centroid_bias"]),
        ("circle, equispaced control: gap cutoff (= n/2)", spread_text(list(ctl["cutoffs"]))),
        (f"circle, equispaced control: energy fraction of the {term} above the gap cutoff",
         spread_text(ctl["above_cut_bias"])),
        (f"circle, equispaced control: max abs({term}) at the training points / max abs(h_ini)", ctl["at_train"]),
    ]
    if sph is not None:
        sd = f"S^{config.sphere_dim}"
        quantities += [
            (f"{sd}: high-frequency energy fraction, h_ini", spread_text(sph["frac_ini"])),
            (f"{sd}: high-frequency energy fraction, {term}", spread_text(sph["frac_bias"])),
            (f"{sd}: filter width delta (median nearest-neighbour distance)", sph["delta"]),
        ]
    result.tables["Measured quantities"] = [{"quantity": q, "value": v} for q, v in quantities]
    edges = [1, 2, 4, n // 4 + 1, n // 2 + 1, n + 1, 2 * n + 1, config.grid // 2 + 1]
    bands = [(lo, hi - 1) for lo, hi in zip(edges[:-1], edges[1:]) if hi - 1 >= lo]

    def band(e: np.ndarray, lo: int, hi: int) -> float:
        return float(e[lo:hi + 1].sum())

    result.tables["Seed-averaged energy by frequency band (circle)"] = [
        {"band k": f"{lo}-{hi}", "h_ini": band(c["e_ini"], lo, hi), term: band(c["e_bias"], lo, hi),
         "fit of h_ini": band(c["e_fit"], lo, hi), "share left": band(c["e_bias"], lo, hi) / band(c["e_ini"], lo, hi)}
        for lo, hi in bands
    ]
    result.notes += [
        f"Kernel prediction of networks 2-{config.width}x{config.depth}-1 (circle) and {config.sphere_dim + 1}-"
        f"{config.width}x{config.depth}-1 (sphere), NTK parametrization, weight_std {config.weight_std:.3g}, bias_std "
        f"{config.bias_std:.3g}, each with its own empirical NTK at init: decompose(...) is the long-time output of the "
        "trained linearized network (seed 000 Thm 6).",
        f"Spectra are averaged over {config.seeds} draws of the network and the training set.",
        "The NUDFT on the training set itself (seed 002's definition) cannot see the init-induced term: the term "
        "vanishes there (measured above); its spectrum is taken on a uniform grid of angles instead.",
        "Relative to h_ini the term is strongly high-pass (the 'share left' column rises from ~0 to above 1). Its "
        "own energy is largest in the widest gaps between training angles (of order 2 pi log(n) / n), i.e. at "
        "frequencies of order n / (2 log n): the literal verdict's cutoff is taken from each draw's largest gap, "
        "not from the Nyquist frequency n/2 of an equispaced design (the equispaced control has both at n/2).",
        "Above n the share left exceeds 1: the fit brings high-frequency energy of its own (the 'fit of h_ini' "
        "column; decay exponents above), which is why that band is reported, not scored.",
        f"Initial output: NTK parametrization, so h_ini's scale does not depend on the width (variance = the NNGP "
        f"kernel's diagonal); the RMS of h_ini on the circle grid (from the seed-averaged spectrum) is "
        f"{float(np.sqrt(c['e_ini'].sum())):.3g} (seed 000 §5 and seed 002 state no width).",
    ]
    result.figures["circle"] = _figure(config, c)


def _figure(config: Config, c: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = config.n_train
    ex = c["example"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    a1.plot(ex["grid"], ex["h_ini"], c="tab:gray", label="h_ini")
    a1.plot(ex["grid"], ex["fit"], c="tab:blue", label="h_k(.; 0, X, h_ini(X))")
    a1.plot(ex["grid"], ex["bias"], c="tab:red", label="h_ini - h_k(.; 0, X, h_ini(X))")
    a1.plot(ex["phi"], ex["h_train"], "k.", ms=5, label="training points")
    a1.set_xlabel("angle phi")
    a1.set_ylabel("output at init / after the fit")
    a1.set_title("(a) one draw on the circle")
    a1.legend(fontsize=7)
    k = np.arange(len(c["e_ini"]))
    a2.loglog(k[1:], c["e_ini"][1:], c="tab:gray", label="h_ini")
    a2.loglog(k[1:], c["e_bias"][1:], c="tab:red", label="init-induced term")
    a2.loglog(k[1:], c["e_fit"][1:], c="tab:blue", lw=0.8, label="fit of h_ini")
    for f, ls, lab in ((n / 4, ":", "n/4"), (n / 2, "--", "Nyquist n/2"), (n, "-.", "n")):
        a2.axvline(f, c="k", ls=ls, lw=0.8, label=lab)
    a2.set_xlabel("frequency k (cycles per turn)")
    a2.set_ylabel("energy |c_k|^2 (seed-averaged)")
    a2.axvline(float(np.mean(c["cutoffs"])), c="tab:purple", ls="-", lw=0.8, label="pi / largest gap (mean)")
    a2.set_title(f"(b) NUDFT along the angle, n = {n}")
    a2.legend(fontsize=7)
    fig.tight_layout()
    return fig
