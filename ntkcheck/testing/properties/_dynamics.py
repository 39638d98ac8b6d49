"""The independent oracle of the dynamics properties: gradient flow of the linearized network in parameter space.

Seed 000 eq (2) trains the linearized network ``f_lin(x; theta) = h(x; theta_0) + J(x) (theta - theta_0)``
by ``d theta/dt = -lr J^T grad_h dist(f_lin(X; theta), Y)``.  This module integrates THAT ODE — in
parameter space, with the loss's gradient written here from the loss's definition (not the library's
``Loss.grad``), the Jacobian taken row by row with ``torch.autograd.grad`` (not the library's
``jacobian`` or ``ntk``), and predictions read off the parameters, ``f_lin(x) = h(x; theta_0) + J(x) delta``
(no kernel, no ``K^{-1}``).  The properties compare it with the library's function-space flows
(seed 000 eq (3): ``ode_flow``, ``mse_flow``, ``mse_gd``) and solvers (eqs (4), (5)).

Coordinates.  With the thin SVD ``J = U S V^T`` (V: P x M orthonormal), the velocity
``-lr J^T g = -lr V S U^T g`` lies in span(V), so ``delta(t) = V c(t)`` exactly and

    dc/dt = -lr S U^T g(r_0 + U S c),       r = f_lin(X) - Y = r_0 + J delta,

an M = n*O dimensional system (P can be thousands); rows of J that share no parameter with the others
(the outputs of a network trained in its last layer only) form independent blocks, integrated apart.
Finite times are integrated in t itself (LSODA, analytic Jacobian ``-lr S U^T H U S`` with H the loss
Hessian written here; the system is small and stiff, and LSODA's Fortran steps cost ~10x less than
Radau's here); the long-time limit in
``s`` with ``dt/ds = |r| / |g|`` (the same path, at a linear rate in s for every L^p; for p > 2 the
flow in t converges only polynomially), stopped by an event at ``|r| <= STOP |r_0|``.  For p < 2 the
integrated loss is smoothed below ``SMOOTH |r_0|`` (see there).
"""

from __future__ import annotations

import functools
import math
import operator

import numpy as np
import torch
from scipy.integrate import solve_ivp
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from torch import nn

from ntkcheck._support.shapes import matrix_as_kernel
from ntkcheck.dynamics.losses import LpLoss, Mixture

STOP = 1e-10
"""The long-time oracle stops at ||f_lin(X) - Y|| <= STOP * ||f_lin(X; theta_0) - Y||."""
SMOOTH = 1e-11
"""For p < 2 the integrated loss is (r^2 + eps^2)^(p/2) with eps = SMOOTH |r_0|, not |r|^p.

Where a residual component slides at ~0 (pinned by the non-Lipschitz field |r|^(p-1)) the implicit
integrator's corrector oscillates and the steps shrink to nothing; smoothed, the field is linear there.
Each component of the smoothed flow stays within ~eps of the exact one (a sliding component's
equilibrium moves by at most eps; the others see the same balancing gradient), and the smoothed flow
has the same limit r = 0: far below every tolerance (1e-11 of the initial residual)."""
MAX_EVALUATIONS = 200_000
"""An integration needing more right-hand-side evaluations than this raises instead of running on."""
RTOL = 1e-10
"""Relative step tolerance of both integrations (LSODA)."""
ODE_RTOL = 1e-9
"""rtol = atol handed to :func:`ntkcheck.dynamics.flows.ode_flow` at finite times (its default, stated here because the
``finite_time_flow`` tolerance is derived from it)."""


# -- the loss, written from its definition -----------------------------------------------------------


def _lp(p: float, r: np.ndarray, n: int, eps: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Gradient and Hessian diagonal of (1/n) sum |r_i|^p: (p/n)|r|^(p-1) sign r, p(p-1)/n |r|^(p-2).

    For p < 2 and ``eps > 0``, of (1/n) sum (r_i^2 + eps^2)^(p/2) instead: smooth at 0 (see SMOOTH)."""
    if p < 2 and eps > 0:
        q = r * r + eps * eps
        g = (p / n) * r * q ** (p / 2 - 1)
        h = (p / n) * q ** (p / 2 - 2) * ((p - 1) * r * r + eps * eps)
        return g, h
    a = np.abs(r)
    g = (p / n) * a ** (p - 1) * np.sign(r)
    h = (p * (p - 1) / n) * np.maximum(a, 1e-300) ** (p - 2)
    return g, np.minimum(h, 1e300)


def dist_grad(loss: object, r: np.ndarray, n: int, eps: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(grad, Hessian diagonal) of ``dist(Y + r, Y)`` for an L^p loss or a positive mixture of them.

    ``r`` is flat over samples and outputs, ``n`` the number of samples (the loss divides by it).
    The loss's attributes (p, weights) are read; its gradient code is not called.  ``eps``: see
    :func:`_lp`.
    """
    if isinstance(loss, Mixture):
        g, h = np.zeros_like(r), np.zeros_like(r)
        for w, term in loss.terms:
            gt, ht = dist_grad(term, r, n, eps)
            g, h = g + w * gt, h + w * ht
        return g, h
    if isinstance(loss, LpLoss):
        return _lp(loss.p, r, n, eps)
    raise TypeError(f"the oracle knows LpLoss and Mixture of them, got {loss!r}")


# -- the model side ----------------------------------------------------------------------------------


def param_jacobian(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """d f(x)/d theta over the trainable parameters, (N*O, P), rows sample-major, one autograd pass per row."""
    params = [p for p in model.parameters() if p.requires_grad]
    out = model(x).reshape(-1)
    rows = []
    for i in range(out.numel()):
        grads = torch.autograd.grad(out[i], params, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)]))
    return torch.stack(rows).detach()


def outputs(model: nn.Module, x: torch.Tensor, out: int) -> torch.Tensor:
    """model(x) in the targets' shape: (n,) for one output, (n, O) otherwise."""
    with torch.no_grad():
        h = model(x)
    return h.reshape(-1) if out == 1 else h.reshape(x.shape[0], out)


def block_kernel(J1: torch.Tensor, J2: torch.Tensor, out: int) -> torch.Tensor:
    """J1 J2^T as the library's kernel layout: (n1, n2) for one output, (n1, n2, O, O) otherwise."""
    k = J1 @ J2.T
    return k if out == 1 else matrix_as_kernel(k, out)


# -- the flow ------------------------------------------------------------------------------------------


class _Budget:
    """Counts right-hand-side evaluations; raises past MAX_EVALUATIONS (a stalled integration, not a hang)."""

    def __init__(self) -> None:
        self.count = 0

    def spend(self) -> None:
        self.count += 1
        if self.count > MAX_EVALUATIONS:
            raise FloatingPointError(f"parameter-flow oracle: more than {MAX_EVALUATIONS} evaluations (stalled)")


class _Block:
    """Rows ``rows`` of J and the parameters ``cols`` they (alone) depend on, in SVD coordinates."""

    def __init__(self, J: np.ndarray, r0: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> None:
        self.rows, self.cols = rows, cols
        U, S, Vt = np.linalg.svd(J[np.ix_(rows, cols)], full_matrices=False)
        self.S, self.Vt = S, Vt
        self.US = U * S  # J_b V = U S
        self.r0 = r0[rows]
        self.ref = float(np.linalg.norm(self.r0))

    def residual(self, c: np.ndarray) -> np.ndarray:
        return self.r0 + self.US @ c


class ParameterFlow:
    """``d delta/dt = -lr J^T grad_h dist(h_0 + J delta, Y)``, delta = theta - theta_0 (seed 000 eq (2)).

    ``J`` (M, P) and ``r0 = h_0(X) - Y`` (M,) flat, ``n`` samples.  Everything in float64 numpy.

    The loss is separable (a sum over entries), so rows of J that share no parameter with the others
    (e.g. the outputs of a network trained in its last layer only) move independently: each such
    block is integrated on its own.  Integrated together, a p < 2 block that reaches its targets in
    finite time while another has not pins the step size of the whole system at the non-Lipschitz
    point 0 of its field.
    """

    def __init__(self, J: torch.Tensor, r0: torch.Tensor, loss: object, n: int, lr: float = 1.0) -> None:
        self.J = J.detach().cpu().double().numpy()
        self.r0 = r0.detach().cpu().double().numpy().reshape(-1)
        self.loss, self.n, self.lr = loss, n, float(lr)
        self.P = self.J.shape[1]
        self.ref = float(np.linalg.norm(self.r0))
        touch = self.J != 0
        shared = touch.astype(np.float64) @ touch.T.astype(np.float64)  # rows i, j share shared[i, j] parameters
        count, labels = connected_components(csr_matrix(shared > 0), directed=False)
        self.blocks = []
        for b in range(count):
            rows = np.flatnonzero(labels == b)
            self.blocks.append(_Block(self.J, self.r0, rows, np.flatnonzero(touch[rows].any(axis=0))))
        # singular values of J, a block with fewer parameters than rows contributing zeros
        self.S = np.sort(np.concatenate([np.pad(blk.S, (0, len(blk.rows) - len(blk.S))) for blk in self.blocks]))[::-1]
        self.stop = STOP * self.ref / math.sqrt(count)  # per block, so that |r| <= STOP |r0| overall

    # eigenvalues of K = J J^T
    @property
    def lam_max(self) -> float:
        return float(self.S[0] ** 2)

    @property
    def lam_min(self) -> float:
        return float(self.S[-1] ** 2)

    @property
    def cond(self) -> float:
        """lambda_max / lambda_min of K = J J^T (inf when K is singular, all-zero included)."""
        return self.lam_max / self.lam_min if self.lam_min > 0 else math.inf

    def time_scales(self) -> tuple[float, float]:
        """(fast, slow): |r_0| / (lr lambda |g_0|) for lambda_max and lambda_min, the flow's time scales at t = 0."""
        g, _ = dist_grad(self.loss, self.r0, self.n)
        ratio = self.ref / max(float(np.linalg.norm(g)), 1e-300)
        return ratio / (self.lr * self.lam_max), ratio / (self.lr * self.lam_min)

    def _delta(self, blk: _Block, cs: np.ndarray) -> np.ndarray:
        out = np.zeros(cs.shape[:-1] + (self.P,))
        out[..., blk.cols] = cs @ blk.Vt
        return out

    def _at_block(self, blk: _Block, t: np.ndarray) -> np.ndarray:
        m = blk.US.shape[1]
        cs = np.zeros((len(t), m))
        pos = t > 0
        if not (pos.any() and blk.ref > 0):
            return cs
        US, loss, n, lr, eps = blk.US, self.loss, self.n, self.lr, SMOOTH * self.ref

        budget = _Budget()

        def rhs(_t: float, c: np.ndarray) -> np.ndarray:
            budget.spend()
            g, _ = dist_grad(loss, blk.residual(c), n, eps)
            return -lr * (US.T @ g)

        def jac(_t: float, c: np.ndarray) -> np.ndarray:
            _, h = dist_grad(loss, blk.residual(c), n, eps)
            return -lr * (US.T * h) @ US

        def stop(_t: float, c: np.ndarray) -> float:
            return float(np.linalg.norm(blk.residual(c))) - self.stop

        # for p < 2 the flow reaches Y in finite time and the field is singular there: stop just before
        stop.terminal = True  # type: ignore[attr-defined]
        scale = self.ref / blk.S[-1]  # size of c (|U S c| ~ |r0|)
        sol = solve_ivp(
            rhs,
            (0.0, float(t[-1])),
            np.zeros(m),
            method="LSODA",
            jac=jac,
            dense_output=True,
            events=[stop],
            rtol=RTOL,
            atol=RTOL * 1e-2 * scale,
        )
        if sol.status < 0:
            raise FloatingPointError(f"parameter-flow oracle failed: {sol.message}")
        end = float(sol.t[-1])
        for i in np.flatnonzero(pos):
            cs[i] = sol.sol(min(float(t[i]), end))
        return cs

    def at(self, times: list[float]) -> np.ndarray:
        """delta(t) (T, P) at finite times (ascending, >= 0), integrated in t."""
        t = np.asarray(times, dtype=np.float64)
        if not (np.all(np.isfinite(t)) and np.all(np.diff(t) > 0) and t[0] >= 0):
            raise ValueError(f"times must be finite, >= 0 and increasing, got {times}")
        return functools.reduce(operator.add, (self._delta(blk, self._at_block(blk, t)) for blk in self.blocks))

    def _limit_block(self, blk: _Block) -> tuple[np.ndarray, bool]:
        if blk.ref <= self.stop:
            return np.zeros(blk.US.shape[1]), True
        US, n, loss, eps = blk.US, self.n, self.loss, SMOOTH * self.ref

        budget = _Budget()

        def rhs(_s: float, c: np.ndarray) -> np.ndarray:
            budget.spend()
            r = blk.residual(c)
            g, _ = dist_grad(loss, r, n, eps)
            gn = float(np.linalg.norm(g))
            return np.zeros_like(c) if gn == 0.0 else -(US.T @ g) * (float(np.linalg.norm(r)) / gn)

        def jac(_s: float, c: np.ndarray) -> np.ndarray:
            # F = -A^T g |r|/|g| with A = U S;  dF/dc = -A^T M A,
            # M = diag(h) |r|/|g| + g r^T / (|r| |g|) - g (h*g)^T |r| / |g|^3
            r = blk.residual(c)
            g, h = dist_grad(loss, r, n, eps)
            rn, gn = float(np.linalg.norm(r)), float(np.linalg.norm(g))
            if gn == 0.0 or rn == 0.0:
                return np.zeros((c.size, c.size))
            M = np.diag(h * (rn / gn)) + np.outer(g, r) / (rn * gn) - np.outer(g, h * g) * (rn / gn**3)
            return -US.T @ M @ US

        def stop(_s: float, c: np.ndarray) -> float:
            return math.log(max(float(np.linalg.norm(blk.residual(c))), 1e-300)) - math.log(self.stop)

        stop.terminal = True  # type: ignore[attr-defined]
        # |r|_p decays at least like exp(-lambda_min s) (seed 000 §4 class, L^p): 4x the time to the stop
        horizon = 4 * (math.log(blk.ref / self.stop) + math.log(len(blk.r0)) + 1) / float(blk.S[-1] ** 2)
        # c tends to a nonzero constant while r = r0 + U S c tends to 0: r is resolved to STOP |r0| only if
        # the step error in c is below that, hence RTOL ~ STOP
        sol = solve_ivp(
            rhs,
            (0.0, horizon),
            np.zeros(US.shape[1]),
            method="LSODA",
            jac=jac,
            rtol=RTOL,
            atol=RTOL * 1e-2 * self.ref / blk.S[-1],
            events=[stop],
        )
        return sol.y[:, -1], sol.status == 1 and sol.t_events[0].size > 0

    def limit(self) -> tuple[np.ndarray, bool]:
        """delta(inf) (P,) and whether the stopping event |r| <= STOP |r_0| was reached (integrated in s)."""
        delta, reached = np.zeros(self.P), True
        for blk in self.blocks:
            c, ok = self._limit_block(blk)
            delta += self._delta(blk, c)
            reached = reached and ok
        return delta, reached

    @property
    def Vt(self) -> np.ndarray:
        """Orthonormal rows spanning the row space of J (P-vectors), block by block."""
        rows = []
        for blk in self.blocks:
            v = np.zeros((blk.Vt.shape[0], self.P))
            v[:, blk.cols] = blk.Vt
            rows.append(v)
        return np.concatenate(rows)


def predict(h0: torch.Tensor, J: torch.Tensor, delta: np.ndarray) -> torch.Tensor:
    """f_lin = h0 + J delta for one delta (P,) or a trajectory (T, P); shape (T?, *h0.shape), dtype of h0."""
    d = torch.from_numpy(np.asarray(delta)).to(torch.float64)
    Jd = J.detach().cpu().double()
    base = h0.detach().cpu().double().reshape(-1)
    if d.ndim == 1:
        out = base + Jd @ d
        return out.reshape(h0.shape).to(dtype=h0.dtype, device=h0.device)
    out = base[None] + d @ Jd.T
    return out.reshape((d.shape[0],) + tuple(h0.shape)).to(dtype=h0.dtype, device=h0.device)
