"""Kernels as linear operators: the empirical NTK applied matrix-free, and dense or file-backed kernels.

:func:`ntk_operator` turns a model and its inputs into the operator ``v -> K v`` of the
empirical NTK ``K = J J^T`` (seed 000 §3.2; ``J`` the (N*O, P) Jacobian of the outputs
with respect to the trainable parameters) without forming K or J:

    K v = J (J^T v):  torch.func ``vjp`` gives ``J^T v`` as a parameter-shaped tensor,
                      then ``jvp`` along it gives ``J (J^T v)``.

Rows are processed in chunks of ``chunk`` inputs, so a product needs memory for the
N*O-vector(s), one parameter-shaped tensor per right-hand side and the activations of
one chunk: ``O(N O k + P k)`` plus the chunk's activations, never the ``N^2`` kernel or
the ``N P`` Jacobian.  A product costs about two forward passes, one backward pass and
one forward-mode pass of the model over all N inputs, per right-hand side.

The operator is a :class:`~ntkcheck.kernels.kernel_operator.KernelOperator`: a scipy
``LinearOperator`` (float64 numpy in and out) that also applies to torch tensors, ``op @ v``
with ``v`` of shape (N,) or (N, k) in the operator's dtype and on its device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.func import jacrev, jvp, vjp, vmap

from ntkcheck._support.validation import (
    check_batch,
    check_choice,
    check_finite_result,
    check_matches_parameters,
    check_optional_callable,
    check_positive_int,
)
from ntkcheck.kernels._autodiff import FunctionalModel
from ntkcheck.kernels._model_rows import check_independent_rows, check_model, output_rows, run_on_rows, usable
from ntkcheck.kernels.kernel_operator import KernelOperator

__all__ = ["NTKOperator", "ntk_operator"]

OPERATOR_OUTPUTS = ("full", "trace", "sum")
DEFAULT_CHUNK = 512
"""Input rows per vjp/jvp pass when ``chunk`` is not given."""
DIAG_BLOCK_NUMBERS = 2**23
"""Per-sample Jacobian entries held at once by :meth:`NTKOperator.diagonal` (64 MiB of float64)."""
_DTYPES = (torch.float32, torch.float64)


class NTKOperator(KernelOperator):
    """The empirical NTK of ``model`` on ``x`` as the operator ``v -> J (J^T v)`` (see :func:`ntk_operator`)."""

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        *,
        output: str,
        chunk: int,
        n_out: int,
        output_fn: Callable[[Any], torch.Tensor] | None,
    ) -> None:
        self.model, self.x, self.output, self.chunk, self.n_out = model, x, output, chunk, n_out
        rows = partial(output_rows, output_fn=output_fn)
        self._fm = FunctionalModel(model, rows)
        params = self._fm.params
        dtype = next(iter(params.values())).dtype
        size = x.shape[0] * (n_out if output == "full" else 1)
        super().__init__(size, dtype, x.device)
        self.n_params = self._fm.n_params()

    def _f(self, params: dict[str, torch.Tensor], xb: torch.Tensor) -> torch.Tensor:
        """The (B, O') outputs whose kernel this operator is: all O outputs, or ``sum_o f_o / sqrt(O)``."""
        out = self._fm(params, xb)
        if self.output == "sum" and self.n_out > 1:
            return out.sum(1, keepdim=True) / math.sqrt(self.n_out)
        return out

    def _chunks(self) -> list[tuple[int, int]]:
        n = self.x.shape[0]
        return [(a, min(a + self.chunk, n)) for a in range(0, n, self.chunk)]

    def _jt(self, cot: torch.Tensor) -> dict[str, torch.Tensor]:
        """``J^T u`` for cotangents ``cot`` (m, N, O') on the model's outputs: ``name -> (m, *shape)``."""
        params = self._fm.params
        total: dict[str, torch.Tensor] | None = None
        for a, b in self._chunks():
            xb = self.x[a:b]
            pull = vjp(partial(self._f, xb=xb), params)[1]
            (g,) = vmap(pull)(cot[:, a:b])
            total = g if total is None else {n: total[n].add_(g[n]) for n in total}
        assert total is not None
        return total

    def _push(
        self, tangent: dict[str, torch.Tensor], params: dict[str, torch.Tensor], xb: torch.Tensor
    ) -> torch.Tensor:
        """``J t`` on the rows ``xb`` for one parameter-shaped tangent."""
        out: torch.Tensor = jvp(partial(self._f, xb=xb), (params,), (tangent,))[1]
        return out

    def _j(self, tangents: dict[str, torch.Tensor]) -> torch.Tensor:
        """``J t`` for parameter-shaped tangents (m, *shape): (m, N, O')."""
        params = self._fm.params
        outs = []
        for a, b in self._chunks():
            xb = self.x[a:b]

            outs.append(vmap(partial(self._push, params=params, xb=xb))(tangents))
        return torch.cat(outs, dim=1)

    def _apply(self, V: torch.Tensor) -> torch.Tensor:
        n, k = self.x.shape[0], V.shape[1]
        with torch.inference_mode(False), torch.enable_grad():
            if self.output == "trace" and self.n_out > 1:
                o = self.n_out
                # K_trace v = sum_o J_o (J_o^T v): cotangent (o, j) carries column j of V in output o
                eye = torch.eye(o, dtype=V.dtype, device=V.device)
                cot = (V.T[None, :, :, None] * eye[:, None, None, :]).reshape(o * k, n, o)
                out = self._j(self._jt(cot)).reshape(o, k, n, o)
                return out.diagonal(dim1=0, dim2=3).sum(-1).T.contiguous()
            o = 1 if self.output == "sum" else self.n_out
            cot = V.T.reshape(k, n, o)
            return self._j(self._jt(cot)).reshape(k, n * o).T.contiguous()

    def diagonal(self) -> torch.Tensor:
        """``K_ii = |d f_i / d theta|^2`` from per-sample Jacobians (``vmap(jacrev)``), in row blocks whose
        Jacobian, rows * O * P numbers, stays under ``DIAG_BLOCK_NUMBERS`` (and at most ``chunk`` rows)."""
        params = self._fm.params
        o = 1 if self.output == "sum" else self.n_out
        rows = max(1, min(self.chunk, DIAG_BLOCK_NUMBERS // max(1, o * self.n_params)))
        n = self.x.shape[0]

        def single(p: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
            return self._f(p, xi.unsqueeze(0)).squeeze(0)

        out = []
        with torch.inference_mode(False), torch.enable_grad():
            for a in range(0, n, rows):
                jac = vmap(jacrev(single), (None, 0))(params, self.x[a : a + rows])  # name -> (B, O', *shape)
                sq = sum(j.detach().flatten(2).pow(2).sum(2) for j in jac.values())  # (B, O')
                out.append(sq.sum(1) if self.output == "trace" else sq.reshape(-1))
        return check_finite_result(torch.cat(out), "NTKOperator.diagonal")

    def __repr__(self) -> str:
        return (
            f"NTKOperator(N={self.size}, inputs={self.x.shape[0]}, outputs={self.n_out}, output={self.output!r}, "
            f"P={self.n_params}, chunk={self.chunk}, {self.torch_dtype}, {self.device})"
        )


def ntk_operator(
    model: nn.Module,
    x: torch.Tensor,
    *,
    output: str = "full",
    chunk: int | None = None,
    output_fn: Callable[[Any], torch.Tensor] | None = None,
) -> NTKOperator:
    """The empirical NTK ``K = J J^T`` of ``model`` on the rows of ``x`` as a matrix-free operator.

    ``K v = J (J^T v)``: ``J^T v`` by ``torch.func.vjp`` (a parameter-shaped tensor),
    then ``J`` applied to it by ``torch.func.jvp``.  Neither K nor J is formed; memory
    is ``O(N O k + P k)`` for k right-hand sides plus the activations of ``chunk`` input
    rows (default ``min(N, 512)``).  Only the forward function is used, so every model
    family works; only parameters with ``requires_grad=True`` count (as in :func:`ntkcheck.ntk`).

    ``output`` names the kernel, as in :func:`ntkcheck.ntk`:

    * ``"full"`` (default): the (N*O, N*O) matrix of all output pairs, row index
      ``i * O + a`` (the ordering :mod:`ntkcheck.dynamics.solvers` uses for (n, n, O, O) kernels);
    * ``"trace"``: ``sum_o Theta_oo``, (N, N) (O vjp/jvp pairs per right-hand side);
    * ``"sum"``: the kernel of ``sum_o f_o / sqrt(O)``, (N, N).

    For a scalar output (N,) or (N, 1) the three coincide, (N, N).  Rows must not
    interact (checked on a probe of three rows, as :func:`ntkcheck.ntk` does): a model
    whose output row depends on other rows has no per-sample kernel.

    Returns an :class:`NTKOperator`: a scipy ``LinearOperator`` (float64 numpy in/out) that
    also takes torch tensors, ``op @ v`` with v (N,) or (N, k), computed in the model's dtype
    on its device.
    """
    check_model(model)
    check_choice(output, "output", OPERATOR_OUTPUTS)
    check_optional_callable(output_fn, "output_fn")
    x = check_batch(x, "x")
    for p in model.parameters():
        if p.requires_grad and p.dtype not in _DTYPES:
            raise TypeError(f"model's trainable parameters must be float32 or float64, got {p.dtype}")
    check_matches_parameters(x, "x", model)
    chunk = min(x.shape[0], DEFAULT_CHUNK) if chunk is None else check_positive_int(chunk, "chunk")
    with torch.inference_mode(False), torch.enable_grad():
        x = usable(x)
        n_out = run_on_rows(model, x[:2], "x", output_fn).shape[1]
        if x.shape[0] > 1:
            check_independent_rows(model, x[:3], output_fn)
    return NTKOperator(model, x, output=output, chunk=min(chunk, x.shape[0]), n_out=n_out, output_fn=output_fn)
