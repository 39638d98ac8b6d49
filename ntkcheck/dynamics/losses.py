"""Loss functions ``dist(h, Y)`` for the NTK gradient flow of seed 000 §3.2-§4.

Seed 000 §4 admits any continuously differentiable ``dist`` with, for every z,

(i)   ``dist(z, z) = 0``;
(ii)  ``dist(z', z)`` attains its minimum if and only if ``z' = z``;
(iii) ``grad_{z'} dist(z', z) = 0`` if and only if ``z' = z``.

Under these conditions the long-time limit of the flow (3),
``dh/dt = -k(., X) grad_h dist(h(X), Y)``, is the minimum-kernel-norm
interpolant of eq (5), whatever the loss (seed 000 Thms 5-6 and Corollary 1).
:class:`LpLoss` (``(1/n) sum_i |h_i - y_i|^p``, 1 < p < inf) is the example the
paper gives; :class:`Mixture` combines losses with positive weights ("one can even
mix different loss functions", §4); :class:`DistLoss` wraps a user callable and
:func:`check_conditions` spot-checks (i)-(iii) numerically.  :class:`CrossEntropy`
is for classification and lies *outside* that class: its infimum is approached
only as the logits diverge (§4, last remark), so the flows in
:mod:`ntkcheck.dynamics.flows` refuse it.

Shapes: ``h`` and ``y`` are both (n,) or both (n, O).  For (n, O) the loss sums over
the O outputs and averages over the n samples, so ``LpLoss(2)`` is
``(1/n) sum_i ||h_i - y_i||^2``.  Every loss has ``grad(h, y)`` = d loss / d h, the
``grad_h dist`` of eq (3), with the shape of ``h``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.nn import functional

from ntkcheck._support.validation import check_finite_result

__all__ = ["CrossEntropy", "DistLoss", "Loss", "LpLoss", "MSE", "Mixture", "check_conditions"]


def _check_pair(h: object, y: object) -> None:
    for v, name in ((h, "h"), (y, "y")):
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(v).__name__}")
        if not v.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {v.dtype}")
        if v.ndim not in (1, 2) or v.shape[0] == 0:
            raise ValueError(f"{name} must have shape (n,) or (n, O) with n >= 1, got shape {tuple(v.shape)}")
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"{name} contains {int((~torch.isfinite(v)).sum())} NaN or infinite entries")
    assert isinstance(h, torch.Tensor) and isinstance(y, torch.Tensor)
    if h.shape != y.shape:
        raise ValueError(f"y must have the shape of h {tuple(h.shape)}, got {tuple(y.shape)}")
    if h.dtype != y.dtype or h.device != y.device:
        raise TypeError(f"y must have the dtype and device of h ({h.dtype}, {h.device}), got ({y.dtype}, {y.device})")


def _check_weight(w: object) -> float:
    if isinstance(w, bool) or not isinstance(w, (int, float)):
        raise TypeError(f"weight must be a positive finite float, got {type(w).__name__} {w!r}")
    w = float(w)
    if not (math.isfinite(w) and w > 0):
        raise ValueError(
            f"weight must be a positive finite float (seed 000 §4 mixes losses with positive weights), got {w}"
        )
    return w


class Loss:
    """Base class: ``loss(h, y)`` returns a 0-dim tensor, ``loss.grad(h, y)`` its gradient in ``h``.

    ``section4`` says whether the loss belongs to the class of seed 000 §4
    (conditions (i)-(iii) above); only such losses are accepted by the flows.
    ``shift_invariant`` declares ``dist(h, y) = dist(h - y, 0)``; the ODE flow then
    evaluates the gradient at ``(h - y, 0)``, which keeps full relative precision
    when ``|h - y| << |y|`` (otherwise ``h = y + r`` rounds ``r`` at ``eps |y|``).
    ``separable`` declares ``dist(h, y) = sum_i phi_i(h_i, y_i)`` (each gradient entry depends on its
    own entry only); :func:`ntkcheck.dynamics.flows.ode_flow` then integrates the decoupled blocks of a
    block-diagonal kernel separately.
    ``a * loss1 + b * loss2`` builds a :class:`Mixture` (weights must be > 0).
    """

    section4: bool = True
    shift_invariant: bool = False  # dist(h + c, y + c) = dist(h, y): the flows then evaluate at (h - y, 0)
    separable: bool = False  # dist is a sum over entries: the flows may split a block-diagonal kernel

    def value(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """The loss without argument checks (override in subclasses)."""
        raise NotImplementedError

    def check(self, h: object, y: object) -> None:
        """Raise unless ``h`` and ``y`` are valid arguments (same shape, finite, floating)."""
        _check_pair(h, y)

    def __call__(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.check(h, y)
        out = self.value(h, y)
        if not isinstance(out, torch.Tensor) or out.ndim != 0:
            raise ValueError(f"{self!r} must return a 0-dim tensor, got {getattr(out, 'shape', type(out).__name__)}")
        return check_finite_result(out, repr(self))

    def grad(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``grad_h dist(h, y)`` (seed 000 eq (3)) with the shape of ``h``; checked, NaN refused."""
        self.check(h, y)
        return check_finite_result(self._grad(h, y), f"gradient of {self!r}")

    def hessian(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``d^2 dist / dh^2`` as an (h.numel(), h.numel()) matrix (row-major flattening of ``h``).

        Used for the Jacobian of the flow in :func:`ntkcheck.dynamics.flows.ode_flow`.
        """
        self.check(h, y)
        return check_finite_result(self._hessian(h, y), f"Hessian of {self!r}")

    # Unchecked hooks (subclasses override them for closed forms; the flows call them in inner loops).
    def _grad(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            hv = h.detach().clone().requires_grad_(True)
            out = self.value(hv, y.detach())
            (g,) = torch.autograd.grad(out, hv, allow_unused=True)
        return torch.zeros_like(h) if g is None else g

    def _hessian(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        yd = y.detach()

        def flat_value(hf: torch.Tensor) -> torch.Tensor:
            return self.value(hf.reshape(h.shape), yd)

        hessian: torch.Tensor = torch.autograd.functional.hessian(flat_value, h.detach().reshape(-1))
        return hessian

    def __add__(self, other: object) -> Mixture:
        if not isinstance(other, Loss):
            return NotImplemented
        return Mixture(_terms(self) + _terms(other))

    def __mul__(self, weight: object) -> Mixture:
        w = _check_weight(weight)
        return Mixture([(w * a, loss) for a, loss in _terms(self)])

    __rmul__ = __mul__


def _terms(loss: Loss) -> list[tuple[float, Loss]]:
    return list(loss.terms) if isinstance(loss, Mixture) else [(1.0, loss)]


class LpLoss(Loss):
    """``dist(h, Y) = (1/n) sum_i |h_i - y_i|^p`` for 1 < p < inf (seed 000 §4's example).

    Satisfies (i)-(iii): it is strictly convex in ``h`` with its only zero at ``h = Y``.
    For (n, O) arrays the sum also runs over outputs; n is always the number of rows.
    """

    shift_invariant = True
    separable = True

    def __init__(self, p: float) -> None:
        if isinstance(p, bool) or not isinstance(p, (int, float)):
            raise TypeError(f"p must be a float with 1 < p < inf, got {type(p).__name__} {p!r}")
        if not (math.isfinite(p) and p > 1):
            raise ValueError(f"p must satisfy 1 < p < inf (seed 000 §4), got p={p}")
        self.p = float(p)

    def __repr__(self) -> str:
        return f"LpLoss(p={self.p:g})"

    def value(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (h - y).abs().pow(self.p).sum() / h.shape[0]

    def _grad(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # closed form (p/n) |h - y|^(p-1) sign(h - y)
        r = h - y
        return r.abs().pow(self.p - 1) * r.sign() * (self.p / h.shape[0])

    def _hessian(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # closed form diag(p (p-1)/n |h - y|^(p-2)); for p < 2 it is infinite where h_i = y_i, so
        # |h_i - y_i| is floored at the dtype's smallest normal number to keep the entry finite.
        r = (h - y).reshape(-1).abs()
        if self.p < 2:
            r = r.clamp_min(torch.finfo(r.dtype).tiny)
        return torch.diag(r.pow(self.p - 2) * (self.p * (self.p - 1) / h.shape[0]))


MSE = LpLoss(2)
"""The MSE ``(1/n) sum_i (h_i - y_i)^2`` of seed 000 §7.1; its gradient is ``(2/n)(h - Y)``."""


class Mixture(Loss):
    """``sum_j w_j dist_j(h, Y)`` with weights ``w_j > 0`` (seed 000 §4: "mixing different loss functions").

    Conditions (i)-(ii) carry over from the terms; (iii) does whenever the terms
    are convex (e.g. any mixture of :class:`LpLoss`), since a convex function's only
    stationary points are its minimisers.
    """

    def __init__(self, terms: list[tuple[float, Loss]]) -> None:
        if not terms:
            raise ValueError("terms must hold at least one (weight, loss) pair")
        checked = []
        for i, term in enumerate(terms):
            if not (isinstance(term, tuple) and len(term) == 2 and isinstance(term[1], Loss)):
                raise TypeError(f"terms[{i}] must be a (weight, Loss) pair, got {term!r}")
            checked.append((_check_weight(term[0]), term[1]))
        self.terms: tuple[tuple[float, Loss], ...] = tuple(checked)
        self.section4 = all(loss.section4 for _, loss in checked)
        self.shift_invariant = all(loss.shift_invariant for _, loss in checked)
        self.separable = all(loss.separable for _, loss in checked)

    def __repr__(self) -> str:
        return " + ".join(f"{w:g}*{loss!r}" for w, loss in self.terms)

    def check(self, h: object, y: object) -> None:
        for _, loss in self.terms:
            loss.check(h, y)

    def value(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return sum(
            (w * loss.value(h, y) for w, loss in self.terms[1:]), self.terms[0][0] * self.terms[0][1].value(h, y)
        )

    def _grad(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # weighted sum of the terms' gradients (each term's closed form where it has one)
        g = self.terms[0][0] * self.terms[0][1]._grad(h, y)
        for w, loss in self.terms[1:]:
            g = g + w * loss._grad(h, y)
        return g

    def _hessian(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        H = self.terms[0][0] * self.terms[0][1]._hessian(h, y)
        for w, loss in self.terms[1:]:
            H = H + w * loss._hessian(h, y)
        return H


class DistLoss(Loss):
    """Wrap a user callable ``fn(h, y) -> 0-dim tensor`` as a loss of seed 000 §4.

    The caller asserts that ``fn`` is continuously differentiable (through torch
    autograd) and satisfies (i) ``fn(z, z) = 0``, (ii) ``fn(z', z)`` is minimal iff
    ``z' = z`` and (iii) ``grad_{z'} fn(z', z) = 0`` iff ``z' = z``.  Nothing is checked
    at construction; :func:`check_conditions` spot-checks the three numerically.
    Pass ``shift_invariant=True`` if ``fn(h, y)`` depends on ``h - y`` only.
    """

    def __init__(
        self,
        fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        name: str | None = None,
        *,
        shift_invariant: bool = False,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable as fn(h, y) -> 0-dim tensor, got {type(fn).__name__}")
        if not isinstance(shift_invariant, bool):
            raise TypeError(f"shift_invariant must be a bool, got {type(shift_invariant).__name__}")
        self.fn = fn
        self.shift_invariant = shift_invariant
        self.name = name or getattr(fn, "__name__", "fn")

    def __repr__(self) -> str:
        return f"DistLoss({self.name})"

    def value(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = self.fn(h, y)
        if not isinstance(out, torch.Tensor) or out.ndim != 0:
            raise ValueError(
                f"fn of {self!r} must return a 0-dim tensor, got {getattr(out, 'shape', type(out).__name__)}"
            )
        return out


class CrossEntropy(Loss):
    """Mean cross-entropy of logits ``h`` (n, C) against integer labels ``y`` (n,), for classification.

    Outside the class of seed 000 §4: there is no ``z`` with ``dist(z, y) = 0``; the
    infimum is approached only as the logits diverge, so the kernel-norm
    minimisation framework (eqs (4)-(5)) does not describe its long-time limit
    (§4, closing remark).  ``section4`` is False and the flows refuse it.
    """

    section4 = False

    def __repr__(self) -> str:
        return "CrossEntropy()"

    def check(self, h: object, y: object) -> None:
        if not isinstance(h, torch.Tensor) or not h.is_floating_point() or h.ndim != 2 or h.shape[0] == 0:
            raise ValueError(
                f"h must be floating-point logits of shape (n, C), got {getattr(h, 'shape', type(h).__name__)}"
            )
        if not bool(torch.isfinite(h).all()):
            raise ValueError(f"h contains {int((~torch.isfinite(h)).sum())} NaN or infinite entries")
        if not isinstance(y, torch.Tensor) or y.dtype not in (torch.int64, torch.int32) or y.shape != h.shape[:1]:
            raise ValueError(
                f"y must be integer class labels of shape ({h.shape[0]},), got "
                f"{getattr(y, 'dtype', type(y).__name__)} {tuple(getattr(y, 'shape', ()))}"
            )
        if y.device != h.device:
            raise ValueError(f"y must be on the device of h ({h.device}), got {y.device}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= h.shape[1]):
            raise ValueError(f"y labels must lie in [0, {h.shape[1]}), got range [{int(y.min())}, {int(y.max())}]")

    def value(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return functional.cross_entropy(h, y.long())

    def _grad(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # closed form (softmax(h) - onehot(y)) / n
        g = torch.softmax(h, dim=1)
        g[torch.arange(h.shape[0], device=h.device), y.long()] -= 1
        return g / h.shape[0]


def check_conditions(
    loss: Loss,
    n: int,
    generator: torch.Generator | None = None,
    *,
    outputs: int | None = None,
    trials: int = 16,
    atol: float = 1e-12,
    dtype: torch.dtype = torch.float64,
) -> None:
    """Spot-check conditions (i)-(iii) of seed 000 §4 at random points; raise ``ValueError`` on a violation.

    For ``trials`` random targets ``z`` (n,) (or (n, outputs)) and perturbations
    ``z' = z + a u`` with ``a`` in ``1e-3 .. 1e2``, checks (i) ``|dist(z, z)| <= atol``,
    (iii, "if") ``||grad dist(z, z)|| <= atol``, (ii) ``dist(z', z) > dist(z, z)`` and
    (iii, "only if") ``grad dist(z', z) != 0``.  The message names the condition and
    the measured value.  A pass is evidence, not proof: random points miss
    isolated stationary points.
    """
    if not isinstance(loss, Loss):
        raise TypeError(f"loss must be a ntkcheck.dynamics.losses.Loss, got {type(loss).__name__}")
    if not loss.section4:
        raise ValueError(f"{loss!r} is outside the class of seed 000 §4 (its minimum is not attained at h = y)")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if outputs is not None and (isinstance(outputs, bool) or not isinstance(outputs, int) or outputs < 1):
        raise ValueError(f"outputs must be None or an int >= 1, got {outputs!r}")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials must be an int >= 1, got {trials!r}")
    shape = (n,) if outputs is None else (n, outputs)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    scales = torch.logspace(-3, 2, trials, dtype=dtype)
    for t in range(trials):
        z = torch.randn(shape, generator=gen, dtype=dtype)
        u = torch.randn(shape, generator=gen, dtype=dtype)
        zp = z + scales[t] * u / u.norm()
        d0 = float(loss(z, z))
        if abs(d0) > atol:
            raise ValueError(
                f"{loss!r} violates condition (i) dist(z, z) = 0: measured dist(z, z) = {d0:.3e} (trial {t})"
            )
        g0 = float(loss.grad(z, z).norm())
        if g0 > atol:
            raise ValueError(f"{loss!r} violates condition (iii): ||grad dist(z, z)|| = {g0:.3e} != 0 (trial {t})")
        d1 = float(loss(zp, z))
        if not d1 > d0:
            raise ValueError(
                f"{loss!r} violates condition (ii): dist(z', z) = {d1:.3e} <= dist(z, z) = {d0:.3e} "
                f"at ||z' - z|| = {float(scales[t]):.3e} (trial {t})"
            )
        g1 = float(loss.grad(zp, z).norm())
        if not g1 > 0:
            raise ValueError(
                f"{loss!r} violates condition (iii): ||grad dist(z', z)|| = {g1:.3e} at z' != z, "
                f"||z' - z|| = {float(scales[t]):.3e} (trial {t})"
            )
