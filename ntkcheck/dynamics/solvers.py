"""Kernel solvers on kernel matrices: the long-time limit of NTK training (seed 000 §4-§5).

The functions take kernel *matrices*, so they serve empirical NTKs
(:func:`ntkcheck.ntk`) and analytic kernels alike.  Conventions:

* ``k_train`` (n, n) symmetric positive semi-definite, ``y_train`` (n,) or (n, O),
  ``k_test_train`` (m, n).  With (n, O) targets and an (n, n) kernel every output
  column is solved with the same kernel.
* Multi-output NTKs (n, n, O, O) (``K[i, j, a, b] = <d h_a(x_i), d h_b(x_j)>``, as
  :func:`ntkcheck.ntk` returns them) are exact too: the kernel is reshaped to the
  (n*O, n*O) matrix with row index ``i*O + a`` and ``y_train`` (n, O) is flattened
  row-major to match; ``k_test_train`` is then (m, n, O, O).
* Computation happens in the inputs' dtype and on their device.  Kernels, targets and
  Jacobians must be dense float32 or float64 tensors with values (``TypeError`` for
  another dtype or layout: torch's eigensolvers and factorisations have no half-precision
  kernels; ``ValueError`` for the meta device).  float32 works, but the library's claims
  are checked in float64 (the default of the tests).
* Kernels are checked to be kernels: symmetric, with relative asymmetry
  ``max|K - K^T| / max|K| <= sqrt(eps)``, and positive semi-definite up to rounding,
  ``lambda_min >= -tol * lambda_max`` with ``tol = 100 N eps`` (see :func:`_psd_tolerance`);
  otherwise ``ValueError`` naming the argument, with the measured numbers.
* Every solve is guarded: a kernel whose condition number exceeds
  ``1 / (N * eps)`` (N the matrix size, eps of the dtype) raises
  :class:`SingularKernelError` unless the caller names a pseudo-inverse with an
  explicit cutoff (``pinv_rcond``, at least eps) or another bound (``max_cond``, at
  most ``1 / eps``; see :func:`_threshold`).
* Ridge: ``diag_reg`` (keyword-only, a finite float >= 0, default 0) solves with
  ``K + diag_reg * mean(diag K) * I`` in place of ``K`` (the mean over the N diagonal entries
  of the (N, N) matrix, i.e. ``trace(K) / N``: the relative scale neural-tangents uses).  Only
  the inverted training kernel is regularised; predictions use the kernel itself,
  ``h_ini(x) + k(x, X) (K + lambda I)^{-1} (Y - h_ini(X))`` (kernel ridge regression), at the
  training points too.  The singular-kernel guard applies to the regularised matrix.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ntkcheck._support.validation import check_finite_result, check_inputs, check_kernel_tensor, check_same_device_dtype
from ntkcheck.errors import SingularKernelError

__all__ = [
    "Decomposition",
    "SingularKernelError",
    "check_consistent",
    "condition_number",
    "decompose",
    "interpolate",
    "max_stable_lr",
    "min_norm_parameters",
]


# ---------------------------------------------------------------------------------------------
# private helpers shared with ntkcheck.dynamics.flows


_PSD_SLACK = 100.0


def _check_rcond(pinv_rcond: object, dtype: torch.dtype) -> float | None:
    """``pinv_rcond`` as a float in ``[eps, 1)`` of ``dtype``, or None.

    A cutoff below eps keeps eigenvalues under ``eps * lambda_max``: those are rounding
    noise of the kernel's entries, and dividing by them amplifies that noise.
    """
    if pinv_rcond is None:
        return None
    if isinstance(pinv_rcond, bool) or not isinstance(pinv_rcond, (int, float)):
        raise TypeError(f"pinv_rcond must be None or a float in (0, 1), got {type(pinv_rcond).__name__}")
    if not (0 < pinv_rcond < 1):
        raise ValueError(f"pinv_rcond must lie in (0, 1) (cutoff relative to the largest eigenvalue), got {pinv_rcond}")
    eps = torch.finfo(dtype).eps
    if pinv_rcond < eps:
        raise ValueError(f"pinv_rcond={pinv_rcond:.3g} is below the machine epsilon of the kernel's dtype {dtype} "
                         f"(eps = {eps:.3g}): eigenvalues under eps * lambda_max are rounding noise; "
                         f"use pinv_rcond >= {eps:.3g}")
    return float(pinv_rcond)


def _psd_tolerance(size: int, dtype: torch.dtype) -> float:
    """``tol = 100 N eps``: a kernel passes as positive semi-definite iff ``lambda_min >= -tol * lambda_max``.

    A backward-stable symmetric eigensolver returns the exact eigenvalues of ``K + E``
    with ``||E|| <= p(N) eps ||K||`` (p(N) ~ N in the standard bound), and a kernel
    formed in floating point carries entry rounding of the same order, so a positive
    semi-definite kernel can show eigenvalues down to about ``-N eps lambda_max``.
    Measured on Gram matrices of random features and empirical NTKs with N up to 400
    (float32 and float64): never below ``-0.2 N eps lambda_max``.  The factor 100 is
    the margin; an indefinite kernel such as ``A + A^T`` has ``lambda_min / lambda_max``
    of order -1.
    """
    return _PSD_SLACK * size * torch.finfo(dtype).eps


def _check_psd(K: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` if the symmetric ``K`` has ``lambda_min < -tol * lambda_max``.

    Cholesky succeeding on ``K + tol * max_i K_ii * I`` accepts ``K`` at the price of one
    factorisation (``max_i K_ii <= lambda_max``, so the shift is at most ``tol * lambda_max``);
    otherwise the eigenvalues decide and are reported.
    """
    n = K.shape[0]
    tol = _psd_tolerance(n, K.dtype)
    shift = tol * max(float(K.diagonal().max()), 0.0)
    _, info = torch.linalg.cholesky_ex(K + shift * torch.eye(n, dtype=K.dtype, device=K.device))
    if int(info) == 0:
        return
    evals = torch.linalg.eigvalsh(K)
    lo, hi = float(evals[0]), float(evals[-1])
    if lo < -tol * max(hi, 0.0):
        raise ValueError(
            f"{name} is not positive semi-definite: smallest eigenvalue {lo:.4g} (largest {hi:.4g}); a kernel "
            f"matrix dips below 0 only by rounding, lambda_min >= -tol * lambda_max with "
            f"tol = {_PSD_SLACK:g} N eps = {tol:.2g} (N={n}, {K.dtype})"
        )


def _kernel_matrix(k: object, name: str = "k_train") -> torch.Tensor:
    """Validate an (n, n) or (n, n, O, O) kernel; return the symmetrised (N, N) matrix.

    Refused with ``ValueError`` naming ``name``: a relative asymmetry
    ``max|K - K^T| / max|K|`` above ``sqrt(eps)`` and an indefinite kernel (:func:`_check_psd`).
    """
    k = check_kernel_tensor(k, name, (2, 4), "(n, n) or (n, n, O, O)")
    if k.shape[0] != k.shape[1] or (k.ndim == 4 and k.shape[2] != k.shape[3]):
        raise ValueError(f"{name} must be square, (n, n) or (n, n, O, O), got shape {tuple(k.shape)}")
    if k.ndim == 4:
        n, o = k.shape[0], k.shape[2]
        k = k.permute(0, 2, 1, 3).reshape(n * o, n * o)
    finfo = torch.finfo(k.dtype)
    kd = k.detach()  # the checks read numbers; the returned matrix keeps k's autograd history
    asym = float((kd - kd.T).abs().max())
    scale = float(kd.abs().max())
    ratio = asym / max(scale, finfo.tiny)
    if ratio > math.sqrt(finfo.eps):
        raise ValueError(f"{name} must be symmetric: relative asymmetry max|K - K^T| / max|K| = {ratio:.3e} "
                         f"(max|K - K^T| = {asym:.3e}, max|K| = {scale:.3e}) exceeds sqrt(eps) = "
                         f"{math.sqrt(finfo.eps):.3e} ({k.dtype})")
    K = (k + k.T) / 2
    _check_psd(K.detach(), name)
    return K


class _Problem(NamedTuple):
    K: torch.Tensor  # (N, N)
    Kx: torch.Tensor | None  # (M, N)
    Y: torch.Tensor  # (N, C)
    H0: torch.Tensor  # (N, C)
    H0x: torch.Tensor | None  # (M, C)
    n: int  # number of samples (rows of y_train)
    train_shape: tuple[int, ...]
    test_shape: tuple[int, ...] | None


def _problem(
    k_train: object,
    y_train: object,
    k_test_train: object = None,
    h_ini_train: object = None,
    h_ini_test: object = None,
) -> _Problem:
    """Validate the arguments shared by every solver and bring them to matrix form."""
    K = _kernel_matrix(k_train)
    assert isinstance(k_train, torch.Tensor)
    y = check_kernel_tensor(y_train, "y_train", (1, 2), "(n,) or (n, O)")
    check_same_device_dtype(k_train, y, "k_train", "y_train")
    n = k_train.shape[0]
    block = k_train.ndim == 4
    o = k_train.shape[2] if block else None
    if y.shape[0] != n:
        raise ValueError(f"y_train rows must match k_train (n={n}), got shape {tuple(y.shape)}")
    if block and not (y.shape[1:] == (o,) or (o == 1 and y.ndim == 1)):
        raise ValueError(f"y_train must have shape ({n}, {o}) for a (n, n, O, O) k_train, got {tuple(y.shape)}")
    Kx = None
    test_shape = None
    if k_test_train is not None:
        kx = check_kernel_tensor(k_test_train, "k_test_train", (4,) if block else (2,), "(m, n, O, O)" if block else "(m, n)")
        check_same_device_dtype(k_train, kx, "k_train", "k_test_train")
        if kx.shape[1:] != k_train.shape[1:]:
            raise ValueError(f"k_test_train columns must match k_train: expected (m, {', '.join(map(str, k_train.shape[1:]))}), "
                             f"got shape {tuple(kx.shape)}")
        m = kx.shape[0]
        Kx = kx.permute(0, 2, 1, 3).reshape(m * o, n * o) if block else kx
        test_shape = (m,) + tuple(y.shape[1:])
    if h_ini_train is None and h_ini_test is not None:
        raise ValueError("h_ini_test was given without h_ini_train: give the initial function at both point sets")
    if h_ini_test is not None and k_test_train is None:
        raise ValueError("h_ini_test was given without k_test_train")
    if h_ini_train is not None and k_test_train is not None and h_ini_test is None:
        raise ValueError("h_ini_test is required when h_ini_train and k_test_train are given (h_ini at the test points)")

    def mat(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(-1, 1) if (block or t.ndim == 1) else t

    H0 = torch.zeros_like(mat(y))
    H0x = None if Kx is None else torch.zeros(Kx.shape[0], H0.shape[1], dtype=y.dtype, device=y.device)
    if h_ini_train is not None:
        h0 = check_kernel_tensor(h_ini_train, "h_ini_train", (1, 2), "the shape of y_train")
        check_same_device_dtype(k_train, h0, "k_train", "h_ini_train")
        if h0.shape != y.shape:
            raise ValueError(f"h_ini_train must have the shape of y_train {tuple(y.shape)}, got {tuple(h0.shape)}")
        H0 = mat(h0)
    if h_ini_test is not None:
        h0x = check_kernel_tensor(h_ini_test, "h_ini_test", (1, 2), "(m,) or (m, O)")
        check_same_device_dtype(k_train, h0x, "k_train", "h_ini_test")
        if tuple(h0x.shape) != test_shape:
            raise ValueError(f"h_ini_test must have shape {test_shape} (k_test_train rows, y_train outputs), got {tuple(h0x.shape)}")
        H0x = mat(h0x)
    return _Problem(K, Kx, mat(y), H0, H0x, n, tuple(y.shape), test_shape)


def _threshold(size: int, dtype: torch.dtype, max_cond: object, *, squared: bool = False) -> float:
    """The condition-number bound of a solve: ``max_cond``, by default ``1 / (N eps)``.

    A backward-stable solve (Cholesky, Higham Thm 10.4) returns the exact solution for
    ``K + E``, ``||E|| <= c N eps ||K||``, so its relative error is up to
    ``cond * N eps`` (Higham Thm 7.2): the default ``1 / (N eps)`` is the condition
    number at which that bound reaches 1.  ``max_cond`` may tighten it, or loosen it up
    to ``1 / eps``: there even the kernel's own entry rounding ``eps ||K||`` reaches its
    smallest eigenvalue, so no digit of a solution is determined; larger values are
    refused.  With ``squared`` the bound is on ``cond(J J^T) = cond(J)^2`` for a solve
    that factorises J itself (:func:`min_norm_parameters`): its error is ``cond(J) eps``
    and the ceiling is ``1 / eps^2``.
    """
    eps = torch.finfo(dtype).eps
    if max_cond is None:
        return 1.0 / (size * eps)
    if isinstance(max_cond, bool) or not isinstance(max_cond, (int, float)):
        raise TypeError(f"max_cond must be None or a float > 1, got {type(max_cond).__name__} {max_cond!r}")
    if not max_cond > 1:
        raise ValueError(f"max_cond must be None or a float > 1, got {max_cond!r}")
    ceiling = 1.0 / eps**2 if squared else 1.0 / eps
    if max_cond > ceiling:
        what = "1 / eps^2 (cond(J) = 1 / eps)" if squared else "1 / eps"
        raise ValueError(f"max_cond={max_cond:.3g} exceeds what {dtype} can honour, {what} = {ceiling:.3g} "
                         f"(eps = {eps:.3g}): a solve at that condition number has no correct digit")
    return float(max_cond)


def _check_diag_reg(diag_reg: object) -> float:
    """``diag_reg`` as a finite float >= 0 (TypeError / ValueError naming it otherwise)."""
    if isinstance(diag_reg, bool) or not isinstance(diag_reg, (int, float)):
        raise TypeError(f"diag_reg must be a finite float >= 0 (ridge relative to mean(diag K)), "
                        f"got {type(diag_reg).__name__} {diag_reg!r}")
    if not (math.isfinite(diag_reg) and diag_reg >= 0):
        raise ValueError(f"diag_reg must be a finite float >= 0 (ridge relative to mean(diag K)), got {diag_reg!r}")
    return float(diag_reg)


def _ridge(K: torch.Tensor, diag_reg: float) -> float:
    """The absolute ridge ``diag_reg * mean(diag K)`` added to the (N, N) matrix ``K``."""
    return diag_reg * float(K.detach().diagonal().mean()) if diag_reg > 0 else 0.0


def _regularised(K: torch.Tensor, diag_reg: float) -> torch.Tensor:
    """``K + diag_reg * mean(diag K) * I`` (``K`` itself when ``diag_reg == 0``)."""
    ridge = _ridge(K, diag_reg)
    if ridge == 0.0:
        return K
    return K + ridge * torch.eye(K.shape[0], dtype=K.dtype, device=K.device)


def _cond(lam_min: float, lam_max: float) -> float:
    return lam_max / lam_min if lam_min > 0 and lam_max > 0 else math.inf


def _raise_singular(evals: torch.Tensor, threshold: float, name: str) -> None:
    lo, hi = float(evals.min()), float(evals.max())
    cond = _cond(lo, hi)
    if cond > threshold:
        raise SingularKernelError(
            f"{name} is singular or numerically rank-deficient: condition number {cond:.3e} > threshold {threshold:.3e} "
            f"(smallest eigenvalue {lo:.3e}, largest {hi:.3e}); duplicated or inconsistent inputs make the kernel "
            f"singular. Pass pinv_rcond=... to use a pseudo-inverse with an explicit cutoff."
        )


class _Inverse:
    """K^{-1} (Cholesky) or the named pseudo-inverse, applied to right-hand sides."""

    def __init__(self, K: torch.Tensor, pinv_rcond: float | None, max_cond: float | None, name: str = "k_train") -> None:
        self.pinv = None
        self.chol = None
        self.evals: torch.Tensor | None = None
        threshold = _threshold(K.shape[0], K.dtype, max_cond)  # checked even where pinv_rcond replaces the guard
        if pinv_rcond is not None:
            self.pinv = torch.linalg.pinv(K, rtol=pinv_rcond, hermitian=True)
            return
        self.evals = torch.linalg.eigvalsh(K.detach())
        _raise_singular(self.evals, threshold, name)
        L, info = torch.linalg.cholesky_ex(K)
        if int(info) != 0:
            raise SingularKernelError(f"{name} is not positive definite: Cholesky failed at column {int(info)}")
        self.chol = L

    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        if self.chol is not None:
            return torch.cholesky_solve(rhs, self.chol)
        assert self.pinv is not None
        return self.pinv @ rhs


def _out(x: torch.Tensor, shape: tuple[int, ...], what: str) -> torch.Tensor:
    return check_finite_result(x.reshape(shape), what)


# ---------------------------------------------------------------------------------------------
# public API


def condition_number(k: torch.Tensor) -> float:
    """``lambda_max / lambda_min`` of a symmetric PSD kernel (inf when ``lambda_min <= 0``).

    Accepts (n, n) or (n, n, O, O) (reshaped to (n*O, n*O)); an asymmetric or
    indefinite ``k`` raises ``ValueError`` (module docstring).  The solvers refuse
    kernels above ``1 / (N * eps)`` (seed 000 eq (5) needs ``K^{-1}``).
    """
    evals = torch.linalg.eigvalsh(_kernel_matrix(k, "k").detach())
    return _cond(float(evals[0]), float(evals[-1]))


def interpolate(
    k_train: torch.Tensor,
    y_train: torch.Tensor,
    k_test_train: torch.Tensor | None = None,
    *,
    h_ini_train: torch.Tensor | None = None,
    h_ini_test: torch.Tensor | None = None,
    pinv_rcond: float | None = None,
    max_cond: float | None = None,
    diag_reg: float = 0.0,
) -> torch.Tensor:
    """``h_k(x; h_ini, X, Y) = h_ini(x) + k(x, X) K^{-1} (Y - h_ini(X))``, the solution of seed 000 eq (5).

    By seed 000 Thm 6 / Corollary 1 this is the long-time limit of the flow (3)
    for any loss of §4.  Evaluated at the test points (rows of ``k_test_train``) or,
    when ``k_test_train`` is None, at the training points.  ``h_ini_*`` default to 0.

    ``K^{-1}`` is applied by a Cholesky solve after a condition-number check: above
    ``max_cond`` (default ``1 / (N * eps)``, at most ``1 / eps``) :class:`SingularKernelError`
    is raised, unless ``pinv_rcond`` (in ``[eps, 1)``) is given, in which case
    ``torch.linalg.pinv(K, rtol=pinv_rcond, hermitian=True)`` (eigenvalues below
    ``pinv_rcond * lambda_max`` dropped) replaces the inverse.  An asymmetric or
    indefinite ``k_train`` raises ``ValueError`` (module docstring).

    ``diag_reg`` (default 0) replaces ``K^{-1}`` by ``(K + diag_reg * mean(diag K) * I)^{-1}``:
    kernel ridge regression, ``h_ini + k(x, X) (K + lambda I)^{-1} (Y - h_ini(X))``, evaluated
    with the unregularised ``k(x, X)`` (and ``K`` at the training points).

    Returns a tensor with the shape of ``y_train`` (or (m,) + its trailing shape).
    """
    reg = _check_diag_reg(diag_reg)
    P = _problem(k_train, y_train, k_test_train, h_ini_train, h_ini_test)
    rcond = _check_rcond(pinv_rcond, P.K.dtype)
    alpha = _Inverse(_regularised(P.K, reg), rcond, max_cond).solve(P.Y - P.H0)
    if P.Kx is None:
        return _out(P.H0 + P.K @ alpha, P.train_shape, "interpolate")
    assert P.H0x is not None and P.test_shape is not None
    return _out(P.H0x + P.Kx @ alpha, P.test_shape, "interpolate")


class Decomposition(NamedTuple):
    """Seed 000 Thm 2, eq (6): ``total = unbiased + h_ini - fit_of_init = unbiased + init_bias``."""

    total: torch.Tensor  # h_k(.; h_ini, X, Y)
    unbiased: torch.Tensor  # h_k(.; 0, X, Y)
    h_ini: torch.Tensor  # h_ini(.)
    fit_of_init: torch.Tensor  # h_k(.; 0, X, h_ini(X))
    init_bias: torch.Tensor  # h_ini - h_k(.; 0, X, h_ini(X))


def decompose(
    k_train: torch.Tensor,
    y_train: torch.Tensor,
    k_test_train: torch.Tensor | None,
    h_ini_train: torch.Tensor,
    h_ini_test: torch.Tensor | None,
    *,
    pinv_rcond: float | None = None,
    max_cond: float | None = None,
    diag_reg: float = 0.0,
) -> Decomposition:
    """The terms of seed 000 Thm 2, eq (6) (Thm 7, eq (17)), at the test points.

    ``total`` is computed independently, as ``h_ini + k K^{-1}(Y - h_ini(X))``, so
    ``total == unbiased + init_bias`` is a check of eq (6), not an identity of the
    code.  One factorisation of ``K`` serves all three solves.  With
    ``k_test_train=None`` (and ``h_ini_test=None``) the terms are at the training points.
    ``diag_reg`` solves every term with ``K + diag_reg * mean(diag K) * I`` (as :func:`interpolate`);
    eq (6) holds for the regularised solves too (each term is linear in its targets).
    """
    reg = _check_diag_reg(diag_reg)
    if h_ini_train is None:
        raise ValueError("h_ini_train is required: decompose splits off the effect of the initial output")
    P = _problem(k_train, y_train, k_test_train, h_ini_train, h_ini_test)
    rcond = _check_rcond(pinv_rcond, P.K.dtype)
    c = P.Y.shape[1]
    sol = _Inverse(_regularised(P.K, reg), rcond, max_cond).solve(torch.cat([P.Y - P.H0, P.Y, P.H0], dim=1))
    kx, h0, shape = (P.K, P.H0, P.train_shape) if P.Kx is None else (P.Kx, P.H0x, P.test_shape)
    assert h0 is not None and shape is not None
    pred = kx @ sol
    total = h0 + pred[:, :c]
    unbiased, fit = pred[:, c : 2 * c], pred[:, 2 * c :]
    return Decomposition(
        total=_out(total, shape, "decompose total"),
        unbiased=_out(unbiased, shape, "decompose unbiased"),
        h_ini=_out(h0.clone(), shape, "decompose h_ini"),
        fit_of_init=_out(fit, shape, "decompose fit_of_init"),
        init_bias=_out(h0 - fit, shape, "decompose init_bias"),
    )


def check_consistent(x_train: torch.Tensor, y_train: torch.Tensor) -> None:
    """Raise ``ValueError`` if two equal rows of ``x_train`` carry different labels.

    Such a training set has no interpolant, so seed 000 eqs (4)-(5) have no
    solution.  (The kernel solvers see only kernels; there duplicated inputs show
    up as a singular kernel, :class:`SingularKernelError`.)
    """
    x = check_inputs(x_train, "x_train")
    y = check_kernel_tensor(y_train, "y_train", (1, 2), "(n,) or (n, O)")
    if y.device != x.device:
        raise ValueError(f"y_train must be on the device of x_train ({x.device}), got {y.device}")
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"y_train rows must match x_train (n={x.shape[0]}), got shape {tuple(y.shape)}")
    _, inverse = torch.unique(x, dim=0, return_inverse=True)
    yv = y.reshape(y.shape[0], -1)
    bad = []
    for g in torch.unique(inverse):
        rows = torch.nonzero(inverse == g).flatten()
        if rows.numel() > 1 and not bool((yv[rows] == yv[rows[0]]).all()):
            bad.append(rows.tolist())
    if bad:
        shown = "; ".join(f"rows {r}" for r in bad[:10])
        raise ValueError(f"inconsistent training set: x_train has equal inputs with different y_train labels at {shown}")


def min_norm_parameters(
    jacobian: torch.Tensor, residual: torch.Tensor, *, max_cond: float | None = None
) -> torch.Tensor:
    """``theta_inf - theta_0 = J^T (J J^T)^{-1} (Y - h(X; theta_0))``, seed 000 eq (4) / Thm 5.

    ``jacobian`` is ``J = grad_theta h(X; theta_0)^T`` of shape (n, P) (or (n, O, P),
    flattened to (N, P) = (n*O, P) with ``residual`` (n, O) flattened row-major); ``residual``
    is ``Y - h(X; theta_0)``.  Returns the (P,) parameter displacement, the minimiser of
    eq (4) / eq (9): the minimum-norm solution of ``J delta = residual``.

    Computed on J itself, never on ``J J^T`` (which squares the condition number): with
    the reduced QR factorisation ``J^T = Q R`` (Q (P, N) with orthonormal columns, R (N, N)
    upper triangular), ``J = R^T Q^T`` and ``delta = Q R^{-T} residual``.  This is
    backward stable (Higham, *Accuracy and Stability of Numerical Algorithms*, ch. 21):
    its relative error is of order ``cond(J) eps``, not ``cond(J)^2 eps``.  QR and
    triangular solves exist on every device torch supports.

    Thm 5 needs J of full row rank with P > N: P <= N is refused with ``ValueError``.
    Rank is judged on ``cond(J J^T) = cond(J)^2`` (the singular values of R are J's), the
    condition number of the NTK ``J J^T`` that :func:`interpolate` would solve with: above
    ``max_cond`` (default ``1 / (N eps)``, the kernel solvers' bound) it raises
    :class:`SingularKernelError`.  ``max_cond`` may be raised up to ``1 / eps^2``
    (``cond(J) = 1 / eps``, where the solve on J keeps no digit).
    """
    J = check_kernel_tensor(jacobian, "jacobian", (2, 3), "(n, P) or (n, O, P)")
    r = check_kernel_tensor(residual, "residual", (1, 2), "(n,) or (n, O)")
    check_same_device_dtype(J, r, "jacobian", "residual")
    if r.shape != J.shape[:-1] and not (J.ndim == 3 and J.shape[1] == 1 and r.shape == J.shape[:1]):
        raise ValueError(f"residual must have shape {tuple(J.shape[:-1])} (the rows of jacobian), got {tuple(r.shape)}")
    J = J.reshape(-1, J.shape[-1])
    rows, params = J.shape
    if params <= rows:
        raise ValueError(
            f"jacobian has P={params} parameters for {rows} constraints: Thm 5 (seed 000) needs P > n "
            f"(J is not full row rank with more parameters than equations); Thm 5 does not apply"
        )
    threshold = _threshold(rows, J.dtype, max_cond, squared=True)
    Q, R = torch.linalg.qr(J.T)
    sv = torch.linalg.svdvals(R.detach())  # descending
    s_hi, s_lo = float(sv[0]), float(sv[-1])
    cond = (s_hi / s_lo) * (s_hi / s_lo) if s_lo > 0 else math.inf
    if cond > threshold:
        raise SingularKernelError(
            f"J J^T (jacobian) is singular or numerically rank-deficient: condition number {cond:.3e} > threshold "
            f"{threshold:.3e} (cond(J)^2, singular values of J from {s_lo:.3e} to {s_hi:.3e}); Thm 5 needs J of "
            f"full row rank, which duplicated inputs break. Pass max_cond=... (at most 1 / eps^2) to accept a "
            f"worse-conditioned J."
        )
    z = torch.linalg.solve_triangular(R.mT, r.reshape(-1, 1), upper=False)
    return check_finite_result((Q @ z).flatten(), "min_norm_parameters")


def max_stable_lr(k_train: torch.Tensor) -> float:
    """Largest stable gradient-descent step for the MSE ``(1/n) sum_i |h_i - y_i|^2``: ``n / lambda_max(K)``.

    Discrete gradient descent on the linearised model (seed 000 eq (1)) moves the
    training outputs by ``h <- h - lr (2/n) K (h - Y)``.  Each eigen-direction of K
    is multiplied by ``1 - lr (2/n) lambda``; all converge iff
    ``lr < 2 / lambda_max(H)`` with ``H = (2/n) K`` (the nonzero spectrum of the
    parameter Hessian ``(2/n) J^T J``), i.e. ``lr < n / lambda_max(K)``; at equality
    the top mode oscillates forever.  n is the number of samples (k_train.shape[0]).
    An indefinite ``k_train`` (a negative eigenvalue beyond rounding, module docstring) is
    refused with ``ValueError``: along a negative eigenvalue every step grows the error.
    """
    K = _kernel_matrix(k_train)
    lam_max = float(torch.linalg.eigvalsh(K.detach())[-1])
    if not lam_max > 0:
        raise ValueError(f"k_train must have a positive eigenvalue, got lambda_max = {lam_max:.3e}")
    return k_train.shape[0] / lam_max
