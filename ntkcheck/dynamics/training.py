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
  ``J v``, a backward for ``J^T w``, one forward graph for all).  :func:`ntkcheck.dynamics.curvature.sharpness`
  converges to rounding; :func:`train` stops at the relative residual
  :data:`ntkcheck.dynamics.curvature.CHECK_RTOL` (5-7 products, each about 1.5 training steps, when the top
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
outputs.  Data must be on the device of the model's parameters (``ValueError`` otherwise).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ntkcheck._support.validation import check_positive_int
from ntkcheck.dynamics._training_args import (
    LossFunction,
    _aligned,
    _check_real,
    _data,
    _loss_value,
    _make_optimizer,
    _trainable,
)
from ntkcheck.dynamics.curvature import _CHECK_NCV, CHECK_RTOL, _measure, _traceless
from ntkcheck.dynamics.results import History, TrainResult
from ntkcheck.errors import CurvatureError, DivergenceWarning, TrainingDivergedError

__all__ = ["CurvatureError", "TrainingDivergedError", "train"]


@dataclass(frozen=True)
class _Job:
    """What one :func:`train` call trains: the model, the loss, the data, the budget (all checked)."""

    model: nn.Module
    loss: LossFunction
    x: torch.Tensor
    y: torch.Tensor
    x_test: torch.Tensor | None
    y_test: torch.Tensor | None
    steps: int
    record_every: int
    loss_threshold: float | None


@dataclass(frozen=True)
class _Loss:
    """A loss evaluated at one step: the tensor (with graph when grad is enabled) and its value, or why it is not
    finite (``problem``; ``cause``: the exception a loss raised instead of returning NaN)."""

    tensor: torch.Tensor | None
    value: float
    problem: str | None = None
    cause: BaseException | None = None


def _evaluate(job: _Job, xs: torch.Tensor, ys: torch.Tensor, yname: str, *, traceless: bool) -> _Loss:
    """The loss of the model on (xs, ys); a non-finite one comes back with its ``problem``, never as a number."""
    out = _traceless(job.model, xs) if traceless else job.model(xs)
    if not bool(torch.isfinite(out.detach()).all()):
        return _Loss(
            None, math.nan, f"undefined (the model's outputs hold {int((~torch.isfinite(out)).sum())} NaN/inf)"
        )
    try:
        value = _loss_value(job.loss, _aligned(out, ys, yname), ys)
    except FloatingPointError as err:  # losses that refuse to return NaN themselves
        return _Loss(None, math.nan, f"non-finite ({err})", err)
    v = float(value.detach())
    if not math.isfinite(v):
        return _Loss(None, v, str(v))
    return _Loss(value, v)


def _monitor(job: _Job, xs: torch.Tensor, ys: torch.Tensor, yname: str) -> _Loss:
    """A loss that is no training step: no graph, no trace in BatchNorm statistics or random number generators."""
    with torch.no_grad():
        return _evaluate(job, xs, ys, yname, traceless=True)


class _Batches:
    """The rows of each step: all N rows in order (full batch: B = N), or minibatches of B rows, every epoch a
    fresh permutation drawn with ``generator`` (a last incomplete batch is skipped)."""

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, batch_size: int | None, generator: torch.Generator | None
    ) -> None:
        self.x, self.y, self.n = x, y, x.shape[0]
        self.size = self.n if batch_size is None else batch_size
        self.full = self.size == self.n
        self.generator = generator
        self.device = generator.device if generator is not None else torch.device("cpu")
        self.order = torch.empty(0, dtype=torch.long)
        self.cursor = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (inputs, targets) of the next step."""
        if self.full:
            return self.x, self.y
        if self.cursor + self.size > self.order.numel():
            self.order = torch.randperm(self.n, generator=self.generator, device=self.device).to(self.x.device)
            self.cursor = 0
        idx = self.order[self.cursor : self.cursor + self.size]
        self.cursor += self.size
        return self.x[idx], self.y[idx]


class _Record:
    """The losses recorded so far and the last finite training loss; :meth:`history` freezes them."""

    def __init__(self, job: _Job) -> None:
        self.job = job
        self.steps: list[int] = []
        self.train: list[float] = []
        self.test: list[float] | None = None if job.x_test is None else []
        self.last, self.last_step = math.nan, -1

    def history(self) -> History:
        """The recorded losses as a :class:`History`."""
        return History(tuple(self.steps), tuple(self.train), None if self.test is None else tuple(self.test))

    def result(self, t: int, converged: bool, final: float, check: tuple[float | None, str | None]) -> TrainResult:
        """The :class:`TrainResult` after ``t`` steps."""
        return TrainResult(self.job.model, t, converged, final, self.history(), check[0], check[1])

    def finite(self, loss: _Loss, t: int, what: str, check: tuple[float | None, str | None]) -> float:
        """The value of ``loss``; :class:`TrainingDivergedError` when it is not finite."""
        if loss.problem is not None:
            raise TrainingDivergedError(
                f"the {what} became {loss.problem} at step {t} (last finite training loss {self.last:.6g} at step "
                f"{self.last_step}); the step size is probably too large. The history recorded so far is in "
                "the exception's .result",
                self.result(t, False, self.last, check),
            ) from loss.cause
        if what == "training loss":
            self.last, self.last_step = loss.value, t
        return loss.value

    def add(self, t: int, value: float, check: tuple[float | None, str | None]) -> None:
        """Record the training loss ``value`` at step t (and the test loss), once per step."""
        if self.steps and self.steps[-1] == t:
            return
        self.steps.append(t)
        self.train.append(value)
        if self.test is not None:
            assert self.job.x_test is not None and self.job.y_test is not None
            test = _monitor(self.job, self.job.x_test, self.job.y_test, "y_test")
            self.test.append(self.finite(test, t, "test loss", check))


def _check_flags(
    batch_size: int | None, n: int, loss_threshold: object, generator: object, progress: object, check_lr: object
) -> tuple[int | None, float | None]:
    """``batch_size`` in [1, N] and ``loss_threshold`` >= 0 (or None); the types of the other options."""
    if batch_size is not None:
        batch_size = check_positive_int(batch_size, "batch_size")
        if batch_size > n:
            raise ValueError(f"batch_size must be in [1, N={n}] (the number of training rows), got {batch_size}")
    threshold = None if loss_threshold is None else _check_real(loss_threshold, "loss_threshold", positive=False)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    for flag, name in ((progress, "progress"), (check_lr, "check_lr")):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    return batch_size, threshold


def _check_before_training(job: _Job) -> None:
    """Shapes and the loss's return type on the training (and test) data, before anything runs."""
    with torch.no_grad():
        for xs, ys, xname, yname in ((job.x, job.y, "x", "y"), (job.x_test, job.y_test, "x_test", "y_test")):
            if xs is None or ys is None:
                continue
            out = _traceless(job.model, xs)
            if not bool(torch.isfinite(out).all()):
                raise FloatingPointError(f"the model's outputs on {xname} are already NaN/inf before training")
            _loss_value(job.loss, _aligned(out, ys, yname), ys)


def _step_size_check(job: _Job, params: list[nn.Parameter], plain_lr: float) -> tuple[float | None, str | None]:
    """(lambda_max estimate or None, why the check was skipped or None); warns before an unstable run."""
    try:
        lam = _measure(job.model, job.x, job.y, job.loss, params, CHECK_RTOL, _CHECK_NCV)
    except CurvatureError as err:
        return None, str(err)
    if lam > 0 and plain_lr * lam * (1 + CHECK_RTOL) >= 2.0:
        warnings.warn(
            f"lr={plain_lr:.6g} is at or beyond the gradient-descent stability limit 2/lambda_max = "
            f"{2.0 / lam:.6g} (lambda_max = {lam:.6g} to {CHECK_RTOL:g} relative, the largest eigenvalue of "
            "the loss Hessian of the linearized model at init): training will likely diverge",
            DivergenceWarning,
            stacklevel=3,
        )
    return lam, None


def _progress_bar(progress: bool, steps: int) -> Any:
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=steps, desc="train", leave=False)


def _loop(
    job: _Job, opt: torch.optim.Optimizer, batches: _Batches, check: tuple[float | None, str | None], bar: Any
) -> TrainResult:
    """Gradient steps until the budget or the loss threshold; every step one batch (all N rows for full batch)."""
    rec = _Record(job)
    threshold = job.loss_threshold
    for t in range(job.steps):
        opt.zero_grad(set_to_none=True)
        xb, yb = batches.next()
        due = t % job.record_every == 0
        batch = train_loss = None
        if batches.full:  # the batch is the training set: its loss is the training loss
            batch = _evaluate(job, xb, yb, "y", traceless=False)
            train_loss = rec.finite(batch, t, "training loss", check)
        elif due or threshold is not None:
            train_loss = rec.finite(_monitor(job, job.x, job.y, "y"), t, "training loss", check)
        if train_loss is not None and due:
            rec.add(t, train_loss, check)
        if train_loss is not None and threshold is not None and train_loss < threshold:
            rec.add(t, train_loss, check)
            return rec.result(t, True, train_loss, check)
        if batch is None:
            batch = _evaluate(job, xb, yb, "y", traceless=False)
            rec.finite(batch, t, "minibatch loss", check)
        assert batch.tensor is not None
        batch.tensor.backward()
        opt.step()
        if bar is not None:
            bar.update(1)
            if (t + 1) % max(1, job.steps // 100) == 0:
                bar.set_postfix(loss=f"{rec.last:.3g}")
    final = rec.finite(_monitor(job, job.x, job.y, "y"), job.steps, "training loss", check)
    rec.add(job.steps, final, check)
    return rec.result(job.steps, threshold is not None and final < threshold, final, check)


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: LossFunction,
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
            descent when ``lr >= 2 / lambda_max``, estimated to :data:`ntkcheck.dynamics.curvature.CHECK_RTOL` (see the
            module docstring).

    Raises:
        TrainingDivergedError: (a ``FloatingPointError``) a loss became NaN/inf; ``.result``
            holds the history so far.
    """
    params = _trainable(model)
    x, y = _data(model, params[0], x, y, "x", "y")
    n = x.shape[0]
    if not callable(loss):
        raise TypeError(f"loss must be callable as loss(h, y), got {type(loss).__name__}")
    if (x_test is None) != (y_test is None):
        raise ValueError("x_test and y_test must be given together")
    if x_test is not None:
        x_test, y_test = _data(model, params[0], x_test, y_test, "x_test", "y_test")
    steps = check_positive_int(steps, "steps")
    record_every = check_positive_int(record_every, "record_every")
    batch_size, threshold = _check_flags(batch_size, n, loss_threshold, generator, progress, check_lr)
    opt, kind, plain_lr = _make_optimizer(optimizer, lr, params, model)
    if kind == "gd" and batch_size not in (None, n):
        raise ValueError(f"batch_size must be None (or N={n}) with optimizer='gd' (full batch); use 'sgd'")
    job = _Job(model, loss, x, y, x_test, y_test, steps, record_every, threshold)
    _check_before_training(job)
    batches = _Batches(x, y, batch_size, generator)
    check: tuple[float | None, str | None] = (None, None)
    if check_lr and batches.full and plain_lr is not None:
        check = _step_size_check(job, params, plain_lr)
    bar = _progress_bar(progress, steps)
    try:
        return _loop(job, opt, batches, check, bar)
    finally:
        if bar is not None:
            bar.close()
