"""Spectral estimates of kernels given as operators, dense tensors or file-backed arrays.

Every function takes any kernel :func:`ntkcheck.kernels.kernel_operator.as_kernel_operator` accepts: an
:class:`~ntkcheck.kernels.operator.NTKOperator` (:func:`ntkcheck.kernels.operator.ntk_operator`, the NTK never
formed), a dense torch tensor (N, N) or (n, n, O, O), a numpy array or ``np.memmap``
(``np.load(path, mmap_mode="r")``, read in row blocks), or a square scipy ``LinearOperator``.
They see the kernel only through products ``K V``, so their cost is a number of products
(stated per function) and their memory ``O(N k)``.

* :func:`top_eigenpairs`: the k largest eigenpairs by ARPACK's implicitly restarted Lanczos
  (``scipy.sparse.linalg.eigsh``, ``which="LA"``);
* :func:`trace_estimate`: Hutchinson's estimator with Rademacher probes and its standard error;
* :func:`condition_estimate`: the largest and smallest eigenvalue by Lanczos and the
  condition number, with how well the smallest is determined.

Kernels of at most ``DENSE_LIMIT`` rows are materialised (N products with the identity) and
decomposed by ``torch.linalg.eigh``: ARPACK needs ``k < N`` and gains nothing there.
Random start vectors and probes come from ``seed``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, LinearOperator, eigsh

from ntkcheck._support.validation import check_positive_int, check_seed
from ntkcheck.errors import SpectralConvergenceError
from ntkcheck.kernels.kernel_operator import KernelOperator, as_kernel_operator

__all__ = [
    "ConditionEstimate",
    "Eigenpairs",
    "SpectralConvergenceError",
    "TraceEstimate",
    "condition_estimate",
    "top_eigenpairs",
    "trace_estimate",
]

DENSE_LIMIT = 64
"""Kernels with at most this many rows are decomposed densely."""
PROBE_BLOCK = 32
"""Hutchinson probes applied per kernel product."""


@dataclass(frozen=True)
class Eigenpairs:
    """The k largest eigenpairs, largest first, float64 on the CPU.

    ``residuals[j] = ||K v_j - lambda_j v_j|| / |lambda_j|`` (unit ``v_j``), measured after
    convergence: some eigenvalue of K lies within ``residuals[j] |lambda_j|`` of ``lambda_j``.
    """

    values: torch.Tensor  # (k,)
    vectors: torch.Tensor  # (N, k), orthonormal columns
    residuals: torch.Tensor  # (k,)


@dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson's estimate of ``trace(K)``, its standard error and the number of probes."""

    estimate: float
    stderr: float
    n_probes: int


@dataclass(frozen=True)
class ConditionEstimate:
    """Extreme eigenvalues and ``lambda_max / lambda_min`` of a kernel (see :func:`condition_estimate`)."""

    lambda_max: float
    lambda_min: float  # Rayleigh quotient of the Lanczos vector: an upper bound of the true lambda_min
    lambda_min_error: float  # ||K v - lambda_min v||: an eigenvalue lies in [lambda_min - error, lambda_min]
    condition: float  # lambda_max / lambda_min: a lower bound of the true condition number (inf if <= 0)
    condition_upper: float  # lambda_max / (lambda_min - error), inf when that is <= 0
    reliable: bool  # condition_upper <= 1.1 condition: the condition number is known to 10%


def _check_tol(tol: object, name: str = "tol") -> float:
    if isinstance(tol, bool) or not isinstance(tol, (int, float)):
        raise TypeError(f"{name} must be a float in (0, 1), got {type(tol).__name__} {tol!r}")
    if not 0 < tol < 1:
        raise ValueError(f"{name} must be a float in (0, 1), got {tol!r}")
    return float(tol)


def _dense(op: KernelOperator) -> torch.Tensor:
    """The (small) kernel as a symmetrised float64 CPU matrix, from N unit-vector products."""
    K = op.apply(torch.eye(op.size, dtype=op.torch_dtype, device=op.device)).to("cpu", torch.float64)
    return (K + K.T) / 2


def _v0(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n)


def _eigsh(
    A: LinearOperator, k: int, *, tol: float, max_iter: int | None, ncv: int | None, seed: int, what: str
) -> tuple[np.ndarray, np.ndarray]:
    try:
        values, vectors = eigsh(A, k=k, which="LA", tol=tol, maxiter=max_iter, ncv=ncv, v0=_v0(A.shape[0], seed))
        return np.asarray(values), np.asarray(vectors)
    except ArpackNoConvergence as err:
        got = len(err.eigenvalues)
        raise SpectralConvergenceError(
            f"{what}: Lanczos (ARPACK eigsh) converged for {got} of {k} eigenvalues within max_iter={max_iter} "
            f"restarts at tol={tol:g} (N={A.shape[0]}); raise max_iter or ncv, or loosen tol"
        ) from err
    except ArpackError as err:
        raise SpectralConvergenceError(f"{what}: ARPACK failed (N={A.shape[0]}, k={k}, tol={tol:g}): {err}") from err


def top_eigenpairs(
    kernel: object,
    k: int = 10,
    *,
    tol: float = 1e-12,
    max_iter: int | None = None,
    ncv: int | None = None,
    seed: int = 0,
) -> Eigenpairs:
    """The ``k`` largest eigenvalues and their eigenvectors of a symmetric kernel, largest first.

    Method: ``scipy.sparse.linalg.eigsh(which="LA")``, ARPACK's implicitly restarted Lanczos
    with a seeded random start vector; ``ncv`` Lanczos vectors (default ``min(N, max(2k+1, 20))``),
    at most ``max_iter`` restarts (default ``10 N``).  ARPACK accepts a Ritz pair when its residual
    is ``||K v - theta v|| <= tol |theta|``, so each returned eigenvalue is within ``tol`` relative
    of an eigenvalue of K (within ``tol^2 |theta| / gap`` once the gap to the rest of the spectrum is
    resolved); the measured residuals are returned.  Cost: a few times ``ncv`` products per restart.
    Kernels with at most ``DENSE_LIMIT`` rows are decomposed densely instead.  Not converging raises
    :class:`SpectralConvergenceError` with the number of converged pairs.
    """
    op = as_kernel_operator(kernel)
    k = check_positive_int(k, "k")
    tol = _check_tol(tol)
    seed = check_seed(seed)
    if max_iter is not None:
        check_positive_int(max_iter, "max_iter")
    n = op.size
    if k > n:
        raise ValueError(f"k must be at most N = {n} (the kernel's size), got {k}")
    if ncv is not None:
        check_positive_int(ncv, "ncv")
        if not k < ncv <= n:
            raise ValueError(f"ncv must satisfy k < ncv <= N (k={k}, N={n}), got {ncv}")
    if n <= DENSE_LIMIT or k >= n - 1:
        lam, V = torch.linalg.eigh(_dense(op))
        lam, V = lam.flip(0)[:k], V.flip(1)[:, :k]
    else:
        ncv = ncv if ncv is not None else min(n, max(2 * k + 1, 20))
        lam_np, V_np = _eigsh(op, k, tol=tol, max_iter=max_iter, ncv=ncv, seed=seed, what="top_eigenpairs")
        order = np.argsort(lam_np)[::-1]
        lam, V = torch.from_numpy(lam_np[order].copy()), torch.from_numpy(V_np[:, order].copy())
    KV = op.apply(V.to(op.device, op.torch_dtype)).to("cpu", torch.float64)
    res = (KV - V * lam).norm(dim=0) / lam.abs().clamp_min(torch.finfo(torch.float64).tiny)
    if not bool(torch.isfinite(lam).all()):
        raise FloatingPointError(f"top_eigenpairs produced non-finite eigenvalues {lam.tolist()}")
    return Eigenpairs(lam, V, res)


def trace_estimate(kernel: object, n_probes: int = 100, seed: int = 0) -> TraceEstimate:
    """Hutchinson's estimate of ``trace(K) = E[z^T K z]`` with Rademacher probes ``z`` (entries +-1).

    Returns the mean of ``z_i^T K z_i`` over ``n_probes`` seeded probes and its standard error
    ``s / sqrt(n_probes)`` (s the sample standard deviation); the variance of one probe is
    ``2 (||K||_F^2 - sum_i K_ii^2)``.  Cost: ``ceil(n_probes / 32)`` products with 32 columns.
    ``n_probes >= 2`` (a standard error needs two samples).
    """
    op = as_kernel_operator(kernel)
    n_probes = check_positive_int(n_probes, "n_probes", minimum=2)
    seed = check_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    samples = []
    for start in range(0, n_probes, PROBE_BLOCK):
        m = min(PROBE_BLOCK, n_probes - start)
        Z = torch.randint(0, 2, (op.size, m), generator=gen, dtype=torch.int8).to(torch.float64).mul_(2).sub_(1)
        KZ = op.apply(Z.to(op.device, op.torch_dtype)).to("cpu", torch.float64)
        samples.append((Z * KZ).sum(0))
    s = torch.cat(samples)
    est, sd = float(s.mean()), float(s.std(unbiased=True))
    if not (math.isfinite(est) and math.isfinite(sd)):
        raise FloatingPointError(f"trace_estimate produced a non-finite value ({est}, s.e. {sd})")
    return TraceEstimate(est, sd / math.sqrt(n_probes), n_probes)


class _Shifted(LinearOperator):
    """``s I - K``: its largest eigenvalue is ``s - lambda_min(K)``."""

    def __init__(self, op: KernelOperator, shift: float) -> None:
        super().__init__(dtype=np.dtype(np.float64), shape=op.shape)
        self.op, self.shift = op, shift

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.shift * np.asarray(x).reshape(-1) - self.op.matvec(np.asarray(x).reshape(-1)))

    def _rmatvec(self, x: np.ndarray) -> np.ndarray:
        return self._matvec(x)


def condition_estimate(
    kernel: object,
    *,
    tol: float = 1e-10,
    max_iter: int | None = None,
    ncv: int | None = None,
    seed: int = 0,
) -> ConditionEstimate:
    """``lambda_max``, ``lambda_min`` and ``cond = lambda_max / lambda_min`` of a symmetric PSD kernel by Lanczos.

    ``lambda_max``: ARPACK ``eigsh(which="LA", k=1)`` on K (relative accuracy ``tol``).

    ``lambda_min``: the largest eigenvalue of the shifted operator ``lambda_max I - K`` (same
    method), whose Lanczos vector v gives the Rayleigh quotient ``theta = v^T K v`` and residual
    ``r = ||K v - theta v||``.  ``theta >= lambda_min(K)`` always; the Ritz pair guarantees an
    eigenvalue in ``[theta - r, theta]``, which is ``lambda_min`` unless the start vector missed
    its eigenvector (probability zero for a random start; rounding restores it in practice).  The
    shift makes ARPACK's test ``r <= tol (lambda_max - theta)``, an *absolute* accuracy of about
    ``tol lambda_max`` for the smallest eigenvalue.

    Unreliable (``reliable=False``; ``condition`` is then only a lower bound and ``condition_upper``
    may be inf) when ``r > theta / 11``, i.e. when ``lambda_min`` is not above the accuracy
    ``~ tol lambda_max`` — condition numbers beyond about ``1 / (10 tol)`` — or below the rounding of
    the products, ``~ N eps lambda_max`` (a numerically singular kernel).  Lanczos needs about
    ``sqrt(cond) log(1 / tol)`` products for the smallest eigenvalue and converges slowly where the
    bottom of the spectrum is clustered (typical of NTKs without a ridge); not converging within
    ``max_iter`` restarts (default ``10 N``) raises :class:`SpectralConvergenceError`.
    Kernels with at most ``DENSE_LIMIT`` rows are decomposed densely (residual 0 there).
    """
    op = as_kernel_operator(kernel)
    tol = _check_tol(tol)
    seed = check_seed(seed)
    if max_iter is not None:
        check_positive_int(max_iter, "max_iter")
    if ncv is not None:
        check_positive_int(ncv, "ncv", minimum=2)
    n = op.size
    if n <= DENSE_LIMIT:
        lam = torch.linalg.eigvalsh(_dense(op))
        hi, theta, r = float(lam[-1]), float(lam[0]), 0.0
    else:
        nc = ncv if ncv is not None else min(n, 20)
        hi_np, _ = _eigsh(op, 1, tol=tol, max_iter=max_iter, ncv=nc, seed=seed, what="condition_estimate (lambda_max)")
        hi = float(hi_np[0])
        if not hi > 0:
            raise ValueError(f"kernel must have a positive eigenvalue, got lambda_max = {hi:.3e}")
        _, v_np = _eigsh(
            _Shifted(op, hi),
            1,
            tol=tol,
            max_iter=max_iter,
            ncv=nc,
            seed=seed + 1,
            what="condition_estimate (lambda_min, Lanczos on lambda_max I - K)",
        )
        v = torch.from_numpy(v_np[:, 0] / np.linalg.norm(v_np[:, 0]))
        Kv = op.apply(v.to(op.device, op.torch_dtype)).to("cpu", torch.float64)
        theta = float(v @ Kv)
        r = float((Kv - theta * v).norm())
    if not (math.isfinite(hi) and math.isfinite(theta)):
        raise FloatingPointError(f"condition_estimate produced non-finite eigenvalues ({hi}, {theta})")
    cond = hi / theta if theta > 0 else math.inf
    lower = theta - r
    upper = hi / lower if lower > 0 else math.inf
    return ConditionEstimate(hi, theta, r, cond, upper, bool(math.isfinite(upper) and upper <= 1.1 * cond))
