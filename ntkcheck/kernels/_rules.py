"""Per-layer kernel rules: a layer's per-sample parameter gradients from one call's input and backward signal.

A *rule* is a callable ``rule(module, inputs, kwargs, output, batch)``.
The kernel engine (:mod:`ntkcheck.kernels._engine`) runs it from a forward hook on every
call of a module of its type, with the call's positional ``inputs``, keyword
``kwargs``, its ``output`` and the number of rows ``batch`` of the forward pass.
It returns ``(pieces, replacement)`` when it recomputes the module's output in
explicit steps (``replacement`` then stands for ``output`` in the forward pass, so
the signals of the steps are reachable), else a list of pieces: one
:class:`Piece` per parameter tensor (or per slice of one, e.g. per convolution
group) describing the per-sample gradient of that parameter in terms of

* ``out``: a tensor of the forward graph (usually ``output``) whose backward
  signal ``d f / d out`` the engine computes,
* ``signal``: maps that signal (shaped like ``out``) to ``G`` of shape (batch, S, m),
  S positions and m output coordinates,
* ``a``: what multiplies ``G`` (see :class:`Piece`'s ``kind``),

or ``None`` when this call is not one it can describe (e.g. its input has no batch
dimension): the module's parameters then go to per-sample ``torch.func``
gradients.  The engine checks every rule on a probe of the first rows (up to two)
against autograd per-sample gradients and serves any parameter whose rule disagrees
the same way, so a rule that misdescribes a parameter on those rows (a table also
used outside its layer, a call without a batch axis) does not reach the kernel.
Register a rule for a new module type with :func:`register_rule` (``Piece`` is
importable from :mod:`ntkcheck.kernels.empirical`); it takes precedence over built-in rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ntkcheck.kernels._conv_rule import conv_rule
from ntkcheck.kernels._piece import Piece, Rule, batched, channels_last, last_dim, multipliers, trainable
from ntkcheck.models import Conv1d, Conv2d, Embedding, LayerNorm, Linear

_RULES: list[tuple[type, Rule]] = []


def register_rule(module_type: type, rule: Rule) -> None:
    """Use ``rule`` for every module that is an instance of ``module_type`` (see the module docstring).

    Rules registered later take precedence over earlier ones and over the built-in
    rules.  Example, a layer ``y = x @ W.T`` on (N, ..., k)::

        def rule(module, inputs, kwargs, output, batch):
            x = inputs[0]
            if x.shape[0] != batch:
                return None
            k, m = x.shape[-1], output.shape[-1]
            return [Piece(module.W, "outer", output, lambda g: g.reshape(batch, -1, m),
                          x.detach().reshape(batch, -1, k))]
    """
    if not isinstance(module_type, type) or not issubclass(module_type, nn.Module):
        raise TypeError(f"module_type must be a subclass of torch.nn.Module, got {module_type!r}")
    if not callable(rule):
        raise TypeError(f"rule must be callable, got {type(rule).__name__}")
    _RULES.insert(0, (module_type, rule))


def rule_for(module: nn.Module) -> Rule | None:
    """The rule serving ``module`` (the latest registered whose type it is an instance of), or None."""
    for module_type, rule in _RULES:
        if isinstance(module, module_type):
            return rule
    return None


def _linear_rule(
    module: Any, inputs: tuple[Any, ...], kwargs: dict[str, Any], output: torch.Tensor, batch: int
) -> list[Piece] | None:
    """``nn.Linear`` / :class:`~ntkcheck.models.Linear` on (B, ..., k): positions are the middle dims."""
    if not inputs or not batched(batch, inputs[0], output) or inputs[0].ndim < 2:
        return None
    x = inputs[0]
    w_mult, b_mult = multipliers(module)
    m, k = module.weight.shape
    signal = last_dim(batch, m)
    bias = (module.bias, b_mult) if trainable(module.bias) else None
    if not trainable(module.weight):
        return [Piece(module.bias, "diag", output, signal, None, b_mult)] if bias else []
    return [Piece(module.weight, "outer", output, signal, x.detach().reshape(batch, -1, k), w_mult, bias=bias)]


def _embedding_rule(
    module: Any, inputs: tuple[Any, ...], kwargs: dict[str, Any], output: torch.Tensor, batch: int
) -> list[Piece] | None:
    """``nn.Embedding`` / ntkcheck ``Embedding``: the gradient scatters G into the looked-up rows."""
    if not trainable(module.weight):
        return []
    if (
        not inputs
        or not batched(batch, inputs[0], output)
        or getattr(module, "max_norm", None) is not None
        or getattr(module, "scale_grad_by_freq", False)
    ):
        return None
    ids = inputs[0].detach().reshape(batch, -1)
    w_mult, _ = multipliers(module)
    dim = module.weight.shape[1]
    signal = last_dim(batch, dim)
    pad = getattr(module, "padding_idx", None)
    if pad is not None:  # the padding row gets no gradient
        keep = (ids != pad).unsqueeze(-1)
        signal = lambda g: last_dim(batch, dim)(g) * keep  # noqa: E731
    return [Piece(module.weight, "index", output, signal, ids, w_mult)]


def _affine_pieces(
    module: Any, output: torch.Tensor, signal: Callable[[torch.Tensor], torch.Tensor], xhat: torch.Tensor
) -> list[Piece]:
    w_mult, b_mult = multipliers(module)
    pieces = []
    if trainable(module.weight):
        pieces.append(Piece(module.weight, "diag", output, signal, xhat, w_mult))
    if trainable(getattr(module, "bias", None)):
        pieces.append(Piece(module.bias, "diag", output, signal, None, b_mult))
    return pieces


def _layer_norm_rule(
    module: Any, inputs: tuple[Any, ...], kwargs: dict[str, Any], output: torch.Tensor, batch: int
) -> list[Piece] | None:
    """LayerNorm / RMSNorm over the trailing ``normalized_shape``: ``a`` is the normalised input."""
    if not inputs or not batched(batch, inputs[0], output) or module.weight is None:
        return None
    x = inputs[0].detach()
    shape = tuple(module.weight.shape)
    if isinstance(module, nn.RMSNorm):
        xhat = torch.nn.functional.rms_norm(x, shape, None, module.eps)
    else:
        xhat = torch.nn.functional.layer_norm(x, shape, None, None, module.eps)
    m = math.prod(shape)
    return _affine_pieces(module, output, last_dim(batch, m), xhat.reshape(batch, -1, m))


def _group_norm_rule(
    module: Any, inputs: tuple[Any, ...], kwargs: dict[str, Any], output: torch.Tensor, batch: int
) -> list[Piece] | None:
    """``nn.GroupNorm``: per-channel gain and bias over the spatial positions."""
    if not inputs or not batched(batch, inputs[0], output) or module.weight is None:
        return None
    x = inputs[0].detach()
    xhat = torch.nn.functional.group_norm(x, module.num_groups, None, None, module.eps)
    c = module.num_channels
    return _affine_pieces(module, output, channels_last(batch, c), channels_last(batch, c)(xhat))


def _batch_norm_rule(
    module: Any, inputs: tuple[Any, ...], kwargs: dict[str, Any], output: torch.Tensor, batch: int
) -> list[Piece] | None:
    """BatchNorm in eval mode with running statistics: ``a = (x - running_mean) / sqrt(running_var + eps)``."""
    if module.training or module.running_mean is None or module.weight is None:
        return None
    if not inputs or not batched(batch, inputs[0], output):
        return None
    x = inputs[0].detach()
    xhat = torch.nn.functional.batch_norm(
        x, module.running_mean, module.running_var, None, None, False, 0.0, module.eps
    )
    c = module.num_features
    return _affine_pieces(module, output, channels_last(batch, c), channels_last(batch, c)(xhat))


def _mha_rule(
    module: Any, inputs: tuple[Any, ...], kwargs: dict[str, Any], output: tuple[Any, ...], batch: int
) -> tuple[list[Piece], tuple[Any, ...]] | None:
    """``nn.MultiheadAttention`` without masks, extra key/value biases or dropout: the output recomputed as
    its three input projections (rows of ``in_proj_weight``), scaled dot-product attention and ``out_proj``,
    each projection a linear layer on (B, T, d)."""
    names = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask")
    call = dict(zip(names, inputs)) | kwargs
    if (
        call.get("key_padding_mask") is not None
        or call.get("attn_mask") is not None
        or module.bias_k is not None
        or module.add_zero_attn
        or not module._qkv_same_embed_dim
        or (module.training and module.dropout > 0)
        or module.in_proj_bias is None
        or module.out_proj.bias is None
    ):
        return None
    q_in, k_in, v_in = (call[n] for n in ("query", "key", "value"))
    if not module.batch_first:
        q_in, k_in, v_in = (
            t.transpose(0, 1) if isinstance(t, torch.Tensor) and t.ndim == 3 else t for t in (q_in, k_in, v_in)
        )
    if not batched(batch, q_in, k_in, v_in) or q_in.ndim != 3:
        return None
    e, h = module.embed_dim, module.num_heads
    w, b = module.in_proj_weight, module.in_proj_bias
    pieces, projected = [], []
    for j, t in enumerate((q_in, k_in, v_in)):
        z = torch.nn.functional.linear(t, w[j * e : (j + 1) * e], b[j * e : (j + 1) * e])
        pieces.append(
            Piece(
                w,
                "outer",
                z,
                last_dim(batch, e),
                t.detach().reshape(batch, -1, e),
                1.0,
                (j * e, (j + 1) * e),
                (b, 1.0),
            )
        )
        projected.append(z.reshape(batch, z.shape[1], h, e // h).transpose(1, 2))
    q, k, v = projected
    mixed = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=bool(call.get("is_causal", False)))
    mixed = mixed.transpose(1, 2).reshape(batch, -1, e)
    out = torch.nn.functional.linear(mixed, module.out_proj.weight, module.out_proj.bias)
    pieces.append(
        Piece(
            module.out_proj.weight,
            "outer",
            out,
            last_dim(batch, e),
            mixed.detach(),
            1.0,
            None,
            (module.out_proj.bias, 1.0),
        )
    )
    pieces = [pc for pc in pieces if trainable(pc.param)]
    out = out if module.batch_first else out.transpose(0, 1)
    return pieces, (out, output[1])


_BUILT_IN: tuple[tuple[tuple[type, ...], Rule], ...] = (
    ((nn.MultiheadAttention,), _mha_rule),
    ((nn.Linear, Linear), _linear_rule),
    ((nn.Conv1d, nn.Conv2d, Conv1d, Conv2d), conv_rule),
    ((nn.Embedding, Embedding), _embedding_rule),
    ((nn.LayerNorm, nn.RMSNorm, LayerNorm), _layer_norm_rule),
    ((nn.GroupNorm,), _group_norm_rule),
    ((nn.modules.batchnorm._BatchNorm,), _batch_norm_rule),
)
_RULES.extend((module_type, rule) for types, rule in _BUILT_IN for module_type in types)
