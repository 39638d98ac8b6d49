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

:func:`as_kernel_operator` wraps a dense kernel (a torch tensor) or a file-backed one
(``np.memmap`` / ``np.load(path, mmap_mode="r")``, read in row blocks) in the same
interface, so :mod:`ntkcheck.kernels.spectral` and :mod:`ntkcheck.dynamics.iterative` take any of them.

Every operator here is a :class:`scipy.sparse.linalg.LinearOperator` (float64 numpy in
and out; ``matvec``, ``matmat``; symmetric, so ``rmatvec = matvec``) and also applies to
torch tensors: ``op @ v`` with ``v`` of shape (N,) or (N, k) returns a tensor of that
shape in the operator's dtype and on its device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator
from torch import nn
from torch.func import jacrev, jvp, vjp, vmap

from ntkcheck._support.validation import check_batch, check_choice, check_finite_result, check_positive_int
from ntkcheck.kernels._autodiff import FunctionalModel
from ntkcheck.kernels.empirical import _check_independent_rows, _rows, _run, _usable

__all__ = ["KernelOperator", "NTKOperator", "as_kernel_operator", "ntk_operator"]

OPERATOR_OUTPUTS = ("full", "trace", "sum")
DEFAULT_CHUNK = 512
"""Input rows per vjp/jvp pass when ``chunk`` is not given."""
DIAG_BLOCK_NUMBERS = 2**23
"""Per-sample Jacobian entries held at once by :meth:`NTKOperator.diagonal` (64 MiB of float64)."""
DEFAULT_BLOCK_BYTES = 64 * 2**20
"""Bytes of a file-backed kernel read per row block when ``block_rows`` is not given."""
_DTYPES = (torch.float32, torch.float64)


class KernelOperator(LinearOperator):
    """A symmetric (N, N) kernel as an operator: scipy's float64 interface plus ``op @ tensor``.

    Subclasses implement :meth:`_apply` (a (N, k) tensor in :attr:`torch_dtype` on
    :attr:`device` to ``K V``), :meth:`diagonal` and :meth:`columns`.
    """

    torch_dtype: torch.dtype
    device: torch.device

    def __init__(self, size: int, torch_dtype: torch.dtype, device: torch.device) -> None:
        super().__init__(dtype=np.dtype(np.float64), shape=(size, size))
        self.torch_dtype = torch_dtype
        self.device = torch.device(device)

    @property
    def size(self) -> int:  # type: ignore[override]
        """N, the number of rows (and columns) of the kernel."""
        return int(self.shape[0])

    # -- torch interface -------------------------------------------------------------------
    def _apply(self, V: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        """``K v`` for a tensor ``v`` of shape (N,) or (N, k); returned in the operator's dtype and device."""
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"v must be a torch.Tensor of shape ({self.size},) or ({self.size}, k), "
                            f"got {type(v).__name__}")
        if v.ndim not in (1, 2) or v.shape[0] != self.size:
            raise ValueError(f"v must have shape ({self.size},) or ({self.size}, k) (the operator is "
                             f"{self.size} x {self.size}), got {tuple(v.shape)}")
        if not v.is_floating_point():
            raise TypeError(f"v must be a floating-point tensor, got dtype {v.dtype}")
        if v.device != self.device:
            raise ValueError(f"v must be on the operator's device ({self.device}), got {v.device}")
        V = v.to(self.torch_dtype).reshape(self.size, -1)
        if V.shape[1] == 0:
            return V.clone().reshape(v.shape)
        out = self._apply(V)
        return check_finite_result(out, f"{type(self).__name__} product").reshape(v.shape)

    def __matmul__(self, other: Any) -> Any:
        if isinstance(other, torch.Tensor):
            return self.apply(other)
        return super().__matmul__(other)

    def diagonal(self) -> torch.Tensor:
        """The diagonal ``K_ii`` as an (N,) tensor in the operator's dtype and device."""
        raise NotImplementedError

    def columns(self, index: Sequence[int]) -> torch.Tensor:
        """The columns ``K[:, index]`` as an (N, len(index)) tensor."""
        E = torch.zeros(self.size, len(index), dtype=self.torch_dtype, device=self.device)
        E[torch.as_tensor(list(index), dtype=torch.long, device=self.device), torch.arange(len(index),
                                                                                          device=self.device)] = 1
        return self.apply(E)

    # -- scipy interface (float64 numpy) -----------------------------------------------------
    def matvec(self, x: Any) -> np.ndarray:
        """``K x`` for x of shape (N,) or (N, 1), float64 numpy out (scipy's ``LinearOperator.matvec``)."""
        shape = np.shape(x)
        if shape not in ((self.size,), (self.size, 1)):
            raise ValueError(f"x must have shape ({self.size},) or ({self.size}, 1) (the operator is "
                             f"{self.size} x {self.size}), got {shape}")
        return super().matvec(x)

    def matmat(self, X: Any) -> np.ndarray:
        """``K X`` for X of shape (N, k), float64 numpy out (scipy's ``LinearOperator.matmat``)."""
        shape = np.shape(X)
        if len(shape) != 2 or shape[0] != self.size:
            raise ValueError(f"X must have shape ({self.size}, k) (the operator is {self.size} x {self.size}), "
                             f"got {shape}")
        return super().matmat(X)

    def rmatvec(self, x: Any) -> np.ndarray:
        """``K^T x = K x`` (the kernel is symmetric)."""
        return self.matvec(x)

    def _matmat(self, X: np.ndarray) -> np.ndarray:
        V = torch.from_numpy(np.array(X, dtype=np.float64)).to(self.device)  # a copy: X may be read-only
        out = self.apply(V)
        return out.detach().to("cpu", torch.float64).numpy()

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        return self._matmat(np.asarray(x).reshape(-1, 1)).reshape(np.shape(x))

    def _rmatvec(self, x: np.ndarray) -> np.ndarray:
        return self._matvec(x)

    def _rmatmat(self, X: np.ndarray) -> np.ndarray:
        return self._matmat(X)

    def _adjoint(self) -> KernelOperator:
        return self


# ---------------------------------------------------------------------------------------------
# the empirical NTK, matrix-free


class NTKOperator(KernelOperator):
    """The empirical NTK of ``model`` on ``x`` as the operator ``v -> J (J^T v)`` (see :func:`ntk_operator`)."""

    def __init__(self, model: nn.Module, x: torch.Tensor, *, output: str, chunk: int, n_out: int,
                 output_fn: Callable[[Any], torch.Tensor] | None) -> None:
        self.model, self.x, self.output, self.chunk, self.n_out = model, x, output, chunk, n_out
        rows = partial(_rows, output_fn=output_fn)
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
            _, pull = vjp(lambda p: self._f(p, xb), params)  # noqa: B023 - used at once
            (g,) = vmap(pull)(cot[:, a:b])
            total = g if total is None else {n: total[n].add_(g[n]) for n in total}
        assert total is not None
        return total

    def _j(self, tangents: dict[str, torch.Tensor]) -> torch.Tensor:
        """``J t`` for parameter-shaped tangents (m, *shape): (m, N, O')."""
        params = self._fm.params
        outs = []
        for a, b in self._chunks():
            xb = self.x[a:b]

            def push(t: dict[str, torch.Tensor], xb: torch.Tensor = xb) -> torch.Tensor:
                return jvp(lambda p: self._f(p, xb), (params,), (t,))[1]

            outs.append(vmap(push)(tangents))
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
                jac = vmap(jacrev(single), (None, 0))(params, self.x[a:a + rows])  # name -> (B, O', *shape)
                sq = sum(j.detach().flatten(2).pow(2).sum(2) for j in jac.values())  # (B, O')
                out.append(sq.sum(1) if self.output == "trace" else sq.reshape(-1))
        return check_finite_result(torch.cat(out), "NTKOperator.diagonal")

    def __repr__(self) -> str:
        return (f"NTKOperator(N={self.size}, inputs={self.x.shape[0]}, outputs={self.n_out}, output={self.output!r}, "
                f"P={self.n_params}, chunk={self.chunk}, {self.torch_dtype}, {self.device})")


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
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_choice(output, "output", OPERATOR_OUTPUTS)
    if output_fn is not None and not callable(output_fn):
        raise TypeError(f"output_fn must be callable or None, got {type(output_fn).__name__}")
    x = check_batch(x, "x")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters: its NTK is zero by definition")
    for p in params:
        if p.dtype not in _DTYPES:
            raise TypeError(f"model's trainable parameters must be float32 or float64, got {p.dtype}")
        if p.device != x.device or (x.is_floating_point() and p.dtype != x.dtype):
            raise TypeError(f"x must match the model's parameters ({p.dtype} on {p.device}), "
                            f"got {x.dtype} on {x.device}")
    chunk = min(x.shape[0], DEFAULT_CHUNK) if chunk is None else check_positive_int(chunk, "chunk")
    with torch.inference_mode(False), torch.enable_grad():
        x = _usable(x)
        n_out = _run(model, x[:2], "x", output_fn).shape[1]
        if x.shape[0] > 1:
            _check_independent_rows(model, x[:3], output_fn)
    return NTKOperator(model, x, output=output, chunk=min(chunk, x.shape[0]), n_out=n_out, output_fn=output_fn)


# ---------------------------------------------------------------------------------------------
# dense and file-backed kernels


def _asymmetry_error(name: str, asym: float, scale: float, eps: float, dtype: object) -> ValueError:
    ratio = asym / max(scale, np.finfo(np.float64).tiny)
    return ValueError(f"{name} must be symmetric: relative asymmetry max|K - K^T| / max|K| = {ratio:.3e} "
                      f"(max|K - K^T| = {asym:.3e}, max|K| = {scale:.3e}) exceeds sqrt(eps) = "
                      f"{math.sqrt(eps):.3e} ({dtype})")


class DenseKernelOperator(KernelOperator):
    """A dense (N, N) torch kernel as an operator (products in its dtype, on its device)."""

    def __init__(self, K: torch.Tensor) -> None:
        super().__init__(K.shape[0], K.dtype, K.device)
        self.K = K

    def _apply(self, V: torch.Tensor) -> torch.Tensor:
        return self.K @ V

    def diagonal(self) -> torch.Tensor:
        return self.K.diagonal().clone()

    def columns(self, index: Sequence[int]) -> torch.Tensor:
        return self.K[:, list(index)]

    def __repr__(self) -> str:
        return f"DenseKernelOperator(N={self.size}, {self.torch_dtype}, {self.device})"


class ArrayKernelOperator(KernelOperator):
    """A numpy (N, N) kernel, e.g. a ``np.memmap``, read ``block_rows`` rows at a time; products in float64 on the CPU."""

    def __init__(self, K: np.ndarray, block_rows: int) -> None:
        super().__init__(K.shape[0], torch.float64, torch.device("cpu"))
        self.K, self.block_rows = K, block_rows

    def row_blocks(self) -> list[tuple[int, int]]:
        n = self.size
        return [(a, min(a + self.block_rows, n)) for a in range(0, n, self.block_rows)]

    def rows(self, a: int, b: int) -> torch.Tensor:
        """Rows ``a:b`` of the kernel as a float64 tensor (one read of the file's row block)."""
        return torch.from_numpy(np.array(self.K[a:b], dtype=np.float64))  # a copy: files may be read-only

    def _apply(self, V: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(V)
        for a, b in self.row_blocks():
            out[a:b] = self.rows(a, b) @ V
        return out

    def diagonal(self) -> torch.Tensor:
        return torch.from_numpy(np.array(np.diagonal(self.K), dtype=np.float64))

    def columns(self, index: Sequence[int]) -> torch.Tensor:
        # K[:, j] = K[j, :] by symmetry: rows are contiguous in a row-major file
        return torch.from_numpy(np.array(self.K[list(index)], dtype=np.float64)).T.contiguous()

    def __repr__(self) -> str:
        kind = "memmap" if isinstance(self.K, np.memmap) else "array"
        return f"ArrayKernelOperator(N={self.size}, {kind} {self.K.dtype}, block_rows={self.block_rows})"


class _ScipyKernelOperator(KernelOperator):
    """Any square scipy ``LinearOperator`` (assumed symmetric, probed) in this interface; float64 on the CPU."""

    def __init__(self, A: LinearOperator) -> None:
        super().__init__(A.shape[0], torch.float64, torch.device("cpu"))
        self.A = A

    def _apply(self, V: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.array(self.A.matmat(V.numpy()), dtype=np.float64).reshape(V.shape))

    def diagonal(self) -> torch.Tensor:
        n = self.size
        out = torch.empty(n, dtype=torch.float64)
        step = 256
        for a in range(0, n, step):
            idx = list(range(a, min(a + step, n)))
            out[a:a + len(idx)] = self.columns(idx)[idx, torch.arange(len(idx))]
        return out


def _check_array(K: np.ndarray, name: str, block_rows: int) -> None:
    """Symmetry within sqrt(eps) and finiteness, tile by tile (the file is read about twice)."""
    eps = float(np.finfo(K.dtype).eps)
    n = K.shape[0]
    asym = scale = 0.0
    bad = 0
    for a in range(0, n, block_rows):
        b = min(a + block_rows, n)
        R = np.asarray(K[a:b], dtype=np.float64)
        finite = np.isfinite(R)
        if not finite.all():
            bad += int((~finite).sum())
            continue
        scale = max(scale, float(np.abs(R).max()))
        for c in range(a, n, block_rows):
            d = min(c + block_rows, n)
            T = np.asarray(K[c:d, a:b], dtype=np.float64)
            if np.isfinite(T).all():
                asym = max(asym, float(np.abs(R[:, c:d] - T.T).max()))
    if bad:
        raise ValueError(f"{name} contains {bad} NaN or infinite entries")
    if asym > math.sqrt(eps) * max(scale, np.finfo(np.float64).tiny):
        raise _asymmetry_error(name, asym, scale, eps, K.dtype)


def as_kernel_operator(kernel: object, *, name: str = "kernel", block_rows: int | None = None,
                       check: bool = True) -> KernelOperator:
    """``kernel`` as a :class:`KernelOperator`.

    Accepts an operator of this module (returned as is); a dense torch tensor, (N, N) or
    (n, n, O, O) (reshaped to (n*O, n*O) with row index ``i*O + a``, as :mod:`ntkcheck.dynamics.solvers`
    does), float32 or float64, products in its dtype on its device; a numpy array of
    float32/float64, including a file-backed ``np.memmap`` (``np.load(path, mmap_mode="r")``),
    read ``block_rows`` rows at a time (default: 64 MiB of float64 per block), products in float64
    on the CPU; or any square scipy ``LinearOperator`` (products in float64).

    With ``check`` (default) a tensor or array must be symmetric, ``max|K - K^T| <= sqrt(eps)
    max|K|``, and finite (``ValueError`` naming ``name`` with the measured numbers; for a file
    this reads it about twice, tile by tile); a scipy operator is probed for symmetry with two
    seeded random vectors.  Positive semi-definiteness is not checked here (it would take a
    factorisation): the solvers that need it report its failure with the measured quantity.
    """
    if isinstance(kernel, KernelOperator):
        return kernel
    if block_rows is not None:
        check_positive_int(block_rows, "block_rows")
    if isinstance(kernel, torch.Tensor):
        from ntkcheck._support.validation import check_kernel_tensor

        K = check_kernel_tensor(kernel, name, (2, 4), "(N, N) or (n, n, O, O)")
        if K.shape[0] != K.shape[1] or (K.ndim == 4 and K.shape[2] != K.shape[3]):
            raise ValueError(f"{name} must be square, (N, N) or (n, n, O, O), got shape {tuple(K.shape)}")
        if K.ndim == 4:
            n, o = K.shape[0], K.shape[2]
            K = K.permute(0, 2, 1, 3).reshape(n * o, n * o)
        K = K.detach()
        if check:
            eps = torch.finfo(K.dtype).eps
            asym, scale = float((K - K.T).abs().max()), float(K.abs().max())
            if asym > math.sqrt(eps) * max(scale, torch.finfo(K.dtype).tiny):
                raise _asymmetry_error(name, asym, scale, eps, K.dtype)
        return DenseKernelOperator(K)
    if isinstance(kernel, np.ndarray):
        if kernel.dtype not in (np.float32, np.float64):
            raise TypeError(f"{name} must be a float32 or float64 array, got dtype {kernel.dtype}")
        if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] == 0:
            raise ValueError(f"{name} must be a non-empty square (N, N) array, got shape {kernel.shape}")
        rows = block_rows or max(1, DEFAULT_BLOCK_BYTES // (8 * kernel.shape[0]))
        if check:
            _check_array(kernel, name, rows)
        return ArrayKernelOperator(kernel, rows)
    if isinstance(kernel, LinearOperator):
        if kernel.shape[0] != kernel.shape[1] or kernel.shape[0] == 0:
            raise ValueError(f"{name} must be a non-empty square operator, got shape {kernel.shape}")
        op = _ScipyKernelOperator(kernel)
        if check:
            gen = torch.Generator().manual_seed(0)
            U = torch.randn(op.size, 2, dtype=torch.float64, generator=gen)
            KU = op.apply(U)
            a, b = float(U[:, 0] @ KU[:, 1]), float(U[:, 1] @ KU[:, 0])
            scale = float(KU.norm(dim=0).max() * U.norm(dim=0).max())
            if abs(a - b) > 1e-8 * max(scale, np.finfo(np.float64).tiny):
                raise ValueError(f"{name} must be symmetric: u^T (K v) = {a:.6g} but v^T (K u) = {b:.6g} "
                                 f"for two random vectors (relative gap {abs(a - b) / max(scale, 1e-300):.3e})")
        return op
    raise TypeError(f"{name} must be a torch.Tensor, a numpy array (np.memmap included), a scipy "
                    f"LinearOperator or an ntkcheck KernelOperator, got {type(kernel).__name__}")
