"""Zero-output transforms of seed 000 (§6, §11 Thm 9 = Thm 4, §12 Thm 10).

* :func:`asi` — AntiSymmetrical Initialization: ``h_ASI(x) = (sqrt 2/2) h(x; theta)
  - (sqrt 2/2) h(x; theta')`` with ``theta'(0) = theta(0)``.  Output 0 at init,
  kernel unchanged (seed 000, Thm 9).
* :func:`rnd` — the same two-branch form with ``theta'`` drawn independently
  from the init distribution (the RND control of seed 000 Fig 2c): output not 0.
* :func:`double_last_layer` — the Chizat–Bach doubling trick as seed 000 §12
  defines it: output 0 at init, per-layer kernels of layers <= L-2 vanish,
  those of W^(L-1), b^(L-1), W^(L) double (Thm 10).

Every returned module is new and owns copies of the parameters (training it does not
move ``model``).  The two branches of an :class:`AntiSymmetric` module draw the same
random numbers in each forward pass (dropout masks, noise layers), so ASI's output
is 0 at init in train mode too.  Each copy keeps its original's ``requires_grad``: a
frozen layer of ``model`` is frozen in both branches of :func:`asi` / :func:`rnd` and in
the doubled network, so every kernel counts the same trainable parameters as
``model``'s (Thm 9's ``1/2 k + 1/2 k`` is a sum over the trainable parameters of the
two branches).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from typing import Any, TypeVar

import torch
from torch import nn

from ntkcheck._support.validation import check_finite_float, check_generator, check_module
from ntkcheck.models import CNN, FAMILIES, MLP, Linear, ResNet, Transformer

ModuleT = TypeVar("ModuleT", bound=nn.Module)

ASI_SCALE = math.sqrt(2.0) / 2.0


def _cuda_indices(module: nn.Module, args: Iterable[object]) -> list[int]:
    """The CUDA devices of ``module``'s parameters and buffers and of the tensors in ``args``."""
    if not torch.cuda.is_initialized():  # no tensor can be on a CUDA device yet (and the check is cheap)
        return []
    tensors = [*args, *module.parameters(), *module.buffers()]
    return sorted({t.device.index or 0 for t in tensors if isinstance(t, torch.Tensor) and t.is_cuda})


def _features(module: nn.Module) -> tuple[int, int] | None:
    """``(in_features, out_features)`` where the module declares both as ints (MLP, Linear, nn.Linear)."""
    fan_in, fan_out = getattr(module, "in_features", None), getattr(module, "out_features", None)
    return (fan_in, fan_out) if isinstance(fan_in, int) and isinstance(fan_out, int) else None


class AntiSymmetric(nn.Module):
    """``scale * plus(*args, **kwargs) - scale * minus(*args, **kwargs)``: two branches of one architecture.

    Both branches receive the same arguments and draw the same random numbers: the
    second runs from the global RNG state (CPU and the CUDA devices of the inputs and
    parameters) the first started from, so dropout masks and noise agree between them.
    Their outputs must be tensors of one shape (checked at construction where both
    branches declare ``in_features``/``out_features``, and at every forward pass).

    Parameter names are ``plus.<name>`` and ``minus.<name>``; :func:`merge_branches`
    maps a per-parameter kernel dict of this module back onto the branch's names.
    """

    def __init__(self, plus: nn.Module, minus: nn.Module, scale: float = ASI_SCALE) -> None:
        super().__init__()
        for name, branch in (("plus", plus), ("minus", minus)):
            check_module(branch, name)
        if plus is minus:
            raise ValueError(
                "plus and minus must be distinct modules: one module in both branches "
                "makes the output and its gradient identically 0"
            )
        d_plus, d_minus = _features(plus), _features(minus)
        if d_plus is not None and d_minus is not None and d_plus != d_minus:
            raise ValueError(
                f"plus and minus must have the same in/out features, got plus {d_plus[0]} -> {d_plus[1]} "
                f"and minus {d_minus[0]} -> {d_minus[1]}"
            )
        self.plus = plus
        self.minus = minus
        self.scale = check_finite_float(scale, "scale")

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        with torch.random.fork_rng(devices=_cuda_indices(self, [*args, *kwargs.values()])):
            plus = self.plus(*args, **kwargs)
        minus = self.minus(*args, **kwargs)
        if not isinstance(plus, torch.Tensor) or not isinstance(minus, torch.Tensor):
            raise TypeError(
                f"plus and minus must return tensors, got plus {type(plus).__name__} and minus {type(minus).__name__}"
            )
        if plus.shape != minus.shape:
            raise ValueError(
                f"plus and minus must return outputs of one shape, got plus {tuple(plus.shape)} "
                f"and minus {tuple(minus.shape)}"
            )
        return self.scale * (plus - minus)


def _check_module(model: object, name: str = "model") -> nn.Module:
    module = check_module(model, name)
    params = list(module.parameters())
    if not params:
        raise ValueError(f"{name} ({type(module).__name__}) has no parameters: its kernel would be 0")
    if not any(p.requires_grad for p in params):
        raise ValueError(f"{name} has no trainable parameters: all {len(params)} have requires_grad=False")
    return module


def _copy(model: ModuleT) -> ModuleT:
    """A deep copy of ``model``; every parameter keeps its ``requires_grad`` (deepcopy preserves it)."""
    return copy.deepcopy(model)


def _same_freezing(source: nn.Module, target: nn.Module) -> nn.Module:
    """Give ``target``'s parameters the ``requires_grad`` of ``source``'s namesakes; returns ``target``."""
    flags = {name: p.requires_grad for name, p in source.named_parameters()}
    for name, p in target.named_parameters():
        if name not in flags:
            raise ValueError(f"parameter {name!r} of the copy has no namesake in the original module")
        p.requires_grad_(flags[name])
    return target


def asi(model: nn.Module) -> AntiSymmetric:
    """AntiSymmetrical Initialization of any module (seed 000 §6, Thm 4 / Thm 9).

    Returns ``h_ASI(x; theta, theta') = (sqrt 2/2) h(x; theta) - (sqrt 2/2) h(x; theta')``
    with both branches copies of ``model``'s current parameters, so
    ``h_ASI(x) = 0`` at init and ``k_ASI = k`` (the 1/2 + 1/2 of the proof).
    """
    _check_module(model)
    return AntiSymmetric(_copy(model), _copy(model))


def _redrawn(model: nn.Module, generator: torch.Generator | None) -> nn.Module:
    """A copy of ``model`` with parameters drawn afresh from its init distribution."""
    if isinstance(model, FAMILIES):
        return _same_freezing(model, model.reinitialized(generator))
    if isinstance(model, AntiSymmetric):
        return AntiSymmetric(_redrawn(model.plus, generator), _redrawn(model.minus, generator), model.scale)
    twin = _copy(model)
    owners = [m for m in twin.modules() if any(True for _ in m.parameters(recurse=False))]
    missing = [type(m).__name__ for m in owners if not hasattr(m, "reset_parameters")]
    if missing:
        raise TypeError(
            f"model holds parameters in {missing}, which have no reset_parameters(); "
            "rnd cannot redraw them from their init distribution"
        )
    device = generator.device if generator is not None else None
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=device).item())
    devices = _cuda_indices(twin, [])
    with torch.random.fork_rng(devices=devices):  # seeds only the generators reset_parameters draws from
        torch.random.default_generator.manual_seed(seed)
        for index in devices:
            torch.cuda.default_generators[index].manual_seed(seed)
        for m in owners:
            reset = m.reset_parameters
            if callable(reset):  # every owner has one (checked above)
                reset()
    return twin


def rnd(model: nn.Module, generator: torch.Generator | None = None) -> AntiSymmetric:
    """The RND control of seed 000 Fig 2c: ASI's form with an independent second branch.

    ``h_RND(x) = (sqrt 2/2) h(x; theta) - (sqrt 2/2) h(x; theta')`` where ``theta'``
    is a fresh draw from ``model``'s init distribution (``reinitialized`` of an ntkcheck
    ``MLP``, ``CNN``, ``ResNet`` or ``Transformer``; for
    other modules each submodule's ``reset_parameters`` seeded from ``generator``).
    Every parameter is redrawn, frozen ones too (theta' is an independent network);
    both branches keep ``model``'s ``requires_grad`` pattern.  The branches differ in
    their parameters only: like ASI's, they share each forward pass's random numbers.
    """
    _check_module(model)
    check_generator(generator, "generator")
    return AntiSymmetric(_copy(model), _redrawn(model, generator))


def _double(layers: nn.ModuleList, original: nn.ModuleList) -> None:
    """Replace the last two :class:`Linear` s of ``layers`` (a copy of ``original``) by their doubled versions."""
    hidden, out = original[-2], original[-1]
    assert isinstance(hidden, Linear) and isinstance(out, Linear), "the top must be Linear -> activation -> Linear"
    with torch.no_grad():
        w_h = torch.cat([hidden.weight, hidden.weight], dim=0).clone()
        b_h = None if hidden.bias is None else torch.cat([hidden.bias, hidden.bias]).clone()
        w_o = torch.cat([out.weight, -out.weight], dim=1).clone()
    layers[-2] = _same_freezing(hidden, Linear(w_h, b_h, weight_mult=hidden.weight_mult, bias_mult=hidden.bias_mult))
    top = Linear(w_o, None, weight_mult=out.weight_mult, bias_mult=out.bias_mult)
    top.weight.requires_grad_(out.weight.requires_grad)
    layers[-1] = top


Doublable = MLP | CNN | ResNet | Transformer


def double_last_layer(mlp: Doublable) -> Doublable:
    """The doubling trick of seed 000 §12 (Chizat & Bach 2018) on a ``Linear -> activation -> Linear`` top.

    The top is an :class:`MLP`'s last hidden and output layers, or the head of a
    :class:`CNN`, :class:`ResNet` or :class:`Transformer` built with ``head_width``.
    With L weight layers: ``W'^[L] = (W^[L], -W^[L])``, ``W'^[L-1] = (W^[L-1]; W^[L-1])``,
    ``b'^[L-1] = (b^[L-1]; b^[L-1])``, lower layers unchanged.  As in Chizat & Bach
    (and the section's note) the output layer has no bias.  Every layer keeps its
    multipliers, so the doubled network's per-layer kernels are exactly those of
    Thm 10: 0 for every layer below W^[L-1] (the whole body of a CNN, ResNet or
    Transformer), twice the original's for W^[L-1], b^[L-1], W^[L].
    """
    if not isinstance(mlp, FAMILIES):
        raise TypeError(f"mlp must be an ntkcheck.MLP, CNN, ResNet or Transformer, got {type(mlp).__name__}")
    _check_module(mlp, "mlp")
    if isinstance(mlp, MLP):
        if not mlp.widths:
            raise ValueError("mlp must have at least one hidden layer to double (widths is empty)")
        doubled = _copy(mlp)
        _double(doubled.layers, mlp.layers)
        doubled.widths = (*mlp.widths[:-1], 2 * mlp.widths[-1])
        return doubled
    if mlp.head_width is None:
        raise ValueError(
            f"mlp must have a head Linear -> activation -> Linear to double, but this {type(mlp).__name__}'s "
            f"head is the single layer {mlp.head.layers[0]!r} (build it with head_width=...)"
        )
    twin = _copy(mlp)
    _double(twin.head.layers, mlp.head.layers)
    twin.head_width = 2 * mlp.head_width
    twin.arch = {**mlp.arch, "head_width": twin.head_width}
    return twin


def merge_branches(per_param: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Sum an :class:`AntiSymmetric` module's per-parameter kernels over its two branches.

    ``{"plus.layers.0.weight": K1, "minus.layers.0.weight": K2}`` becomes
    ``{"layers.0.weight": K1 + K2}``: the names of the original module, so the
    ASI kernel can be compared layer by layer with the original's (Thm 9).
    """
    if not isinstance(per_param, dict):
        raise TypeError(f"per_param must be a dict of parameter name -> kernel tensor, got {type(per_param).__name__}")
    merged: dict[str, torch.Tensor] = {}
    for name, k in per_param.items():
        if not isinstance(name, str) or not isinstance(k, torch.Tensor):
            raise TypeError(
                f"per_param must map str names to tensors, got {type(name).__name__} {name!r} -> {type(k).__name__}"
            )
        branch, _, rest = name.partition(".")
        if branch not in ("plus", "minus") or not rest:
            raise ValueError(f"per_param key {name!r} is not a parameter of an AntiSymmetric module")
        if rest in merged and merged[rest].shape != k.shape:
            raise ValueError(
                f"per_param kernels of plus.{rest} and minus.{rest} differ in shape: "
                f"{tuple(merged[rest].shape)} and {tuple(k.shape)}"
            )
        merged[rest] = merged[rest] + k if rest in merged else k
    return merged
