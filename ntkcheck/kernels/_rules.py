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
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ntkcheck.models import Conv1d, Conv2d, Embedding, LayerNorm, Linear

KINDS = ("outer", "diag", "index")
CONV_ROWS = 32
"""Rows per call of the batch-grouped convolution backward that forms per-sample convolution gradients."""


@dataclass
class Piece:
    """One call's contribution to the per-sample gradient of ``param`` (or of its rows ``rows``).

    With ``G = signal(d f / d out)`` of shape (B, S, m), the per-sample gradient of row n is

    * ``kind="outer"``: ``mult * sum_s G[n, s] (x) a[n, s]`` with ``a`` (B, S, k), a (m, k) matrix
      (a linear map's weight; a convolution's weight with ``a`` its patches);
    * ``kind="diag"``: ``mult * sum_s G[n, s] * a[n, s]`` with ``a`` (B, S, m), or ``a=None``
      for ``mult * sum_s G[n, s]`` (a bias; a normalisation's gain with ``a`` the normalised input);
    * ``kind="index"``: ``mult * sum_s e_{a[n, s]} (x) G[n, s]`` with ``a`` (B, S) integer ids,
      a (param.shape[0], m) matrix (an embedding table).

    ``a`` may also be a function of no arguments returning it, called only when needed.
    ``rows``: the rows ``[start, end)`` of ``param.reshape(param.shape[0], -1)`` the gradient
    fills (a convolution group), or ``None`` for the whole parameter.  ``bias`` (``"outer"``
    only): a bias parameter and multiplier whose per-sample gradient is ``mult_b * sum_s G[n, s]``
    over the same rows, so the engine can share ``G``'s Gram between weight and bias.
    ``per_sample`` (``"outer"`` only, optional): maps signals (K, B, S, m) to the per-sample
    gradients (K, B, m * k) without ``mult`` (e.g. by a batched convolution backward), used
    instead of contracting with ``a``.
    """

    param: nn.Parameter
    kind: str
    out: torch.Tensor
    signal: Callable[[torch.Tensor], torch.Tensor]
    a: torch.Tensor | Callable[[], torch.Tensor] | None
    mult: float = 1.0
    rows: tuple[int, int] | None = None
    bias: tuple[nn.Parameter, float] | None = None
    per_sample: Callable[[torch.Tensor], torch.Tensor] | None = None

    def activations(self) -> torch.Tensor | None:
        """``a`` as a tensor."""
        return self.a() if callable(self.a) else self.a


Rule = Callable[[nn.Module, tuple, dict, torch.Tensor, int], "list[Piece] | tuple[list[Piece], object] | None"]

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


def _batched(batch: int, *tensors: object) -> bool:
    return all(isinstance(t, torch.Tensor) and t.ndim >= 1 and t.shape[0] == batch for t in tensors)


def _last_dim(batch: int, m: int) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda g: g.reshape(batch, -1, m)


def _channels_last(batch: int, c: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """(B, C, *spatial) -> (B, S, C)."""
    return lambda g: g.reshape(batch, c, -1).transpose(1, 2)


def _mults(module: nn.Module) -> tuple[float, float]:
    return float(getattr(module, "weight_mult", 1.0)), float(getattr(module, "bias_mult", 1.0))


def _trainable(p: torch.Tensor | None) -> bool:
    return isinstance(p, nn.Parameter) and p.requires_grad


def _linear_rule(module: nn.Module, inputs: tuple, kwargs: dict, output: torch.Tensor,
                 batch: int) -> list[Piece] | None:
    """``nn.Linear`` / :class:`~ntkcheck.models.Linear` on (B, ..., k): positions are the middle dims."""
    if not inputs or not _batched(batch, inputs[0], output) or inputs[0].ndim < 2:
        return None
    x = inputs[0]
    w_mult, b_mult = _mults(module)
    m, k = module.weight.shape
    signal = _last_dim(batch, m)
    bias = (module.bias, b_mult) if _trainable(module.bias) else None
    if not _trainable(module.weight):
        return [Piece(module.bias, "diag", output, signal, None, b_mult)] if bias else []
    return [Piece(module.weight, "outer", output, signal, x.detach().reshape(batch, -1, k), w_mult, bias=bias)]


def _same_padding(kernel: tuple[int, ...], dilation: tuple[int, ...]) -> list[int]:
    """F.pad amounts (last dim first) of torch's ``padding="same"``: the extra pixel goes right."""
    pad: list[int] = []
    for k, d in zip(reversed(kernel), reversed(dilation)):
        total = d * (k - 1)
        pad += [total // 2, total - total // 2]
    return pad


def _conv_rule(module: nn.Module, inputs: tuple, kwargs: dict, output: torch.Tensor,
               batch: int) -> list[Piece] | None:
    """``nn.Conv1d/2d`` / ntkcheck ``Conv1d/2d``: ``a`` are the input patches (``F.unfold``), positions the
    output pixels, one piece per group.  Per-sample gradients, per chunk of ``CONV_ROWS`` rows: for up to two
    cotangents one convolution backward with the chunk's rows as groups (no patches formed), for more one
    batched matmul of the chunk's patches with the signals of all cotangents (patches shared by them)."""
    if not inputs or not _batched(batch, inputs[0], output):
        return None
    x = inputs[0].detach()
    dims = module.weight.ndim - 2
    if dims not in (1, 2) or x.ndim != dims + 2:
        return None
    kernel = tuple(module.weight.shape[2:])
    stride, dilation = tuple(module.stride), tuple(module.dilation)
    padding = module.padding
    if getattr(module, "padding_mode", "zeros") != "zeros":
        x = F.pad(x, module._reversed_padding_repeated_twice, mode=module.padding_mode)
        padding = (0,) * dims
    elif padding == "same":
        x = F.pad(x, _same_padding(kernel, dilation))
        padding = (0,) * dims
    elif padding == "valid":
        padding = (0,) * dims
    padding = tuple(padding)
    groups = module.groups
    c_out = module.weight.shape[0]
    c_in = x.shape[1] // groups
    m = c_out // groups
    out_size = tuple(output.shape[2:])
    weight_grad = torch.nn.grad.conv1d_weight if dims == 1 else torch.nn.grad.conv2d_weight

    def patches(lo: int = 0, hi: int = batch) -> torch.Tensor:  # (hi - lo, groups, S, k) of rows lo:hi
        x2, k2, s2, d2, p2 = x[lo:hi], kernel, stride, dilation, padding
        if dims == 1:
            x2, k2, s2, d2, p2 = x2.unsqueeze(2), (1, *kernel), (1, *stride), (1, *dilation), (0, *padding)
        cols = F.unfold(x2, k2, dilation=d2, padding=p2, stride=s2)  # (rows, C*prod(kernel), S)
        return cols.view(hi - lo, groups, -1, cols.shape[-1]).transpose(2, 3)

    cache: list[torch.Tensor] = []

    def group_patches(j: int) -> torch.Tensor:
        if not cache:
            cache.append(patches())
        return cache[0][:, j]

    def per_sample(g: torch.Tensor, j: int) -> torch.Tensor:
        k_cot = g.shape[0]
        width = m * c_in * math.prod(kernel)
        if k_cot > 2:  # measured on CPU: the batch-grouped backward's cost grows with K faster than patches'
            out = torch.empty(k_cot, batch, m, width // m, dtype=g.dtype, device=g.device)
            for lo in range(0, batch, CONV_ROWS):  # row chunks: the patches of a chunk stay in cache
                hi = min(lo + CONV_ROWS, batch)
                part = patches(lo, hi)[:, j] if groups == 1 else group_patches(j)[lo:hi]
                out[:, lo:hi] = torch.einsum("kbsm,bsn->kbmn", g[:, lo:hi], part)
            return out.view(k_cot, batch, width)
        out = torch.empty(batch, k_cot, width, dtype=g.dtype, device=g.device)
        for lo in range(0, batch, CONV_ROWS):  # row chunks: measured faster on CPU than one call of B groups
            hi = min(lo + CONV_ROWS, batch)
            inp = x[lo:hi, j * c_in:(j + 1) * c_in].reshape(1, (hi - lo) * c_in, *x.shape[2:])
            grad = g[:, lo:hi].permute(1, 0, 3, 2).reshape(1, (hi - lo) * k_cot * m, *out_size)
            w = weight_grad(inp, ((hi - lo) * k_cot * m, c_in, *kernel), grad, stride, padding, dilation, hi - lo)
            out[lo:hi] = w.view(hi - lo, k_cot, -1)
        return out.transpose(0, 1)

    w_mult, b_mult = _mults(module)
    bias = _trainable(module.bias)
    pieces = []
    for j in range(groups):
        rows = (j * m, (j + 1) * m) if groups > 1 else None

        def signal(g: torch.Tensor, j: int = j) -> torch.Tensor:
            return g.reshape(batch, c_out, -1)[:, j * m:(j + 1) * m].transpose(1, 2)

        if _trainable(module.weight):
            pieces.append(Piece(module.weight, "outer", output, signal, partial(group_patches, j), w_mult, rows,
                                (module.bias, b_mult) if bias else None, partial(per_sample, j=j)))
        elif bias:
            pieces.append(Piece(module.bias, "diag", output, signal, None, b_mult, rows))
    return pieces


def _embedding_rule(module: nn.Module, inputs: tuple, kwargs: dict, output: torch.Tensor,
                    batch: int) -> list[Piece] | None:
    """``nn.Embedding`` / ntkcheck ``Embedding``: the gradient scatters G into the looked-up rows."""
    if not _trainable(module.weight):
        return []
    if (not inputs or not _batched(batch, inputs[0], output) or getattr(module, "max_norm", None) is not None
            or getattr(module, "scale_grad_by_freq", False)):
        return None
    ids = inputs[0].detach().reshape(batch, -1)
    w_mult, _ = _mults(module)
    dim = module.weight.shape[1]
    signal = _last_dim(batch, dim)
    pad = getattr(module, "padding_idx", None)
    if pad is not None:  # the padding row gets no gradient
        keep = (ids != pad).unsqueeze(-1)
        signal = lambda g: _last_dim(batch, dim)(g) * keep  # noqa: E731
    return [Piece(module.weight, "index", output, signal, ids, w_mult)]


def _affine_pieces(module: nn.Module, output: torch.Tensor, signal: Callable, xhat: torch.Tensor) -> list[Piece]:
    w_mult, b_mult = _mults(module)
    pieces = []
    if _trainable(module.weight):
        pieces.append(Piece(module.weight, "diag", output, signal, xhat, w_mult))
    if _trainable(getattr(module, "bias", None)):
        pieces.append(Piece(module.bias, "diag", output, signal, None, b_mult))
    return pieces


def _layer_norm_rule(module: nn.Module, inputs: tuple, kwargs: dict, output: torch.Tensor,
                     batch: int) -> list[Piece] | None:
    """LayerNorm / RMSNorm over the trailing ``normalized_shape``: ``a`` is the normalised input."""
    if not inputs or not _batched(batch, inputs[0], output) or module.weight is None:
        return None
    x = inputs[0].detach()
    shape = tuple(module.weight.shape)
    if isinstance(module, nn.RMSNorm):
        xhat = F.rms_norm(x, shape, None, module.eps)
    else:
        xhat = F.layer_norm(x, shape, None, None, module.eps)
    m = math.prod(shape)
    return _affine_pieces(module, output, _last_dim(batch, m), xhat.reshape(batch, -1, m))


def _group_norm_rule(module: nn.Module, inputs: tuple, kwargs: dict, output: torch.Tensor,
                     batch: int) -> list[Piece] | None:
    """``nn.GroupNorm``: per-channel gain and bias over the spatial positions."""
    if not inputs or not _batched(batch, inputs[0], output) or module.weight is None:
        return None
    x = inputs[0].detach()
    xhat = F.group_norm(x, module.num_groups, None, None, module.eps)
    c = module.num_channels
    return _affine_pieces(module, output, _channels_last(batch, c), _channels_last(batch, c)(xhat))


def _batch_norm_rule(module: nn.Module, inputs: tuple, kwargs: dict, output: torch.Tensor,
                     batch: int) -> list[Piece] | None:
    """BatchNorm in eval mode with running statistics: ``a = (x - running_mean) / sqrt(running_var + eps)``."""
    if module.training or module.running_mean is None or module.weight is None:
        return None
    if not inputs or not _batched(batch, inputs[0], output):
        return None
    x = inputs[0].detach()
    xhat = F.batch_norm(x, module.running_mean, module.running_var, None, None, False, 0.0, module.eps)
    c = module.num_features
    return _affine_pieces(module, output, _channels_last(batch, c), _channels_last(batch, c)(xhat))


def _mha_rule(module: nn.Module, inputs: tuple, kwargs: dict, output: tuple,
              batch: int) -> tuple[list[Piece], tuple] | None:
    """``nn.MultiheadAttention`` without masks, extra key/value biases or dropout: the output recomputed as
    its three input projections (rows of ``in_proj_weight``), scaled dot-product attention and ``out_proj``,
    each projection a linear layer on (B, T, d)."""
    names = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask")
    call = dict(zip(names, inputs)) | kwargs
    if (call.get("key_padding_mask") is not None or call.get("attn_mask") is not None or module.bias_k is not None
            or module.add_zero_attn or not module._qkv_same_embed_dim or (module.training and module.dropout > 0)
            or module.in_proj_bias is None or module.out_proj.bias is None):
        return None
    q_in, k_in, v_in = (call[n] for n in ("query", "key", "value"))
    if not module.batch_first:
        q_in, k_in, v_in = (t.transpose(0, 1) if isinstance(t, torch.Tensor) and t.ndim == 3 else t
                            for t in (q_in, k_in, v_in))
    if not _batched(batch, q_in, k_in, v_in) or q_in.ndim != 3:
        return None
    e, h = module.embed_dim, module.num_heads
    w, b = module.in_proj_weight, module.in_proj_bias
    pieces, projected = [], []
    for j, t in enumerate((q_in, k_in, v_in)):
        z = F.linear(t, w[j * e:(j + 1) * e], b[j * e:(j + 1) * e])
        pieces.append(Piece(w, "outer", z, _last_dim(batch, e), t.detach().reshape(batch, -1, e), 1.0,
                            (j * e, (j + 1) * e), (b, 1.0)))
        projected.append(z.reshape(batch, z.shape[1], h, e // h).transpose(1, 2))
    mixed = F.scaled_dot_product_attention(*projected, is_causal=bool(call.get("is_causal", False)))
    mixed = mixed.transpose(1, 2).reshape(batch, -1, e)
    out = F.linear(mixed, module.out_proj.weight, module.out_proj.bias)
    pieces.append(Piece(module.out_proj.weight, "outer", out, _last_dim(batch, e), mixed.detach(), 1.0, None,
                        (module.out_proj.bias, 1.0)))
    pieces = [pc for pc in pieces if _trainable(pc.param)]
    out = out if module.batch_first else out.transpose(0, 1)
    return pieces, (out, output[1])


for _type, _rule in (
    ((nn.MultiheadAttention,), _mha_rule),
    ((nn.Linear, Linear), _linear_rule),
    ((nn.Conv1d, nn.Conv2d, Conv1d, Conv2d), _conv_rule),
    ((nn.Embedding, Embedding), _embedding_rule),
    ((nn.LayerNorm, nn.RMSNorm, LayerNorm), _layer_norm_rule),
    ((nn.GroupNorm,), _group_norm_rule),
    ((nn.modules.batchnorm._BatchNorm,), _batch_norm_rule),
):
    for _t in _type:
        _RULES.append((_t, _rule))
