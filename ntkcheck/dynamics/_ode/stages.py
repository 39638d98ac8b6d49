"""The three stages of :func:`ntkcheck.dynamics.flows.ode_flow`: integrate the training outputs (block by block),
sample the path at the requested times, project it onto the test points."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import brentq

from ntkcheck._support.validation import check_finite_result
from ntkcheck.dynamics._inverse import _Inverse
from ntkcheck.dynamics._ode.blocks import _BlockRun, _blocks, _run_block
from ntkcheck.dynamics._ode.budget import _Budget
from ntkcheck.dynamics._ode.field import _PolarFlow
from ntkcheck.dynamics._problem import _Problem
from ntkcheck.dynamics.losses import Loss

_BLOCK_DEPTH = 1e-2  # blocks run to 1e-2 of their share of the stop, so frozen blocks move the global stop < 1e-4


@dataclass(frozen=True)
class _Settings:
    """The integration settings of one :func:`ntkcheck.dynamics.flows.ode_flow` call (checked)."""

    lr: float
    tol: float
    grad_tol: float | None
    max_time: float
    rtol: float
    atol: float
    max_steps: int | None
    max_seconds: float | None
    progress: bool | None


@dataclass(frozen=True)
class _StopRule:
    """The stop: ``log |r| <= log_stop``, or ``log |grad_h dist| <= log_stop`` with ``grad_tol``."""

    log_stop: float
    on_grad: bool

    def crit(self, r: np.ndarray, flow: _PolarFlow | None) -> float:
        """``log |v| - log_stop`` with v the residual r or, on the gradient, ``flow.grad(r)``."""
        v = r if not self.on_grad or flow is None else flow.grad(r)
        return math.log(max(float(np.linalg.norm(v)), 1e-320)) - self.log_stop


@dataclass(frozen=True)
class _Path:
    """The integrated training outputs: the blocks, their runs, where the flow stopped."""

    blocks: list[np.ndarray]
    runs: list[_BlockRun]
    t_final: float
    converged: bool
    Y: torch.Tensor  # (N, C) float64 on the CPU
    flow: _PolarFlow  # the whole system, for its gradient
    ref: float  # ||h_ini_train - Y||
    steps: int

    def residual_at(self, tk: float) -> np.ndarray:
        """The flat residual ``h - Y`` at flow time tk, assembled from the blocks."""
        r = np.empty(self.Y.numel())
        for idx, run in zip(self.blocks, self.runs, strict=True):
            r[idx] = run.at(tk)
        return r

    def h_at(self, tk: float) -> torch.Tensor:
        """``h_train`` (N, C) at flow time tk."""
        return self.Y + torch.from_numpy(self.residual_at(tk)).reshape(self.Y.shape)

    def final_measures(self) -> tuple[float, float]:
        """(``||grad_h dist||``, ``||h - Y|| / ||h_ini_train - Y||``) at the final state."""
        final = self.h_at(self.t_final)
        grad_norm = float(np.linalg.norm(self.flow.grad((final - self.Y).numpy().ravel())))
        residual = float(torch.linalg.norm(final - self.Y)) / self.ref if self.ref > 0 else 0.0
        return grad_norm, residual


def _global_stop(
    path_blocks: list[np.ndarray], runs: list[_BlockRun], size: int, stop: _StopRule, full: _PolarFlow
) -> tuple[float, bool]:
    """First flow time at which the stop holds for the assembled residual r (the blocks' own stops lie
    deeper), or (latest block end, False) if it is never reached."""

    def r_at(tk: float) -> np.ndarray:
        r = np.empty(size)
        for idx, run in zip(path_blocks, runs, strict=True):
            r[idx] = run.at(tk)
        return r

    def crit_at(tk: float) -> float:
        return stop.crit(r_at(tk), full)

    end = max(run.t_final for run in runs)
    if crit_at(0.0) <= 0:
        return 0.0, True
    # the whole residual is above the stop while one block alone is: start after each block's last step above it
    prev = 0.0
    for run in runs:
        above = [stop.crit(r, run.flow) > 0 for r in run.r_steps]
        first = above.index(False) if False in above else len(above)
        prev = max(prev, float(run.t_steps[max(first - 1, 0)]) if first < len(above) else run.t_final)
    grid = np.unique(np.concatenate([run.t_steps for run in runs] + [[end]]))
    for tk in grid[(grid > prev) & (grid <= end)]:
        if crit_at(float(tk)) <= 0:
            t_stop = brentq(crit_at, prev, float(tk), xtol=1e-14 * max(1.0, float(tk)), rtol=1e-14)
            return float(t_stop), True
        prev = float(tk)
    return end, False


def _budget(settings: _Settings, ref: float, blocks: int) -> _Budget:
    show = settings.progress if settings.progress is not None else bool(getattr(sys.stderr, "isatty", bool)())
    label = f"tol={settings.tol:g}" if settings.grad_tol is None else f"grad_tol={settings.grad_tol:g}"
    return _Budget(settings.max_steps, settings.max_seconds, ref, label, show, blocks)


def _integrate(P: _Problem, loss: Loss, settings: _Settings, lam_min: float) -> _Path:
    """Integrate the training outputs of the flow (float64, CPU) until the stop, block by block for a
    separable loss (see :func:`ntkcheck.dynamics.flows.ode_flow`)."""
    s = settings
    Y = P.Y.detach().to(dtype=torch.float64, device="cpu")
    N, C = Y.shape
    Yl = Y.reshape(P.train_shape)  # the loss sees the user's shape
    loss.check(Yl, Yl)
    K = P.K.detach().to(dtype=torch.float64, device="cpu").numpy()
    Kf = np.kron(K, np.eye(C)) if C > 1 else K
    r0 = (P.H0.detach().to(dtype=torch.float64, device="cpu") - Y).numpy().ravel()
    ref = float(np.linalg.norm(r0))
    blocks = _blocks(Kf) if loss.separable else [np.arange(N * C)]
    full = _PolarFlow(Kf, loss, Yl, s.lr)
    log_stop = math.log(max(s.tol * ref, 1e-320)) if s.grad_tol is None else math.log(s.grad_tol)
    stop = _StopRule(log_stop, s.grad_tol is not None)
    depth = math.log(1 / s.tol)
    budget = _budget(s, ref, len(blocks))
    try:
        if len(blocks) == 1:
            run = _run_block(
                Kf, loss, Yl, s.lr, None, r0, log_stop, stop.on_grad, depth, s.max_time, s.rtol, s.atol, lam_min, budget
            )
            return _Path(blocks, [run], run.t_final, run.converged, Y, full, ref, budget.steps)
        # each block runs past its share of the stop; the stop itself is then located on the whole residual
        deeper = math.log(_BLOCK_DEPTH / math.sqrt(len(blocks)))
        runs = [
            _run_block(
                Kf,
                loss,
                Yl,
                s.lr,
                idx,
                r0[idx],
                log_stop + deeper,
                stop.on_grad,
                depth - deeper,
                s.max_time,
                s.rtol,
                s.atol,
                None,
                budget,
                b,
            )
            for b, idx in enumerate(blocks)
        ]
    finally:
        budget.close()
    t_final, converged = _global_stop(blocks, runs, N * C, stop, full) if ref > 0 else (0.0, True)
    return _Path(blocks, runs, t_final, converged, Y, full, ref, budget.steps)


def _sample(path: _Path, P: _Problem, t_req: np.ndarray) -> torch.Tensor:
    """``h_train`` at the requested times and, last, the final state: (T+1, N, C) in the inputs' dtype and device."""
    final = path.h_at(path.t_final)
    h0 = P.H0.detach().to(dtype=torch.float64, device="cpu")
    traj = [h0 if tk == 0.0 else (final if tk >= path.t_final else path.h_at(float(tk))) for tk in t_req]
    return torch.stack([*traj, final]).to(dtype=P.K.dtype, device=P.K.device)


def _project(P: _Problem, inv: _Inverse, train_m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Training outputs (T+1, N, C) in the user's shape, and the test outputs
    ``h_ini_test + k(x, X) K^{-1} (h_train(t) - h0)`` at every sampled time (None without test points)."""
    T1, N, C = train_m.shape
    test = None
    if P.Kx is not None:
        assert P.H0x is not None and P.test_shape is not None
        d = (train_m - P.H0[None]).permute(1, 0, 2).reshape(N, -1)  # (N, (T+1) C)
        pred = (P.Kx @ inv.solve(d)).reshape(-1, T1, C).permute(1, 0, 2) + P.H0x[None]
        test = check_finite_result(pred.reshape((T1,) + P.test_shape), "ode_flow test predictions")
    train = check_finite_result(train_m.reshape((T1,) + P.train_shape), "ode_flow train predictions")
    return train, test
