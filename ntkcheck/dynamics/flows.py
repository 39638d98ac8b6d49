"""Kernel gradient flows in function space: seed 000 eq (3) and its long-time limit eq (5).

Normalisation (used throughout): the MSE is ``dist(h, Y) = (1/n) sum_i |h_i - y_i|^2``
(seed 000 §7.1; n = number of samples, the sum also runs over outputs), so
``grad_h dist = (2/n)(h - Y)`` and the flow (3) with learning rate ``lr`` reads

    dh(x)/dt = -lr * k(x, X) grad_h dist(h(X), Y)          (seed 000 eq (3))

(``lr`` rescales time).  Gradient descent is its forward-Euler discretisation with
step ``lr``: ``h <- h - lr (2/n) K (h - Y)``.  Kernel conventions, the
(n, n, O, O) multi-output case and the singular-kernel guard are those of
:mod:`ntkcheck.dynamics.solvers`.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from typing import NamedTuple

import numpy as np
import torch
from scipy.integrate import solve_ivp
from scipy.optimize import brentq
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from ntkcheck._support.validation import check_choice, check_finite_result, check_positive_int
from ntkcheck.dynamics.losses import Loss
from ntkcheck.dynamics.solvers import (
    _check_diag_reg,
    _check_rcond,
    _Inverse,
    _problem,
    _raise_singular,
    _regularised,
    _ridge,
    _threshold,
)
from ntkcheck.errors import ConvergenceWarning, DivergenceWarning, FlowLimitError

__all__ = [
    "ConvergenceWarning", "DivergenceWarning", "FlowLimitError", "FlowResult", "ODEFlowResult", "mse_flow", "mse_gd",
    "ode_flow",
]


class FlowResult(NamedTuple):
    """Trajectory at the requested times: ``train`` (T, n[, O]), ``test`` (T, m[, O]) or None."""

    times: torch.Tensor
    train: torch.Tensor
    test: torch.Tensor | None


class ODEFlowResult(NamedTuple):
    """Trajectory of :func:`ode_flow` plus its final state and how it got there."""

    times: torch.Tensor
    train: torch.Tensor
    test: torch.Tensor | None
    final_train: torch.Tensor
    final_test: torch.Tensor | None
    t_final: float  # flow time at which integration stopped
    converged: bool  # whether the tolerance was reached
    residual: float  # ||h_train - Y|| / ||h_ini_train - Y|| at t_final
    grad_norm: float  # ||grad_h dist(h_train, Y)|| at t_final
    steps: int = 0  # accepted integration steps (all blocks together)


def _check_lr(lr: object) -> float:
    return _check_float(lr, "lr", "a positive finite float", lambda v: math.isfinite(v) and v > 0)


def _check_float(value: object, name: str, expected: str, ok) -> float:
    """``value`` as a float: TypeError unless it is a real number, ValueError unless ``ok(value)``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__} {value!r}")
    if not ok(float(value)):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return float(value)


def _times(times: object, name: str = "times") -> np.ndarray:
    try:
        t = np.asarray(times.detach().cpu() if isinstance(times, torch.Tensor) else times, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a number or a 1-D array of numbers, got {type(times).__name__}") from exc
    t = np.atleast_1d(t)
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {t.shape}")
    if np.isnan(t).any() or (t < 0).any():
        raise ValueError(f"{name} must be >= 0 (inf allowed) and not NaN, got {t.tolist()[:8]}")
    return t


def _eig(K: torch.Tensor, pinv_rcond: float | None, max_cond: float | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One eigendecomposition; returns (eigenvalues, eigenvectors, mask of the kept eigenvalues)."""
    lam, V = torch.linalg.eigh(K)
    if pinv_rcond is None:
        _raise_singular(lam, _threshold(K.shape[0], K.dtype, max_cond), "k_train")
        keep = torch.ones_like(lam, dtype=torch.bool)
    else:
        keep = lam > pinv_rcond * lam.max()
    return lam, V, keep


def mse_flow(
    k_train: torch.Tensor,
    y_train: torch.Tensor,
    times: object,
    *,
    k_test_train: torch.Tensor | None = None,
    h_ini_train: torch.Tensor | None = None,
    h_ini_test: torch.Tensor | None = None,
    lr: float = 1.0,
    pinv_rcond: float | None = None,
    max_cond: float | None = None,
    diag_reg: float = 0.0,
) -> FlowResult:
    """Closed-form kernel gradient flow (seed 000 eq (3)) for the MSE ``(1/n) sum |h - y|^2``.

    With ``K = V diag(lambda) V^T`` and ``c = 2 lr / n``:

        h_train(t) = Y + V exp(-c lambda t) V^T (h0 - Y)
        h_test(t)  = h_ini_test + k(x, X) V diag((1 - exp(-c lambda t)) / lambda) V^T (Y - h0)

    ``times`` may be a number or an array and may contain ``inf``, where the flow
    equals :func:`ntkcheck.dynamics.solvers.interpolate` (seed 000 eq (5), Corollary 1).  One
    ``torch.linalg.eigh`` serves all times.  A (numerically) singular K raises
    :class:`SingularKernelError` unless ``pinv_rcond`` is given; then eigenvalues below
    ``pinv_rcond * lambda_max`` are treated as zero (those modes do not move — exact
    for an NTK ``K = J J^T``, whose test kernel ``J_* J^T`` vanishes on null(K)),
    and ``t = inf`` equals ``interpolate(..., pinv_rcond=...)``.

    **Ridge.**  With ``diag_reg > 0`` and ``mu = diag_reg * mean(diag K)`` this is the gradient
    flow of the penalised loss ``(1/n) sum |h - y|^2 + (mu / n) |theta - theta_0|^2`` of the
    linearised network (weight decay towards the initialisation) started at ``theta_0``: with
    ``h = h0 + K a``, ``da/dt = -c ((K + mu I) a - (Y - h0))``, so

        h_train(t) = h0 + K V diag((1 - exp(-c (lambda + mu) t)) / (lambda + mu)) V^T (Y - h0)
        h_test(t)  = h_ini_test + k(x, X) V diag((1 - exp(-c (lambda + mu) t)) / (lambda + mu)) V^T (Y - h0)

    and ``t = inf`` equals ``interpolate(..., diag_reg=diag_reg)`` at both point sets (kernel ridge
    regression; the training outputs no longer reach Y).  The singular-kernel guard and ``pinv_rcond``
    act on the eigenvalues ``lambda + mu``.  (neural-tangents' ``gradient_descent_mse`` instead runs the
    training outputs with ``K + mu I`` itself; both share ``mu = diag_reg * trace(K) / N`` and the test
    predictions.)
    """
    lr = _check_lr(lr)
    reg = _check_diag_reg(diag_reg)
    P = _problem(k_train, y_train, k_test_train, h_ini_train, h_ini_test)
    rcond = _check_rcond(pinv_rcond, P.K.dtype)
    _threshold(P.K.shape[0], P.K.dtype, max_cond)  # max_cond is checked even where pinv_rcond replaces its guard
    t_np = _times(times)
    t = torch.as_tensor(t_np, dtype=P.K.dtype, device=P.K.device)
    ridge = _ridge(P.K, reg)
    lam, V, keep = _eig(_regularised(P.K, reg), rcond, max_cond)  # eigenvalues lambda + mu
    rate = torch.where(keep, (2 * lr / P.n) * lam, torch.zeros_like(lam))
    x = rate[None, :] * torch.where(torch.isinf(t), torch.zeros_like(t), t)[:, None]  # (T, N), finite
    x = torch.where(torch.isinf(t)[:, None] & keep[None, :], torch.full_like(x, math.inf), x)
    decay = torch.exp(-x)  # exp(-inf) = 0
    B = V.T @ (P.Y - P.H0)  # (N, C)
    if ridge == 0.0:
        train = P.Y[None] - V @ (decay[:, :, None] * B[None])
    else:
        safe_r = torch.where(keep, lam, torch.ones_like(lam))
        moved = torch.where(keep[None, :], (lam - ridge)[None, :] * -torch.expm1(-x) / safe_r[None, :],
                            torch.zeros_like(x))  # lambda (1 - exp(-c (lambda + mu) t)) / (lambda + mu)
        train = P.H0[None] + V @ (moved[:, :, None] * B[None])
    test = None
    if P.Kx is not None:
        assert P.H0x is not None and P.test_shape is not None
        safe = torch.where(keep, lam, torch.ones_like(lam))
        coef = torch.where(keep[None, :], -torch.expm1(-x) / safe[None, :], torch.zeros_like(x))
        test = P.H0x[None] + (P.Kx @ V) @ (coef[:, :, None] * B[None])
        test = check_finite_result(test.reshape((len(t_np),) + P.test_shape), "mse_flow test predictions")
    train = check_finite_result(train.reshape((len(t_np),) + P.train_shape), "mse_flow train predictions")
    return FlowResult(t, train, test)


def mse_gd(
    k_train: torch.Tensor,
    y_train: torch.Tensor,
    lr: float,
    steps: object,
    *,
    k_test_train: torch.Tensor | None = None,
    h_ini_train: torch.Tensor | None = None,
    h_ini_test: torch.Tensor | None = None,
    on_unstable: str = "raise",
) -> FlowResult:
    """Discrete gradient descent on the MSE ``(1/n) sum |h - y|^2`` in function space, after ``steps`` steps.

    ``h_{k+1} = h_k - lr (2/n) K (h_k - Y)`` and ``h*_{k+1} = h*_k - lr (2/n) k(x, X)(h_k - Y)``
    (seed 000 eqs (1)-(3) with forward-Euler time), evaluated in closed form from one
    eigendecomposition: mode ``lambda`` is multiplied by ``(1 - c lambda)^k``,
    ``c = 2 lr / n``.  No inverse is needed, so singular kernels are fine.

    Stability: converges iff ``lr < n / lambda_max(K)`` (:func:`ntkcheck.dynamics.solvers.max_stable_lr`).
    At or above it ``on_unstable="raise"`` raises ``ValueError`` with the measured
    ``lambda_max``; ``"warn"`` emits :class:`DivergenceWarning` and computes the
    (growing or oscillating) iterates anyway; overflow raises ``FloatingPointError``.
    """
    check_choice(on_unstable, "on_unstable", ("raise", "warn"))
    lr = _check_lr(lr)
    P = _problem(k_train, y_train, k_test_train, h_ini_train, h_ini_test)
    k_np = _times(steps, "steps")
    if np.isinf(k_np).any() or (k_np != np.round(k_np)).any():
        raise ValueError(f"steps must be non-negative integers, got {k_np.tolist()[:8]}")
    k = torch.as_tensor(k_np, dtype=P.K.dtype, device=P.K.device)[:, None]
    lam, V = torch.linalg.eigh(P.K)
    lam_max = float(lam[-1])
    limit = P.n / lam_max if lam_max > 0 else math.inf
    if lr >= limit * (1 - 1e-12):  # the boundary within rounding of lambda_max counts as unstable
        msg = (f"lr={lr:g} >= n / lambda_max = {limit:.6g} (n={P.n}, lambda_max={lam_max:.6g}): gradient descent "
               f"on the MSE diverges or oscillates (|1 - lr (2/n) lambda_max| >= 1)")
        if on_unstable == "raise":
            raise ValueError(msg)
        warnings.warn(msg, DivergenceWarning, stacklevel=2)
    c = 2 * lr / P.n
    base = 1 - c * lam  # (N,)
    pos = base > 0
    log_base = torch.log1p(-c * torch.where(pos, lam, torch.zeros_like(lam)))
    power = torch.where(pos[None, :], torch.exp(k * log_base[None, :]), torch.pow(base[None, :], k))  # (T, N)
    B = V.T @ (P.Y - P.H0)
    train = P.Y[None] - V @ (power[:, :, None] * B[None])
    test = None
    if P.Kx is not None:
        assert P.H0x is not None and P.test_shape is not None
        zero = lam == 0
        safe = torch.where(zero, torch.ones_like(lam), lam)
        one_minus = torch.where(pos[None, :], -torch.expm1(k * log_base[None, :]), 1 - power)
        coef = torch.where(zero[None, :], c * k.expand_as(power), one_minus / safe[None, :])
        test = P.H0x[None] + (P.Kx @ V) @ (coef[:, :, None] * B[None])
        test = check_finite_result(test.reshape((len(k_np),) + P.test_shape), "mse_gd test predictions")
    train = check_finite_result(train.reshape((len(k_np),) + P.train_shape), "mse_gd train predictions")
    return FlowResult(k.flatten(), train, test)


class _PolarFlow:
    """Seed 000 eq (3) on the training points in reparametrised time s and polar coordinates.

    With ``r = h - Y``, ``g = grad_h dist``, ``rho = |r| / |g|``, the flow in s is
    ``dr/ds = F(r) = -lr rho K g`` and ``dt/ds = rho``.  The state is
    ``u = (d, l, theta)`` with ``r = exp(l) d`` (``|d| = 1`` is preserved: d' is
    orthogonal to d) and ``theta = log(1 + t / tau)`` (``tau``: the flow's time unit, so that
    ``atol`` on theta is a relative accuracy of t at every t, early ones included):

        d' = a - (d.a / q) d,   l' = d.a / q,   theta' = (rho / tau) exp(-theta),
        a = exp(-l) F(exp(l) d),  q = |d|^2.

    d tends to a fixed direction and l decreases linearly, so late steps are long.  With
    ``eig = (lam, V)`` (``K = V diag(lam) V^T``) the field applies K as ``V (lam * (V^T g))``
    (see :func:`ode_flow`, "Why the eigendecomposition").
    """

    def __init__(self, K: np.ndarray, loss: Loss, Y: torch.Tensor, lr: float, index: np.ndarray | None = None,
                 tau: float = 1.0, eig: tuple[np.ndarray, np.ndarray] | None = None, l_max: float = math.inf) -> None:
        self.loss, self.lr, self.tau, self.l_max = loss, lr, tau, l_max
        self.K, self.eig = K, eig
        # evaluate at (r, 0) when the loss allows it: h = Y + r would round r at eps |Y|
        self.Y = torch.zeros_like(Y) if loss.shift_invariant else Y
        # a block of a separable loss: r holds the entries ``index`` of the flat residual, the others are 0
        self.index = index

    def residual(self, u: np.ndarray) -> np.ndarray:
        """The residual ``r = h - Y`` (the block's entries) of the state u."""
        return math.exp(u[-2]) * u[:-2]

    def kernel_times(self, g: np.ndarray) -> np.ndarray:
        """``K g``; with ``eig``: ``V (lam * (V^T g))``, whose rounding stays in each eigendirection."""
        if self.eig is None:
            return self.K @ g
        lam, V = self.eig
        return V @ (lam * (V.T @ g))

    def _h(self, r: np.ndarray) -> torch.Tensor:
        if self.index is not None:
            full = np.zeros(self.Y.numel())
            full[self.index] = r
            r = full
        return self.Y + torch.from_numpy(r).reshape(self.Y.shape)

    def _hessian(self, r: np.ndarray) -> np.ndarray:
        H = self.loss._hessian(self._h(r), self.Y).numpy()
        return H if self.index is None else H[np.ix_(self.index, self.index)]

    def grad(self, r: np.ndarray) -> np.ndarray:
        """``grad_h dist`` at the residual r (the block's entries), in the original coordinates."""
        g = self.loss._grad(self._h(r), self.Y).reshape(-1).numpy()
        if self.index is not None:
            g = g[self.index]
        if not np.isfinite(g).all():
            raise FloatingPointError(f"gradient of {self.loss!r} is not finite at |h - Y| = {np.linalg.norm(r):.3e}")
        return g

    def _parts(self, u: np.ndarray) -> tuple[np.ndarray, float, np.ndarray, np.ndarray, float, float, float]:
        # a corrector iterate far off the path (l hundreds above it) is evaluated at l_max, far above any |r| on the
        # path: its field stays finite, the iteration fails to converge, and the step is retried shorter
        d, ell = u[:-2], min(u[-2], self.l_max)
        r = math.exp(ell) * d
        g = self.grad(r)
        gn, rn = math.sqrt(g @ g), math.sqrt(r @ r)
        return d, ell, r, g, gn, rn, d @ d

    def rhs(self, _s: float, u: np.ndarray) -> np.ndarray:
        d, ell, r, g, gn, rn, q = self._parts(u)
        out = np.zeros_like(u)
        if gn > 0 and rn > 0:
            rho = rn / gn
            a = (-self.lr * rho * math.exp(-ell)) * self.kernel_times(g)
            c = (d @ a) / q
            out[:-2] = a - c * d
            out[-2] = c
            out[-1] = rho * math.exp(-max(u[-1], 0.0)) / self.tau
        return out

    def jac(self, _s: float, u: np.ndarray) -> np.ndarray:
        # J_F = dF/dr = -lr (rho K H + K g drho^T), drho = r/(|r||g|) - |r|/|g|^3 H g  (H: Hessian of dist);
        # a(d, l) = exp(-l) F(exp(l) d): da/dd = J_F, da/dl = b = -a + J_F d; then the quotient rules below.
        d, ell, r, g, gn, rn, q = self._parts(u)
        D = d.size
        J = np.zeros((D + 2, D + 2))
        if not (gn > 0 and rn > 0):
            return J
        H = self._hessian(r)
        rho = rn / gn
        # (r / |r| - |r| H g / |g|^2) / |g| without |g|^3, which underflows at |r| ~ 1e-40 for p = 4 (a long
        # step in s reaches it before the stop event is located)
        drho = (r / rn - (rn / gn) * (H @ (g / gn))) / gn
        Kg = self.kernel_times(g)
        JF = -self.lr * (rho * (self.K @ H) + np.outer(Kg, drho))
        a = (-self.lr * rho * math.exp(-ell)) * Kg
        b = -a + JF @ d
        da = d @ a
        v = (a + JF.T @ d) / q - (2 * da / q**2) * d  # gradient of l' = d.a/q in d
        J[:D, :D] = JF - np.outer(d, v) - (da / q) * np.eye(D)
        J[:D, D] = b - (d @ b / q) * d
        J[D, :D] = v
        J[D, D] = d @ b / q
        e = math.exp(-max(u[-1], 0.0)) / self.tau
        J[D + 1, :D] = e * math.exp(ell) * drho
        J[D + 1, D] = e * (drho @ r)
        J[D + 1, D + 1] = -rho * e
        return J


def _blocks(K: np.ndarray) -> list[np.ndarray]:
    """Index sets of the connected components of K's nonzero pattern (the diagonal blocks of a permuted K)."""
    count, labels = connected_components(csr_matrix(K != 0), directed=False)
    return [np.flatnonzero(labels == b) for b in range(count)]


class _BlockRun:
    """One integrated block of :func:`ode_flow`: its residual at any flow time and at the end."""

    def __init__(self, r0: np.ndarray, final: np.ndarray, t_final: float, converged: bool, sol=None,
                 flow: _PolarFlow | None = None) -> None:
        self.r0, self.final, self.t_final, self.converged = r0, final, t_final, converged
        self.sol, self.flow = sol, flow
        # flow times of the accepted steps and the residual there
        self.tau = 1.0 if flow is None else flow.tau
        self.t_steps = np.zeros(1) if sol is None else self.tau * np.expm1(sol.y[-1])
        self.r_steps = r0[None] if sol is None else (np.exp(sol.y[-2])[:, None] * sol.y[:-2].T)

    def at(self, tk: float) -> np.ndarray:
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
        return self.flow.residual(sol.sol(s_k))


class _Budget:
    """The step and time limits of one :func:`ode_flow` call (all blocks together) and its progress bar."""

    def __init__(self, max_steps: int | None, max_seconds: float | None, ref: float, stop: str, progress: bool,
                 blocks: int) -> None:
        self.max_steps, self.max_seconds, self.ref, self.stop, self.blocks = max_steps, max_seconds, ref, stop, blocks
        self.steps, self.start = 0, time.perf_counter()
        self.label, self.log_r0, self.decades, self.shown, self.bar = "", 0.0, "", -math.inf, None
        if progress:
            from tqdm import tqdm  # noqa: PLC0415

            self.bar = tqdm(desc="ode_flow", leave=False, bar_format="{desc} [{elapsed}]")

    def begin(self, block: int, log_r0: float, log_stop: float | None) -> None:
        """Block ``block`` (0-based) starts at ``log |r0|``; ``log_stop``: its residual stop (None: on |g|)."""
        self.label = f" (block {block + 1} of {self.blocks})" if self.blocks > 1 else ""
        self.log_r0 = log_r0
        self.decades = "" if log_stop is None else f" of {max(log_r0 - log_stop, 0.0) / math.log(10):.1f}"

    def step(self, flow: _PolarFlow, u: np.ndarray) -> None:
        """One accepted step reached the state u; raise :class:`FlowLimitError` past a limit."""
        self.steps += 1
        seconds = time.perf_counter() - self.start
        if self.bar is not None and seconds - self.shown >= 0.2:
            self.shown = seconds
            self.bar.set_description_str(
                f"ode_flow{self.label}: |h - Y| down {(self.log_r0 - u[-2]) / math.log(10):.2f}{self.decades} "
                f"decades, t = {flow.tau * math.expm1(u[-1]):.3g}, {self.steps} steps")
        over = []
        if self.max_steps is not None and self.steps > self.max_steps:
            over.append(f"max_steps={self.max_steps}")
        if self.max_seconds is not None and seconds > self.max_seconds:
            over.append(f"max_seconds={self.max_seconds:g}")
        if not over:
            return
        self.close()
        t, residual = flow.tau * math.expm1(u[-1]), math.exp(u[-2]) / self.ref
        raise FlowLimitError(
            f"ode_flow went past {' and '.join(over)} before its stop ({self.stop}): after {self.steps} integration "
            f"steps and {seconds:.3g} s it had reached flow time t = {t:.6g}{self.label} with "
            f"||h - Y|| / ||h_ini_train - Y|| = {residual:.3e}{' in this block' if self.label else ''}. "
            "Raise max_steps or max_seconds, or loosen tol, rtol or atol",
            t=t, residual=residual, steps=self.steps, seconds=seconds)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _run_block(
    Kf: np.ndarray, loss: Loss, Yl: torch.Tensor, lr: float, index: np.ndarray | None, r0: np.ndarray,
    log_stop: float, on_grad: bool, depth: float, max_time: float, rtol: float, atol: float, lam_min: float | None,
    budget: _Budget, block: int = 0,
) -> _BlockRun:
    """Integrate the polar flow of the entries ``index`` (all when None) from ``r0`` (see :func:`ode_flow`)
    until ``log |r| <= log_stop`` (``log |grad_h dist| <= log_stop`` if ``on_grad``), ``max_time`` or the
    s-horizon for a residual decay by ``exp(-depth)``; ``lam_min``: the block's smallest kernel eigenvalue
    when known."""
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
            return u[-2] - log_stop
        return math.log(max(float(np.linalg.norm(flow.grad(flow.residual(u)))), 1e-320)) - log_stop

    stop_event.terminal = True  # type: ignore[attr-defined]
    events = [stop_event, limit_event]
    if math.isfinite(max_time):
        def time_event(_s: float, u: np.ndarray) -> float:
            return u[-1] - math.log1p(max_time / tau)

        time_event.terminal = True  # type: ignore[attr-defined]
        events.append(time_event)
    horizon = 4 * (depth + math.log(r0.size) + 1) / (lr * lam_min)
    u0 = np.concatenate([r0 / norm0, [math.log(norm0), 0.0]])
    sol = solve_ivp(flow.rhs, (0.0, horizon), u0, method="LSODA", jac=flow.jac, rtol=rtol, atol=atol,
                    events=events, dense_output=True)
    if sol.status < 0:
        u = sol.y[:, -1]
        raise FloatingPointError(
            f"ode_flow: LSODA failed{budget.label} at flow time t = {tau * math.expm1(u[-1]):.6g} with "
            f"||h - Y|| / ||h_ini_train - Y|| = {math.exp(u[-2]) / budget.ref:.3e} after {budget.steps} steps: "
            f"{sol.message}")
    u_final = sol.y[:, -1]
    return _BlockRun(r0, flow.residual(u_final), float(tau * np.expm1(u_final[-1])), sol.t_events[0].size > 0,
                     sol, flow)


_BLOCK_DEPTH = 1e-2  # blocks run to 1e-2 of their share of the stop, so frozen blocks move the global stop < 1e-4


def _global_stop(blocks: list[np.ndarray], runs: list[_BlockRun], size: int, crit, own_crit) -> tuple[float, bool]:
    """First flow time at which ``crit(r) <= 0`` for the assembled residual r (the blocks' own stops lie
    deeper), or (latest block end, False) if it is never reached."""
    def r_at(tk: float) -> np.ndarray:
        r = np.empty(size)
        for idx, run in zip(blocks, runs):
            r[idx] = run.at(tk)
        return r

    end = max(run.t_final for run in runs)
    if crit(r_at(0.0)) <= 0:
        return 0.0, True
    # the whole residual is above the stop while one block alone is: start after each block's last step above it
    prev = 0.0
    for idx, run in zip(blocks, runs):
        above = [own_crit(run, r) > 0 for r in run.r_steps]
        first = above.index(False) if False in above else len(above)
        prev = max(prev, float(run.t_steps[max(first - 1, 0)]) if first < len(above) else run.t_final)
    grid = np.unique(np.concatenate([run.t_steps for run in runs] + [[end]]))
    for tk in grid[(grid > prev) & (grid <= end)]:
        if crit(r_at(float(tk))) <= 0:
            t_stop = brentq(lambda t: crit(r_at(t)), prev, float(tk), xtol=1e-14 * max(1.0, float(tk)), rtol=1e-14)
            return float(t_stop), True
        prev = float(tk)
    return end, False


def ode_flow(
    k_train: torch.Tensor,
    y_train: torch.Tensor,
    loss: Loss,
    times: object,
    *,
    k_test_train: torch.Tensor | None = None,
    h_ini_train: torch.Tensor | None = None,
    h_ini_test: torch.Tensor | None = None,
    lr: float = 1.0,
    tol: float = 1e-10,
    grad_tol: float | None = None,
    max_time: float = math.inf,
    rtol: float = 1e-9,
    atol: float = 1e-9,
    max_cond: float | None = None,
    max_steps: int | None = 100_000,
    max_seconds: float | None = None,
    progress: bool | None = None,
) -> ODEFlowResult:
    """Integrate the function-space flow ``dh/dt = -lr K grad_h dist(h, Y)`` (seed 000 eq (3)) for any §4 loss.

    **Test points.** From eq (3), ``h_test(t) - h_ini_test = -lr k(x, X) int_0^t g ds``
    and ``h_train(t) - h0 = -lr K int_0^t g ds``, so for invertible K, exactly and at
    every t, ``h_test(t) = h_ini_test + k(x, X) K^{-1} (h_train(t) - h0)``; only the n
    training outputs are integrated.  A singular K raises :class:`SingularKernelError`
    (the flow could then stall at ``K g = 0``, ``h != Y``).

    **Time reparametrisation.**  Near ``h = Y`` the L^p flow is degenerate:
    ``|g| ~ |r|^(p-1)``, so for p > 2 the residual decays only polynomially in t
    (``r ~ t^(-1/(p-2))``: t ~ 1e20 to reach 1e-10 at p = 4) and for p < 2 the field is
    non-Lipschitz and converges in finite time.  The path is therefore integrated in
    ``s`` with ``dt/ds = |r| / |g|`` (``r = h - Y``): ``dr/ds = -lr K g |r| / |g|`` has
    size ``<= lr lambda_max |r|``, and for L^p (where ``g . r = p dist``)
    ``d dist/ds <= -p lr lambda_min dist``, i.e. ``|r|_p <= |r0|_p exp(-lr lambda_min s)``:
    linear-rate convergence in s for every p (for the MSE, ``s = (2/n) t``).  The state
    is polar, ``r = exp(l) d`` with ``|d| = 1``, plus ``theta = log(1 + t / tau)`` with tau the
    fastest time scale at t = 0, ``|r0| / (lr lambda_max |g0|)``
    (:class:`_PolarFlow`), so ``rtol``/``atol`` bound *relative* errors of r and of
    ``1 + t / tau`` (of t itself at early times: with ``log(1 + t)`` a flow faster than
    ``atol`` had its early trajectory 1e3-1e5 rtol off) and late steps are long.  The system
    is stiff (ratio ``lambda_max / lambda_min``), hence an implicit method with an analytic Jacobian (from
    ``Loss.hessian``): LSODA (BDF in its stiff phase).  Not Radau IIA: for p < 2 a residual
    component can slide at ~0 (pinned there by the non-Lipschitz field ``|r_i|^(p-1)``),
    where Newton's iteration on the implicit stages oscillates even far below ``atol``;
    Radau rejects every step whose Newton contraction rate is >= 1 and shrinks the step
    to ~1e-5 indefinitely (a 9-point p = 1.5 flow: > 60 s and 6000 steps without progress),
    while LSODA's corrector test accepts the converged components and finishes in 0.3 s.  The state at a
    requested t is found on the dense output by ``brentq``.  p < 2 costs more steps (the
    Hessian ``|r_i|^(p-2)`` blows up where a component crosses zero).

    **Why the eigendecomposition.**  The field applies K as ``V (lambda * (V^T g))``, not as the dense
    product ``K g``.  The dense product carries a rounding error of about ``eps lambda_max |g|`` in every
    entry, and so along the slowest eigenvector, whose true rate is only ``lambda_min |g|``: the error
    control then caps the step in s near ``atol / (eps lambda_max)`` while that mode needs
    ``s ~ log(1/tol) / lambda_min``, so the step count grows like the condition number (measured with the
    dense product, n = 20, MSE, one thread: 0.5 s at cond 1e8, 33 s at 1e11, 370 s at 1e12, on kernels
    the default guard accepts up to 2.3e14).  Through the eigendecomposition each mode's rate carries only
    its own relative rounding (the error of ``V^T g`` is scaled by that mode's lambda), and the step count
    grows with the decades the spectrum spans: under 1 s for the MSE and 1.5-2.5 s for L^4 from cond 1e10
    to 1e14 (1600-2400 and 3300-3800 steps).  The state stays in the original coordinates, where a p < 2
    residual entry sliding along 0 is one coordinate (in the eigenbasis it mixes into all of them, and
    LSODA's corrector fails at cond 1e10).  L^p with p < 2 still fails beyond cond ~1e11 (LSODA's
    corrector diverges on the ``|r_i|^(p-2)`` Jacobian): :class:`FloatingPointError` says where.

    **Limits.**  ``max_steps`` (accepted integration steps, all blocks together; default 1e5, about
    a minute for n = 20, far above the few thousand a converging flow takes) and ``max_seconds``
    (wall-clock, default None: a deterministic computation should not fail on a slower machine) bound
    the run; past either, :class:`FlowLimitError` reports the flow time, the relative residual, the
    steps and the seconds reached.  ``None`` lifts a limit.  Flows that need a limit are those where a
    residual entry of a p < 2 loss slides along 0 (p = 1.2, n = 20: steps of ~1e-6 in s without end).
    ``progress`` shows a tqdm line on stderr (decades of the residual, t, steps); by default only when
    stderr is a terminal.

    **Stopping.**  By default when ``||h_train - Y|| <= tol ||h_ini_train - Y||``
    (condition (iii) makes ``Y`` the only rest point; the event is located on the
    dense output, so the reported ``residual`` is ``tol`` to about 1e-7 relative).
    ``tol = 1e-10`` leaves the test predictions within ``||k_* K^{-1}|| 1e-10 ||r0||``
    of :func:`interpolate`, far inside the 1e-6 the library claims for every p.
    ``grad_tol`` switches to ``||grad_h dist|| <= grad_tol`` — beware that for L^p
    this is ``|r|^(p-1)``-small: far too loose for p > 2 (grad 1e-10 at |r| ~ 1e-3
    for p = 4) and, for p < 2, below the rounding of ``h = Y + r`` (|r| ~ grad_tol^2).
    Integration also stops at ``max_time`` or at the s-horizon
    ``4 (log(1/tol) + log N + 1) / (lr lambda_min)``; not reaching the tolerance
    emits :class:`ConvergenceWarning` with the measured gradient norm.  Requested
    times past the stopping time get the final state.

    The ODE runs in float64 on the CPU (scipy); results return in the inputs' dtype
    and device.  Returns :class:`ODEFlowResult`.

    **Decoupled blocks.**  For a separable loss (``loss.separable``: L^p and mixtures of them) the flow
    splits along the diagonal blocks of K (the connected components of its nonzero pattern, e.g. the
    outputs of a network trained in its last layer only, ``K = k (x) I``) and each block is integrated
    on its own, stopping at ``tol ||h_ini_train - Y|| / sqrt(#blocks)``.  Integrated together, a block
    of a p < 2 flow that reaches its targets (in finite time) while another has not pins the step size
    of the whole system to the non-Lipschitz field at 0.
    """
    if not isinstance(loss, Loss):
        raise TypeError(f"loss must be a ntkcheck.dynamics.losses.Loss (wrap a callable in DistLoss), got {type(loss).__name__}")
    if not loss.section4:
        raise ValueError(f"loss {loss!r} is outside the class of seed 000 §4 (no finite minimiser): the flow has no limit")
    lr = _check_lr(lr)
    for value, name in ((tol, "tol"), (rtol, "rtol"), (atol, "atol")):
        _check_float(value, name, "a float in (0, 1)", lambda v: 0 < v < 1)
    if grad_tol is not None:
        _check_float(grad_tol, "grad_tol", "None or a positive finite float", lambda v: math.isfinite(v) and v > 0)
    _check_float(max_time, "max_time", "a positive float (inf allowed)", lambda v: v > 0)
    if max_steps is not None:
        check_positive_int(max_steps, "max_steps")
    if max_seconds is not None:
        _check_float(max_seconds, "max_seconds", "None or a positive finite float",
                     lambda v: math.isfinite(v) and v > 0)
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"progress must be None (a bar when stderr is a terminal) or a bool, got {progress!r}")
    P = _problem(k_train, y_train, k_test_train, h_ini_train, h_ini_test)
    t_req = _times(times)
    if (t_req[np.isfinite(t_req)] > max_time).any():
        raise ValueError(f"times must not exceed max_time={max_time:g} (inf is allowed), got max {t_req.max():g}")
    inv = _Inverse(P.K, None, max_cond)
    assert inv.evals is not None
    lam_min = float(inv.evals[0])

    f64 = dict(dtype=torch.float64, device="cpu")
    Y = P.Y.detach().to(**f64)
    N, C = Y.shape
    Yl = Y.reshape(P.train_shape)  # the loss sees the user's shape
    loss.check(Yl, Yl)
    K = P.K.detach().to(**f64).numpy()
    Kf = np.kron(K, np.eye(C)) if C > 1 else K
    r0 = (P.H0.detach().to(**f64) - Y).numpy().ravel()
    ref = float(np.linalg.norm(r0))
    blocks = _blocks(Kf) if loss.separable else [np.arange(N * C)]
    full = _PolarFlow(Kf, loss, Yl, lr)
    log_stop = math.log(max(tol * ref, 1e-320)) if grad_tol is None else math.log(grad_tol)
    on_grad, depth = grad_tol is not None, math.log(1 / tol)
    show = progress if progress is not None else bool(getattr(sys.stderr, "isatty", lambda: False)())
    budget = _Budget(max_steps, max_seconds, ref,
                     f"tol={tol:g}" if grad_tol is None else f"grad_tol={grad_tol:g}", show, len(blocks))
    try:
        if len(blocks) == 1:
            run = _run_block(Kf, loss, Yl, lr, None, r0, log_stop, on_grad, depth, max_time, rtol, atol, lam_min,
                             budget)
            runs, t_final, converged = [run], run.t_final, run.converged
        else:
            # each block runs past its share of the stop; the stop itself is then located on the whole residual
            deeper = math.log(_BLOCK_DEPTH / math.sqrt(len(blocks)))
            runs = [_run_block(Kf, loss, Yl, lr, idx, r0[idx], log_stop + deeper, on_grad, depth - deeper, max_time,
                               rtol, atol, None, budget, b)
                    for b, idx in enumerate(blocks)]
    finally:
        budget.close()
    if len(blocks) > 1:
        def crit(r: np.ndarray) -> float:
            v = r if grad_tol is None else full.grad(r)
            return math.log(max(float(np.linalg.norm(v)), 1e-320)) - log_stop

        def own_crit(run: _BlockRun, r: np.ndarray) -> float:
            v = r if grad_tol is None or run.flow is None else run.flow.grad(r)
            return math.log(max(float(np.linalg.norm(v)), 1e-320)) - log_stop

        t_final, converged = _global_stop(blocks, runs, N * C, crit, own_crit) if ref > 0 else (0.0, True)

    def h_at(tk: float | None) -> torch.Tensor:
        """h_train at flow time tk (None: the final state), assembled from the blocks."""
        r = np.empty(N * C)
        for idx, run in zip(blocks, runs):
            r[idx] = run.at(t_final if tk is None else tk)
        return Y + torch.from_numpy(r).reshape(N, C)

    final = h_at(None)
    g_final = float(np.linalg.norm(full.grad((final - Y).numpy().ravel())))
    res_final = float(torch.linalg.norm(final - Y)) / ref if ref > 0 else 0.0
    if not converged:
        warnings.warn(
            f"ode_flow stopped at t={t_final:.6g} before reaching its tolerance: ||grad_h dist|| = {g_final:.3e}, "
            f"relative residual ||h - Y|| / ||h0 - Y|| = {res_final:.3e} (tol={tol:g}, grad_tol={grad_tol})",
            ConvergenceWarning,
            stacklevel=2,
        )
    traj = [P.H0.detach().to(**f64) if tk == 0.0 else (final if tk >= t_final else h_at(float(tk))) for tk in t_req]
    dev = dict(dtype=P.K.dtype, device=P.K.device)
    train_m = torch.stack(traj + [final]).to(**dev)  # (T+1, N, C), last = final state
    T = len(t_req)
    test = final_test = None
    if P.Kx is not None:
        assert P.H0x is not None and P.test_shape is not None
        d = (train_m - P.H0[None]).permute(1, 0, 2).reshape(N, -1)  # (N, (T+1) C)
        pred = (P.Kx @ inv.solve(d)).reshape(-1, T + 1, C).permute(1, 0, 2) + P.H0x[None]
        pred = check_finite_result(pred.reshape((T + 1,) + P.test_shape), "ode_flow test predictions")
        test, final_test = pred[:T], pred[T]
    train_m = check_finite_result(train_m.reshape((T + 1,) + P.train_shape), "ode_flow train predictions")
    return ODEFlowResult(
        times=torch.as_tensor(t_req, **dev),
        train=train_m[:T],
        test=test,
        final_train=train_m[T],
        final_test=final_test,
        t_final=t_final,
        converged=converged,
        residual=res_final,
        grad_norm=g_final,
        steps=budget.steps,
    )
