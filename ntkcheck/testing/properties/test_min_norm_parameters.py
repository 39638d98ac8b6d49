"""seed 000, Thm 5, eq (4) (§4, App. 9): the parameter-space limit of linearized training.

The linearized network h_lin(x; theta) = h(x; theta_0) + J(x) (theta - theta_0) trained by the
PARAMETER-space gradient flow (seed 000 eq (2), with the linearization of eq (8))

    d theta / dt = -grad_theta dist(h_lin(X; theta), Y) = -J^T g,   g = grad_h dist(h, Y),

ends, for every loss of §4's class, at theta_inf = theta_0 + J^T (J J^T)^{-1} (Y - h_0): the solution
of problem (4), the interpolating parameters nearest theta_0.  Here theta itself is integrated
(scipy LSODA, exact Jacobian from the loss Hessian), not the function-space flow.

Time is rescaled as in :func:`ntkcheck.flows.ode_flow`: d theta / ds = -J^T g |r| / |g| (r = h - Y,
dt/ds = |r| / |g| > 0, the same path), so the L^p residual decays at a linear rate in s for
every p (for p > 2 the flow in t is only polynomial, for p < 2 it is non-Lipschitz at the
optimum).  A terminal event stops at ||h - Y|| <= 1e-9 ||h_0 - Y||.

Tolerance: 1e-6 relative in float64 (``tolerance("solver_identity") * 1e3``): the stopping
residual 1e-9 ||r_0|| leaves theta within 1e-9 cond(J) of its limit, and draws with
cond(J J^T) > 1e4 (cond(J) > 100) are rejected, so ~1e-7 remains for the ODE's own error.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, strategies as st
from scipy.integrate import solve_ivp

from ntkcheck.testing.claims import check_close
from ntkcheck.linearize import jacobian
from ntkcheck.solvers import SingularKernelError, min_norm_parameters
from ntkcheck.strategies import architectures, datasets, lp_losses
from ntkcheck.tolerances import MAX_CONDITION_FLOW, tolerance

from ._common import DEVICE, DTYPE, reproduce

CLAIM = "min_norm_parameters"
pytestmark = pytest.mark.claim(CLAIM)
STOP = 1e-9  # terminal event: ||h - Y|| <= STOP * ||h_0 - Y||
MAX_COND = MAX_CONDITION_FLOW  # cond(J J^T) above this is rejected (assume), not given a looser tolerance


def _parameter_flow(J: np.ndarray, r0: np.ndarray, loss, y: torch.Tensor) -> tuple[np.ndarray, bool]:
    """Integrate d delta/ds = -J^T g |r| / |g| from delta = 0 (delta = theta - theta_0, r = r0 + J delta).

    Returns delta at the stopping event and whether the event was reached.
    """
    ref = float(np.linalg.norm(r0))
    yt = y.detach().cpu().double()

    def g_and_h(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h = yt + torch.from_numpy(r)
        return loss.grad(h, yt).numpy().ravel(), loss.hessian(h, yt).numpy()

    def rhs(_s: float, delta: np.ndarray) -> np.ndarray:
        r = r0 + J @ delta
        g, _ = g_and_h(r)
        gn = np.linalg.norm(g)
        if gn == 0.0:
            return np.zeros_like(delta)
        return -(J.T @ g) * (np.linalg.norm(r) / gn)

    def jac(_s: float, delta: np.ndarray) -> np.ndarray:
        # F = -J^T g(r) |r| / |g|;  dF/d delta = -J^T M J with
        # M = H |r|/|g| + g r^T / (|r| |g|) - g g^T H |r| / |g|^3
        r = r0 + J @ delta
        g, H = g_and_h(r)
        rn, gn = np.linalg.norm(r), np.linalg.norm(g)
        if gn == 0.0 or rn == 0.0:
            return np.zeros((J.shape[1], J.shape[1]))
        M = H * (rn / gn) + np.outer(g, r) / (rn * gn) - np.outer(g, g @ H) * (rn / gn**3)
        return -J.T @ M @ J

    def stop(_s: float, delta: np.ndarray) -> float:
        return math.log(max(float(np.linalg.norm(r0 + J @ delta)), 1e-300)) - math.log(STOP * ref)

    stop.terminal = True  # type: ignore[attr-defined]
    lam_min = float(np.linalg.eigvalsh(J @ J.T)[0])
    horizon = 4 * (math.log(1 / STOP) + math.log(len(r0)) + 1) / lam_min
    # LSODA (BDF with its own small dense LU): Radau's complex LU of the (P, P) Newton matrix per step
    # costs ~10x more here.  The integration tolerance need not be tight: the event pins
    # J delta = -r0 to 1e-9 relative, and the flow never leaves the row space of J, so only those
    # two facts (the claim) decide where delta ends.
    scale = ref / math.sqrt(float(np.linalg.eigvalsh(J @ J.T)[-1]))  # size of the displacement
    sol = solve_ivp(rhs, (0.0, horizon), np.zeros(J.shape[1]), method="LSODA", jac=jac,
                    rtol=1e-7, atol=1e-10 * scale, events=[stop])
    return sol.y[:, -1], sol.status == 1 and sol.t_events[0].size > 0


@given(arch=architectures(max_depth=2, max_width=16, max_in=3, max_out=1), data=st.data(), loss=lp_losses())
def test_parameter_flow_converges_to_min_norm_parameters(arch, data, loss):
    """Gradient flow of the linearized network in parameter space, d theta/dt = -J^T grad_h dist
    (seed 000 eq (2)/(8)), under any §4 loss ends at theta_0 + J^T (J J^T)^{-1} (Y - h_0) (seed 000
    Thm 5, eq (4)), and its displacement is orthogonal to the null space of J.  Relative tolerance
    1e-6 (= tolerance("solver_identity") * 1e3 in float64), draws with cond(J J^T) > 1e4 rejected."""
    ds = data.draw(datasets(arch, max_n=5))
    model = arch.build(dtype=DTYPE, device=DEVICE)
    x, y = ds.x(dtype=DTYPE, device=DEVICE), ds.y(dtype=DTYPE, device=DEVICE)
    J = jacobian(model, x)
    with torch.no_grad():
        h0 = model(x).reshape(-1)
    try:
        expected = min_norm_parameters(J, y - h0, max_cond=MAX_COND)
    except (SingularKernelError, ValueError):
        assume(False)  # J J^T ill-conditioned (dead ReLUs, tiny width) or P <= n: Thm 5 needs full row rank
    Jn = J.detach().cpu().double().numpy()
    r0 = (h0 - y).detach().cpu().double().numpy()
    assume(float(np.linalg.norm(r0)) > 0.0)
    delta, reached = _parameter_flow(Jn, r0, loss, y)
    ctx = reproduce(arch, ds=repr(ds), loss=repr(loss),
                    check="flow of theta under -J^T grad dist vs min_norm_parameters(jacobian(model, x), y - h0)")
    tol = tolerance("flow_limit", DTYPE)
    got = torch.from_numpy(delta).to(dtype=expected.dtype, device=expected.device)
    check_close(got, expected, tol=tol * (1.0 if reached else 0.0), claim=CLAIM,
                what=f"theta(inf) - theta_0 of the parameter flow (loss {loss!r}, event reached: {reached})",
                context=ctx)
    # the part of theta(inf) - theta_0 in the null space of J: (I - J^T (J J^T)^{-1} J) delta
    Jd = J.detach().cpu().double()
    dt = torch.from_numpy(delta)
    null_part = dt - Jd.T @ torch.linalg.solve(Jd @ Jd.T, Jd @ dt)
    check_close(null_part, torch.zeros_like(null_part), tol=tol, scale=float(dt.norm()) + 1e-300, claim=CLAIM,
                what="null-space component of theta(inf) - theta_0", context=ctx)
