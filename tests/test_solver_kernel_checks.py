"""Kernel solvers refuse what is not a kernel and what the dtype cannot resolve, and solve min-norm
parameters on J rather than J J^T."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _solver_problems import F64, problem, rel

from ntkcheck.dynamics.flows import (
    mse_flow,
    mse_gd,
    ode_flow,
)
from ntkcheck.dynamics.losses import MSE
from ntkcheck.dynamics.solvers import (
    SingularKernelError,
    condition_number,
    decompose,
    interpolate,
    max_stable_lr,
    min_norm_parameters,
)

# ------------------------------------------------------------------ kernels must be kernels; bounds of the dtype


def spectral_kernel(evals, seed: int = 0, dtype: torch.dtype = F64) -> tuple[torch.Tensor, torch.Tensor]:
    """Q diag(evals) Q^T for a random orthogonal Q (float64, then cast), and a target vector."""
    g = torch.Generator().manual_seed(seed)
    n = len(evals)
    Q = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))[0]
    K = Q @ torch.diag(torch.as_tensor(evals, dtype=F64)) @ Q.T
    return ((K + K.T) / 2).to(dtype), torch.randn(n, generator=g, dtype=F64).to(dtype)


INDEFINITE = [-4.1, -1.0, 0.5, 2.0, 3.0, 4.8]


@pytest.mark.parametrize(
    "call",
    [
        lambda K, y: interpolate(K, y),
        lambda K, y: interpolate(K, y, pinv_rcond=1e-8),
        lambda K, y: decompose(K, y, k_test_train=K[:2], h_ini_train=y, h_ini_test=y[:2], pinv_rcond=1e-8),
        lambda K, y: mse_flow(K, y, times=[1.0]),
        lambda K, y: mse_flow(K, y, times=[1.0, math.inf], pinv_rcond=1e-8),
        lambda K, y: mse_gd(K, y, lr=0.1, steps=[1, 5]),
        lambda K, y: ode_flow(K, y, loss=MSE, times=[1.0]),
        lambda K, y: max_stable_lr(K),
        lambda K, y: condition_number(K),
    ],
    ids=[
        "interpolate",
        "interpolate-pinv",
        "decompose-pinv",
        "mse_flow",
        "mse_flow-pinv",
        "mse_gd",
        "ode_flow",
        "max_stable_lr",
        "condition_number",
    ],
)
def test_indefinite_kernel_refused_with_its_eigenvalues(call) -> None:
    K, y = spectral_kernel(INDEFINITE, seed=30)
    with pytest.raises(
        ValueError,
        match=r"(k_train|k) is not positive semi-definite: smallest eigenvalue -4\.1 "
        r"\(largest 4\.8\).*tol = 100 N eps",
    ):
        call(K, y)


def test_indefinite_block_kernel_refused() -> None:
    K, y = spectral_kernel(INDEFINITE, seed=31)
    block = K.reshape(3, 2, 3, 2).permute(0, 2, 1, 3).contiguous()  # (n, n, O, O) with row index i*O + a
    with pytest.raises(ValueError, match=r"k_train is not positive semi-definite: smallest eigenvalue -4\.1"):
        interpolate(block, y.reshape(3, 2), pinv_rcond=1e-8)


def test_max_stable_lr_refuses_a_kernel_on_which_gd_diverges() -> None:
    # gradient descent multiplies the -5 mode by 1 + lr (2/n) 5 > 1 at every step: no stable lr exists
    with pytest.raises(
        ValueError,
        match=r"k_train is not positive semi-definite: "
        r"smallest eigenvalue -5 \(largest 1\)",
    ):
        max_stable_lr(torch.diag(torch.tensor([-5.0, 1.0], dtype=F64)))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_rounding_level_negative_eigenvalues_pass(dtype: torch.dtype) -> None:
    # a rank-3 Gram matrix on 40 points: 37 zero eigenvalues, which rounding makes slightly negative
    feats = torch.randn(40, 3, generator=torch.Generator().manual_seed(32), dtype=F64).to(dtype)
    K = feats @ feats.T
    K = (K + K.T) / 2
    evals = torch.linalg.eigvalsh(K)
    assert float(evals[0]) < 0  # the case under test: a PSD kernel that looks indefinite by rounding
    y = feats.double() @ torch.tensor([1.0, -2.0, 0.5], dtype=F64)  # in the range of K: interpolable
    rc = 1e-5 if dtype == torch.float32 else 1e-10
    out = interpolate(K, y.to(dtype), k_test_train=K[:5], pinv_rcond=rc)
    ref = K[:5].double().numpy() @ np.linalg.pinv(K.double().numpy(), rtol=rc, hermitian=True) @ y.numpy()
    assert rel(out.double(), ref) <= (1e-3 if dtype == torch.float32 else 1e-9)
    assert mse_flow(K, y.to(dtype), times=[1.0, math.inf], pinv_rcond=rc).train.shape == (2, 40)
    assert max_stable_lr(K) == pytest.approx(40 / float(evals[-1]), rel=1e-5)
    assert condition_number(K) > 1 / (40 * torch.finfo(dtype).eps)


def test_asymmetric_kernel_message_gives_the_relative_asymmetry() -> None:
    K = problem(4)["K"].clone()
    K[0, 1] += 1e-3
    ratio = 1e-3 / float(K.abs().max())
    with pytest.raises(
        ValueError,
        match=rf"k_train must be symmetric: relative asymmetry max\|K - K\^T\| / max\|K\| = "
        rf"{ratio:.3e}",
    ):
        interpolate(K, torch.ones(4, dtype=F64))
    with pytest.raises(ValueError, match=r"k must be symmetric: relative asymmetry"):
        condition_number(K)


def test_pinv_rcond_below_eps_refused() -> None:
    # float32, cond 1e8: a cutoff of 1e-10 keeps eigenvalues that are float32 rounding noise
    K, y = spectral_kernel(np.logspace(0, -8, 10), seed=33, dtype=torch.float32)
    for call in (
        lambda: interpolate(K, y, pinv_rcond=1e-10),
        lambda: mse_flow(K, y, times=[1.0], pinv_rcond=1e-10),
        lambda: decompose(K, y, k_test_train=None, h_ini_train=y, h_ini_test=None, pinv_rcond=1e-10),
    ):
        with pytest.raises(
            ValueError,
            match=r"pinv_rcond=1e-10 is below the machine epsilon of the kernel's dtype "
            r"torch\.float32 \(eps = 1\.19e-07\)",
        ):
            call()
    interpolate(K, y, pinv_rcond=float(torch.finfo(torch.float32).eps))  # eps itself is allowed


@pytest.mark.parametrize(
    "call",
    [
        lambda K, y, mc: interpolate(K, y, max_cond=mc),
        lambda K, y, mc: interpolate(K, y, pinv_rcond=1e-6, max_cond=mc),
        lambda K, y, mc: decompose(K, y, k_test_train=None, h_ini_train=y, h_ini_test=None, max_cond=mc),
        lambda K, y, mc: mse_flow(K, y, times=[1.0], max_cond=mc),
        lambda K, y, mc: mse_flow(K, y, times=[1.0], pinv_rcond=1e-6, max_cond=mc),
        lambda K, y, mc: ode_flow(K, y, loss=MSE, times=[1.0], max_cond=mc),
    ],
    ids=["interpolate", "interpolate-pinv", "decompose", "mse_flow", "mse_flow-pinv", "ode_flow"],
)
def test_max_cond_beyond_the_dtype_refused(call) -> None:
    # cond 1e16 > 1 / eps: with max_cond = 1e30 the solve would run and lose every digit
    K, y = spectral_kernel(np.logspace(0, -16, 8), seed=34)
    with pytest.raises(
        ValueError,
        match=r"max_cond=1e\+30 exceeds what torch\.float64 can honour, "
        r"1 / eps = 4\.5e\+15",
    ):
        call(K, y, 1e30)
    with pytest.raises(TypeError, match=r"max_cond must be None or a float > 1, got str"):
        call(K, y, "1e6")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_refused_naming_the_argument(dtype: torch.dtype) -> None:
    d = problem(5)
    with pytest.raises(TypeError, match=rf"k_train must have dtype torch\.float32 or torch\.float64 .*got {dtype}"):
        interpolate(d["K"].to(dtype), d["y"].to(dtype))
    with pytest.raises(TypeError, match=r"k_train must have dtype torch\.float32 or torch\.float64"):
        mse_flow(d["K"].to(dtype), d["y"].to(dtype), times=[1.0])
    with pytest.raises(TypeError, match=r"k must have dtype torch\.float32 or torch\.float64"):
        condition_number(d["K"].to(dtype))
    with pytest.raises(TypeError, match=r"jacobian must have dtype torch\.float32 or torch\.float64"):
        min_norm_parameters(torch.ones(2, 5, dtype=dtype), torch.ones(2, dtype=dtype))


def test_meta_tensors_refused_naming_the_argument() -> None:
    d = problem(5)
    with pytest.raises(ValueError, match=r"k_train is on the meta device"):
        interpolate(d["K"].to("meta"), d["y"].to("meta"))
    with pytest.raises(ValueError, match=r"k_train is on the meta device"):
        max_stable_lr(d["K"].to("meta"))
    with pytest.raises(ValueError, match=r"jacobian is on the meta device"):
        min_norm_parameters(torch.ones(2, 5, device="meta", dtype=F64), torch.ones(2, dtype=F64))


# ------------------------------------------------------------------ min-norm parameters solved on J, not J J^T


def prescribed_jacobian(n: int, p: int, cond_jjt: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """J = U diag(s) V^T (n, p) with singular values from 1 down to 1 / sqrt(cond_jjt), and a residual."""
    g = np.random.default_rng(seed)
    U = np.linalg.qr(g.standard_normal((n, n)))[0]
    V = np.linalg.qr(g.standard_normal((p, n)))[0]
    s = np.logspace(0, -0.5 * np.log10(cond_jjt), n)
    return U @ np.diag(s) @ V.T, g.standard_normal(n)


@pytest.mark.parametrize("cond_jjt, tol", [(1e12, 1e-9), (1e14, 1e-8)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_min_norm_parameters_accuracy_on_an_ill_conditioned_jacobian(cond_jjt: float, tol: float, seed: int) -> None:
    # forming J J^T squares cond(J): 1e-5 (1e12) and 1e-3 (1e14) errors; on J itself the error is ~cond(J) eps
    J, r = prescribed_jacobian(8, 30, cond_jjt, seed)
    assert np.linalg.cond(J @ J.T) == pytest.approx(cond_jjt, rel=0.05)
    ref = np.linalg.lstsq(J, r, rcond=None)[0]  # float64 minimum-norm solution by SVD (error ~cond(J) eps)
    got = min_norm_parameters(torch.from_numpy(J), torch.from_numpy(r))
    assert rel(got, ref) <= tol
    assert rel(torch.from_numpy(J) @ got, r) <= tol


def test_min_norm_parameters_max_cond_is_on_j_jt_up_to_one_over_eps_squared() -> None:
    J, r = prescribed_jacobian(8, 30, 1e16, 3)  # cond(J) = 1e8: above the default bound 1 / (N eps)
    Jt, rt = torch.from_numpy(J), torch.from_numpy(r)
    with pytest.raises(
        SingularKernelError,
        match=r"J J\^T \(jacobian\) is singular.*condition number 1\.0\d*e\+16 > "
        r"threshold .*cond\(J\)\^2",
    ):
        min_norm_parameters(Jt, rt)
    got = min_norm_parameters(Jt, rt, max_cond=1e17)  # loosened: the solve on J still keeps ~8 digits
    assert rel(got, np.linalg.lstsq(J, r, rcond=None)[0]) <= 1e-6
    with pytest.raises(ValueError, match=r"max_cond=1e\+40 exceeds what torch\.float64 can honour, 1 / eps\^2"):
        min_norm_parameters(Jt, rt, max_cond=1e40)
