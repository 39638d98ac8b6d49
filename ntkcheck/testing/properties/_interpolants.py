"""Shared pieces of the interpolant properties (eq (6), Thm 3, RKHS norm): the lstsq reference on the Jacobian.

Nothing here goes through :mod:`ntkcheck.dynamics.solvers`: the reference interpolant of a network is the
minimum-norm parameter displacement ``delta = J^+ (Y - h_ini(X))`` by ``torch.linalg.lstsq`` on its
Jacobian, mapped to the test points as ``h_ini(T) + J(T) delta`` (seed 000 Thm 5/6).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np
import scipy.linalg
import torch
from hypothesis import assume

from ntkcheck._support.shapes import kernel_as_matrix
from ntkcheck.dynamics.linearization import jacobian
from ntkcheck.kernels.empirical import ntk
from ntkcheck.testing.strategies import Arch, Dataset
from ntkcheck.testing.tolerances import max_condition_solve

from ._common import DEVICE, DTYPE

EPS = torch.finfo(DTYPE).eps
MIN_WIDTH = 16  # narrower hidden layers are widened (a construction, not a discard)
N_TEST = 5


def roomy(arch: Arch) -> Arch:
    """``arch`` with every hidden width raised to at least MIN_WIDTH."""
    return dataclasses.replace(arch, widths=tuple(max(w, MIN_WIDTH) for w in arch.widths))


def flat(t: torch.Tensor) -> torch.Tensor:
    """A CPU float64 copy, flattened sample-major (the order of ``model(x).reshape(-1)``)."""
    return t.detach().cpu().double().reshape(-1)


def flat_kernel(k: torch.Tensor) -> torch.Tensor:
    """(n1, n2) or (n1, n2, O, O) -> the (n1 O, n2 O) CPU float64 matrix, rows sample-major."""
    return kernel_as_matrix(k.detach().cpu().double())


def min_norm(J: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """The minimum-norm solution of J delta = rhs (LAPACK gelsd, an SVD): no ntkcheck code."""
    return torch.linalg.lstsq(J, rhs.reshape(J.shape[0], -1), driver="gelsd").solution


class Reference(NamedTuple):
    """Independent float64 linear algebra of one network at its training and test inputs."""

    J: torch.Tensor  # (N, P) Jacobian at X, rows sample-major
    G: torch.Tensor  # (M, N) J(T) J^+: lstsq of J against the identity, mapped by J(T)
    K: torch.Tensor  # (N, N) the kernel handed to the solver, flattened
    chol: tuple  # scipy's Cholesky factor of K
    cond: float  # cond(J J^T)
    e: float  # relative precision of K: eps + its measured gap to J J^T
    norm_x: float  # ||J(X)||_2
    norm_t: float  # ||J(T)||_2

    def columns(self, rhs: torch.Tensor) -> torch.Tensor:
        """Targets at X as (N, C) float64 columns: (n,) or (n, O) sample-major gives C = 1, (N, C) stays."""
        return rhs.detach().cpu().double().reshape(self.K.shape[0], -1)

    def at_test(self, rhs: torch.Tensor) -> torch.Tensor:
        """J(T) J^+ rhs: the zero-initial-output interpolant of rhs at the test points, (M,) (or (M, C))."""
        out = self.G @ self.columns(rhs)
        return out.reshape(-1) if out.shape[1] == 1 else out

    def alpha_norm(self, rhs: torch.Tensor) -> float:
        """||K^{-1} rhs|| by scipy's Cholesky (the size of the kernel coefficients, for the error scales)."""
        return float(np.linalg.norm(scipy.linalg.cho_solve(self.chol, self.columns(rhs).numpy())))

    def fit_scale(self, rhs: torch.Tensor, h_train: torch.Tensor, y: torch.Tensor, params: int = 0) -> float:
        """eps ((N + sqrt(params)) ||K|| ||alpha|| + ||h_ini(X)|| + ||Y||): the unit of a stable solve's
        residual; ``params`` is the parameter count of a network whose forward pass evaluates the result
        (its dot products run over that many terms), 0 for the solvers' own output."""
        n = self.K.shape[0]
        return EPS * (
            (n + params**0.5) * self.norm_x**2 * self.alpha_norm(rhs)
            + float(flat(h_train).norm())
            + float(flat(y).norm())
        )

    def forward_scale(self, rhs: torch.Tensor, h_test: torch.Tensor | None, params: int = 0) -> float:
        """e ((1 + cond + sqrt(params)) ||J(T)|| ||J(X)|| ||alpha|| + ||h_ini(T)||): the unit of the forward
        error at T (``params`` as for :meth:`fit_scale`)."""
        h = 0.0 if h_test is None else float(flat(h_test).norm())
        return self.e * ((1 + self.cond + params**0.5) * self.norm_t * self.norm_x * self.alpha_norm(rhs) + h)


def reference(J: torch.Tensor, Jt: torch.Tensor, k: torch.Tensor, kt: torch.Tensor) -> Reference:
    """The reference of Jacobians J (at X) and Jt (at T), float64, and the library's kernels k, kt."""
    K, Kt = flat_kernel(k), flat_kernel(kt)
    gram, cross = J @ J.T, Jt @ J.T
    ev = torch.linalg.eigvalsh(gram)
    gap = max(float((K - gram).norm() / gram.norm()), float((Kt - cross).norm() / cross.norm().clamp_min(1e-300)))
    G = Jt @ min_norm(J, torch.eye(J.shape[0], dtype=J.dtype))
    return Reference(
        J,
        G,
        K,
        scipy.linalg.cho_factor(K.numpy()),
        float(ev[-1] / ev[0]),
        EPS + gap,
        float(ev[-1]) ** 0.5,
        float(torch.linalg.eigvalsh(Jt @ Jt.T)[-1]) ** 0.5,
    )


def conditioned_prefix(J: torch.Tensor, o: int, extra: torch.Tensor | None = None) -> int:
    """The largest n' such that the first n' samples (rows n' O of J), with the rows ``extra`` appended,
    have cond(J J^T) <= max_condition_solve (0 if none has).

    Adding rows never lowers cond(J J^T) (interlacing), so this is the prefix the claim can be checked on."""
    for n in range(J.shape[0] // o, 0, -1):
        rows = J[: n * o] if extra is None else torch.cat([J[: n * o], extra])
        s = torch.linalg.svdvals(rows)
        if s[-1] > 0 and float(s[0] / s[-1]) ** 2 <= max_condition_solve(DTYPE):
            return n
    return 0


class Example(NamedTuple):
    """One drawn network problem: the training set is the first ``n`` points of ``ds``."""

    model: torch.nn.Module
    ds: Dataset
    n: int
    x: torch.Tensor
    y: torch.Tensor
    xt: torch.Tensor
    k: torch.Tensor  # ntk(model, x)
    kt: torch.Tensor  # ntk(model, xt, x)
    ref: Reference

    def data(self) -> str:
        """Python that rebuilds x, y and xt."""
        return (
            f"nk.testing.strategies.{self.ds!r}; x, y = ds.x()[:{self.n}], ds.y()[:{self.n}]; "
            f"xt = ds.x_test({len(self.xt)})"
        )


def network_example(arch: Arch, ds: Dataset, n_test: int = N_TEST) -> Example:
    """The drawn network, its training and test inputs, the library's kernels and the independent reference.

    The training set is cut to its largest prefix whose kernel is well enough conditioned to check (the
    drawn points in order; a construction, not a discard); only a draw whose first point alone is
    singular is rejected."""
    model = arch.build(dtype=DTYPE, device=DEVICE)
    o = arch.out_features
    x_all, y_all = ds.x(dtype=DTYPE, device=DEVICE), ds.y(dtype=DTYPE, device=DEVICE)
    xt = ds.x_test(n_test, dtype=DTYPE, device=DEVICE)
    J_all = flat_kernel(jacobian(model, torch.cat([x_all, xt])))
    n = conditioned_prefix(J_all[: ds.n * o], o)
    if n < 1:
        assume(False)  # K of one point singular (a structurally dead network): eq (5) has no K^{-1}
    x, y = x_all[:n], y_all[:n]
    k, kt = ntk(model, x), ntk(model, xt, x)
    return Example(model, ds, n, x, y, xt, k, kt, reference(J_all[: n * o], J_all[-n_test * o :], k, kt))


def outputs(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """model(x) in the target layout ((m,) for one output, (m, O) otherwise)."""
    with torch.no_grad():
        return model(x).reshape(x.shape[0], *y.shape[1:])
