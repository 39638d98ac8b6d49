"""Training loops for networks and their linearizations (seed 000 §3.2 eq (2), §4).

:func:`train` runs gradient descent (full batch), minibatch SGD or Adam on any
``nn.Module`` — an :class:`ntkcheck.MLP`, a :class:`ntkcheck.linearize.Linearized`
model, a transformed network — with any loss ``loss(h, y) -> 0-dim tensor``.

Numerical honesty:

* **Step-size check** (``check_lr``).  For full-batch gradient descent on the
  linearized model, the loss Hessian in parameter space at init is
  ``J^T H J`` with ``H = d^2 loss / dh^2`` at the initial outputs; its nonzero
  eigenvalues are those of ``K^{1/2} H K^{1/2}`` (K = J J^T, the empirical NTK on the
  training set).  Gradient descent diverges along the top eigenvector when
  ``lr >= 2 / lambda_max`` — for the MSE ``(1/n) sum (h - y)^2``, ``H = (2/n) I``
  and ``lambda_max = (2/n) lambda_max(K)``.  :func:`sharpness` computes
  ``lambda_max`` (dense for up to :data:`DENSE_LIMIT` outputs, else by power
  iteration with Gauss-Newton-vector products) and :func:`train` warns with
  :class:`DivergenceWarning` *before* training when ``lr >= 2 / lambda_max``.
  The check is exact for quadratic losses on a linearized model; for a nonlinear
  network or a non-quadratic loss it describes the start of training only
  (``|r|^p`` with p > 2 gets flatter as the residual shrinks, so the check is
  conservative there).  It runs for plain full-batch SGD (``"gd"``, ``"sgd"`` with
  the full batch, or a ``torch.optim.SGD`` without momentum); minibatches, momentum
  and Adam are not checked.  A loss whose Hessian at the initial outputs is not
  finite (``|r|^p`` with p < 2 at r = 0) is not checked.
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

import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vjp

from ntkcheck._validation import check_inputs, check_positive_int
from ntkcheck.empirical import ntk
from ntkcheck.flows import DivergenceWarning

OPTIMIZERS = ("gd", "sgd", "adam")
DENSE_LIMIT = 2048
"""Up to this many outputs (n * O) :func:`sharpness` forms K and the loss Hessian densely."""

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
        sharpness: lambda_max measured by the step-size check, or ``None`` when not checked.
    """

    model: nn.Module
    steps_run: int
    converged: bool
    final_loss: float
    history: History
    sharpness: float | None = None

    @property
    def lr_limit(self) -> float | None:
        """2 / lambda_max, the gradient-descent stability limit (``None`` when not measured or lambda_max <= 0)."""
        if self.sharpness is None or not self.sharpness > 0:
            return None
        return 2.0 / self.sharpness


class TrainingDivergedError(FloatingPointError):
    """The loss became NaN or infinite; ``result`` holds everything recorded up to then."""

    def __init__(self, message: str, result: TrainResult) -> None:
        super().__init__(message)
        self.result = result


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


def _kernel_matrix(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The empirical NTK on ``x`` as an (N*O, N*O) matrix, sample-major."""
    k = ntk(model, x)
    if k.ndim == 2:
        return k
    n, _, o, _ = k.shape
    return k.permute(0, 2, 1, 3).reshape(n * o, n * o)


def _dense_sharpness(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: Loss, out: torch.Tensor) -> float:
    h0 = _aligned(out, y, "y").detach()
    m = h0.numel()
    hess = torch.func.hessian(lambda h: loss(h, y).reshape(()))(h0).reshape(m, m)
    if not bool(torch.isfinite(hess).all()):
        return math.nan
    hess = 0.5 * (hess + hess.T)
    k = _kernel_matrix(model, x)
    w, v = torch.linalg.eigh(0.5 * (k + k.T))
    root = (v * w.clamp_min(0).sqrt()) @ v.T
    return float(torch.linalg.eigvalsh(root @ hess @ root)[-1])


def _power_sharpness(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: Loss, out: torch.Tensor, iters: int = 200
) -> float:
    """Largest-magnitude eigenvalue of J^T H J by power iteration with Gauss-Newton-vector products."""
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    rest = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    rest.update(dict(model.named_buffers()))
    h0 = _aligned(out, y, "y").detach()

    def f(p):
        return _aligned(functional_call(model, {**p, **rest}, (x,)), y, "y")

    _, pullback = vjp(f, params)
    loss_grad = grad(lambda h: loss(h, y).reshape(()))

    def gn(v: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        jv = jvp(f, (params,), (v,))[1]
        hjv = jvp(loss_grad, (h0,), (jv,))[1]
        return pullback(hjv)[0]

    gen = torch.Generator(device=h0.device).manual_seed(0)
    v = {n: torch.randn(p.shape, generator=gen, dtype=p.dtype, device=p.device) for n, p in params.items()}
    estimate = 0.0
    for _ in range(iters):
        norm = math.sqrt(sum(float((t * t).sum()) for t in v.values()))
        v = {n: t / norm for n, t in v.items()}
        av = gn(v)
        new = sum(float((a * v[n]).sum()) for n, a in av.items())
        if not math.isfinite(new):
            return math.nan
        v = av
        if abs(new - estimate) <= 1e-6 * abs(new):
            return new
        estimate = new
    return estimate


def sharpness(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: Loss) -> float:
    """lambda_max of the loss Hessian of the linearized model at the current parameters.

    ``lambda_max(K^{1/2} H K^{1/2})`` with K the empirical NTK on ``x`` (N*O x N*O,
    sample-major) and ``H = d^2 loss(h, y) / dh^2`` at ``h = model(x)`` — the nonzero
    spectrum of the Gauss-Newton matrix ``J^T H J``, which is the parameter-space
    Hessian of ``loss(f_lin(x; theta), y)``.  Gradient descent with step ``lr`` is
    stable on it iff ``lr < 2 / lambda_max``.  Dense up to :data:`DENSE_LIMIT`
    outputs; beyond, power iteration (largest-magnitude eigenvalue, a lower
    bound up to the iteration's tolerance).  NaN when H is not finite.
    """
    params = _trainable(model)
    x, y = _data(model, params[0], x, y, "x", "y")
    if not callable(loss):
        raise TypeError(f"loss must be callable as loss(h, y), got {type(loss).__name__}")
    with torch.no_grad():
        out = model(x)
    if out.numel() <= DENSE_LIMIT:
        return _dense_sharpness(model, x, y, loss, out)
    return _power_sharpness(model, x, y, loss, out)


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
    if not isinstance(optimizer, str) or optimizer not in OPTIMIZERS:
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
        loss: callable ``loss(h, y) -> 0-dim tensor`` (e.g. the classes of ``ntkcheck.losses``).
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
            descent when ``lr >= 2 / lambda_max`` (see the module docstring).

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
            out = model(xs)
            if not bool(torch.isfinite(out).all()):
                raise FloatingPointError(f"the model's outputs on {xname} are already NaN/inf before training")
            _loss_value(loss, _aligned(out, ys, yname), ys)

    lam = None
    if check_lr and full_batch and plain_lr is not None:
        lam = sharpness(model, x, y, loss)
        if lam > 0 and plain_lr * lam >= 2.0:
            warnings.warn(
                f"lr={plain_lr:.6g} is at or beyond the gradient-descent stability limit 2/lambda_max = "
                f"{2.0 / lam:.6g} (lambda_max = {lam:.6g}, the largest eigenvalue of the loss Hessian of the "
                "linearized model at init): training will likely diverge",
                DivergenceWarning,
                stacklevel=2,
            )
        if math.isnan(lam):
            lam = None

    history = History(test_loss=[] if x_test is not None else None)
    state = {"last": math.nan, "last_step": -1}

    def result(steps_run: int, converged: bool, final: float) -> TrainResult:
        return TrainResult(model, steps_run, converged, final, history, lam)

    def diverged(t: int, what: str, detail: str) -> TrainingDivergedError:
        return TrainingDivergedError(
            f"the {what} became {detail} at step {t} (last finite training loss {state['last']:.6g} at step "
            f"{state['last_step']}); the step size is probably too large. The history recorded so far is in "
            "the exception's .result",
            result(t, False, state["last"]),
        )

    def compute(xs: torch.Tensor, ys: torch.Tensor, yname: str, t: int, what: str) -> tuple[torch.Tensor, float]:
        """The loss (with graph when grad is enabled) and its value; raise on NaN/inf, never return it."""
        out = model(xs)
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
            return compute(xs, ys, yname, t, what)[1]

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
