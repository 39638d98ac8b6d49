"""Spectral estimates (Lanczos, Hutchinson) on the NTK operator, dense kernels and memmapped files (float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import ntkcheck as nk
from ntkcheck.kernels.operator import ntk_operator
from ntkcheck.kernels.spectral import SpectralConvergenceError, condition_estimate, top_eigenpairs, trace_estimate

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def big():
    """A cheap MLP (P = 97) on N = 2000 inputs, its dense NTK and a memmapped copy (module-scoped)."""
    g = _gen(0)
    model = nk.MLP(4, [16], 1, generator=g, dtype=F64)
    x = torch.randn(2000, 4, generator=g, dtype=F64)
    K = nk.ntk(model, x)
    return model, x, K, torch.linalg.eigvalsh(K).flip(0)[:10]  # dense reference: LAPACK syevd


@pytest.fixture(scope="module")
def big_file(big, tmp_path_factory):
    path = tmp_path_factory.mktemp("spectral") / "k.npy"
    np.save(path, big[2].numpy())
    return np.load(path, mmap_mode="r")


def test_top10_of_n2000_operator_matches_dense_eigh(big) -> None:
    model, x, K, want = big
    got = top_eigenpairs(ntk_operator(model, x), 10)
    err = float(((got.values - want).abs() / want).max())
    assert err < 1e-8, f"top_eigenpairs(NTKOperator, N=2000): relative error {err:.2e} against eigvalsh"
    # the defining property of the vectors, checked on the dense kernel
    res = (K @ got.vectors - got.vectors * got.values).norm(dim=0) / got.values
    assert float(res.max()) < 1e-8
    assert float((got.vectors.T @ got.vectors - torch.eye(10, dtype=F64)).abs().max()) < 1e-10
    assert float(got.residuals.max()) < 1e-8


def test_top10_dense_and_memmap_match_dense_eigh(big, big_file) -> None:
    K, want = big[2], big[3]
    for kernel in (K, big_file):
        got = top_eigenpairs(kernel, 10)
        err = float(((got.values - want).abs() / want).max())
        assert err < 1e-8, f"top_eigenpairs({type(kernel).__name__}): relative error {err:.2e}"


def test_top_eigenpairs_small_kernel_dense_path() -> None:
    A = torch.randn(10, 4, generator=_gen(1), dtype=F64)
    K = A @ A.T
    got = top_eigenpairs(K, 3)
    want = torch.linalg.eigvalsh(K).flip(0)[:3]
    assert float(((got.values - want).abs() / want).max()) < 1e-12


def test_hutchinson_within_4_standard_errors(big, big_file) -> None:
    model, x, K, _ = big
    trace = float(K.trace())
    # the standard error must be that of the estimator: one probe has variance 2 (||K||_F^2 - sum_i K_ii^2)
    sd_one = math.sqrt(2 * (float((K**2).sum()) - float((K.diagonal() ** 2).sum())))
    for kernel, m in ((ntk_operator(model, x), 64), (big_file, 64), (K, 256)):
        est = trace_estimate(kernel, m, seed=3)
        assert est.n_probes == m
        assert abs(est.estimate - trace) <= 4 * est.stderr, (
            f"trace_estimate({type(kernel).__name__}): {est.estimate:.6g} vs trace {trace:.6g}, "
            f"{abs(est.estimate - trace) / est.stderr:.2f} standard errors"
        )
        expected_se = sd_one / math.sqrt(m)
        assert 0.6 < est.stderr / expected_se < 1.5, f"stderr {est.stderr:.4g}, expected ~{expected_se:.4g}"


def test_hutchinson_is_seeded_and_exact_on_diagonal_kernels() -> None:
    K = torch.diag(torch.arange(1.0, 101.0, dtype=F64))
    est = trace_estimate(K, 8, seed=0)
    assert est.estimate == pytest.approx(5050.0, rel=1e-14) and est.stderr == pytest.approx(0.0, abs=1e-9)
    A = torch.randn(80, 80, generator=_gen(2), dtype=F64)
    assert trace_estimate(A @ A.T, 10, seed=5) == trace_estimate(A @ A.T, 10, seed=5)
    assert trace_estimate(A @ A.T, 10, seed=5) != trace_estimate(A @ A.T, 10, seed=6)


def test_condition_estimate_matches_dense(big) -> None:
    K = big[2][:600, :600]
    Kr = K + 1e-2 * float(K.diagonal().mean()) * torch.eye(600, dtype=F64)
    lam = torch.linalg.eigvalsh(Kr)
    est = condition_estimate(Kr)
    want = float(lam[-1] / lam[0])
    assert est.reliable
    assert est.lambda_max == pytest.approx(float(lam[-1]), rel=1e-9)
    assert est.lambda_min == pytest.approx(float(lam[0]), rel=1e-6)
    assert est.condition == pytest.approx(want, rel=1e-6)
    assert est.condition <= want * (1 + 1e-9) <= est.condition_upper * (1 + 1e-9)


def test_condition_estimate_flags_a_singular_kernel() -> None:
    """A rank-5 kernel on 200 points: lambda_min = 0 lies below the Lanczos accuracy, the estimate says so."""
    A = torch.randn(200, 5, generator=_gen(4), dtype=F64)
    est = condition_estimate(A @ A.T)
    assert not est.reliable
    assert est.lambda_min <= est.lambda_min_error or est.condition > 1e12
    assert est.condition_upper == math.inf or est.condition_upper > 1.1 * est.condition


def test_lanczos_failure_raises_with_counts() -> None:
    A = torch.randn(300, 300, generator=_gen(5), dtype=F64)
    with pytest.raises(SpectralConvergenceError, match=r"converged for \d+ of 10 eigenvalues within max_iter=1"):
        top_eigenpairs(A @ A.T, 10, max_iter=1, ncv=21)


def test_spectral_validation() -> None:
    K = torch.eye(100, dtype=F64)
    with pytest.raises(ValueError, match="k must be at most N = 100"):
        top_eigenpairs(K, 101)
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        top_eigenpairs(K, 0)
    with pytest.raises(ValueError, match=r"tol must be a float in \(0, 1\)"):
        top_eigenpairs(K, 2, tol=0.0)
    with pytest.raises(ValueError, match="ncv must satisfy k < ncv <= N"):
        top_eigenpairs(K, 5, ncv=5)
    with pytest.raises(ValueError, match="n_probes must be an int >= 2"):
        trace_estimate(K, 1)
    with pytest.raises(TypeError, match="seed must be an int"):
        trace_estimate(K, 4, seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kernel must be symmetric"):
        condition_estimate(torch.triu(torch.ones(100, 100, dtype=F64)))
