"""Gaussian-process inference with the NNGP and the NTK: the infinite ensemble of trained networks.

An infinitely wide network at initialization is a centred Gaussian process whose covariance is
the NNGP kernel ``K`` (:func:`ntkcheck.analytic_nngp`), and while it trains by gradient flow it
moves as its linearization with the deterministic NTK ``Theta`` (:func:`ntkcheck.analytic_ntk`;
seed 000 §3.2, eqs (1)-(3); Jacot et al. 2018; Lee et al. 2019).  Its output at any time is
therefore a Gaussian process too; this module gives its mean and covariance on test points.

Notation and conventions (those of :mod:`ntkcheck.dynamics.solvers` and :mod:`ntkcheck.dynamics.flows`):

* ``X`` the n training inputs, ``x*`` the m test inputs; ``K = K(X, X)``, ``K*X = K(x*, X)``,
  ``K** = K(x*, x*)`` (NNGP), ``Theta``, ``Theta*X`` (NTK).  Kernels are (n, n), (m, n) and
  (m, m) matrices of ONE output: with targets ``y_train`` of shape (n, O) the kernel of the
  network is ``K (x) I_O`` (outputs independent and identically distributed, as every infinite-
  width kernel of :mod:`ntkcheck.kernels.analytic` is), so each output column has the same covariance
  and the returned covariance is the (m, m) matrix shared by all O outputs.
* Loss ``(1/n) sum_i |h(x_i) - y_i|^2`` (the sum also over outputs), learning rate ``lr``;
  gradient flow moves ``dh(x)/dt = -lr k(x, X) (2/n)(h(X) - Y)`` (seed 000 eq (3)), so every
  eigenvalue ``lambda`` of the training kernel decays at the rate ``c lambda``, ``c = 2 lr / n``.

**Mapping to neural-tangents** (``predict.gp_inference`` and
``predict.gradient_descent_mse_ensemble`` with their default ``trace_axes=(-1,)``): their loss is
``(1/2) mean`` over all ``n O`` entries of ``y_train``, i.e. their modes decay as
``exp(-lambda learning_rate t / (n O))``.  Our time ``t`` with ``lr`` equals theirs at the same
``t`` with ``learning_rate = 2 O lr`` (O = ``y_train.shape[1]``, 1 for (n,) targets).  ``t = inf``
is their ``t=None``.  ``diag_reg`` and ``diag_reg_absolute_scale`` are theirs: the matrix that is
inverted (or exponentiated) is ``A + delta I`` with ``delta = diag_reg * trace(A) / n``
(``diag_reg_absolute_scale=False``, the default) or ``delta = diag_reg``; the other kernel blocks
are used unregularised.  Our ``ensemble_predict(K, Y, k_test_train=K*X)`` (the NNGP kernel trains: readout
only) is their ``get='nngp'``, our ``ensemble_predict(Theta, Y, k_test_train=Theta*X, nngp_train=K,
nngp_test_train=K*X)`` their ``get='ntk'``.  The crosscheck
``crosscheck/test_gp_against_neural_tangents.py`` asserts the agreement.

**Derivation** (``ensemble_predict``).  Write ``E_t = exp(-c Theta t)``.  The linearized network
trained from ``h_ini = f_0`` follows seed 000 eq (3) in closed form (:func:`ntkcheck.mse_flow`)::

    f_t(X)  = Y + E_t (f_0(X) - Y)
    f_t(x*) = f_0(x*) + A_t (Y - f_0(X)),      A_t = Theta*X Theta^-1 (I - E_t)

which is linear in ``(f_0, Y)``.  With ``f_0 ~ GP(0, K)`` (the infinitely wide network at
initialization)::

    mean_t(x*) = A_t Y                                   (the flow from h_ini = 0)
    cov_t(x*)  = K** - A_t K_X* - K*X A_t^T + A_t K A_t^T      (Lee et al. 2019, eq (16))

At ``t = inf``, ``A_inf = Theta*X Theta^-1`` and ``mean_inf = h_Theta(x*; 0, X, Y)``, the solution of
seed 000 eq (5) with zero initial output (:func:`ntkcheck.interpolate`); by seed 000 Thm 2 eq (6) the
remaining random part ``f_0 - h_Theta(.; 0, X, f_0(X))`` is the initialization bias, whose covariance
``cov_inf`` is.  At ``t = 0``, ``A_0 = 0`` and the covariance is the prior ``K**``.  On the training
points (``Theta*X = Theta``, ``K*X = K** = K``) ``cov_inf = 0``: every member interpolates.

Training only the readout layer (no ``nngp_train``: the training kernel is the NNGP kernel) the NTK IS the NNGP
kernel (Lee et al. 2019 §2.3.1):
with ``Theta = K`` the terms combine to::

    mean_t = K*X K^-1 (I - exp(-c K t)) Y
    cov_t  = K** - K*X K^-1 (I - exp(-2 c K t)) K_X*

and at ``t = inf`` to the Bayesian posterior of the NNGP (:func:`gp_inference`).

**Numerics.**  One ``torch.linalg.eigh`` of the (regularised) training kernel
``V diag(lambda) V^T`` serves every time: ``Theta^-1 (I - E_t) = V diag(phi_t) V^T`` with
``phi_t = -expm1(-c lambda t) / lambda`` (``1 / lambda`` at ``t = inf``), accurate for small
``c lambda t``.  A training kernel whose condition number exceeds ``1 / (n eps)`` (or ``max_cond``,
as in :mod:`ntkcheck.dynamics.solvers`) raises :class:`~ntkcheck.dynamics.solvers.SingularKernelError` with the
measured number; ``diag_reg > 0`` is the way to predict from such a kernel.  Kernels are checked
to be symmetric positive semi-definite, and with a test-test block the joint NNGP matrix
``[[K, K_X*], [K*X, K**]]`` too (a test block computed for other inputs or from another kernel is usually
indefinite).  Covariances are returned exactly symmetric; they are positive semi-definite up to
rounding of order ``cond * eps * max|K|``.  A non-finite result raises ``FloatingPointError``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ntkcheck._support.validation import check_choice, check_finite_result, check_same_device_dtype
from ntkcheck.dynamics._arguments import check_lr, times_array
from ntkcheck.dynamics._gp_checks import (
    _check_joint,
    _cross,
    _diag_reg,
    _refuse_singular,
    _regularise,
    _square,
    _symmetric,
    _targets,
)
from ntkcheck.errors import SingularKernelError
from ntkcheck.kernels.analytic import analytic_nngp, analytic_ntk

__all__ = ["GaussianPrediction", "analytic_ensemble", "ensemble_predict", "gp_inference"]


@dataclass(frozen=True)
class GaussianPrediction:
    """A Gaussian over the test outputs, per output column.

    ``mean``: (m,) or (m, O) from :func:`gp_inference`; (T, m) or (T, m, O) from
    :func:`ensemble_predict` (one row per time).  ``covariance``: (m, m), or (T, m, m), the
    covariance of each output column over the m test points (outputs are independent with the
    same covariance, the kernel being ``K (x) I_O``); None when not computed.  ``times``: the
    (T,) times (``inf`` allowed) of :func:`ensemble_predict`; None for :func:`gp_inference`.
    """

    mean: torch.Tensor
    covariance: torch.Tensor | None
    times: torch.Tensor | None


def gp_inference(
    k_train: torch.Tensor,
    y_train: torch.Tensor,
    *,
    k_test_train: torch.Tensor,
    k_test_test: torch.Tensor | None = None,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    max_cond: float | None = None,
) -> GaussianPrediction:
    """The Bayesian posterior of the Gaussian process with kernel ``k`` (the NNGP: an infinitely wide network).

    With ``K_r = K + delta I`` (``delta`` from ``diag_reg``, see the module docstring; the noise
    variance of observations ``Y = f(X) + noise``, 0 for exact observations)::

        mean = K*X K_r^-1 Y                 (m,) or (m, O)
        cov  = K** - K*X K_r^-1 K_X*         (m, m), shared by every output column

    neural-tangents' ``predict.gp_inference(...)(get='nngp', ...)``.  Given the NTK instead of the
    NNGP, the mean is the trained networks' mean at ``t = inf`` (but the covariance is not theirs:
    use :func:`ensemble_predict`).  ``k_test_test=None`` skips the covariance.  With
    ``k_test_train = k_train`` and ``diag_reg = 0`` the posterior on the training points is
    ``N(Y, 0)``.

    Computed by a Cholesky factorisation ``K_r = L L^T`` (``cov = K** - W^T W``,
    ``W = L^-1 K_X*``), after the condition-number guard of the module docstring.
    """
    K = _square(k_train, "k_train")
    Y = _targets(y_train, K, "k_train")
    n = K.shape[0]
    Kx = _cross(k_test_train, "k_test_train", K, "k_train", n, None)
    m = Kx.shape[0]
    Ktt = None
    if k_test_test is not None:
        Ktt = _square(k_test_test, "k_test_test")
        check_same_device_dtype(K, Ktt, "k_train", "k_test_test")
        if Ktt.shape[0] != m:
            raise ValueError(
                f"k_test_test must have shape ({m}, {m}) (the rows of k_test_train), got {tuple(Ktt.shape)}"
            )
        _check_joint(K, Kx, Ktt, "the NNGP kernels")
    reg, absolute = _diag_reg(diag_reg, diag_reg_absolute_scale)
    Kr = _regularise(K, reg, absolute)
    _refuse_singular(torch.linalg.eigvalsh(Kr.detach()), n, K.dtype, max_cond, "k_train", reg)
    L, info = torch.linalg.cholesky_ex(Kr)
    if int(info) != 0:
        raise SingularKernelError(f"k_train is not positive definite: Cholesky failed at column {int(info)}")
    mean = Kx @ torch.cholesky_solve(Y, L)
    mean = check_finite_result(mean.reshape((m,) + tuple(y_train.shape[1:])), "gp_inference mean")
    cov = None
    if Ktt is not None:
        W = torch.linalg.solve_triangular(L, Kx.T, upper=False)
        cov = check_finite_result(_symmetric(Ktt - W.T @ W), "gp_inference covariance")
    return GaussianPrediction(mean=mean, covariance=cov, times=None)


@dataclass(frozen=True)
class _EnsembleKernels:
    """The checked kernels of :func:`ensemble_predict`: training kernel ``(train, train_x)`` and NNGP prior
    ``(K, Kx, Ktt)``; ``readout``: the training kernel is the NNGP kernel."""

    train: torch.Tensor
    train_x: torch.Tensor
    K: torch.Tensor
    Kx: torch.Tensor
    Ktt: torch.Tensor | None
    readout: bool


def _nngp_prior(
    train: torch.Tensor, m: int, nngp_train: object, nngp_test_train: object
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The NNGP kernels ``(K, K*X)`` checked against the training kernel, or None when neither is given."""
    if (nngp_train is None) != (nngp_test_train is None):
        raise ValueError(
            "nngp_train and nngp_test_train must be given together (the NNGP kernel K and K*X of the "
            "initial outputs), or neither (readout-only training: the training kernel is the NNGP kernel)"
        )
    if nngp_train is None:
        return None
    K = _square(nngp_train, "nngp_train")
    check_same_device_dtype(train, K, "k_train", "nngp_train")
    if K.shape != train.shape:
        raise ValueError(f"nngp_train must have the shape of k_train {tuple(train.shape)}, got {tuple(K.shape)}")
    return K, _cross(nngp_test_train, "nngp_test_train", K, "nngp_train", K.shape[0], m)


def _ensemble_kernels(
    k_train: object,
    k_test_train: object,
    nngp_train: object,
    nngp_test_train: object,
    nngp_test_test: object,
    compute_cov: bool,
) -> _EnsembleKernels:
    """Check the kernels of :func:`ensemble_predict`; with ``compute_cov`` the joint NNGP matrix too."""
    train = _square(k_train, "k_train")
    train_x = _cross(k_test_train, "k_test_train", train, "k_train", train.shape[0], None)
    m = train_x.shape[0]
    prior = _nngp_prior(train, m, nngp_train, nngp_test_train)
    K, Kx = (train, train_x) if prior is None else prior
    Ktt = None
    if nngp_test_test is not None:
        Ktt = _square(nngp_test_test, "nngp_test_test")
        check_same_device_dtype(K, Ktt, "k_train" if prior is None else "nngp_train", "nngp_test_test")
        if Ktt.shape[0] != m:
            raise ValueError(
                f"nngp_test_test (K**) must have shape ({m}, {m}) (the rows of k_test_train), got {tuple(Ktt.shape)}"
            )
    elif compute_cov:
        raise ValueError("nngp_test_test (K**, the test-test NNGP kernel) is None but compute_cov=True")
    if compute_cov:
        assert Ktt is not None
        _check_joint(K, Kx, Ktt, "the NNGP kernels")
    return _EnsembleKernels(train, train_x, K, Kx, Ktt, prior is None)


def _phi(lam: torch.Tensor, rate: float, times: torch.Tensor) -> torch.Tensor:
    """``(1 - exp(-rate lambda t)) / lambda`` per time and eigenvalue, ``1 / lambda`` at t = inf: (T, n)."""
    inf = torch.isinf(times)[:, None]
    finite_t = torch.where(inf, torch.zeros_like(times[:, None]), times[:, None])  # (T, 1)
    finite = -torch.expm1(-rate * lam[None, :] * finite_t) / lam[None, :]
    return torch.where(inf, (1 / lam)[None, :].expand_as(finite), finite)


def _ensemble_covariance(
    k: _EnsembleKernels, lam: torch.Tensor, V: torch.Tensor, G: torch.Tensor, c: float, times: torch.Tensor
) -> torch.Tensor:
    """``cov_t`` of the module docstring, (T, m, m), exactly symmetric."""
    assert k.Ktt is not None
    if k.readout:  # Theta = K: cov = K** - K*X K^-1 (I - exp(-2 c K t)) K_X*
        cov = k.Ktt[None] - (G[None] * _phi(lam, 2 * c, times)[:, None, :]) @ G.T[None]
    else:  # Lee et al. 2019 eq (16): K** - A K_X* - (A K_X*)^T + A K A^T, A = G diag(phi) V^T
        Gf = G[None] * _phi(lam, c, times)[:, None, :]  # (T, m, n)
        cross = Gf @ (V.T @ k.Kx.T)[None]  # A_t K_X*: (T, m, m)
        quad = Gf @ (V.T @ k.K @ V)[None] @ Gf.mT
        cov = k.Ktt[None] - cross - cross.mT + quad
    return check_finite_result(_symmetric(cov), "ensemble_predict covariance")


def ensemble_predict(
    k_train: torch.Tensor,
    y_train: torch.Tensor,
    *,
    k_test_train: torch.Tensor,
    times: object,
    lr: float = 1.0,
    nngp_train: torch.Tensor | None = None,
    nngp_test_train: torch.Tensor | None = None,
    nngp_test_test: torch.Tensor | None = None,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    compute_cov: bool = True,
    max_cond: float | None = None,
) -> GaussianPrediction:
    """Mean and covariance on test points of the infinite ensemble of infinitely wide networks trained by
    gradient flow on the MSE ``(1/n) sum |h - y|^2`` with learning rate ``lr``, at ``times``.

    ``k_train`` (n, n) and ``k_test_train`` (m, n): the kernel of training on train-train and test-train,
    the NTK ``Theta`` when every layer trains, the NNGP kernel ``K`` when only the readout layer does (its NTK
    is the NNGP kernel).  ``nngp_train`` (n, n) and ``nngp_test_train`` (m, n), given together: the NNGP kernel
    ``K`` and ``K*X``, the prior of the initial outputs, when it differs from the kernel of training; omitted,
    the kernel of training is the NNGP kernel (readout-only training).  ``nngp_test_test`` (m, m): ``K**``,
    needed for the covariance (``compute_cov``).  ``y_train`` (n,) or (n, O); ``times`` a number or 1-D array
    of times >= 0, ``inf`` allowed.

    Returns a :class:`GaussianPrediction`: ``mean`` (T, m[, O]), ``covariance`` (T, m, m) (None
    unless ``compute_cov``), ``times`` (T,).  The formulas and their derivation (Lee et al. 2019
    eq (16); the mean is seed 000 eq (3)'s flow from ``h_ini = 0`` — :func:`ntkcheck.mse_flow` —
    and at ``t = inf`` eq (5)'s interpolant, :func:`ntkcheck.interpolate`), the time convention
    against neural-tangents (``learning_rate = 2 O lr``), ``diag_reg`` and the numerical guards
    are in the module docstring: ``mean_t = A_t Y``,
    ``cov_t = K** - A_t K_X* - K*X A_t^T + A_t K A_t^T`` with
    ``A_t = Theta*X Theta^-1 (I - exp(-(2 lr / n) Theta t))``.
    """
    if not isinstance(compute_cov, bool):
        raise TypeError(f"compute_cov must be a bool, got {type(compute_cov).__name__} {compute_cov!r}")
    lr = check_lr(lr)
    reg, absolute = _diag_reg(diag_reg, diag_reg_absolute_scale)
    k = _ensemble_kernels(k_train, k_test_train, nngp_train, nngp_test_train, nngp_test_test, compute_cov)
    Y = _targets(y_train, k.train, "k_train")
    n, m = k.train.shape[0], k.train_x.shape[0]
    t_np = times_array(times, "times")
    t = torch.as_tensor(t_np, dtype=k.train.dtype, device=k.train.device)
    lam, V = torch.linalg.eigh(_regularise(k.train, reg, absolute))
    _refuse_singular(lam.detach(), n, k.train.dtype, max_cond, "k_train", reg)
    c = 2 * lr / n
    G = k.train_x @ V  # (m, n): the test-train kernel in the eigenbasis
    mean = (G[None] * _phi(lam, c, t)[:, None, :]) @ (V.T @ Y)[None]  # (T, m, O)
    mean = check_finite_result(mean.reshape((len(t_np), m) + tuple(y_train.shape[1:])), "ensemble_predict mean")
    cov = _ensemble_covariance(k, lam, V, G, c, t) if compute_cov else None
    return GaussianPrediction(mean=mean, covariance=cov, times=t)


def analytic_ensemble(
    model: nn.Module,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    *,
    x_test: torch.Tensor,
    times: object,
    lr: float = 1.0,
    get: str = "ntk",
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    compute_cov: bool = True,
    max_cond: float | None = None,
) -> GaussianPrediction:
    """:func:`ensemble_predict` with the infinite-width kernels of ``model`` (:func:`ntkcheck.analytic_nngp`,
    :func:`ntkcheck.analytic_ntk`) on ``x_train`` and ``x_test``, at ``times``.

    ``get="ntk"``: every trainable layer trains (the NTK ensemble, Lee et al. 2019 eq (16));
    ``get="nngp"``: the readout layer only (the NNGP ensemble, at ``t = inf`` the Bayesian
    posterior).  ``y_train`` is (n, O) for a model with O > 1 outputs ((n,) or (n, 1) for one);
    the analytic kernels are ``K (x) I_O`` and their one-output block is used.
    """
    check_choice(get, "get", ("ntk", "nngp"))
    out = getattr(model, "out_features", None)
    if (
        isinstance(y_train, torch.Tensor)
        and isinstance(out, int)
        and out > 1
        and (y_train.ndim != 2 or y_train.shape[1] != out)
    ):
        raise ValueError(
            f"y_train must have shape (n, {out}) for a model with {out} outputs, got {tuple(y_train.shape)}"
        )
    for x, name in ((x_train, "x_train"), (x_test, "x_test")):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of model inputs, got {type(x).__name__}")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(
            f"x_test rows must have the shape of x_train rows {tuple(x_train.shape[1:])}, got {tuple(x_test.shape[1:])}"
        )
    x_all = torch.cat([x_train, x_test])
    n = x_train.shape[0]
    nngp = _one_output(analytic_nngp(model, x_all)) if compute_cov or get == "nngp" else None
    kernel, prior = (nngp, None) if get == "nngp" else (_one_output(analytic_ntk(model, x_all)), nngp)
    assert kernel is not None
    return ensemble_predict(
        kernel[:n, :n],
        y_train,
        k_test_train=kernel[n:, :n],
        nngp_train=None if prior is None else prior[:n, :n],
        nngp_test_train=None if prior is None else prior[n:, :n],
        nngp_test_test=nngp[n:, n:] if compute_cov and nngp is not None else None,
        times=times,
        lr=lr,
        diag_reg=diag_reg,
        diag_reg_absolute_scale=diag_reg_absolute_scale,
        compute_cov=compute_cov,
        max_cond=max_cond,
    )


def _one_output(k: torch.Tensor) -> torch.Tensor:
    """The one-output block of a ``K (x) I_O`` kernel."""
    return k[:, :, 0, 0] if k.ndim == 4 else k
