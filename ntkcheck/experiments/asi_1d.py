"""Seed 000, §7.2.1, Fig 2: eq (6) and the AntiSymmetrical Initialization on 1-d data.

A 1-m-m-1 ReLU network with seed 000 §7's init (paper: m = 5000, v_std = 10) and three
transforms of the SAME initialization (:mod:`ntkcheck.models.transforms`):

* ASI, ``(sqrt 2/2)(h(x; theta) - h(x; theta'))`` with ``theta'(0) = theta(0)``: output 0,
  kernel unchanged (Thm 4 = Thm 9);
* the doubling trick (Chizat & Bach; §12): output 0, kernel of the lower layers gone (Thm 10);
* RND, ASI's two-branch form with ``theta'`` drawn afresh: output not 0 (the control of Fig 2c);

are trained by full-batch gradient descent on the MSE on n = 10 points of sin(4x), all at
ONE step size (as in the paper, which uses lr = 1e-5 for every network): ``lr_fraction``
times the smallest of the four MSE stability limits ``n / lambda_max(K)``.

Measured, panel by panel:

(a) the trained outputs on the test points, with the RHS of eq (6),
    ``h_k(.; 0, X, Y) + h_ini - h_k(.; 0, X, h_ini(X))``, from the empirical NTK at init
    (:func:`ntkcheck.decompose`, float64);
(b) ``h_k(.; 0, X, h_ini(X))``, ``h_ini`` and ``20 |h_ini - h_k(.; 0, X, h_ini(X))|``, the prior
    eq (6) adds;
(c) the training losses: steps each network needs to bring the MSE below ``speed_loss``.

Width-faithful sizes.  Under seed 000's init the initial output of a two-hidden-layer
network scales like ``v_std^3 / sqrt(m)`` (derivation in :mod:`ntkcheck.experiments._scale`),
so a narrower network at the paper's v_std = 10 starts from a larger h_ini than the
paper's.  The quick run (m = 512) uses ``v_std = 10 (m / 5000)^(1/6) = 6.84``, which gives
h_ini the scale it has at the paper's width; the report prints both, measured.

Eq (6) against the trained network is a large-width statement: the network leaves its
linearization by the kernel drift times the distance training moves the function
(Lee et al. 2019), and that distance, h_ini's size, dwarfs the trained output here.  The
quantity is therefore also measured at ``sweep_widths`` (each at its own width-faithful
v_std, so the sweep ends at the paper's setting), and the report fits its power law in the
width and extrapolates it to m = 5000.

Every verdict is on the mean over ``seeds`` independent draws of data and initialization.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from ntkcheck._support.seeding import torch_generator
from ntkcheck.dynamics.flows import mse_gd
from ntkcheck.dynamics.losses import MSE
from ntkcheck.dynamics.solvers import decompose, max_stable_lr
from ntkcheck.dynamics.training import train
from ntkcheck.experiments._asi_1d_report import figures, tables, verdicts
from ntkcheck.experiments._common import (
    DATA_STREAM,
    INIT_STREAM,
    SECOND_INIT_STREAM,
    cpu_threads,
    dtype_named,
    outputs,
)
from ntkcheck.experiments._result import (
    Reproduction,
    Stopwatch,
    mode_of,
    seed_list,
)
from ntkcheck.experiments._scale import faithful_v_std, output_rms, rms
from ntkcheck.experiments._seed000 import FIG2_HIDDEN_LAYERS, FIG2_V_STD, FIG2_WIDTH, seed000_mlp, sin_data
from ntkcheck.kernels.empirical import ntk
from ntkcheck.models.mlp import MLP
from ntkcheck.models.transforms import asi, double_last_layer, rnd

NAME = "asi-1d"
TITLE = "Eq (6) and the ASI trick on 1-d data (seed 000, Fig 2)"
REFERENCE = "seed 000 (000_4d798787af19209b.txt), §5 Thm 2 eq (6), §6 Thm 4, §12 Thm 10, §7.2.1 Fig 2"

NETWORKS = ("original", "ASI", "doubling", "RND")


@dataclass(frozen=True)
class Config:
    """Sizes and training rule of the 1-d ASI experiment.

    Attributes:
        width: hidden width m of the original 1-m-m-1 network.
        v_std: the init scale of seed 000 §7 (paper: 10 at m = 5000).
        sweep_widths: further widths at which eq (6)'s gap to the trained original network is
            measured, each at its width-faithful v_std (empty: no sweep).
        n_train, n_test: training points (uniform draws) and test points (even grid) on [-1, 1].
        min_gap: training draws are redrawn until neighbours are >= ``min_gap * 2 / n_train`` apart.
        lr_fraction: the common step as a fraction of the smallest MSE stability limit.
        stop_loss: original, ASI and doubling train until the MSE is below this.
        speed_loss: the loss level of panel (c); RND trains until it reaches it.
        max_steps: step budget per network.
        record_every: loss-history resolution (steps).
        dtype: dtype the networks are trained in (kernels and eq (6) are float64).
        seed: the first seed; seed i draws the data, the initialization and RND's second branch.
        seeds: independent draws; verdicts are on their mean.
        cpu_threads: intra-op threads torch may use on CPU during the run (None: torch's setting).
        progress: show tqdm bars.
    """

    width: int = FIG2_WIDTH
    v_std: float = FIG2_V_STD
    sweep_widths: tuple[int, ...] = ()
    n_train: int = 10
    n_test: int = 500
    min_gap: float = 0.25
    lr_fraction: float = 0.8
    stop_loss: float = 1e-4
    speed_loss: float = 1e-3
    max_steps: int = 8000
    record_every: int = 10
    dtype: str = "float32"
    seed: int = 0
    seeds: int = 3
    cpu_threads: int | None = 1
    progress: bool = True

    @classmethod
    def quick(cls, seed: int = 0) -> Config:
        """1-512-512-1 at the width-faithful v_std 6.84, 3 seeds; eq (6) also at widths 1024 and 2048."""
        return cls(
            width=512,
            v_std=round(faithful_v_std(FIG2_V_STD, 512, FIG2_WIDTH, FIG2_HIDDEN_LAYERS), 3),
            sweep_widths=(1024, 2048),
            seed=seed,
        )

    @classmethod
    def full(cls, seed: int = 0) -> Config:
        """The paper's 1-5000-5000-1 at v_std 10 (float32 training on a GPU), 3 seeds; eq (6) also at 1250, 2500."""
        return cls(sweep_widths=(1250, 2500), seed=seed, max_steps=30000, cpu_threads=None)


def _steps_to(steps: list[int], losses: list[float], level: float) -> float:
    """First recorded step whose loss is below ``level`` (inf if none)."""
    return next((float(s) for s, v in zip(steps, losses) if v < level), math.inf)


def _draw(
    config: Config, seed: int, width: int, v_std: float, device: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, MLP]:
    """The seed's data (the same at every width), test grid and original network (the seed's init stream)."""
    x64, y64 = sin_data(config.n_train, torch_generator(seed, DATA_STREAM), min_gap=config.min_gap)
    xt64 = torch.linspace(-1, 1, config.n_test, dtype=torch.float64, device=device).unsqueeze(1)
    original = seed000_mlp(1, [width] * 2, 1, v_std, torch_generator(seed, INIT_STREAM), device=device)
    return x64.to(device), y64.to(device), xt64, original


def _train(config: Config, net: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float, level: float):
    return train(
        net,
        x,
        y,
        MSE,
        lr=lr,
        steps=config.max_steps,
        loss_threshold=level,
        record_every=config.record_every,
        progress=config.progress,
        check_lr=False,
    )


def _eq6_gap(trained: torch.Tensor, eq6) -> float:
    return float((trained - eq6.total).norm() / eq6.total.norm())


def _sweep_point(config: Config, seed: int, width: int, device: str) -> float:
    """Eq (6)'s relative gap to the trained original network at ``width`` (its width-faithful v_std)."""
    v = faithful_v_std(FIG2_V_STD, width, FIG2_WIDTH, FIG2_HIDDEN_LAYERS)
    x64, y64, xt64, original = _draw(config, seed, width, v, device)
    k_train = ntk(original, x64)
    eq6 = decompose(
        k_train,
        y64,
        k_test_train=ntk(original, xt64, x64),
        h_ini_train=outputs(original, x64),
        h_ini_test=outputs(original, xt64),
    )
    dtype = dtype_named(config.dtype, "dtype")
    net = copy.deepcopy(original).to(dtype)
    _train(config, net, x64.to(dtype), y64.to(dtype), config.lr_fraction * max_stable_lr(k_train), config.stop_loss)
    return _eq6_gap(outputs(net, xt64), eq6)


def _kernel_steps(k: torch.Tensor, y: torch.Tensor, h0: torch.Tensor, lr: float, level: float, limit: int) -> float:
    """Steps gradient descent on the linearized model (kernel ``k``, start ``h0``) needs to bring the MSE below
    ``level`` (inf beyond ``limit``)."""
    grid = np.arange(0, limit + 1, 10)
    flow = mse_gd(k, y, lr=lr, steps=grid.tolist(), h_ini_train=h0)
    below = (((flow.train - y) ** 2).mean(dim=1) < level).nonzero()
    return float(grid[int(below[0])]) if len(below) else math.inf


def _run_seed(config: Config, seed: int, device: str) -> dict:
    """Train the four networks of one draw; eq (6) and kernel-regime predictions from the initial NTKs."""
    from tqdm import tqdm

    dtype = dtype_named(config.dtype, "dtype")
    x64, y64, xt64, original = _draw(config, seed, config.width, config.v_std, device)
    nets64: dict[str, nn.Module] = {
        "original": original,
        "ASI": asi(original),
        "doubling": double_last_layer(original),
        "RND": rnd(original, torch_generator(seed, SECOND_INIT_STREAM)),
    }
    k_train, k_test = ntk(original, x64), ntk(original, xt64, x64)
    h_ini, h_ini_test = outputs(original, x64), outputs(original, xt64)
    eq6 = decompose(k_train, y64, k_test_train=k_test, h_ini_train=h_ini, h_ini_test=h_ini_test)
    kernels = {name: (k_train if name == "original" else ntk(net, x64)) for name, net in nets64.items()}
    limits = {name: max_stable_lr(k) for name, k in kernels.items()}
    lr = config.lr_fraction * min(limits.values())
    asi_init = max(float(outputs(nets64["ASI"], pts).abs().max()) for pts in (x64, xt64))
    starts = {name: outputs(net, x64) for name, net in nets64.items()}
    predicted = {
        name: _kernel_steps(kernels[name], y64, starts[name], lr, config.speed_loss, config.max_steps)
        for name in NETWORKS
    }

    x, y = x64.to(dtype), y64.to(dtype)
    trained: dict[str, torch.Tensor] = {}
    curves: dict[str, tuple[list[int], list[float]]] = {}
    rows = []
    for name in tqdm(NETWORKS, desc=f"{NAME} seed {seed}", leave=False, disable=not config.progress):
        net = copy.deepcopy(nets64[name]).to(dtype)
        if name == "ASI":  # the two branches of a float32 copy must still coincide bit for bit
            asi_init = max(asi_init, float(outputs(net, x64).abs().max()))
        with Stopwatch() as sw:
            res = _train(config, net, x, y, lr, config.speed_loss if name == "RND" else config.stop_loss)
        trained[name] = outputs(net, xt64)
        curves[name] = (res.history.steps, res.history.train_loss)
        if name == "original":
            k_end = ntk(copy.deepcopy(net).to(torch.float64), x64)
        rows.append(
            {
                "seed": seed,
                "network": name,
                "params": sum(p.numel() for p in net.parameters()),
                "initial loss": res.history.train_loss[0],
                "final loss": res.final_loss,
                "steps run": res.steps_run,
                f"steps to loss < {config.speed_loss:g}": _steps_to(*curves[name], config.speed_loss),
                "same, linearized (initial NTK)": predicted[name],
                "lr / own stability limit": lr / limits[name],
                "seconds": sw.seconds,
            }
        )
    total_, moved = eq6.total, eq6.total - eq6.h_ini
    gap = trained["original"] - total_
    speed = {r["network"]: r[f"steps to loss < {config.speed_loss:g}"] for r in rows}
    return {
        "seed": seed,
        "rows": rows,
        "x": x64,
        "y": y64,
        "xt": xt64,
        "trained": trained,
        "eq6": eq6,
        "curves": curves,
        "asi_init": asi_init,
        "lr": lr,
        "limits": limits,
        "err_l2": _eq6_gap(trained["original"], eq6),
        "err_move": float(gap.norm() / moved.norm()),
        "moved_ratio": float(moved.norm() / total_.norm()),
        "asi_vs_unbiased": float((trained["ASI"] - eq6.unbiased).norm() / eq6.unbiased.norm()),
        "prior_err": float((trained["original"] - trained["ASI"] - eq6.init_bias).norm() / eq6.init_bias.norm()),
        "speed": speed,
        "predicted": predicted,
        "final_original": rows[0]["final loss"],
        "drift": float((k_end - k_train).norm() / k_train.norm()),
        "lam_min_ratio": float(torch.linalg.eigvalsh(k_end)[0] / torch.linalg.eigvalsh(k_train)[0]),
        "asi_kernel_gap": float((kernels["ASI"] - k_train).norm() / k_train.norm()),
        "cond": float(torch.linalg.cond(k_train)),
        "h_ini_rms": rms(h_ini_test),
        "target_rms": rms(torch.sin(4 * xt64)),
        "unconverged": [r["network"] for r in rows if r["network"] != "RND" and not r["final loss"] < config.stop_loss],
    }


def _paper_h_ini(seed: int, device: str) -> float:
    """RMS of h_ini of the paper's 1-5000-5000-1 network at v_std 10 (seed ``seed``) on 100 points of the grid."""
    xt = torch.linspace(-1, 1, 100, dtype=torch.float64, device=device).unsqueeze(1)
    net = seed000_mlp(1, [FIG2_WIDTH] * 2, 1, FIG2_V_STD, torch_generator(seed, INIT_STREAM), device=device)
    return output_rms(net, xt)


def run(config: Config, *, device: str = "cpu") -> Reproduction:
    """Train the original network, ASI, doubling and RND per seed; check eq (6) and the training speed (Fig 2)."""
    dtype_named(config.dtype, "dtype")
    if not 0 < config.stop_loss <= config.speed_loss:
        raise ValueError(f"need 0 < stop_loss <= speed_loss, got {config.stop_loss} and {config.speed_loss}")
    if config.width in config.sweep_widths or any(w < 1 for w in config.sweep_widths):
        raise ValueError(
            f"config.sweep_widths must be widths >= 1 other than config.width={config.width}, got {config.sweep_widths}"
        )
    seeds = seed_list(config.seed, config.seeds)
    m = config.width
    result = Reproduction(
        name=NAME,
        title=TITLE,
        reference=REFERENCE,
        mode=mode_of(config),
        device=device,
        settings={
            **{k: v for k, v in asdict(config).items() if k != "progress"},
            "architecture": f"1-{m}-{m}-1 ReLU, standard parametrization, "
            f"N(0, (v_std sqrt(2/(fan_in+fan_out)))^2) for weights and biases",
            "optimizer": "full-batch gradient descent on the MSE (1/n) sum (h - y)^2, one step size for all",
            "seeds run": ", ".join(map(str, seeds)),
        },
    )
    with cpu_threads(config.cpu_threads), Stopwatch() as total:
        result.settings["torch CPU threads during the run"] = torch.get_num_threads()
        runs = [_run_seed(config, s, device) for s in seeds]
        sweep = {w: [_sweep_point(config, s, w, device) for s in seeds] for w in config.sweep_widths}
        paper_rms = [_paper_h_ini(s, device) for s in seeds] if (m, config.v_std) != (FIG2_WIDTH, FIG2_V_STD) else None
    sweep[m] = [r["err_l2"] for r in runs]
    verdicts(config, runs, sweep, result)
    tables(config, runs, paper_rms, result)
    title = f"1-{m}-{m}-1, v_std={config.v_std:g}, seed {runs[0]['seed']}"
    result.figures = figures(runs[0], title=title, speed_loss=config.speed_loss)
    result.seconds = total.seconds
    return result
