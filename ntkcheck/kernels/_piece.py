"""What a per-layer kernel rule returns: :class:`Piece` s describing per-sample gradients, and shared helpers.

A *rule* (:data:`Rule`, registered by :func:`ntkcheck.kernels._rules.register_rule`) maps one call of a
module to the pieces of its parameters' per-sample gradients; see :mod:`ntkcheck.kernels._rules`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

KINDS = ("outer", "diag", "index")


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

    param: torch.Tensor
    kind: str
    out: torch.Tensor
    signal: Callable[[torch.Tensor], torch.Tensor]
    a: torch.Tensor | Callable[[], torch.Tensor] | None
    mult: float = 1.0
    rows: tuple[int, int] | None = None
    bias: tuple[torch.Tensor, float] | None = None
    per_sample: Callable[[torch.Tensor], torch.Tensor] | None = None

    def activations(self) -> torch.Tensor | None:
        """``a`` as a tensor."""
        return self.a() if callable(self.a) else self.a

    def required_activations(self) -> torch.Tensor:
        """``a`` as a tensor, for a piece whose kind needs one (``"outer"``, ``"index"``)."""
        a = self.activations()
        if a is None:
            raise ValueError(f"a {self.kind!r} piece needs its activations a, got None")
        return a


Rule = Callable[[Any, tuple[Any, ...], dict[str, Any], Any, int], "list[Piece] | tuple[list[Piece], object] | None"]


def batched(batch: int, *tensors: object) -> bool:
    """Whether every one of ``tensors`` is a tensor with ``batch`` rows along its first axis."""
    return all(isinstance(t, torch.Tensor) and t.ndim >= 1 and t.shape[0] == batch for t in tensors)


def last_dim(batch: int, m: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The signal map of an output (batch, ..., m): positions are all axes but the first and last."""
    return lambda g: g.reshape(batch, -1, m)


def channels_last(batch: int, c: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The signal map of an output (batch, c, *spatial): positions are the spatial axes, channels last."""
    """(B, C, *spatial) -> (B, S, C)."""
    return lambda g: g.reshape(batch, c, -1).transpose(1, 2)


def multipliers(module: Any) -> tuple[float, float]:
    """A layer's stored ``(weight_mult, bias_mult)``, 1 for a torch layer."""
    return float(getattr(module, "weight_mult", 1.0)), float(getattr(module, "bias_mult", 1.0))


def trainable(p: torch.Tensor | None) -> bool:
    """Whether ``p`` is a parameter with ``requires_grad``."""
    return isinstance(p, nn.Parameter) and p.requires_grad
