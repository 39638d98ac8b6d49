"""Training loops for networks and their linearizations (seed 000 §3.2 eq (2), §4).

:func:`train` runs gradient descent (full batch), minibatch SGD or Adam on any
``nn.Module`` — an :class:`ntkcheck.MLP`, a :class:`ntkcheck.dynamics.linearization.Linearized`
model, a transformed network — with any loss ``loss(h, y) -> 0-dim tensor``.

Numerical honesty:

* **Step-size check** (``check_lr``).  For full-batch gradient descent on the
  linearized model, the loss Hessian in parameter space at init is the
  Gauss-Newton matrix ``J^T H J`` with ``H = d^2 loss / dh^2`` at the initial outputs;
  its nonzero eigenvalues are those of ``K^{1/2} H K^{1/2}`` (K = J J^T, the empirical
  NTK on the training set).  Gradient descent diverges along the top eigenvector when
  ``lr >= 2 / lambda_max`` — for the MSE ``(1/n) sum (h - y)^2``, ``H = (2/n) I``
  and ``lambda_max = (2/n) lambda_max(K)``.  Neither K nor J is formed: Lanczos
  (ARPACK ``eigsh``) runs on Gauss-Newton-vector products (a double backward for
  ``J v``, a backward for ``J^T w``, one forward graph for all).  :func:`sharpness`
  converges to rounding; :func:`train` stops at the relative residual
  :data:`CHECK_RTOL` (5-7 products, each about 1.5 training steps, when the top
  eigenvalue is isolated, as for NTKs) and warns with :class:`DivergenceWarning`
  *before* training when ``lr theta (1 + CHECK_RTOL) >= 2``: the Ritz value theta is a
  lower bound of lambda_max, and converged it lies within ``CHECK_RTOL theta`` of it,
  the stated safety margin.  Measured on an ``MLP(8, [256, 256], 1)`` in float64 (one
  thread): 16% of a 50-step run at N = 64 and at N = 512, where the dense empirical
  NTK it replaces cost 6% and 31% (233% for ``MLP(8, [64], 1)`` at N = 512, now 23%).
  The check is exact for quadratic losses on a linearized model; for a nonlinear
  network or a non-quadratic loss it describes the start of training only
  (``|r|^p`` with p > 2 gets flatter as the residual shrinks, so the check is
  conservative there).  It runs for plain full-batch SGD (``"gd"``, ``"sgd"`` with
  the full batch, or a ``torch.optim.SGD`` without momentum); minibatches, momentum
  and Adam are not checked.  A loss without finite curvature at the initial outputs
  (``|r|^p`` with p < 2 at r = 0: :class:`CurvatureError`) is not checked, and
  :attr:`TrainResult.lr_check_skipped` says why.
* **Any model that trains.**  The check sees the model in its current mode, as the
  first step does: BatchNorm in train mode with the batch statistics of the full
  batch (the function full-batch gradient descent differentiates), dropout with the
  mask of the first step.  Forwards that are not training steps (the input checks,
  the check, test losses, full-loss evaluations between minibatches, the final loss)
  leave no trace: BatchNorm updates copies of its running statistics and the random
  number generators are restored, so the run equals plain gradient descent step for
  step.
* **No silent NaN.**  When a loss (full or minibatch) becomes NaN or infinite,
  training stops and :class:`TrainingDivergedError` (a ``FloatingPointError``)
  is raised naming the step and the last finite loss; its ``result`` attribute
  holds the :class:`TrainResult` recorded so far.

Conventions: step ``t`` of the history is the loss at the parameters after ``t``
optimizer steps (step 0 = init); the final point is always recorded.  Outputs
are reshaped to the shape of floating-point targets (so (N,) targets meet (N, 1)
outputs without broadcasting); integer targets (class labels) get the raw (N, O)
outputs.  Data are moved to the device of the model's parameters.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, LinearOperator, eigsh
from torch import nn
from torch.func import functional_call

from ntkcheck._support.validation import check_inputs, check_positive_int
from ntkcheck.dynamics.flows import DivergenceWarning
from ntkcheck.dynamics.losses import Loss as _LossBase
from ntkcheck.dynamics.losses import LpLoss, Mixture
from ntkcheck.errors import CurvatureError, TrainingDivergedError

OPTIMIZERS = ("gd", "sgd", "adam")

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class History:
    """Losses recorded every ``record_every`` steps (and at the last step)."""

    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    test_loss: list[float] | None = None


@dataclass
class TrainResult:
    """What :func:`train` did.

    Attributes:
        model: the trained module (trained in place: the same object that was passed).
        steps_run: optimizer steps taken.
        converged: the full training loss fell below ``loss_threshold``.
        final_loss: the full training loss at the final parameters.
        history: recorded losses.
        sharpness: lambda_max estimated by the step-size check, or ``None`` when not checked.
        lr_check_skipped: why the step-size check did not run although it applied (the loss has no finite
            curvature at the initial outputs), else ``None``.
    """

    model: nn.Module
    steps_run: int
    converged: bool
    final_loss: float
    history: History
    sharpness: float | None = None
    lr_check_skipped: str | None = None

    @property
    def lr_limit(self) -> float | None:
        """2 / lambda_max, the gradient-descent stability limit (``None`` when not measured or lambda_max <= 0)."""
        if self.sharpness is None or not self.sharpness > 0:
            return None
        return 2.0 / self.sharpness


# -- validation helpers ----------------------------------------------------------------------------


def _in_features(model: nn.Module) -> int | None:
    for m in model.modules():
        if hasattr(m, "in_features") and isinstance(m.in_features, int):
            return m.in_features
    return None


def _trainable(model: object) -> list[nn.Parameter]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters (requires_grad=True): nothing to train")
    return params


def _data(model: nn.Module, ref: torch.Tensor, x: object, y: object, xname: str, yname: str):
    """Check (x, y), move them to the model's device; return them."""
    check_inputs(x, xname, features=_in_features(model))
    assert isinstance(x, torch.Tensor)
    if x.dtype != ref.dtype:
        raise TypeError(f"{xname} must have the dtype of the model's parameters ({ref.dtype}), got {x.dtype}")
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{yname} must be a torch.Tensor, got {type(y).__name__}")
    if y.ndim == 0 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"{yname} must have one row per row of {xname} ({x.shape[0]}), got shape {tuple(y.shape)}"
        )
    if y.is_floating_point():
        if y.dtype != ref.dtype:
            raise TypeError(f"{yname} must have the dtype of the model's parameters ({ref.dtype}), got {y.dtype}")
        if not bool(torch.isfinite(y).all()):
            raise ValueError(f"{yname} contains {int((~torch.isfinite(y)).sum())} NaN or infinite entries")
    elif y.is_complex():
        raise TypeError(f"{yname} must be a real tensor, got {y.dtype}")
    return x.to(ref.device), y.to(ref.device)


def _aligned(out: torch.Tensor, y: torch.Tensor, yname: str) -> torch.Tensor:
    """The outputs in the shape the loss sees: ``y``'s shape for floating targets, raw otherwise."""
    if not y.is_floating_point():
        return out
    if out.numel() != y.numel():
        raise ValueError(
            f"{yname} has shape {tuple(y.shape)} but the model's outputs have shape {tuple(out.shape)}: "
            f"{yname} needs {out.numel()} entries, one per output"
        )
    return out.reshape(y.shape)


def _check_real(value: object, name: str, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a finite float, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value) or (positive and value <= 0) or (not positive and value < 0):
        raise ValueError(f"{name} must be a finite float {'> 0' if positive else '>= 0'}, got {value}")
    return value


def _loss_value(loss: Loss, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    value = loss(h, y)
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        raise TypeError(
            f"loss must return a scalar (0-dim) tensor, got "
            f"{type(value).__name__}{'' if not isinstance(value, torch.Tensor) else ' of shape ' + str(tuple(value.shape))}"
        )
    return value.reshape(())


# -- the step-size check ---------------------------------------------------------------------------


CHECK_RTOL = 1e-3
"""Accuracy of the step-size check's estimate: its Lanczos stops when the top Ritz value theta has a residual
``||M q - theta q|| <= CHECK_RTOL theta``; the check then warns at ``lr theta (1 + CHECK_RTOL) >= 2``."""
_CHECK_NCV = 4  # Lanczos vectors of the check: 5-7 Gauss-Newton products when the top eigenvalue is isolated


def _traceless(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` leaving no trace: BatchNorm updates copies of its running statistics, and the random number
    generators are restored, so the next training step draws the same dropout mask."""
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        return functional_call(model, buffers, (x,))


def _smallest_residual(h: torch.Tensor, y: torch.Tensor) -> str:
    if not y.is_floating_point():
        return ""
    r = (h.detach() - y).reshape(-1).abs()
    i = int(torch.argmin(r))
    return f"; the smallest |h_i - y_i| at the current outputs is {float(r[i]):.3e} (entry {i})"


def _nonsmooth_p(loss: _LossBase) -> float | None:
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

    def __init__(self, model: nn.Module, params: list[nn.Parameter], x: torch.Tensor, y: torch.Tensor,
                 loss: Loss) -> None:
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
            out.append(torch.from_numpy(v[start:start + p.numel()]).to(p.device, p.dtype).reshape(p.shape))
            start += p.numel()
        return out

    def matvec(self, v: np.ndarray) -> np.ndarray:
        self.products += 1
        if not self.jtu or self.g is None:
            return np.zeros(self.dim)
        parts = self._split(np.asarray(v, dtype=np.float64).reshape(-1))
        (jv,) = torch.autograd.grad([g for _, g in self.jtu], self.u, [parts[i] for i, _ in self.jtu],
                                    retain_graph=True, allow_unused=True)
        if jv is None:
            return np.zeros(self.dim)
        (hjv,) = torch.autograd.grad(self.g, self.hd, jv, retain_graph=True, allow_unused=True)
        if hjv is None:
            return np.zeros(self.dim)
        if not bool(torch.isfinite(hjv).all()):
            raise CurvatureError(
                f"loss {_loss_name(self.loss)} has no finite curvature at the current outputs: its Hessian in h "
                f"is not finite (a loss like |r|^p with p < 2 has curvature p (p-1) |r|^(p-2), unbounded at zero "
                f"residual){_smallest_residual(self.h, self.y)}")
        jt = torch.autograd.grad(self.h, self.params, hjv, retain_graph=True, allow_unused=True)
        out = torch.cat([(torch.zeros_like(p) if t is None else t).reshape(-1) for p, t in zip(self.params, jt)])
        return out.detach().to("cpu", torch.float64).numpy()


def _loss_name(loss: Loss) -> str:
    return repr(loss) if isinstance(loss, _LossBase) else getattr(loss, "__name__", type(loss).__name__)


def _lambda_max(op: _GaussNewton, tol: float, ncv: int) -> float:
    """Largest (algebraic) eigenvalue of ``op``: Lanczos (ARPACK ``eigsh``, ``which="LA"``) to relative residual
    ``tol`` with ``ncv`` vectors; a matrix of at most ``ncv`` columns is formed from its products."""
    if op.dim <= ncv:
        M = np.stack([op.matvec(e) for e in np.eye(op.dim)], axis=1)
        return float(np.linalg.eigvalsh(0.5 * (M + M.T))[-1])
    v0 = np.random.default_rng(0).standard_normal(op.dim)
    A = LinearOperator((op.dim, op.dim), matvec=op.matvec, dtype=np.float64)
    try:
        value = eigsh(A, k=1, which="LA", tol=tol, ncv=ncv, v0=v0, maxiter=max(100, op.dim),
                      return_eigenvectors=False)
    except ArpackNoConvergence as err:
        raise FloatingPointError(
            f"Lanczos (ARPACK) did not reach the relative residual {tol:g} for lambda_max of J^T H J after "
            f"{op.products} products") from err
    except ArpackError:  # "starting vector is zero": M v0 = 0
        if np.any(op.matvec(v0)):
            raise
        return 0.0  # M = 0: outputs independent of the parameters, or a loss without curvature at h
    return float(value[0])


def _measure(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: Loss, params: list[nn.Parameter],
             tol: float, ncv: int) -> float:
    """lambda_max of ``J^T H J`` at the current parameters, with the model in its current mode (see
    :func:`sharpness`); raise :class:`CurvatureError` where the loss has no finite curvature."""
    with torch.enable_grad():
        op = _GaussNewton(model, params, x, y, loss)
        p = _nonsmooth_p(loss) if isinstance(loss, _LossBase) else None
        if p is not None and y.is_floating_point() and bool(((op.h.detach() - y) == 0).any()):
            raise CurvatureError(
                f"loss {loss!r} has unbounded curvature at zero residual (p = {p:g} < 2: d^2/dr^2 |r|^p = "
                f"p (p-1) |r|^(p-2)){_smallest_residual(op.h, y)}: no finite lambda_max, no step-size limit")
        return _lambda_max(op, tol, ncv)


def sharpness(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: Loss) -> float:
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


# -- training ----------------------------------------------------------------------------------------


def _make_optimizer(
    optimizer: object, lr: float | None, params: list[nn.Parameter], model: nn.Module
) -> tuple[torch.optim.Optimizer, str, float | None]:
    """(optimizer, kind, lr of plain SGD or None)."""
    if isinstance(optimizer, torch.optim.Optimizer):
        if lr is not None:
            raise ValueError("lr must be None when optimizer is an Optimizer instance (its param groups carry lr)")
        if isinstance(optimizer, torch.optim.LBFGS):
            raise TypeError("optimizer LBFGS needs a closure and is not supported by train()")
        owned = {id(p) for p in model.parameters()}
        stray = sum(1 for g in optimizer.param_groups for p in g["params"] if id(p) not in owned)
        if stray:
            raise ValueError(
                f"optimizer holds {stray} tensors that are not parameters of model (built for another module?)"
            )
        plain = type(optimizer) is torch.optim.SGD and all(
            g.get("momentum", 0) == 0 and g.get("weight_decay", 0) == 0 for g in optimizer.param_groups
        )
        lr_plain = max(float(g["lr"]) for g in optimizer.param_groups) if plain else None
        return optimizer, "instance", lr_plain
    if not isinstance(optimizer, str):
        raise TypeError(f"optimizer must be one of {list(OPTIMIZERS)} or a torch.optim.Optimizer instance (built on "
                        f"the model's parameters), got {type(optimizer).__name__} {optimizer!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)} or a torch.optim.Optimizer, got {optimizer!r}")
    if lr is None:
        raise TypeError(f"lr is required with optimizer={optimizer!r}")
    lr = _check_real(lr, "lr", positive=True)
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr), optimizer, None
    return torch.optim.SGD(params, lr=lr, momentum=0.0), optimizer, lr


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: Loss,
    *,
    optimizer: str | torch.optim.Optimizer = "gd",
    lr: float | None = None,
    steps: int,
    batch_size: int | None = None,
    loss_threshold: float | None = None,
    record_every: int = 1,
    x_test: torch.Tensor | None = None,
    y_test: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    check_lr: bool = True,
) -> TrainResult:
    """Train ``model`` in place on ``(x, y)`` with ``loss``; returns a :class:`TrainResult`.

    Args:
        model: any ``nn.Module`` (e.g. :class:`ntkcheck.MLP` or a ``Linearized`` model);
            its trainable parameters are optimized, on their device.
        x: (N, d) inputs; y: targets with N rows (floating: as many entries as outputs;
            integer: class labels for the loss).
        loss: callable ``loss(h, y) -> 0-dim tensor`` (e.g. the classes of ``ntkcheck.dynamics.losses``).
        optimizer: ``"gd"`` (full-batch SGD, no momentum), ``"sgd"`` (the same on
            minibatches of ``batch_size``: every epoch is a fresh permutation drawn
            with ``generator``, a last incomplete batch is skipped),
            ``"adam"``, or a ``torch.optim.Optimizer`` built on ``model``'s parameters
            (then ``lr`` must be None).
        lr: step size (> 0, finite), required with a named optimizer.
        steps: budget of optimizer steps (>= 1).
        batch_size: minibatch size in [1, N]; None = full batch (``"gd"`` allows only that).
        loss_threshold: stop as soon as the full training loss is < this (``converged``).
        record_every: record the losses every this many steps (and at the last).
        x_test, y_test: test data; the test loss is recorded with the training loss.
        generator: ``torch.Generator`` for the minibatch order (reproducible runs).
        progress: show a tqdm bar on stderr.
        check_lr: warn (:class:`DivergenceWarning`) before full-batch plain gradient
            descent when ``lr >= 2 / lambda_max``, estimated to :data:`CHECK_RTOL` (see the
            module docstring).

    Raises:
        TrainingDivergedError: (a ``FloatingPointError``) a loss became NaN/inf; ``.result``
            holds the history so far.
    """
    params = _trainable(model)
    ref = params[0]
    x, y = _data(model, ref, x, y, "x", "y")
    n = x.shape[0]
    if not callable(loss):
        raise TypeError(f"loss must be callable as loss(h, y), got {type(loss).__name__}")
    if (x_test is None) != (y_test is None):
        raise ValueError("x_test and y_test must be given together")
    if x_test is not None:
        x_test, y_test = _data(model, ref, x_test, y_test, "x_test", "y_test")
    steps = check_positive_int(steps, "steps")
    record_every = check_positive_int(record_every, "record_every")
    if batch_size is not None:
        batch_size = check_positive_int(batch_size, "batch_size")
        if batch_size > n:
            raise ValueError(f"batch_size must be in [1, N={n}] (the number of training rows), got {batch_size}")
    if loss_threshold is not None:
        loss_threshold = _check_real(loss_threshold, "loss_threshold", positive=False)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    for flag, name in ((progress, "progress"), (check_lr, "check_lr")):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    opt, kind, plain_lr = _make_optimizer(optimizer, lr, params, model)
    if kind == "gd" and batch_size not in (None, n):
        raise ValueError(f"batch_size must be None (or N={n}) with optimizer='gd' (full batch); use 'sgd'")
    full_batch = batch_size is None or batch_size == n
    with torch.no_grad():  # shapes and the loss's return type, before anything runs
        for xs, ys, xname, yname in ((x, y, "x", "y"), (x_test, y_test, "x_test", "y_test")):
            if xs is None:
                continue
            out = _traceless(model, xs)
            if not bool(torch.isfinite(out).all()):
                raise FloatingPointError(f"the model's outputs on {xname} are already NaN/inf before training")
            _loss_value(loss, _aligned(out, ys, yname), ys)

    lam, skipped = None, None
    if check_lr and full_batch and plain_lr is not None:
        try:
            lam = _measure(model, x, y, loss, params, CHECK_RTOL, _CHECK_NCV)
        except CurvatureError as err:
            skipped = str(err)
        if lam is not None and lam > 0 and plain_lr * lam * (1 + CHECK_RTOL) >= 2.0:
            warnings.warn(
                f"lr={plain_lr:.6g} is at or beyond the gradient-descent stability limit 2/lambda_max = "
                f"{2.0 / lam:.6g} (lambda_max = {lam:.6g} to {CHECK_RTOL:g} relative, the largest eigenvalue of "
                "the loss Hessian of the linearized model at init): training will likely diverge",
                DivergenceWarning,
                stacklevel=2,
            )

    history = History(test_loss=[] if x_test is not None else None)
    state = {"last": math.nan, "last_step": -1}

    def result(steps_run: int, converged: bool, final: float) -> TrainResult:
        return TrainResult(model, steps_run, converged, final, history, lam, skipped)

    def diverged(t: int, what: str, detail: str) -> TrainingDivergedError:
        return TrainingDivergedError(
            f"the {what} became {detail} at step {t} (last finite training loss {state['last']:.6g} at step "
            f"{state['last_step']}); the step size is probably too large. The history recorded so far is in "
            "the exception's .result",
            result(t, False, state["last"]),
        )

    def compute(xs: torch.Tensor, ys: torch.Tensor, yname: str, t: int, what: str,
                traceless: bool = False) -> tuple[torch.Tensor, float]:
        """The loss (with graph when grad is enabled) and its value; raise on NaN/inf, never return it."""
        out = _traceless(model, xs) if traceless else model(xs)
        if not bool(torch.isfinite(out.detach()).all()):
            raise diverged(t, what, f"undefined (the model's outputs hold {int((~torch.isfinite(out)).sum())} NaN/inf)")
        try:
            value = _loss_value(loss, _aligned(out, ys, yname), ys)
        except FloatingPointError as err:  # losses that refuse to return NaN themselves
            raise diverged(t, what, f"non-finite ({err})") from err
        v = float(value.detach())
        if not math.isfinite(v):
            raise diverged(t, what, str(v))
        if what == "training loss":
            state["last"], state["last_step"] = v, t
        return value, v

    def evaluate(xs: torch.Tensor, ys: torch.Tensor, yname: str, t: int, what: str) -> float:
        with torch.no_grad():
            return compute(xs, ys, yname, t, what, traceless=True)[1]

    def record(t: int, train_value: float) -> None:
        if history.steps and history.steps[-1] == t:
            return
        history.steps.append(t)
        history.train_loss.append(train_value)
        if history.test_loss is not None:
            history.test_loss.append(evaluate(x_test, y_test, "y_test", t, "test loss"))

    gen_device = generator.device if generator is not None else torch.device("cpu")
    order = torch.empty(0, dtype=torch.long)
    cursor = 0
    bar = None
    if progress:
        from tqdm import tqdm  # noqa: PLC0415

        bar = tqdm(total=steps, desc="train", leave=False)
    try:
        t = 0
        while t < steps:
            opt.zero_grad(set_to_none=True)
            if full_batch:
                value, v = compute(x, y, "y", t, "training loss")
                if t % record_every == 0:
                    record(t, v)
                if loss_threshold is not None and v < loss_threshold:
                    record(t, v)
                    return result(t, True, v)
            else:
                if t % record_every == 0 or loss_threshold is not None:
                    v = evaluate(x, y, "y", t, "training loss")
                    if t % record_every == 0:
                        record(t, v)
                    if loss_threshold is not None and v < loss_threshold:
                        record(t, v)
                        return result(t, True, v)
                if cursor + batch_size > order.numel():  # type: ignore[operator]
                    order = torch.randperm(n, generator=generator, device=gen_device).to(x.device)
                    cursor = 0
                idx = order[cursor : cursor + batch_size]  # type: ignore[operator]
                cursor += batch_size  # type: ignore[operator]
                value, _ = compute(x[idx], y[idx], "y", t, "minibatch loss")
            value.backward()
            opt.step()
            t += 1
            if bar is not None:
                bar.update(1)
                if t % max(1, steps // 100) == 0:
                    bar.set_postfix(loss=f"{state['last']:.3g}")
        final = evaluate(x, y, "y", steps, "training loss")
        record(steps, final)
        return result(steps, loss_threshold is not None and final < loss_threshold, final)
    finally:
        if bar is not None:
            bar.close()
