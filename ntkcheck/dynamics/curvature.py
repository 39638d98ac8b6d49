"""The step-size check of :func:`ntkcheck.dynamics.training.train`: lambda_max of the Gauss-Newton matrix
``J^T H J`` of the linearized model, by Lanczos on matrix-vector products (seed 000 §3.2 eq (2)).

For full-batch gradient descent on the linearized model, the loss Hessian in parameter space at init is
the Gauss-Newton matrix ``J^T H J`` with ``H = d^2 loss / dh^2`` at the initial outputs; its nonzero
eigenvalues are those of ``K^{1/2} H K^{1/2}`` (K = J J^T, the empirical NTK on the training set).
Gradient descent diverges along the top eigenvector when ``lr >= 2 / lambda_max`` — for the MSE
``(1/n) sum (h - y)^2``, ``H = (2/n) I`` and ``lambda_max = (2/n) lambda_max(K)``.  Neither K nor J is
formed: Lanczos (ARPACK ``eigsh``) runs on Gauss-Newton-vector products (a double backward for ``J v``,
a backward for ``J^T w``, one forward graph for all).  :func:`sharpness` converges to rounding; the
check of :func:`ntkcheck.dynamics.training.train` stops at the relative residual :data:`CHECK_RTOL`.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, LinearOperator, eigsh
from torch import nn
from torch.func import functional_call
from torch.nn.utils import parameters_to_vector

from ntkcheck.dynamics._training_args import LossFunction, _aligned, _data, _loss_value, _trainable
from ntkcheck.dynamics.losses import Loss, LpLoss, Mixture
from ntkcheck.errors import CurvatureError

__all__ = ["CHECK_RTOL", "sharpness"]


CHECK_RTOL = 1e-3
"""Accuracy of the step-size check's estimate: its Lanczos stops when the top Ritz value theta has a residual
``||M q - theta q|| <= CHECK_RTOL theta``; the check then warns at ``lr theta (1 + CHECK_RTOL) >= 2``."""
_CHECK_NCV = 4  # Lanczos vectors of the check: 5-7 Gauss-Newton products when the top eigenvalue is isolated


def _traceless(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` leaving no trace: BatchNorm updates copies of its running statistics, and the random number
    generators are restored, so the next training step draws the same dropout mask."""
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        out: torch.Tensor = functional_call(model, buffers, (x,))
    return out


def _smallest_residual(h: torch.Tensor, y: torch.Tensor) -> str:
    if not y.is_floating_point():
        return ""
    r = (h.detach() - y).reshape(-1).abs()
    i = int(torch.argmin(r))
    return f"; the smallest |h_i - y_i| at the current outputs is {float(r[i]):.3e} (entry {i})"


def _nonsmooth_p(loss: Loss) -> float | None:
    """The smallest p < 2 among the L^p terms of a library loss (None if there is none)."""
    terms = loss.terms if isinstance(loss, Mixture) else [(1.0, loss)]
    ps = [term.p for _, term in terms if isinstance(term, LpLoss) and term.p < 2]
    return min(ps) if ps else None


class _GaussNewton:
    """Products with ``M = J^T H J`` at the current parameters (P x P, P = trainable parameters).

    J: Jacobian of the model's outputs on x (in ``y``'s shape), H: the loss Hessian in h.  One forward graph
    serves every product: ``J^T u`` is a backward pass, ``J v`` the derivative in u of the (linear) ``J^T u``
    (double backward), ``H w`` a Hessian-vector product of the loss alone.  Build it with grad enabled.
    """

    def __init__(
        self, model: nn.Module, params: list[nn.Parameter], x: torch.Tensor, y: torch.Tensor, loss: LossFunction
    ) -> None:
        self.params, self.loss, self.y = params, loss, y
        self.h = _aligned(_traceless(model, x), y, "y")
        if not bool(torch.isfinite(self.h.detach()).all()):
            raise FloatingPointError("the model's outputs on x are NaN/inf: no curvature to measure")
        self.u = torch.zeros_like(self.h, requires_grad=True)
        jtu = torch.autograd.grad(self.h, params, self.u, create_graph=True, allow_unused=True)
        self.jtu = [(i, g) for i, g in enumerate(jtu) if g is not None and g.requires_grad]
        self.hd = self.h.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(_loss_value(loss, self.hd, y), self.hd, create_graph=True)
        self.g = g if g.requires_grad else None  # None: the loss is linear in h
        self.dim = sum(p.numel() for p in params)
        self.products = 0

    def _split(self, v: np.ndarray) -> list[torch.Tensor]:
        out, start = [], 0
        for p in self.params:
            out.append(torch.from_numpy(v[start : start + p.numel()]).to(p.device, p.dtype).reshape(p.shape))
            start += p.numel()
        return out

    def matvec(self, v: np.ndarray) -> np.ndarray:
        """``M v`` (one counted product)."""
        self.products += 1
        if not self.jtu or self.g is None:
            return np.zeros(self.dim)
        parts = self._split(np.asarray(v, dtype=np.float64).reshape(-1))
        (jv,) = torch.autograd.grad(
            [g for _, g in self.jtu], self.u, [parts[i] for i, _ in self.jtu], retain_graph=True, allow_unused=True
        )
        if jv is None:
            return np.zeros(self.dim)
        (hjv,) = torch.autograd.grad(self.g, self.hd, jv, retain_graph=True, allow_unused=True)
        if hjv is None:
            return np.zeros(self.dim)
        if not bool(torch.isfinite(hjv).all()):
            raise CurvatureError(
                f"loss {_loss_name(self.loss)} has no finite curvature at the current outputs: its Hessian in h "
                f"is not finite (a loss like |r|^p with p < 2 has curvature p (p-1) |r|^(p-2), unbounded at zero "
                f"residual){_smallest_residual(self.h, self.y)}"
            )
        jt = torch.autograd.grad(self.h, self.params, hjv, retain_graph=True, allow_unused=True)
        out = parameters_to_vector(
            [torch.zeros_like(p) if t is None else t for p, t in zip(self.params, jt, strict=True)]
        )
        return np.asarray(out.detach().to("cpu", torch.float64).numpy())


def _loss_name(loss: LossFunction) -> str:
    return repr(loss) if isinstance(loss, Loss) else getattr(loss, "__name__", type(loss).__name__)


def _lambda_max(op: _GaussNewton, tol: float, ncv: int) -> float:
    """Largest (algebraic) eigenvalue of ``op``: Lanczos (ARPACK ``eigsh``, ``which="LA"``) to relative residual
    ``tol`` with ``ncv`` vectors; a matrix of at most ``ncv`` columns is formed from its products."""
    if op.dim <= ncv:
        M = np.stack([op.matvec(e) for e in np.eye(op.dim)], axis=1)
        return float(np.linalg.eigvalsh(0.5 * (M + M.T))[-1])
    v0 = np.random.default_rng(0).standard_normal(op.dim)
    A = LinearOperator((op.dim, op.dim), matvec=op.matvec, dtype=np.float64)
    try:
        value = eigsh(A, k=1, which="LA", tol=tol, ncv=ncv, v0=v0, maxiter=max(100, op.dim), return_eigenvectors=False)
    except ArpackNoConvergence as err:
        raise FloatingPointError(
            f"Lanczos (ARPACK) did not reach the relative residual {tol:g} for lambda_max of J^T H J after "
            f"{op.products} products"
        ) from err
    except ArpackError:  # "starting vector is zero": M v0 = 0
        if np.any(op.matvec(v0)):
            raise
        return 0.0  # M = 0: outputs independent of the parameters, or a loss without curvature at h
    return float(value[0])


def _measure(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: LossFunction,
    params: list[nn.Parameter],
    tol: float,
    ncv: int,
) -> float:
    """lambda_max of ``J^T H J`` at the current parameters, with the model in its current mode (see
    :func:`sharpness`); raise :class:`CurvatureError` where the loss has no finite curvature."""
    with torch.enable_grad():
        op = _GaussNewton(model, params, x, y, loss)
        p = _nonsmooth_p(loss) if isinstance(loss, Loss) else None
        if p is not None and y.is_floating_point() and bool(((op.h.detach() - y) == 0).any()):
            raise CurvatureError(
                f"loss {loss!r} has unbounded curvature at zero residual (p = {p:g} < 2: d^2/dr^2 |r|^p = "
                f"p (p-1) |r|^(p-2)){_smallest_residual(op.h, y)}: no finite lambda_max, no step-size limit"
            )
        return _lambda_max(op, tol, ncv)


def sharpness(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: LossFunction) -> float:
    """lambda_max of the loss Hessian of the linearized model at the current parameters.

    The largest eigenvalue of the Gauss-Newton matrix ``J^T H J`` (J: Jacobian of ``model(x)`` in the
    parameters, ``H = d^2 loss(h, y) / dh^2`` at ``h = model(x)``), the parameter-space Hessian of
    ``loss(f_lin(x; theta), y)``; its nonzero spectrum is that of ``K^{1/2} H K^{1/2}`` with K = J J^T the
    empirical NTK on ``x``.  Gradient descent with step ``lr`` is stable on it iff ``lr < 2 / lambda_max``.
    Computed without forming K: Lanczos (ARPACK) on Gauss-Newton-vector products to ARPACK's relative
    residual ``100 eps`` of the parameters' dtype (a 1e-10 relative agreement with the dense eigenvalue in
    float64).

    It is the *largest algebraic* eigenvalue: for a loss with negative curvature (H indefinite) the
    spectrum has negative eigenvalues too, possibly larger in magnitude; those directions grow under
    gradient descent at any step size and set no step-size limit (lambda_max <= 0: no limit).

    The model is evaluated in its current mode and left untouched: BatchNorm in train mode uses the batch
    statistics of ``x`` (exactly the function full-batch training differentiates) without updating its
    running statistics; dropout uses one mask, the one the next training step draws (the random number
    generators are restored).

    Raises:
        CurvatureError: (a ``ValueError``) the loss has no finite curvature at ``model(x)``: an L^p term with
            p < 2 at a zero residual (``p (p-1) |r|^(p-2)`` is unbounded there), or any loss whose Hessian
            products are not finite; the message names the loss and the smallest ``|h_i - y_i|``.
    """
    params = _trainable(model)
    x, y = _data(model, params[0], x, y, "x", "y")
    if not callable(loss):
        raise TypeError(f"loss must be callable as loss(h, y), got {type(loss).__name__}")
    return _measure(model, x, y, loss, params, 100 * torch.finfo(params[0].dtype).eps, 20)
