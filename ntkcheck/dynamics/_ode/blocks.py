"""The decoupled blocks of :func:`ntkcheck.dynamics.flows.ode_flow`: each integrated on its own by LSODA."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy.optimize import brentq
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from ntkcheck.dynamics._ode.budget import _Budget
from ntkcheck.dynamics._ode.field import _PolarFlow
from ntkcheck.dynamics.losses import Loss


def _blocks(K: np.ndarray) -> list[np.ndarray]:
    """Index sets of the connected components of K's nonzero pattern (the diagonal blocks of a permuted K)."""
    count, labels = connected_components(csr_matrix(K != 0), directed=False)
    return [np.flatnonzero(labels == b) for b in range(count)]


class _BlockRun:
    """One integrated block of :func:`ntkcheck.dynamics.flows.ode_flow`: its residual at any flow time and at the
    end."""

    def __init__(
        self,
        r0: np.ndarray,
        final: np.ndarray,
        t_final: float,
        converged: bool,
        sol: Any = None,
        flow: _PolarFlow | None = None,
    ) -> None:
        self.r0, self.final, self.t_final, self.converged = r0, final, t_final, converged
        self.sol, self.flow = sol, flow
        # flow times of the accepted steps and the residual there
        self.tau = 1.0 if flow is None else flow.tau
        self.t_steps = np.zeros(1) if sol is None else self.tau * np.expm1(sol.y[-1])
        self.r_steps = r0[None] if sol is None else (np.exp(sol.y[-2])[:, None] * sol.y[:-2].T)

    def at(self, tk: float) -> np.ndarray:
        """The block's residual at flow time ``tk``."""
        if tk == 0.0 or self.sol is None:
            return self.r0
        if tk >= self.t_final:
            return self.final
        sol = self.sol  # locate s with theta(s) = log1p(tk / tau) on the dense output
        theta, grid = math.log1p(tk / self.tau), sol.y[-1]
        j = int(np.searchsorted(grid, theta))  # grid[j-1] < theta <= grid[j]
        sa, sb = sol.t[j - 1], sol.t[j]
        fa, fb = sol.sol(sa)[-1] - theta, sol.sol(sb)[-1] - theta
        if fa >= 0 or fb <= 0:  # the interpolant at a step end differs from the step by rounding
            s_k = sa if fa >= 0 else sb
        else:
            s_k = brentq(lambda s: sol.sol(s)[-1] - theta, sa, sb, xtol=1e-14 * max(1.0, abs(sb)), rtol=1e-14)
        assert self.flow is not None
        return self.flow.residual(sol.sol(s_k))


def _run_block(
    Kf: np.ndarray,
    loss: Loss,
    Yl: torch.Tensor,
    lr: float,
    index: np.ndarray | None,
    r0: np.ndarray,
    log_stop: float,
    on_grad: bool,
    depth: float,
    max_time: float,
    rtol: float,
    atol: float,
    lam_min: float | None,
    budget: _Budget,
    block: int = 0,
) -> _BlockRun:
    """Integrate the polar flow of the entries ``index`` (all when None) from ``r0``
    (see :func:`ntkcheck.dynamics.flows.ode_flow`)
    until ``log |r| <= log_stop`` (``log |grad_h dist| <= log_stop`` if ``on_grad``), ``max_time`` or the
    s-horizon for a residual decay by ``exp(-depth)``; ``lam_min``: the block's smallest kernel eigenvalue
    when known."""
    from scipy.integrate import solve_ivp  # scipy.integrate loads only when a flow is integrated

    norm0 = float(np.linalg.norm(r0))
    if norm0 == 0.0:  # already at the rest point (for a block: condition (iii) of a separable loss)
        return _BlockRun(r0, r0, 0.0, True)
    K = Kf if index is None else Kf[np.ix_(index, index)]
    lam, V = np.linalg.eigh(K)
    if lam_min is None:
        lam_min = float(lam[0])
    # time unit: the fastest time scale at t = 0, |r0| / (lr lambda_max |g0|)
    g0 = float(np.linalg.norm(_PolarFlow(K, loss, Yl, lr, index).grad(r0)))
    tau = norm0 / (lr * float(lam[-1]) * g0) if g0 > 0 and lam[-1] > 0 else 1.0
    # an L^p path keeps |r|_p <= |r0|_p, so |r| <= n^(1/2) |r0|; l_max leaves a further factor e^10
    l_max = math.log(norm0) + 0.5 * math.log(r0.size) + 10
    flow = _PolarFlow(K, loss, Yl, lr, index, tau, eig=(lam, V), l_max=l_max)
    budget.begin(block, math.log(norm0), None if on_grad else log_stop)

    def limit_event(s: float, u: np.ndarray) -> float:  # never fires: called once per accepted step
        if s > 0:
            budget.step(flow, u)
        return 1.0

    def stop_event(_s: float, u: np.ndarray) -> float:
        if not on_grad:
            return float(u[-2] - log_stop)
        return math.log(max(float(np.linalg.norm(flow.grad(flow.residual(u)))), 1e-320)) - log_stop

    stop_event.terminal = True  # type: ignore[attr-defined]
    events = [stop_event, limit_event]
    if math.isfinite(max_time):

        def time_event(_s: float, u: np.ndarray) -> float:
            return float(u[-1] - math.log1p(max_time / tau))

        time_event.terminal = True  # type: ignore[attr-defined]
        events.append(time_event)
    horizon = 4 * (depth + math.log(r0.size) + 1) / (lr * lam_min)
    u0 = np.concatenate([r0 / norm0, [math.log(norm0), 0.0]])
    sol = solve_ivp(
        flow.rhs,
        (0.0, horizon),
        u0,
        method="LSODA",
        jac=flow.jac,
        rtol=rtol,
        atol=atol,
        events=events,
        dense_output=True,
    )
    if sol.status < 0:
        u = sol.y[:, -1]
        raise FloatingPointError(
            f"ode_flow: LSODA failed{budget.label} at flow time t = {tau * math.expm1(u[-1]):.6g} with "
            f"||h - Y|| / ||h_ini_train - Y|| = {math.exp(u[-2]) / budget.ref:.3e} after {budget.steps} steps: "
            f"{sol.message}"
        )
    u_final = sol.y[:, -1]
    return _BlockRun(
        r0, flow.residual(u_final), float(tau * np.expm1(u_final[-1])), sol.t_events[0].size > 0, sol, flow
    )
