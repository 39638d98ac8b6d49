"""What the sigma-scaling experiment measures for one sigma and one repetition (seed 001 Lemma 2 eq (14), §5).

The exact trained linearization from the float64 empirical NTK (:func:`ntkcheck.dynamics.solvers.decompose`:
its ``unbiased`` term is the interpolant, ``init_bias`` the init term of eq (14)) and the network
itself, trained by heavy-ball gradient descent to the setting's stopping loss.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch.nn.utils import parameters_to_vector

from ntkcheck._support.seeding import torch_generator
from ntkcheck.dynamics.losses import MSE
from ntkcheck.dynamics.solvers import decompose, interpolate, max_stable_lr
from ntkcheck.dynamics.training import train
from ntkcheck.errors import TrainingDivergedError
from ntkcheck.experiments._common import dtype_named
from ntkcheck.experiments._result import spread_text
from ntkcheck.experiments._sigma_scaling_summary import Point, Setting
from ntkcheck.kernels.empirical import ntk
from ntkcheck.models.mlp import MLP

if TYPE_CHECKING:
    from ntkcheck.experiments.sigma_scaling import Config

F64 = torch.float64
CHUNK = 250
"""Training runs in chunks of this many steps, checking the parameter movement in between."""


def network(
    setting: Setting, sigma: float, seed: int, device: torch.device, widths: tuple[int, ...] | None = None
) -> MLP:
    """The bias-free NTK-parametrized net of ``setting`` at init scale ``sigma``: the raw draw of stream ``seed``
    (the same for every sigma and width)."""
    gen = torch_generator(seed)
    return MLP(
        setting.split.x_train.shape[1],
        list(widths or setting.widths),
        1,
        bias=False,
        parametrization="ntk",
        weight_std=sigma,
        generator=gen,
        dtype=F64,
        device=device,
    )


def flat(model: torch.nn.Module) -> torch.Tensor:
    return parameters_to_vector([p.detach() for p in model.parameters()])


def measure(
    config: Config, setting: Setting, sigma: float, seed: int, device: torch.device, *, train_network: bool = True
) -> Point:
    """The exact trained linearization at ``sigma`` and, with ``train_network``, the trained network itself."""
    x, y, xt, yt = setting.split
    n = x.shape[0]
    model = network(setting, sigma, seed, device)
    kernel = ntk(model, torch.cat([x, xt]))
    k_train, k_test = kernel[:n, :n], kernel[n:, :n]
    with torch.no_grad():
        h_train, h_test = model(x).reshape(-1), model(xt).reshape(-1)
    dec = decompose(k_train, y, k_test_train=k_test, h_ini_train=h_train, h_ini_test=h_test)
    lin_train = interpolate(k_train, y, h_ini_train=h_train)
    theta0 = flat(model)
    residual = (y - h_train).reshape(-1, 1)
    displacement = float((residual * torch.cholesky_solve(residual, torch.linalg.cholesky(k_train))).sum().sqrt())
    point = Point(
        sigma=sigma,
        h_ini_rms=float(h_test.pow(2).mean().sqrt()),
        lin_test=float(((dec.total - yt) ** 2).mean()),
        interp_test=float(((dec.unbiased - yt) ** 2).mean()),
        init_term=float((dec.init_bias**2).mean()),
        lin_train=float(((lin_train - y) ** 2).mean()),
        nn_test=math.nan,
        nn_train=math.nan,
        steps=0,
        converged=False,
        predicted_move=displacement / float(theta0.norm()),
        nn_move=math.nan,
    )
    if not train_network:
        return point
    lr = config.lr_fraction * max_stable_lr(k_train)
    dtype = dtype_named(config.train_dtype, "train_dtype")
    model = model.to(dtype)
    x, y, xt = x.to(dtype), y.to(dtype), xt.to(dtype)
    theta0 = flat(model)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=config.momentum)
    chunk = max(1, min(CHUNK, config.max_steps))
    while point.steps < config.max_steps:
        try:
            res = train(
                model,
                x,
                y,
                MSE,
                optimizer=opt,
                steps=min(chunk, config.max_steps - point.steps),
                loss_threshold=setting.tol,
                record_every=chunk,
            )
        except TrainingDivergedError as err:
            point.nn_train, point.steps = math.inf, point.steps + err.result.steps_run
            return point
        point.steps += res.steps_run
        point.nn_train, point.converged = res.final_loss, res.converged
        point.nn_move = float((flat(model) - theta0).norm() / theta0.norm())
        if res.converged or point.nn_move > config.max_move:
            break
    with torch.no_grad():
        point.nn_test = float(((model(xt).reshape(-1).to(F64) - yt) ** 2).mean())
    return point


def scale_row(setting: Setting, pilot: list[Point], seeds: list[int], device: torch.device) -> dict[str, object]:
    """RMS of h_ini on the test points at sigma = 1: this run's widths and the paper's, the same seeds."""
    xt = setting.split.x_test
    paper = []
    for s in seeds:
        with torch.no_grad():
            paper.append(float(network(setting, 1.0, s, device, setting.paper_widths)(xt).pow(2).mean().sqrt()))
    return {
        "setting": setting.label,
        "widths": str(list(setting.widths)),
        "RMS of h_ini": spread_text([p.h_ini_rms for p in pilot]),
        "paper's widths": str(list(setting.paper_widths)),
        "RMS of h_ini at the paper's widths": spread_text(paper),
        "RMS of the test targets": float(setting.split.y_test.pow(2).mean().sqrt()),
    }
