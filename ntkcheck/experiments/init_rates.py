"""Seed 003: generalization rates of the kernel-regime predictor under standard vs mirrored initialization.

Setting (seed 003, "Setup and Notations"): a wide ReLU network with biases in
NTK parametrization, noisy regression ``y = f*(x) + eps``, MSE gradient flow.  In
the kernel regime the network's output at flow time t is the kernel gradient
flow with the infinite-width NTK started from the initial output ``h_ini``
(seed 000 eq (3); :func:`ntkcheck.mse_flow`, whose ``t = inf`` limit is
:func:`ntkcheck.decompose`'s ``total``):

* standard init: ``h_ini`` is the network's random initial function, in the
  infinite-width limit a Gaussian process whose covariance is the NNGP kernel
  (:func:`ntkcheck.analytic_nngp`), or the output of a real wide network at init;
* mirrored init (seed 003; ASI of seed 000 §6): ``h_ini = 0``.

Seed 003 states, for ``f*`` smooth enough (``f* in [H^NT]^s``, ``s >= 3/(d+1)``)
and noisy labels, that the L2 error of the standard-init predictor is
``Theta(n^(-3/(d+3)))`` (its lower bound holds at every stopping time, the
upper bound at a well-chosen one), while mirrored init reaches
``O(n^(-s(d+1)/(s(d+1)+d)))``.  Both come from the eigenvalue decay rates on a
d-dimensional domain: NTK ``i^(-(d+1)/d)`` (seed 003 eq (3)), NNGP
``i^(-(d+3)/d)``, so that the GP sample lies in ``[H^NT]^s`` exactly for
``s < 3/(d+1)`` and the early-stopped rate is ``s beta / (s beta + 1) = 3/(d+3)``.

Choices made here, and why:

* Inputs are uniform on the d-dimensional sphere ``S^d`` in ``R^(d+1)`` (radius
  ``sqrt(d+1)``: coordinates of unit variance).  Its dimension is the ``d`` of
  seed 003: on ``S^d`` the ReLU NTK with biases has the eigenvalue decay
  ``k^(-(d+1))`` on degree-k spherical harmonics (multiplicity ``~ k^(d-1)``), i.e.
  ``i^(-(d+1)/d)``.  The biases matter: without them the eigenvalues of one parity
  nearly vanish and the decay is not a power law at these degrees.
* The target is the ridge polynomial ``f*(x) = z + (z^2 - 1)/2``, ``z = x_1``: a
  finite sum of harmonics of degree <= 2, smooth in every sense (``s`` unbounded),
  so the mirrored rate is the parametric ``n^(-1)`` up to logarithms.
* Labels carry Gaussian noise of std ``noise``: seed 003's Theta needs it (without
  noise the best stopping time is t = inf and the init term decays like the
  noiseless interpolation rate ``n^(-3/d)``).
* The stopping time is the oracle one: for each n and init the flow time on a
  log grid (and t = inf) minimising the seed-averaged test error.  This is the
  quantity both bounds of seed 003 speak about.

What is measurable at these n: the rate ``3/(d+3)`` is asymptotic.  The same
bias-variance computation that yields it (modes decay as ``exp(-mu_k t)``; the
error is ``sum_k (N_k mu_k^GP + e_k) exp(-2 mu_k t) + noise^2 sum_k N_k (1 -
exp(-mu_k t))^2 / n``) is evaluated here with the kernels' actual Funk-Hecke
eigenvalues ``mu_k`` on ``S^d`` (:func:`ntkcheck.experiments._sphere.sphere_spectrum`).  It is a population formula
(every harmonic learnable, whereas n points learn at most n of them), so its slope is
reported next to the measured one as information, with its local slope at larger n.

Settings: label noise 0.5 and d = 2, 3, 5 (scored) with d = 10 reported as information.
Seed 003's rate is the early-stopped rate, reached when the label noise's variance balances
the part of h_ini the flow has not yet learned.  With too little noise the best stopping
time is the interpolant's (t = inf) and the measured rate is the noiseless-interpolation
rate 3/d: at noise 0.1 and d = 5 the best error equals the t = inf error within 0.2% at
every n <= 1600 (local slopes -0.84, -0.68, -0.57 against -3/d = -0.60), while at noise 0.5
early stopping beats the interpolant at every n (the table's column "t=inf / best").  With
much more noise (1) the noise term swamps h_ini's and the slope follows the smooth
target's learning instead (-0.52 for d = 5).  With d = 10 the rate is not approached at any
affordable n.  The n start at 300, beyond the low-degree harmonics that carry 99% of h_ini's
energy (degrees <= 2: 1 + (d+1) + d(d+3)/2 of them, 27 for d = 5; degrees <= 4: 182 for
d = 5) and that the first hundreds of points learn away, which makes the error fall much
faster than any asymptotic rate at smaller n (d = 5: local slope -0.77 from 200 to 400).

Verdicts, per d, on the per-seed values (each seed's error at the seed-averaged best flow
time, slope by least squares over n): mirrored below standard at every n; mirrored slope
steeper; standard slope within the band around ``-3/(d+3)``.

Scale: NTK parametrization, so ``h_ini``'s scale does not depend on the width (variance =
the NNGP kernel's diagonal); the report gives the measured RMS and the infinite-width value.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from ntkcheck._support.fitting import loglog_slope
from ntkcheck._support.seeding import numpy_generator, torch_generator
from ntkcheck.dynamics.flows import mse_flow
from ntkcheck.dynamics.solvers import decompose
from ntkcheck.errors import SingularKernelError
from ntkcheck.experiments._common import cpu_threads
from ntkcheck.experiments._init_rates_report import figure_local, figure_rates, notes, tables, verdicts
from ntkcheck.experiments._result import Reproduction, Stopwatch, mode_of, spread_text
from ntkcheck.experiments._sphere import pole, sphere_spectrum, uniform_sphere, zonal_energy
from ntkcheck.kernels.analytic import analytic_nngp, analytic_ntk
from ntkcheck.models.mlp import MLP

NAME = "init-rates"
TITLE = "Standard vs mirrored initialization: error rates of the kernel-regime predictor (seed 003)"
REFERENCE = (
    "seed 003 (003_cf7a9ab9c1b83c32.txt) Main Results (standard init Theta(n^(-3/(d+3))), "
    "mirrored O(n^(-s(d+1)/(s(d+1)+d))), NTK EDR (d+1)/d eq (3)); seed 000 §5 Thm 2 eq (6), Thm 3"
)

H_INI_KINDS = ("gp", "network")
DRAW_STREAM, BOOTSTRAP_STREAM, TARGET_STREAM = 0, 1, 2
"""Stream keys: draw s of dimension d is ``torch_generator(seed, 0, d, s)``; the bootstrap and the target's
RMS sample have streams of their own."""


@dataclass(frozen=True)
class Config:
    """Sizes and settings of the init-rates experiment.

    Attributes:
        seed: seed of every random draw (inputs, test points, labels' noise, h_ini).
        dims: sphere dimensions d (inputs on S^d in R^(d+1)) whose verdicts are scored.
        info_dims: further dimensions measured and reported as information.
        ns: training-set sizes (at least 3, increasing), the abscissa of the slope fits.
        seeds: independent draws (X, test points, noise, h_ini) per (d, n).
        n_test: test points (uniform on S^d) estimating the L2 error.
        noise: std of the label noise.
        depth: hidden layers of the ReLU network (each with bias).
        weight_std, bias_std: sigma_w and sigma_b of the NTK parametrization.
        h_ini: "gp" (a draw of the NNGP Gaussian process, the infinite-width initial
            function) or "network" (the output of a real network of width ``width`` at init).
        width: hidden width of the real network when ``h_ini == "network"``.
        times: (log10 t_min, log10 t_max, count) of the flow-time grid; t = inf is added.
        bootstrap: bootstrap resamples (over seeds) for the slopes' standard errors.
        degrees: spherical-harmonic degrees kept in the spectral prediction.
        cpu_threads: intra-op threads torch may use on CPU during the run (None: torch's setting; on a
            shared machine one thread is faster than two that wait on each other).
    """

    seed: int = 0
    dims: tuple[int, ...] = (2, 3, 5)
    info_dims: tuple[int, ...] = (10,)
    ns: tuple[int, ...] = (300, 600, 1200, 2400, 4800)
    seeds: int = 8
    n_test: int = 2000
    noise: float = 0.5
    depth: int = 2
    weight_std: float = math.sqrt(2.0)
    bias_std: float = 1.0
    h_ini: str = "network"
    width: int = 8192
    times: tuple[float, float, int] = (-2.0, 7.0, 37)
    bootstrap: int = 400
    degrees: int = 160
    cpu_threads: int | None = 1

    def __post_init__(self) -> None:
        if not self.dims or any(not isinstance(d, int) or d < 2 for d in (*self.dims, *self.info_dims)):
            raise ValueError(
                f"config.dims and info_dims must be ints >= 2 (sphere S^d, d >= 2), got "
                f"{self.dims!r}, {self.info_dims!r}"
            )
        if len(self.ns) < 3 or any(b <= a for a, b in zip(self.ns, self.ns[1:])) or self.ns[0] < 2:
            raise ValueError(f"config.ns must be at least 3 increasing sizes >= 2, got {self.ns!r}")
        if self.seeds < 3:
            raise ValueError(f"config.seeds must be >= 3 (verdicts give a mean and a spread), got {self.seeds}")
        if not self.noise > 0:
            raise ValueError(f"config.noise must be > 0 (seed 003's rate is for noisy labels), got {self.noise}")
        if self.h_ini not in H_INI_KINDS:
            raise ValueError(f"config.h_ini must be one of {H_INI_KINDS}, got {self.h_ini!r}")
        if self.n_test < 10 or self.depth < 1 or self.width < 1 or self.bootstrap < 10 or self.degrees < 4:
            raise ValueError(
                "config.n_test >= 10, depth >= 1, width >= 1, bootstrap >= 10 and degrees >= 4 are required"
            )

    @classmethod
    def quick(cls, seed: int = 0) -> Config:
        """n = 300..2400, 4 seeds, h_ini from width-1024 networks: a few minutes on one CPU thread."""
        return cls(
            seed=seed,
            ns=(300, 600, 1200, 2400),
            seeds=4,
            n_test=400,
            width=1024,
            times=(-2.0, 6.0, 25),
            bootstrap=200,
            degrees=120,
        )

    @classmethod
    def full(cls, seed: int = 0) -> Config:
        """n = 300..4800, 8 seeds, h_ini from real width-8192 networks (meant for a GPU)."""
        return cls(seed=seed, cpu_threads=None)


# ------------------------------------------------------------------------------------------------
# geometry, target, kernels


def target(x: torch.Tensor) -> torch.Tensor:
    """``f*(x) = z + (z^2 - 1)/2`` with ``z = x_1``: harmonics of degree <= 2 only, mean 0 on the sphere."""
    z = x[:, 0]
    return z + (z * z - 1) / 2


def network(
    d: int, config: Config, width: int = 1, generator: torch.Generator | None = None, device: str | torch.device = "cpu"
) -> MLP:
    """The ReLU network of the experiment: its architecture fixes the analytic kernels, its width only h_ini."""
    return MLP(
        d + 1,
        [width] * config.depth,
        activation="relu",
        bias=True,
        weight_std=config.weight_std,
        bias_std=config.bias_std,
        generator=generator,
        dtype=torch.float64,
        device=device,
    )


def _gp_sample(cov: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One draw of N(0, cov) by Cholesky, with the smallest diagonal jitter (from 1e-12 relative) that factorises."""
    scale = float(cov.diagonal().mean())
    eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
    for rel in (1e-12, 1e-10, 1e-8, 1e-6):
        chol, info = torch.linalg.cholesky_ex(cov + rel * scale * eye)
        if int(info) == 0:
            z = torch.randn(cov.shape[0], generator=generator, dtype=cov.dtype).to(cov.device)
            return chol @ z
    raise SingularKernelError(f"NNGP covariance not positive definite even with jitter 1e-6 x {scale:.3g}")


# ------------------------------------------------------------------------------------------------
# the spectral (population) prediction


def target_energy(d: int, degrees: int, nodes: int = 1500) -> np.ndarray:
    """``e_k = ||projection of f* on degree-k harmonics||^2`` (uniform probability measure) for the zonal target."""
    return zonal_energy(lambda z: z + (z * z - 1) / 2, d, degrees, nodes)


def predicted_errors(
    ns: np.ndarray, mu: np.ndarray, mult: np.ndarray, gp: np.ndarray | None, energy: np.ndarray, noise: float
) -> np.ndarray:
    """Population bias-variance error at the best flow time, for each n.

    ``err(t) = sum_k (N_k mu_k^GP + e_k) exp(-2 mu_k t) + noise^2 sum_k N_k (1 - exp(-mu_k t))^2 / n``
    (``gp`` None: mirrored init, no GP term), minimised over t on a wide log grid.
    """
    ts = np.logspace(-4, 14, 600)
    decay = np.exp(-np.outer(ts, np.clip(mu, 0.0, None)))
    signal = energy + (0.0 if gp is None else mult * np.clip(gp, 0.0, None))
    bias = (decay**2 * signal).sum(1)
    var = (mult * (1 - decay) ** 2).sum(1)
    return np.array([(bias + noise**2 * var / n).min() for n in ns])


# ------------------------------------------------------------------------------------------------
# measurement


def _best(curves: np.ndarray) -> np.ndarray:
    """``curves`` (n_count, seeds, T): the seed-averaged error at the best time, per n."""
    return curves.mean(axis=1).min(axis=1)


def _bootstrap_se(ns: np.ndarray, curves: np.ndarray, reps: int, rng: np.random.Generator) -> float:
    """Standard error of the fitted slope: resample whole seeds (the designs are nested across n)."""
    slopes = []
    s = curves.shape[1]
    for _ in range(reps):
        idx = rng.integers(0, s, size=s)
        slopes.append(loglog_slope(ns, _best(curves[:, idx])))
    return float(np.std(slopes, ddof=1))


def _measure_dim(d: int, config: Config, device: torch.device, times: torch.Tensor, bar: Any) -> dict[str, Any]:
    """Errors (n_count, seeds, T) of both inits on nested designs: for each seed the training set of size n is
    the first n of one draw of max(ns) points, with one test set and one h_ini (common random numbers across n)."""
    kernel_model = network(d, config, device=device)
    count, s_total, t_count = len(config.ns), config.seeds, len(times)
    err = {k: np.zeros((count, s_total, t_count)) for k in ("mirrored", "standard")}
    check = math.nan
    h_rms: list[float] = []
    n_max = config.ns[-1]
    for s in range(s_total):
        gen = torch_generator(config.seed, DRAW_STREAM, d, s)
        x_all = uniform_sphere(n_max, d, gen).to(device)
        z = uniform_sphere(config.n_test, d, gen).to(device)
        eps = config.noise * torch.randn(n_max, generator=gen, dtype=torch.float64).to(device)
        y_all = target(x_all) + eps
        xz = torch.cat([x_all, z])
        if config.h_ini == "gp":
            h = _gp_sample(analytic_nngp(kernel_model, xz), gen)
        else:
            net = network(d, config, config.width, generator=gen, device=device)
            with torch.no_grad():
                h = net(xz).reshape(-1)
        hx_all, hz = h[:n_max], h[n_max:]
        h_rms.append(float(hz.pow(2).mean().sqrt()))
        k_all = analytic_ntk(kernel_model, x_all)
        k_test_all = analytic_ntk(kernel_model, z, x_all)
        fz = target(z)
        for i, n in enumerate(config.ns):
            k_train, k_test, y, hx = k_all[:n, :n], k_test_all[:, :n], y_all[:n], hx_all[:n]
            # One eigendecomposition serves both inits: the flow is linear in (Y, h_ini), so the
            # standard-init prediction is S_t Y + h_ini - S_t h_ini(X) (seed 000 eq (6) at every t).
            flow = mse_flow(k_train, torch.stack([y, hx], dim=1), times=times, k_test_train=k_test)
            assert flow.test is not None
            mirrored = flow.test[..., 0]
            standard = hz[None] + flow.test[..., 0] - flow.test[..., 1]
            err["mirrored"][i, s] = ((mirrored - fz) ** 2).mean(dim=1).cpu().numpy()
            err["standard"][i, s] = ((standard - fz) ** 2).mean(dim=1).cpu().numpy()
            if i == count - 1 and s == 0:
                dec = decompose(k_train, y, k_test_train=k_test, h_ini_train=hx, h_ini_test=hz)
                check = float((dec.total - standard[-1]).abs().max() / dec.total.abs().max())
            bar.update(1)
    return {"err": err, "decompose_check": check, "h_ini_rms": h_rms}


def run(config: Config, *, device: str = "cpu") -> Reproduction:
    """Measure the L2 error of the standard- and mirrored-init kernel predictors against n; fit and compare slopes."""
    from tqdm import tqdm

    result = Reproduction(NAME, TITLE, REFERENCE, mode_of(config), str(device), asdict(config))
    dev = torch.device(device)
    lo, hi, count = config.times
    times = torch.cat(
        [torch.logspace(lo, hi, int(count), dtype=torch.float64), torch.tensor([math.inf], dtype=torch.float64)]
    )
    rng = numpy_generator(config.seed, BOOTSTRAP_STREAM)
    ns = np.asarray(config.ns, dtype=np.float64)
    with cpu_threads(config.cpu_threads), Stopwatch() as clock:
        dims = list(dict.fromkeys((*config.dims, *config.info_dims)))
        bar = tqdm(total=len(dims) * len(config.ns) * config.seeds, desc="init-rates", unit="fit", leave=False)
        per_dim = {d: _measure_dim(d, config, dev, times, bar) for d in dims}
        bar.close()
        for d in dims:
            per_dim[d].update(_analyse(d, config, ns, times.numpy(), per_dim[d], rng))
            result.verdicts += verdicts(d, per_dim[d], scored=d in config.dims)
        result.tables["Initial output scale (NTK parametrization: width-independent)"] = [
            {
                "d": d,
                f"RMS of h_ini, width {config.width}"
                if config.h_ini == "network"
                else "RMS of h_ini (GP draw)": spread_text(p["h_ini_rms"]),
                "infinite width: sqrt(NNGP(x, x))": math.sqrt(p["kappa_gp"]),
                "RMS of f* (uniform on S^d)": p["target_rms"],
                "label noise std": config.noise,
            }
            for d, p in per_dim.items()
        ]
        result.tables.update(tables(config.ns, per_dim))
        result.notes += notes(config, per_dim)
        result.figures["rates"] = figure_rates(ns, per_dim)
        result.figures["local-slopes"] = figure_local(config.ns, per_dim)
    result.seconds = clock.seconds
    return result


def _analyse(
    d: int, config: Config, ns: np.ndarray, times: np.ndarray, p: dict[str, Any], rng: np.random.Generator
) -> dict[str, Any]:
    """Best errors, slopes (with bootstrap SEs) and the spectral prediction of dimension ``d``."""
    out: dict[str, Any] = {"best": {}, "t_best": {}, "slope": {}, "se": {}, "interp": {}, "pred": {}, "pred_slope": {}}
    out["seed_slopes"], out["seed_ratio"] = {}, {}
    for init, curves in p["err"].items():
        mean = curves.mean(axis=1)
        best_t = mean.argmin(axis=1)
        out["best"][init] = mean.min(axis=1)
        out["t_best"][init] = times[best_t]
        out["interp"][init] = mean[:, -1]
        out["slope"][init] = loglog_slope(ns, out["best"][init])
        out["se"][init] = _bootstrap_se(ns, curves, config.bootstrap, rng)
        per_seed = curves[np.arange(len(ns)), :, best_t]  # (n, seeds) at the seed-averaged best time
        out["per_seed"] = {**out.get("per_seed", {}), init: per_seed}
        out["seed_slopes"][init] = [loglog_slope(ns, per_seed[:, s]) for s in range(per_seed.shape[1])]
    out["seed_ratio"] = list((out["per_seed"]["mirrored"] / out["per_seed"]["standard"]).max(axis=0))
    z = uniform_sphere(4000, d, torch_generator(config.seed, TARGET_STREAM, d))
    out["target_rms"] = float(target(z).pow(2).mean().sqrt())
    model = network(d, config)
    mu, mult = sphere_spectrum("ntk", model, d, config.degrees)
    gp, _ = sphere_spectrum("nngp", model, d, config.degrees)
    energy = target_energy(d, config.degrees)
    out["pred"]["mirrored"] = predicted_errors(ns, mu, mult, None, energy, config.noise)
    out["pred"]["standard"] = predicted_errors(ns, mu, mult, gp, energy, config.noise)
    for init in ("mirrored", "standard"):
        out["pred_slope"][init] = loglog_slope(ns, out["pred"][init])
    grid = np.logspace(1.5, 8.5, 57)
    curve = predicted_errors(grid, mu, mult, gp, energy, config.noise)
    local = np.gradient(np.log(curve), np.log(grid))
    out["local_grid"], out["local_curve"] = grid, local
    out["local"] = {n: float(np.interp(math.log(n), np.log(grid), local)) for n in (1e3, 1e4, 1e5, 1e6, 1e7, 1e8)}
    ks = np.arange(config.degrees // 3, 2 * config.degrees // 3 + 1)
    out["exp_range"] = f"{ks[0]}-{ks[-1]}"
    out["exp_ntk"] = -loglog_slope(ks, np.abs(mu[ks]))
    out["exp_gp"] = -loglog_slope(ks, np.abs(gp[ks]))
    out["trace_gp"] = float((mult * gp).sum())
    out["kappa_gp"] = float(analytic_nngp(model, pole(d))[0, 0])
    out["t_edge"] = {
        init: bool(np.any(out["t_best"][init] == times[0]) or np.any(out["t_best"][init] == times[-2]))
        for init in out["t_best"]
    }
    return out
