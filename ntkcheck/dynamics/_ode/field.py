"""The field of :func:`ntkcheck.dynamics.flows.ode_flow`: seed 000 eq (3) in polar coordinates and rescaled time."""

from __future__ import annotations

import math

import numpy as np
import torch

from ntkcheck.dynamics.losses import Loss


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
    (see :func:`ntkcheck.dynamics.flows.ode_flow`, "Why the eigendecomposition").
    """

    def __init__(
        self,
        K: np.ndarray,
        loss: Loss,
        Y: torch.Tensor,
        lr: float,
        index: np.ndarray | None = None,
        tau: float = 1.0,
        eig: tuple[np.ndarray, np.ndarray] | None = None,
        l_max: float = math.inf,
    ) -> None:
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
            return np.asarray(self.K @ g, dtype=np.float64)
        lam, V = self.eig
        return np.asarray(V @ (lam * (V.T @ g)), dtype=np.float64)

    def _h(self, r: np.ndarray) -> torch.Tensor:
        """``h = Y + r`` in the loss's shape (the block's entries placed, the others 0)."""
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
        """(d, l, r, g, |g|, |r|, |d|^2) of the state u."""
        # a corrector iterate far off the path (l hundreds above it) is evaluated at l_max, far above any |r| on the
        # path: its field stays finite, the iteration fails to converge, and the step is retried shorter
        d, ell = u[:-2], min(u[-2], self.l_max)
        r = math.exp(ell) * d
        g = self.grad(r)
        gn, rn = math.sqrt(g @ g), math.sqrt(r @ r)
        return d, ell, r, g, gn, rn, d @ d

    def rhs(self, _s: float, u: np.ndarray) -> np.ndarray:
        """The field ``u' = (d', l', theta')`` in s."""
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
        """The analytic Jacobian of :meth:`rhs` in u."""
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
