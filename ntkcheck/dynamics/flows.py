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
import warnings

import numpy as np
import torch

from ntkcheck._support.validation import check_choice, check_finite_result, check_positive_int
from ntkcheck.dynamics._arguments import (
    check_diag_reg,
    check_float,
    check_lr,
    check_positive_finite,
    times_array,
)
from ntkcheck.dynamics._inverse import _Inverse, _raise_singular, _regularised, _ridge
from ntkcheck.dynamics._kernel_checks import _check_rcond, _threshold
from ntkcheck.dynamics._ode.stages import _integrate, _project, _sample, _Settings
from ntkcheck.dynamics._problem import _problem
from ntkcheck.dynamics.losses import Loss
from ntkcheck.dynamics.results import FlowResult, ODEFlowResult
from ntkcheck.errors import ConvergenceWarning, DivergenceWarning

__all__ = ["ConvergenceWarning", "DivergenceWarning", "mse_flow", "mse_gd", "ode_flow"]


def _eig(
    K: torch.Tensor, pinv_rcond: float | None, max_cond: float | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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
    *,
    k_test_train: torch.Tensor | None = None,
    h_ini_train: torch.Tensor | None = None,
    h_ini_test: torch.Tensor | None = None,
    times: object,
    lr: float = 1.0,
    diag_reg: float = 0.0,
    pinv_rcond: float | None = None,
    max_cond: float | None = None,
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
    lr = check_lr(lr)
    reg = check_diag_reg(diag_reg)
    P = _problem(k_train, y_train, k_test_train, h_ini_train, h_ini_test)
    rcond = _check_rcond(pinv_rcond, P.K.dtype)
    _threshold(P.K.shape[0], P.K.dtype, max_cond)  # max_cond is checked even where pinv_rcond replaces its guard
    t_np = times_array(times)
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
        moved = torch.where(
            keep[None, :], (lam - ridge)[None, :] * -torch.expm1(-x) / safe_r[None, :], torch.zeros_like(x)
        )  # lambda (1 - exp(-c (lambda + mu) t)) / (lambda + mu)
        train = P.H0[None] + V @ (moved[:, :, None] * B[None])
    test = None
    if P.Kx is not None:
        assert P.H0x is not None and P.test_shape is not None
        safe = torch.where(keep, lam, torch.ones_like(lam))
        coef = torch.where(keep[None, :], -torch.expm1(-x) / safe[None, :], torch.zeros_like(x))
        test = P.H0x[None] + (P.Kx @ V) @ (coef[:, :, None] * B[None])
        test = check_finite_result(test.reshape((len(t_np),) + P.test_shape), "mse_flow test predictions")
    train = check_finite_result(train.reshape((len(t_np),) + P.train_shape), "mse_flow train predictions")
    return FlowResult(times=t, train=train, test=test)


def mse_gd(
    k_train: torch.Tensor,
    y_train: torch.Tensor,
    *,
    k_test_train: torch.Tensor | None = None,
    h_ini_train: torch.Tensor | None = None,
    h_ini_test: torch.Tensor | None = None,
    steps: object,
    lr: float,
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
    lr = check_lr(lr)
    P = _problem(k_train, y_train, k_test_train, h_ini_train, h_ini_test)
    k_np = times_array(steps, "steps")
    if np.isinf(k_np).any() or (k_np != np.round(k_np)).any():
        raise ValueError(f"steps must be non-negative integers, got {k_np.tolist()[:8]}")
    k = torch.as_tensor(k_np, dtype=P.K.dtype, device=P.K.device)[:, None]
    lam, V = torch.linalg.eigh(P.K)
    lam_max = float(lam[-1])
    limit = P.n / lam_max if lam_max > 0 else math.inf
    if lr >= limit * (1 - 1e-12):  # the boundary within rounding of lambda_max counts as unstable
        msg = (
            f"lr={lr:g} >= n / lambda_max = {limit:.6g} (n={P.n}, lambda_max={lam_max:.6g}): gradient descent "
            f"on the MSE diverges or oscillates (|1 - lr (2/n) lambda_max| >= 1)"
        )
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
    return FlowResult(times=k.flatten(), train=train, test=test)


def _in_unit_interval(v: float) -> bool:
    return 0 < v < 1


def _positive(v: float) -> bool:
    return v > 0


def _check_settings(
    loss: object,
    lr: object,
    tol: object,
    grad_tol: object,
    max_time: object,
    rtol: object,
    atol: object,
    max_steps: object,
    max_seconds: object,
    progress: object,
) -> _Settings:
    """The arguments of :func:`ode_flow` past the kernels and the times, checked."""
    if not isinstance(loss, Loss):
        raise TypeError(
            f"loss must be a ntkcheck.dynamics.losses.Loss (wrap a callable in DistLoss), got {type(loss).__name__}"
        )
    if not loss.section4:
        raise ValueError(
            f"loss {loss!r} is outside the class of seed 000 §4 (no finite minimiser): the flow has no limit"
        )
    lr_value = check_lr(lr)
    tol_value, rtol_value, atol_value = (
        check_float(value, name, "a float in (0, 1)", _in_unit_interval)
        for value, name in ((tol, "tol"), (rtol, "rtol"), (atol, "atol"))
    )
    if grad_tol is not None:
        grad_tol = check_positive_finite(grad_tol, "grad_tol", "None or a positive finite float")
    max_time_value = check_float(max_time, "max_time", "a positive float (inf allowed)", _positive)
    if max_steps is not None:
        max_steps = check_positive_int(max_steps, "max_steps")
    if max_seconds is not None:
        max_seconds = check_positive_finite(max_seconds, "max_seconds", "None or a positive finite float")
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"progress must be None (a bar when stderr is a terminal) or a bool, got {progress!r}")
    return _Settings(
        lr_value, tol_value, grad_tol, max_time_value, rtol_value, atol_value, max_steps, max_seconds, progress
    )


def ode_flow(
    k_train: torch.Tensor,
    y_train: torch.Tensor,
    *,
    k_test_train: torch.Tensor | None = None,
    h_ini_train: torch.Tensor | None = None,
    h_ini_test: torch.Tensor | None = None,
    times: object,
    lr: float = 1.0,
    loss: Loss,
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
    (:class:`ntkcheck.dynamics._ode.field._PolarFlow`), so ``rtol``/``atol`` bound *relative* errors of r and of
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
    settings = _check_settings(loss, lr, tol, grad_tol, max_time, rtol, atol, max_steps, max_seconds, progress)
    P = _problem(k_train, y_train, k_test_train, h_ini_train, h_ini_test)
    t_req = times_array(times)
    if (t_req[np.isfinite(t_req)] > max_time).any():
        raise ValueError(f"times must not exceed max_time={max_time:g} (inf is allowed), got max {t_req.max():g}")
    inv = _Inverse(P.K, None, max_cond)
    assert inv.evals is not None
    path = _integrate(P, loss, settings, float(inv.evals[0]))
    g_final, res_final = path.final_measures()
    if not path.converged:
        warnings.warn(
            f"ode_flow stopped at t={path.t_final:.6g} before reaching its tolerance: ||grad_h dist|| = {g_final:.3e}, "
            f"relative residual ||h - Y|| / ||h0 - Y|| = {res_final:.3e} (tol={tol:g}, grad_tol={grad_tol})",
            ConvergenceWarning,
            stacklevel=2,
        )
    train, test = _project(P, inv, _sample(path, P, t_req))
    T = len(t_req)
    return ODEFlowResult(
        times=torch.as_tensor(t_req, dtype=P.K.dtype, device=P.K.device),
        train=train[:T],
        test=None if test is None else test[:T],
        final_train=train[T],
        final_test=None if test is None else test[T],
        t_final=path.t_final,
        converged=path.converged,
        residual=res_final,
        grad_norm=g_final,
        steps=path.steps,
    )
