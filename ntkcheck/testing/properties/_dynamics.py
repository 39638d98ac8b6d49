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

an M = n*O dimensional system (P can be thousands).  Finite times are integrated in t itself (Radau,
analytic Jacobian ``-lr S U^T H U S`` with H the loss Hessian written here); the long-time limit in
``s`` with ``dt/ds = |r| / |g|`` (the same path, at a linear rate in s for every L^p; for p > 2 the
flow in t converges only polynomially), stopped by an event at ``|r| <= STOP |r_0|``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from hypothesis import strategies as st
from scipy.integrate import solve_ivp
from torch import nn

from ntkcheck.losses import LpLoss, Mixture
from ntkcheck.strategies import architectures

STOP = 1e-10
"""The long-time oracle stops at ||f_lin(X) - Y|| <= STOP * ||f_lin(X; theta_0) - Y||."""
RTOL = 1e-8
"""Relative step tolerance of the finite-time oracle (Radau in t)."""


# -- the loss, written from its definition -----------------------------------------------------------


def _lp(p: float, r: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gradient and Hessian diagonal of (1/n) sum |r_i|^p: (p/n)|r|^(p-1) sign r, p(p-1)/n |r|^(p-2)."""
    a = np.abs(r)
    g = (p / n) * a ** (p - 1) * np.sign(r)
    h = (p * (p - 1) / n) * np.maximum(a, 1e-300) ** (p - 2)
    return g, np.minimum(h, 1e300)


def dist_grad(loss: object, r: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(grad, Hessian diagonal) of ``dist(Y + r, Y)`` for an L^p loss or a positive mixture of them.

    ``r`` is flat over samples and outputs, ``n`` the number of samples (the loss divides by it).
    The loss's attributes (p, weights) are read; its gradient code is not called.
    """
    if isinstance(loss, Mixture):
        g, h = np.zeros_like(r), np.zeros_like(r)
        for w, term in loss.terms:
            gt, ht = dist_grad(term, r, n)
            g, h = g + w * gt, h + w * ht
        return g, h
    if isinstance(loss, LpLoss):
        return _lp(loss.p, r, n)
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
    if out == 1:
        return k
    n1, n2 = J1.shape[0] // out, J2.shape[0] // out
    return k.reshape(n1, out, n2, out).permute(0, 2, 1, 3)


# -- the flow ------------------------------------------------------------------------------------------


class ParameterFlow:
    """``d delta/dt = -lr J^T grad_h dist(h_0 + J delta, Y)``, delta = theta - theta_0 (seed 000 eq (2)).

    ``J`` (M, P) and ``r0 = h_0(X) - Y`` (M,) flat, ``n`` samples.  Everything in float64 numpy.
    """

    def __init__(self, J: torch.Tensor, r0: torch.Tensor, loss: object, n: int, lr: float = 1.0) -> None:
        self.J = J.detach().cpu().double().numpy()
        self.r0 = r0.detach().cpu().double().numpy().reshape(-1)
        self.loss, self.n, self.lr = loss, n, float(lr)
        U, S, Vt = np.linalg.svd(self.J, full_matrices=False)
        self.U, self.S, self.Vt = U, S, Vt
        self.US = U * S  # J V = U S
        self.ref = float(np.linalg.norm(self.r0))

    # eigenvalues of K = J J^T
    @property
    def lam_max(self) -> float:
        return float(self.S[0] ** 2)

    @property
    def lam_min(self) -> float:
        return float(self.S[-1] ** 2)

    def residual(self, c: np.ndarray) -> np.ndarray:
        return self.r0 + self.US @ c

    def time_scales(self) -> tuple[float, float]:
        """(fast, slow): |r_0| / (lr lambda |g_0|) for lambda_max and lambda_min, the flow's time scales at t = 0."""
        g, _ = dist_grad(self.loss, self.r0, self.n)
        ratio = self.ref / max(float(np.linalg.norm(g)), 1e-300)
        return ratio / (self.lr * self.lam_max), ratio / (self.lr * self.lam_min)

    def _rhs_t(self, _t: float, c: np.ndarray) -> np.ndarray:
        g, _ = dist_grad(self.loss, self.residual(c), self.n)
        return -self.lr * (self.US.T @ g)

    def _jac_t(self, _t: float, c: np.ndarray) -> np.ndarray:
        _, h = dist_grad(self.loss, self.residual(c), self.n)
        return -self.lr * (self.US.T * h) @ self.US

    def at(self, times: list[float]) -> np.ndarray:
        """delta(t) (T, P) at finite times (ascending, >= 0), integrated in t."""
        t = np.asarray(times, dtype=np.float64)
        if not (np.all(np.isfinite(t)) and np.all(np.diff(t) > 0) and t[0] >= 0):
            raise ValueError(f"times must be finite, >= 0 and increasing, got {times}")
        m = self.US.shape[1]
        cs = np.zeros((len(t), m))
        pos = t > 0
        if pos.any() and self.ref > 0:

            def stop(_t: float, c: np.ndarray) -> float:
                return float(np.linalg.norm(self.residual(c))) - STOP * self.ref

            # for p < 2 the flow reaches Y in finite time and the field is singular there: stop just before
            stop.terminal = True  # type: ignore[attr-defined]
            scale = self.ref / self.S[-1]  # size of c (|U S c| ~ |r0|)
            sol = solve_ivp(self._rhs_t, (0.0, float(t[-1])), np.zeros(m), method="Radau", jac=self._jac_t,
                            dense_output=True, events=[stop], rtol=RTOL, atol=RTOL * 1e-2 * scale)
            if sol.status < 0:
                raise FloatingPointError(f"parameter-flow oracle failed: {sol.message}")
            end = float(sol.t[-1])
            for i in np.flatnonzero(pos):
                cs[i] = sol.sol(min(float(t[i]), end))
        return cs @ self.Vt

    def limit(self) -> tuple[np.ndarray, bool]:
        """delta(inf) (P,) and whether the stopping event |r| <= STOP |r_0| was reached (integrated in s)."""
        if self.ref == 0.0:
            return np.zeros(self.Vt.shape[1]), True
        US, n, loss = self.US, self.n, self.loss

        def rhs(_s: float, c: np.ndarray) -> np.ndarray:
            r = self.residual(c)
            g, _ = dist_grad(loss, r, n)
            gn = float(np.linalg.norm(g))
            return np.zeros_like(c) if gn == 0.0 else -(US.T @ g) * (float(np.linalg.norm(r)) / gn)

        def jac(_s: float, c: np.ndarray) -> np.ndarray:
            # F = -A^T g |r|/|g| with A = U S;  dF/dc = -A^T M A,
            # M = diag(h) |r|/|g| + g r^T / (|r| |g|) - g (h*g)^T |r| / |g|^3
            r = self.residual(c)
            g, h = dist_grad(loss, r, n)
            rn, gn = float(np.linalg.norm(r)), float(np.linalg.norm(g))
            if gn == 0.0 or rn == 0.0:
                return np.zeros((c.size, c.size))
            M = np.diag(h * (rn / gn)) + np.outer(g, r) / (rn * gn) - np.outer(g, h * g) * (rn / gn**3)
            return -US.T @ M @ US

        def stop(_s: float, c: np.ndarray) -> float:
            return math.log(max(float(np.linalg.norm(self.residual(c))), 1e-300)) - math.log(STOP * self.ref)

        stop.terminal = True  # type: ignore[attr-defined]
        # |r|_p decays at least like exp(-p lambda_min s) (seed 000 §4 class, Lp): 4x the time to STOP
        horizon = 4 * (math.log(1 / STOP) + math.log(len(self.r0)) + 1) / self.lam_min
        sol = solve_ivp(rhs, (0.0, horizon), np.zeros(US.shape[1]), method="Radau", jac=jac,
                        rtol=1e-8, atol=1e-12 * self.ref / self.S[-1], events=[stop])
        reached = sol.status == 1 and sol.t_events[0].size > 0
        return sol.y[:, -1] @ self.Vt, reached


def flat(h: torch.Tensor) -> torch.Tensor:
    return h.reshape(-1)


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


# -- draws -----------------------------------------------------------------------------------------------


def wide_architectures(min_width: int, **kwargs: object) -> st.SearchStrategy:
    """``architectures(**kwargs)`` with every hidden width raised to at least ``min_width``.

    Narrow hidden layers (width 1-3, dead ReLUs) give numerically singular kernels that the flows'
    condition bound would reject; widening makes the draws valid by construction instead.
    """
    def widen(arch):
        return dataclasses.replace(arch, widths=tuple(max(w, min_width) for w in arch.widths))

    return architectures(**kwargs).map(widen)  # type: ignore[arg-type]


@st.composite
def loss_pairs(draw: st.DrawFn, *, min_p: float = 1.5, max_p: float = 4.0):
    """Two DIFFERENT losses of seed 000 §4: L^p with distinct p (|p - q| >= 0.5), or an L^p and a mixture.

    Mixture weights avoid 1.0, so a slip that drops a weight changes the loss.
    """
    def p_values(lo: float, hi: float):
        return st.floats(lo, hi).map(lambda v: round(v, 2))

    p = draw(p_values(min_p, max_p))
    kind = draw(st.sampled_from(["two_lp", "lp_mixture", "mixture_lp"]))
    away = p_values(min_p, p - 0.5) if p - 0.5 >= min_p else p_values(p + 0.5, max_p)
    q = draw(away)
    if kind == "two_lp":
        return LpLoss(p), LpLoss(q)
    w = draw(st.sampled_from([0.25, 0.5, 2.0, 4.0]))
    mix = LpLoss(q) + w * LpLoss(draw(p_values(min_p, max_p)))
    return (LpLoss(p), mix) if kind == "lp_mixture" else (mix, LpLoss(p))


def section4_losses(*, min_p: float = 1.5, max_p: float = 4.0) -> st.SearchStrategy:
    """One loss of seed 000 §4: L^p (p in [min_p, max_p]) or a mixture with weight != 1."""
    return loss_pairs(min_p=min_p, max_p=max_p).map(lambda pair: pair[1])
