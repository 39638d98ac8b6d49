"""The linearized network of seed 000 eq (1) and its minimum-norm interpolant (eq (4), Thm 5).

``f_lin(x; theta) = f(x; theta_0) + J(x) (theta - theta_0)`` with ``J(x) = d f(x; theta_0) / d theta``.

* :func:`linearize` returns a :class:`Linearized` module computing ``f_lin`` with one
  ``torch.func.jvp`` per forward pass (``f(x; theta_0)`` and ``J(x)(theta - theta_0)``
  together; J is never formed).  Its trainable parameters are ``theta`` under the
  original module's parameter names, so it trains with any torch optimizer and
  :func:`ntkcheck.ntk` of it (jacobian method) has the original's per-layer keys;
  its NTK at every ``theta`` is the NTK of ``f`` at ``theta_0``.
* :func:`jacobian` forms J explicitly, (N*O, P), for small problems.
* :func:`min_norm_linearized` returns the linearization at
  ``theta_inf = theta_0 + J^T (J J^T)^{-1} (Y - f(X; theta_0))``: the solution of
  seed 000 problem (4), the limit of gradient flow for any loss of §4 (Thm 5)
  (linear algebra by :func:`ntkcheck.dynamics.solvers.min_norm_parameters`, a QR factorisation
  of J).

Conventions:

* **Frozen parameters.** Only the original's trainable parameters
  (``requires_grad=True``) are linearized.  Frozen parameters, and the original's
  buffers, are copied into buffers of the :class:`Linearized` module and held
  fixed; they are not among its ``named_parameters()``.
* **Flat vectors** (:meth:`Linearized.delta`, :meth:`Linearized.load_delta`, the
  columns of :func:`jacobian`) concatenate the trainable parameters in
  ``named_parameters()`` order, each flattened row-major.
* **Jacobian rows** are sample-major: row ``n * O + o`` is output ``o`` of sample
  ``n``, the order of ``model(x).reshape(-1)``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping

import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp
from torch.nn.utils import parameters_to_vector

from ntkcheck._support.validation import check_finite_result
from ntkcheck.dynamics._model_checks import _align_targets, _check_model, _check_x, _in_features
from ntkcheck.dynamics.solvers import min_norm_parameters
from ntkcheck.kernels._autodiff import FunctionalModel

_THETA0 = "_theta0"
_FIXED = "_fixed"


def _get(root: nn.Module, dotted: str) -> torch.Tensor:
    """The tensor under the dotted name in the module tree ``root``."""
    obj: object = root
    for part in dotted.split("."):
        obj = getattr(obj, part)
    assert isinstance(obj, torch.Tensor)
    return obj


def _child(root: nn.Module, name: str) -> nn.Module:
    """The registered submodule ``name`` of ``root``."""
    child = root._modules[name]
    assert child is not None
    return child


class _Node(nn.Module):
    """An empty container mirroring one submodule of the original; ``node[0]`` reads child ``"0"``."""

    def __getitem__(self, key: int | str) -> nn.Module:
        return _child(self, str(key))


def _register(root: nn.Module, dotted: str, tensor: torch.Tensor, *, parameter: bool) -> None:
    """Register ``tensor`` under the dotted name in a tree of empty container modules."""
    *path, leaf = dotted.split(".")
    node = root
    for part in path:
        child = node._modules.get(part)
        if child is None:
            child = _Node()
            node.add_module(part, child)
        node = child
    if parameter:
        node.register_parameter(leaf, nn.Parameter(tensor))
    else:
        node.register_buffer(leaf, tensor)


class Linearized(nn.Module):
    """``f_lin(x; theta) = f(x; theta_0) + J(x) (theta - theta_0)`` (seed 000 eq (1)).

    Build it with :func:`linearize`.  ``named_parameters()`` yields ``theta``
    (initially copies of ``theta_0``) under the original's names; ``theta_0``,
    the original's frozen parameters and its buffers are buffers.  Moving it
    (``.to``, ``.cuda``, ``.double``) moves everything, the private copy of the
    original module included.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        _check_model(model)
        base = copy.deepcopy(model)
        for p in base.parameters():
            p.requires_grad_(False)
        object.__setattr__(self, "_base", base)  # not a submodule: its parameters are not ours
        self._names: tuple[str, ...] = tuple(n for n, p in model.named_parameters() if p.requires_grad)
        self._fixed_names: tuple[str, ...] = tuple(
            [n for n, p in model.named_parameters() if not p.requires_grad] + [n for n, _ in model.named_buffers()]
        )
        tops = {n.split(".")[0] for n in self._names}
        clash = sorted(t for t in tops if t in (_THETA0, _FIXED) or hasattr(self, t))
        if clash:
            raise ValueError(f"model has top-level parameter names {clash} that clash with Linearized's attributes")
        self.add_module(_THETA0, _Node())
        self.add_module(_FIXED, _Node())
        params = dict(model.named_parameters())
        buffers = dict(model.named_buffers())
        for n in self._names:
            theta0 = params[n].detach().clone()
            _register(_child(self, _THETA0), n, theta0, parameter=False)
            _register(self, n, theta0.clone(), parameter=True)
        for n in self._fixed_names:
            t = params[n] if n in params else buffers[n]
            _register(_child(self, _FIXED), n, t.detach().clone(), parameter=False)
        in_features = _in_features(model)
        if in_features is not None:
            self.in_features = in_features

    # -- the function -------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta0_tree, fixed_tree = _child(self, _THETA0), _child(self, _FIXED)
        theta0 = {n: _get(theta0_tree, n) for n in self._names}
        tangent = {n: _get(self, n) - theta0[n] for n in self._names}
        fixed = {n: _get(fixed_tree, n) for n in self._fixed_names}
        base = self.base

        def f(params: dict[str, torch.Tensor]) -> torch.Tensor:
            out: torch.Tensor = functional_call(base, {**params, **fixed}, (x,))
            return out

        pair = jvp(f, (theta0,), (tangent,))
        result: torch.Tensor = pair[0] + pair[1]
        return result

    # -- parameters -----------------------------------------------------------------------------

    @property
    def names(self) -> tuple[str, ...]:
        """The trainable parameter names (the original's), in flat-vector order."""
        return self._names

    @property
    def base(self) -> nn.Module:
        """The private copy of the original module whose function is linearized (do not modify)."""
        base = self.__dict__["_base"]
        assert isinstance(base, nn.Module)
        return base

    @property
    def theta0(self) -> dict[str, torch.Tensor]:
        """``{name: theta_0}``, the expansion point (buffers; treat as read-only)."""
        return {n: _get(_child(self, _THETA0), n) for n in self._names}

    def n_params(self) -> int:
        """P, the number of linearized (trainable) parameters."""
        return sum(_get(self, n).numel() for n in self._names)

    def delta(self, *, flat: bool = True) -> torch.Tensor | dict[str, torch.Tensor]:
        """``theta - theta_0``, detached: a flat (P,) vector or ``{name: tensor}``."""
        theta0 = self.theta0
        d = {n: (_get(self, n) - theta0[n]).detach() for n in self._names}
        if not flat:
            return d
        return parameters_to_vector(d.values())

    def load_delta(self, delta: torch.Tensor | Mapping[str, torch.Tensor]) -> Linearized:
        """Set ``theta = theta_0 + delta`` in place (flat (P,) vector or ``{name: tensor}``); returns self."""
        theta0 = self.theta0
        if isinstance(delta, torch.Tensor):
            p = self.n_params()
            if delta.ndim != 1 or delta.numel() != p:
                raise ValueError(f"delta must be a flat vector of the {p} parameters, got shape {tuple(delta.shape)}")
            parts, start = {}, 0
            for n in self._names:
                size = theta0[n].numel()
                parts[n] = delta[start : start + size].view(theta0[n].shape)
                start += size
        elif isinstance(delta, Mapping):
            if set(delta) != set(self._names):
                raise ValueError(f"delta must have exactly the keys {list(self._names)}, got {sorted(delta)}")
            parts = dict(delta)
            for n in self._names:
                if not isinstance(parts[n], torch.Tensor) or parts[n].shape != theta0[n].shape:
                    raise ValueError(f"delta[{n!r}] must be a tensor of shape {tuple(theta0[n].shape)}")
        else:
            raise TypeError(f"delta must be a flat tensor or a dict of tensors, got {type(delta).__name__}")
        for n, t in parts.items():
            if not t.is_floating_point():
                raise TypeError(f"delta[{n!r}] must be floating point, got {t.dtype}")
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"delta[{n!r}] contains NaN or infinite entries")
        with torch.no_grad():
            for n in self._names:
                _get(self, n).copy_(theta0[n] + parts[n].to(theta0[n]))
        return self

    def reset(self) -> Linearized:
        """Set ``theta = theta_0``; returns self."""
        with torch.no_grad():
            theta0 = self.theta0
            for n in self._names:
                _get(self, n).copy_(theta0[n])
        return self

    # -- module plumbing: the private copy follows device/dtype moves and train/eval ---------------

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Linearized:
        super()._apply(fn, recurse)
        self.base._apply(fn)
        return self

    def train(self, mode: bool = True) -> Linearized:
        super().train(mode)
        self.base.train(mode)
        return self

    def extra_repr(self) -> str:
        return f"linearization of {type(self.base).__name__} with {self.n_params()} parameters"


def linearize(model: nn.Module) -> Linearized:
    """The linearization of ``model`` at its current parameters ``theta_0`` (seed 000 eq (1)).

    ``model`` is copied; later changes to it do not affect the result.  Only its
    trainable parameters are linearized (frozen ones are held fixed as buffers).
    """
    return Linearized(model)


def jacobian(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """J = d f(x) / d theta as an (N*O, P) matrix, for small problems.

    Rows are sample-major (row ``n * O + o`` is ``model(x)[n, o]``, the order of
    ``model(x).reshape(-1)``); columns are the trainable parameters in
    ``named_parameters()`` order, each flattened (the order of
    :meth:`Linearized.delta`).  Computed with ``torch.func.jacrev`` over the whole
    batch, so rows need not be independent.  For a :class:`Linearized` model this
    is J at ``theta_0`` whatever its ``theta``.
    """
    _check_model(model)
    x = _check_x(model, x, "x")
    fm = FunctionalModel(model)
    jac = jacrev(lambda p: fm(p, x).reshape(-1))(fm.params)
    return torch.cat([jac[n].reshape(jac[n].shape[0], -1) for n in fm.params], dim=1)


_RANDOM_IN_TRAINING = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
    nn.RReLU,
)


def _unfit_modules(model: nn.Module) -> list[str]:
    """The submodules that make ``model``'s output random or batch-coupled in its current mode.

    Dropout and RReLU draw random numbers in training mode; BatchNorm normalises by the
    statistics of the batch in training mode, and in every mode when it keeps no running
    statistics.  The private copy inside a :class:`Linearized` is searched too.
    """
    found = []

    def scan(root: nn.Module, prefix: str) -> None:
        for name, m in root.named_modules(prefix=prefix):
            label = f"{f'model.{name}' if name else 'model'} ({type(m).__name__}"
            if isinstance(m, _RANDOM_IN_TRAINING) and m.training:
                found.append(f"{label}, training mode: random)")
            elif isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or m.running_mean is None):
                why = "training mode" if m.training else "no running statistics"
                found.append(f"{label}, {why}: normalises by the batch)")
            if isinstance(m, Linearized):
                scan(m.base, f"{name}.base" if name else "base")

    scan(model, "")
    return found


def min_norm_linearized(model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor) -> Linearized:
    """The linearized model at ``theta_inf``, the minimum-norm interpolant (seed 000 problem (4), Thm 5).

    ``theta_inf = theta_0 + J^T (J J^T)^{-1} (Y - f(X; theta_0))`` with J = :func:`jacobian` at
    ``x_train``: ``f_lin(X; theta_inf) = Y`` and ``|theta_inf - theta_0|`` is the smallest among
    all such ``theta`` — the limit of gradient flow on ``f_lin`` for every loss of seed 000 §4.

    Args:
        model: the network f at ``theta_0`` (its current parameters).
        x_train: (n, d) training inputs.
        y_train: (n,) or (n, O) targets, dtype and device of ``x_train`` (of the model's output when
            ``x_train`` holds integer token ids).

    The linear algebra is :func:`ntkcheck.dynamics.solvers.min_norm_parameters` (QR of J, never J J^T).

    Raises:
        ValueError: P <= n*O (J cannot have full row rank, Thm 5 does not apply);
            ``model`` random or batch-coupled in its current mode (Dropout or RReLU in
            training mode, BatchNorm in training mode or without running statistics, or
            two forward passes on ``x_train`` that differ): f is then no function of
            ``theta`` alone and has no interpolating ``theta`` — call ``model.eval()``;
            :class:`ntkcheck.dynamics.solvers.SingularKernelError` (a ValueError) when J J^T is
            numerically singular (e.g. repeated inputs).
    """
    _check_model(model)
    x_train = _check_x(model, x_train, "x_train")
    unfit = _unfit_modules(model)
    if unfit:
        raise ValueError(
            f"model is random or batch-coupled in its current mode: {'; '.join(unfit)}. Its output at "
            f"x_train is not a function of the parameters, so no parameters interpolate y_train: call "
            f"model.eval() (BatchNorm also needs running statistics)"
        )
    with torch.no_grad():
        out = check_finite_result(model(x_train), "model(x_train)")
        again = model(x_train)
    gap = float((again - out).abs().max())
    if not gap <= math.sqrt(torch.finfo(out.dtype).eps) * float(out.abs().max()):
        raise ValueError(
            f"model gives different outputs in two forward passes on x_train (max difference "
            f"{gap:.3e}): it is random in its current mode (e.g. functional dropout or injected noise); call "
            f"model.eval() or make its forward deterministic"
        )
    out = out.reshape(x_train.shape[0], -1)
    y = _align_targets(out, y_train, "y_train", x_train)
    n_data = out.numel()
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if n_params <= n_data:
        raise ValueError(
            f"model has P = {n_params} trainable parameters but there are n*O = {n_data} data points: fewer "
            "parameters than data points: J is not full rank and seed 000 Thm 5 does not apply"
        )
    jac = jacobian(model, x_train)
    delta = min_norm_parameters(jac, y - out.reshape(-1))
    return linearize(model).load_delta(delta)
