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
are used unregularised.  Our ``ensemble_predict(ntk=None)`` is their ``get='nngp'``, our
``ensemble_predict(ntk=(Theta, Theta*X))`` their ``get='ntk'``.  The crosscheck
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

Training only the readout layer (``ntk=None``) the NTK IS the NNGP kernel (Lee et al. 2019 §2.3.1):
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

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ntkcheck._support.validation import check_choice, check_finite_result, check_kernel_tensor, check_same_device_dtype
from ntkcheck.dynamics.flows import _check_lr, _times
from ntkcheck.dynamics.solvers import SingularKernelError, _check_psd, _kernel_matrix, _threshold
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


# ---------------------------------------------------------------------------------------------
# validation


def _square(k: object, name: str) -> torch.Tensor:
    """A symmetric PSD (n, n) kernel of one output, symmetrised; ``ValueError`` for (n, n, O, O)."""
    if isinstance(k, torch.Tensor) and k.ndim == 4:
        raise ValueError(f"{name} must be the (n, n) kernel of one output (the network's kernel is K (x) I_O), "
                         f"got shape {tuple(k.shape)}; pass k[:, :, 0, 0] of a K (x) I kernel")
    check_kernel_tensor(k, name, (2,), "(n, n)")
    return _kernel_matrix(k, name)


def _cross(k: object, name: str, like: torch.Tensor, like_name: str, n: int, m: int | None) -> torch.Tensor:
    """A (m, n) test-train kernel with the dtype and device of ``like``."""
    shape = f"(m, {n})" if m is None else f"({m}, {n})"
    kx = check_kernel_tensor(k, name, (2,), shape)
    check_same_device_dtype(like, kx, like_name, name)
    if kx.shape[1] != n or (m is not None and kx.shape[0] != m):
        raise ValueError(f"{name} must have shape {shape} (test rows, training columns), got {tuple(kx.shape)}")
    return kx


def _targets(y: object, K: torch.Tensor, name_k: str) -> torch.Tensor:
    """``y_train`` (n,) or (n, O) as an (n, O) matrix."""
    y = check_kernel_tensor(y, "y_train", (1, 2), "(n,) or (n, O)")
    check_same_device_dtype(K, y, name_k, "y_train")
    if y.shape[0] != K.shape[0]:
        raise ValueError(f"y_train must have {K.shape[0]} rows (the size of {name_k}), got shape {tuple(y.shape)}")
    return y.reshape(-1, 1) if y.ndim == 1 else y


def _check_joint(K: torch.Tensor, Kx: torch.Tensor, Ktt: torch.Tensor, name: str) -> None:
    """``ValueError`` unless the joint NNGP matrix ``[[K, K_X*], [K*X, K**]]`` is PSD (up to rounding)."""
    joint = torch.cat([torch.cat([K, Kx.T], dim=1), torch.cat([Kx, Ktt], dim=1)], dim=0)
    _check_psd(joint.detach(), f"{name} (the joint train/test matrix [[K, K_X*], [K*X, K**]])")


def _diag_reg(diag_reg: object, absolute: object) -> tuple[float, bool]:
    if isinstance(diag_reg, bool) or not isinstance(diag_reg, (int, float)):
        raise TypeError(f"diag_reg must be a finite float >= 0, got {type(diag_reg).__name__} {diag_reg!r}")
    if not (math.isfinite(diag_reg) and diag_reg >= 0):
        raise ValueError(f"diag_reg must be a finite float >= 0, got {diag_reg!r}")
    if not isinstance(absolute, bool):
        raise TypeError(f"diag_reg_absolute_scale must be a bool, got {type(absolute).__name__} {absolute!r}")
    return float(diag_reg), absolute


def _regularise(K: torch.Tensor, diag_reg: float, absolute: bool) -> torch.Tensor:
    """``K + delta I``, ``delta = diag_reg`` (absolute) or ``diag_reg * trace(K) / n`` (neural-tangents' default)."""
    if diag_reg == 0:
        return K
    delta = diag_reg if absolute else diag_reg * float(torch.trace(K.detach())) / K.shape[0]
    return K + delta * torch.eye(K.shape[0], dtype=K.dtype, device=K.device)


def _refuse_singular(lam: torch.Tensor, size: int, dtype: torch.dtype, max_cond: object, name: str,
                     diag_reg: float) -> None:
    """:class:`SingularKernelError` with the measured condition number if it exceeds the solvers' bound."""
    threshold = _threshold(size, dtype, max_cond)
    lo, hi = float(lam.min()), float(lam.max())
    cond = hi / lo if lo > 0 and hi > 0 else math.inf
    if cond > threshold:
        what = name if diag_reg == 0 else f"{name} + diag_reg I (diag_reg={diag_reg:g})"
        raise SingularKernelError(
            f"{what} is singular or numerically rank-deficient: condition number {cond:.3e} > threshold "
            f"{threshold:.3e} (smallest eigenvalue {lo:.3e}, largest {hi:.3e}); duplicated inputs make the kernel "
            f"singular. Pass diag_reg=... (relative to the mean diagonal; e.g. 1e-10) to predict with K + delta I."
        )


def _symmetric(c: torch.Tensor) -> torch.Tensor:
    return (c + c.mT) / 2


# ---------------------------------------------------------------------------------------------
# public API


def gp_inference(
    k_train_train: torch.Tensor,
    y_train: torch.Tensor,
    k_test_train: torch.Tensor,
    k_test_test: torch.Tensor | None = None,
    *,
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
    ``k_test_train = k_train_train`` and ``diag_reg = 0`` the posterior on the training points is
    ``N(Y, 0)``.

    Computed by a Cholesky factorisation ``K_r = L L^T`` (``cov = K** - W^T W``,
    ``W = L^-1 K_X*``), after the condition-number guard of the module docstring.
    """
    K = _square(k_train_train, "k_train_train")
    Y = _targets(y_train, K, "k_train_train")
    n = K.shape[0]
    Kx = _cross(k_test_train, "k_test_train", K, "k_train_train", n, None)
    m = Kx.shape[0]
    Ktt = None
    if k_test_test is not None:
        Ktt = _square(k_test_test, "k_test_test")
        check_same_device_dtype(K, Ktt, "k_train_train", "k_test_test")
        if Ktt.shape[0] != m:
            raise ValueError(f"k_test_test must have shape ({m}, {m}) (the rows of k_test_train), "
                             f"got {tuple(Ktt.shape)}")
        _check_joint(K, Kx, Ktt, "the NNGP kernels")
    reg, absolute = _diag_reg(diag_reg, diag_reg_absolute_scale)
    Kr = _regularise(K, reg, absolute)
    _refuse_singular(torch.linalg.eigvalsh(Kr.detach()), n, K.dtype, max_cond, "k_train_train", reg)
    L, info = torch.linalg.cholesky_ex(Kr)
    if int(info) != 0:
        raise SingularKernelError(f"k_train_train is not positive definite: Cholesky failed at column {int(info)}")
    mean = Kx @ torch.cholesky_solve(Y, L)
    mean = check_finite_result(mean.reshape((m,) + tuple(y_train.shape[1:])), "gp_inference mean")
    cov = None
    if Ktt is not None:
        W = torch.linalg.solve_triangular(L, Kx.T, upper=False)
        cov = check_finite_result(_symmetric(Ktt - W.T @ W), "gp_inference covariance")
    return GaussianPrediction(mean=mean, covariance=cov, times=None)


def _triple(value: object, name: str, length: int, fields: str) -> tuple:
    if isinstance(value, torch.Tensor) or not isinstance(value, Sequence) or len(value) != length:
        raise TypeError(f"{name} must be a tuple {fields} of tensors, got {type(value).__name__}"
                        + (f" of length {len(value)}" if isinstance(value, Sequence) else ""))
    return tuple(value)


def ensemble_predict(
    nngp: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None,
    ntk: tuple[torch.Tensor, torch.Tensor] | None,
    y_train: torch.Tensor,
    t: object,
    *,
    lr: float = 1.0,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    compute_cov: bool = True,
    max_cond: float | None = None,
) -> GaussianPrediction:
    """Mean and covariance on test points of the infinite ensemble of infinitely wide networks trained by
    gradient flow on the MSE ``(1/n) sum |h - y|^2`` with learning rate ``lr``, at times ``t``.

    ``nngp = (K, K*X, K**)``: the NNGP kernel (the prior of the initial outputs) on train-train
    (n, n), test-train (m, n) and test-test (m, m); ``K**`` may be None when ``compute_cov`` is
    False, and ``nngp`` itself may be None when moreover ``ntk`` is given.
    ``ntk = (Theta, Theta*X)``: the NTK on train-train and test-train, the kernel of training (all
    layers); ``ntk=None`` trains the readout layer only, whose NTK is the NNGP kernel.
    ``y_train`` (n,) or (n, O); ``t`` a number or 1-D array of times >= 0, ``inf`` allowed.

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
    lr = _check_lr(lr)
    reg, absolute = _diag_reg(diag_reg, diag_reg_absolute_scale)
    if ntk is None and nngp is None:
        raise ValueError("nngp and ntk are both None: give nngp = (K, K*X, K**) (readout-only training) "
                         "and/or ntk = (Theta, Theta*X)")
    if nngp is None and compute_cov:
        raise ValueError("nngp is None but compute_cov=True: the covariance needs the NNGP kernel "
                         "(K, K*X, K**) of the initial outputs")

    K = Kx = Ktt = None
    if nngp is not None:
        k, kx, ktt = _triple(nngp, "nngp", 3, "(K, K*X, K**)")
        K = _square(k, "nngp[0]")
        n = K.shape[0]
        Kx = _cross(kx, "nngp[1]", K, "nngp[0]", n, None)
        if ktt is not None:
            Ktt = _square(ktt, "nngp[2]")
            check_same_device_dtype(K, Ktt, "nngp[0]", "nngp[2]")
            if Ktt.shape[0] != Kx.shape[0]:
                raise ValueError(f"nngp[2] (K**) must have shape ({Kx.shape[0]}, {Kx.shape[0]}) (the rows of K*X), "
                                 f"got {tuple(Ktt.shape)}")
        elif compute_cov:
            raise ValueError("nngp[2] (K**, the test-test NNGP kernel) is None but compute_cov=True")
    if ntk is not None:
        th, thx = _triple(ntk, "ntk", 2, "(Theta, Theta*X)")
        T = _square(th, "ntk[0]")
        if K is not None:
            check_same_device_dtype(K, T, "nngp[0]", "ntk[0]")
            if T.shape != K.shape:
                raise ValueError(f"ntk[0] must have the shape of nngp[0] {tuple(K.shape)}, got {tuple(T.shape)}")
        Tx = _cross(thx, "ntk[1]", T, "ntk[0]", T.shape[0], None if Kx is None else Kx.shape[0])
        train, train_x, train_name = T, Tx, "ntk[0]"
    else:
        assert K is not None and Kx is not None
        train, train_x, train_name = K, Kx, "nngp[0]"
    Y = _targets(y_train, train, train_name)
    n, m = train.shape[0], train_x.shape[0]
    if compute_cov:
        assert K is not None and Kx is not None and Ktt is not None
        _check_joint(K, Kx, Ktt, "nngp")

    t_np = _times(t, "t")
    times = torch.as_tensor(t_np, dtype=train.dtype, device=train.device)
    lam, V = torch.linalg.eigh(_regularise(train, reg, absolute))
    _refuse_singular(lam.detach(), n, train.dtype, max_cond, train_name, reg)
    c = 2 * lr / n
    inf = torch.isinf(times)[:, None]
    finite_t = torch.where(inf, torch.zeros_like(times[:, None]), times[:, None])  # (T, 1)

    def phi(rate: float) -> torch.Tensor:
        """``(1 - exp(-rate lambda t)) / lambda`` per time and eigenvalue, ``1 / lambda`` at t = inf: (T, n)."""
        finite = -torch.expm1(-rate * lam[None, :] * finite_t) / lam[None, :]
        return torch.where(inf, (1 / lam)[None, :].expand_as(finite), finite)

    G = train_x @ V  # (m, n): the test-train kernel in the eigenbasis
    f = phi(c)
    mean = (G[None] * f[:, None, :]) @ (V.T @ Y)[None]  # (T, m, O)
    mean = check_finite_result(mean.reshape((len(t_np), m) + tuple(y_train.shape[1:])), "ensemble_predict mean")
    cov = None
    if compute_cov:
        assert K is not None and Kx is not None and Ktt is not None
        if ntk is None:  # readout only: Theta = K, cov = K** - K*X K^-1 (I - exp(-2 c K t)) K_X*
            cov = Ktt[None] - (G[None] * phi(2 * c)[:, None, :]) @ G.T[None]
        else:  # Lee et al. 2019 eq (16): K** - A K_X* - (A K_X*)^T + A K A^T, A = G diag(phi) V^T
            Gf = G[None] * f[:, None, :]  # (T, m, n)
            cross = Gf @ (V.T @ Kx.T)[None]  # A_t K_X*: (T, m, m)
            quad = Gf @ (V.T @ K @ V)[None] @ Gf.mT
            cov = Ktt[None] - cross - cross.mT + quad
        cov = check_finite_result(_symmetric(cov), "ensemble_predict covariance")
    return GaussianPrediction(mean=mean, covariance=cov, times=times)


def analytic_ensemble(
    model: nn.Module,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    t: object,
    *,
    get: str = "ntk",
    lr: float = 1.0,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    compute_cov: bool = True,
    max_cond: float | None = None,
) -> GaussianPrediction:
    """:func:`ensemble_predict` with the infinite-width kernels of ``model`` (:func:`ntkcheck.analytic_nngp`,
    :func:`ntkcheck.analytic_ntk`) on ``x_train`` and ``x_test``.

    ``get="ntk"``: every trainable layer trains (the NTK ensemble, Lee et al. 2019 eq (16));
    ``get="nngp"``: the readout layer only (the NNGP ensemble, at ``t = inf`` the Bayesian
    posterior).  ``y_train`` is (n, O) for a model with O > 1 outputs ((n,) or (n, 1) for one);
    the analytic kernels are ``K (x) I_O`` and their one-output block is used.
    """
    check_choice(get, "get", ("ntk", "nngp"))
    out = getattr(model, "out_features", None)
    if isinstance(y_train, torch.Tensor) and isinstance(out, int) and out > 1 and (
            y_train.ndim != 2 or y_train.shape[1] != out):
        raise ValueError(f"y_train must have shape (n, {out}) for a model with {out} outputs, "
                         f"got {tuple(y_train.shape)}")

    for x, name in ((x_train, "x_train"), (x_test, "x_test")):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of model inputs, got {type(x).__name__}")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(f"x_test rows must have the shape of x_train rows {tuple(x_train.shape[1:])}, "
                         f"got {tuple(x_test.shape[1:])}")
    x_all = torch.cat([x_train, x_test])
    n = x_train.shape[0]

    def block(k: torch.Tensor) -> torch.Tensor:  # the one-output block of K (x) I_O
        return k[:, :, 0, 0] if k.ndim == 4 else k

    nngp = None
    if compute_cov or get == "nngp":
        k_all = block(analytic_nngp(model, x_all))
        nngp = (k_all[:n, :n], k_all[n:, :n], k_all[n:, n:] if compute_cov else None)
    ntk = None
    if get == "ntk":
        t_all = block(analytic_ntk(model, x_all))
        ntk = (t_all[:n, :n], t_all[n:, :n])
    return ensemble_predict(nngp, ntk, y_train, t, lr=lr, diag_reg=diag_reg,
                            diag_reg_absolute_scale=diag_reg_absolute_scale, compute_cov=compute_cov,
                            max_cond=max_cond)
