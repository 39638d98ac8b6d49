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

import torch

from ntkcheck._support.validation import check_finite_result, check_inputs, check_kernel_tensor, check_same_device_dtype
from ntkcheck.dynamics._arguments import check_diag_reg
from ntkcheck.dynamics._inverse import _cond, _Inverse, _regularised
from ntkcheck.dynamics._kernel_checks import _check_rcond, _kernel_matrix, _threshold
from ntkcheck.dynamics._problem import _out, _problem
from ntkcheck.dynamics.results import Decomposition
from ntkcheck.errors import SingularKernelError

__all__ = [
    "SingularKernelError",
    "check_consistent",
    "condition_number",
    "decompose",
    "interpolate",
    "max_stable_lr",
    "min_norm_parameters",
]


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
    *,
    k_test_train: torch.Tensor | None = None,
    h_ini_train: torch.Tensor | None = None,
    h_ini_test: torch.Tensor | None = None,
    diag_reg: float = 0.0,
    pinv_rcond: float | None = None,
    max_cond: float | None = None,
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
    reg = check_diag_reg(diag_reg)
    P = _problem(k_train, y_train, k_test_train, h_ini_train, h_ini_test)
    rcond = _check_rcond(pinv_rcond, P.K.dtype)
    alpha = _Inverse(_regularised(P.K, reg), rcond, max_cond).solve(P.Y - P.H0)
    if P.Kx is None:
        return _out(P.H0 + P.K @ alpha, P.train_shape, "interpolate")
    assert P.H0x is not None and P.test_shape is not None
    return _out(P.H0x + P.Kx @ alpha, P.test_shape, "interpolate")


def decompose(
    k_train: torch.Tensor,
    y_train: torch.Tensor,
    *,
    k_test_train: torch.Tensor | None = None,
    h_ini_train: torch.Tensor,
    h_ini_test: torch.Tensor | None = None,
    diag_reg: float = 0.0,
    pinv_rcond: float | None = None,
    max_cond: float | None = None,
) -> Decomposition:
    """The terms of seed 000 Thm 2, eq (6) (Thm 7, eq (17)), at the test points.

    ``total`` is computed independently, as ``h_ini + k K^{-1}(Y - h_ini(X))``, so
    ``total == unbiased + init_bias`` is a check of eq (6), not an identity of the
    code.  One factorisation of ``K`` serves all three solves.  With
    ``k_test_train=None`` (and ``h_ini_test=None``) the terms are at the training points.
    ``diag_reg`` solves every term with ``K + diag_reg * mean(diag K) * I`` (as :func:`interpolate`);
    eq (6) holds for the regularised solves too (each term is linear in its targets).
    """
    reg = check_diag_reg(diag_reg)
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
        raise ValueError(
            f"inconsistent training set: x_train has equal inputs with different y_train labels at {shown}"
        )


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
