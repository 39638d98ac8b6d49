"""Kernel solvers against dense float64 numpy/scipy references (seed 000 eqs (3)-(6), Thms 2, 5, 6):
interpolation, argument checks, consistency and min-norm parameters (Thm 5), Thm 2 and Lemma 3."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from _solver_problems import F64, problem, rel

from ntkcheck.dynamics.flows import (
    mse_flow,
    ode_flow,
)
from ntkcheck.dynamics.losses import MSE
from ntkcheck.dynamics.solvers import (
    SingularKernelError,
    check_consistent,
    condition_number,
    decompose,
    interpolate,
    min_norm_parameters,
)


def ref_interpolate(K, Kx, y, h0, h0x) -> np.ndarray:
    alpha = scipy.linalg.solve(K.numpy(), (y - h0).numpy(), assume_a="pos")
    return h0x.numpy() + Kx.numpy() @ alpha


# ------------------------------------------------------------------ interpolate (eq (5))


@pytest.mark.parametrize("n", [1, 7, 64, 512])
def test_interpolate_matches_scipy(n: int) -> None:
    d = problem(n, m=9, seed=n)
    out = interpolate(d["K"], d["y"], k_test_train=d["Kx"], h_ini_train=d["h0"], h_ini_test=d["h0x"])
    assert out.shape == (9,) and out.dtype == F64
    assert rel(out, ref_interpolate(d["K"], d["Kx"], d["y"], d["h0"], d["h0x"])) <= 1e-10
    zero = interpolate(d["K"], d["y"], k_test_train=d["Kx"])
    assert rel(zero, d["Kx"].numpy() @ scipy.linalg.solve(d["K"].numpy(), d["y"].numpy(), assume_a="pos")) <= 1e-10
    # at the training points the interpolant reproduces Y (constraint of eq (5))
    assert rel(interpolate(d["K"], d["y"], h_ini_train=d["h0"]), d["y"]) <= 1e-10


def test_interpolate_multi_output_columns() -> None:
    d = problem(12, outputs=3, seed=1)
    out = interpolate(d["K"], d["y"], k_test_train=d["Kx"], h_ini_train=d["h0"], h_ini_test=d["h0x"])
    assert out.shape == (5, 3)
    assert rel(out, ref_interpolate(d["K"], d["Kx"], d["y"], d["h0"], d["h0x"])) <= 1e-10


def test_interpolate_block_multi_output_kernel() -> None:
    # empirical NTK of O outputs, K[i, j, a, b] = <J_ia, J_jb>, from a random Jacobian with P > n O
    g = torch.Generator().manual_seed(2)
    n, m, O, P = 6, 4, 2, 40
    J = torch.randn(n + m, O, P, generator=g, dtype=F64)
    Kall = torch.einsum("iap,jbp->ijab", J, J)
    K, Kx = Kall[:n, :n], Kall[n:, :n]
    y, h0 = torch.randn(n, O, generator=g, dtype=F64), torch.randn(n, O, generator=g, dtype=F64)
    h0x = torch.randn(m, O, generator=g, dtype=F64)
    out = interpolate(K, y, k_test_train=Kx, h_ini_train=h0, h_ini_test=h0x)
    Kf = K.permute(0, 2, 1, 3).reshape(n * O, n * O).numpy()
    Kxf = Kx.permute(0, 2, 1, 3).reshape(m * O, n * O).numpy()
    ref = h0x.numpy().ravel() + Kxf @ scipy.linalg.solve(Kf, (y - h0).numpy().ravel(), assume_a="pos")
    assert out.shape == (m, O) and rel(out.reshape(-1), ref) <= 1e-10
    # a block kernel k (x) I_O is the column-by-column solve with k
    d = problem(8, outputs=2, seed=3)
    block = torch.einsum("ij,ab->ijab", d["K"], torch.eye(2, dtype=F64))
    blockx = torch.einsum("ij,ab->ijab", d["Kx"], torch.eye(2, dtype=F64))
    expected = interpolate(d["K"], d["y"], k_test_train=d["Kx"])
    assert rel(interpolate(block, d["y"], k_test_train=blockx), expected) <= 1e-12


def test_condition_number_matches_numpy() -> None:
    d = problem(30, seed=4)
    assert condition_number(d["K"]) == pytest.approx(np.linalg.cond(d["K"].numpy()), rel=1e-8)
    assert condition_number(torch.zeros(3, 3, dtype=F64)) == math.inf


def _duplicated_kernel() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, 3, generator=g, dtype=F64)
    x[4] = x[1]  # duplicated input: rank-deficient kernel
    return torch.exp(-(torch.cdist(x, x) ** 2)), x


def test_singular_kernel_raises_with_condition_number() -> None:
    K, _ = _duplicated_kernel()
    y = torch.arange(6, dtype=F64)
    match = r"k_train is singular .*condition number .* > threshold .*smallest eigenvalue"
    with pytest.raises(SingularKernelError, match=match):
        interpolate(K, y)
    assert issubclass(SingularKernelError, ValueError)
    with pytest.raises(SingularKernelError, match=r"condition number"):
        mse_flow(K, y, times=[1.0])
    with pytest.raises(SingularKernelError, match=r"condition number"):
        ode_flow(K, y, loss=MSE, times=[1.0])


def test_pinv_path_matches_numpy_pinv() -> None:
    K, _ = _duplicated_kernel()
    g = torch.Generator().manual_seed(6)
    y, Kx = torch.randn(6, generator=g, dtype=F64), torch.randn(3, 6, generator=g, dtype=F64)
    rc = 1e-10
    out = interpolate(K, y, k_test_train=Kx, pinv_rcond=rc)
    ref = Kx.numpy() @ np.linalg.pinv(K.numpy(), rtol=rc, hermitian=True) @ y.numpy()
    assert rel(out, ref) <= 1e-10
    # the truncated MSE flow reaches the same pseudo-inverse interpolant at t = inf
    flow = mse_flow(K, y, times=[math.inf], k_test_train=Kx, pinv_rcond=rc)
    assert rel(flow.test[0], ref) <= 1e-8


def test_pinv_cutoff_is_the_one_named() -> None:
    # eigenvalues 1e-9 and 0 lie below the cutoff 1e-7 * lambda_max, 1e-6 above it
    Q = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(28), dtype=F64))[0]
    K = Q @ torch.diag(torch.tensor([3.0, 1.0, 0.5, 1e-6, 1e-9, 0.0], dtype=F64)) @ Q.T
    y = torch.linspace(-1, 1, 6, dtype=F64)
    out = interpolate(K, y, k_test_train=K[:2], pinv_rcond=1e-7)
    ref = K[:2].numpy() @ np.linalg.pinv(K.numpy(), rtol=1e-7, hermitian=True) @ y.numpy()
    assert rel(out, ref) <= 1e-8
    tight = K[:2].numpy() @ np.linalg.pinv(K.numpy(), rtol=1e-12, hermitian=True) @ y.numpy()
    assert rel(out, tight) > 1e-3  # keeping the 1e-9 mode changes the answer


@pytest.mark.parametrize("rc", [0.0, 1.0, -1e-3])
def test_pinv_rcond_must_be_in_unit_interval(rc: float) -> None:
    d = problem(4)
    with pytest.raises(ValueError, match=r"pinv_rcond must lie in \(0, 1\)"):
        interpolate(d["K"], d["y"], pinv_rcond=rc)


# ------------------------------------------------------------------ argument checks


def test_k_train_must_be_square() -> None:
    with pytest.raises(ValueError, match=r"k_train must be square"):
        interpolate(torch.ones(3, 4, dtype=F64), torch.ones(3, dtype=F64))


def test_k_train_must_be_symmetric() -> None:
    K = problem(4)["K"].clone()
    K[0, 1] += 1e-3
    with pytest.raises(ValueError, match=r"k_train must be symmetric"):
        interpolate(K, torch.ones(4, dtype=F64))


def test_y_train_rows_must_match() -> None:
    d = problem(5)
    with pytest.raises(ValueError, match=r"y_train rows must match k_train \(n=5\)"):
        interpolate(d["K"], d["y"][:4])


def test_k_test_train_columns_must_match() -> None:
    d = problem(5)
    with pytest.raises(ValueError, match=r"k_test_train columns must match k_train"):
        interpolate(d["K"], d["y"], k_test_train=d["Kx"][:, :4])


@pytest.mark.parametrize("arg", ["k_train", "y_train", "k_test_train", "h_ini_train", "h_ini_test"])
def test_nan_inputs_are_refused(arg: str) -> None:
    d = problem(5)
    kw = dict(
        k_train=d["K"].clone(),
        y_train=d["y"].clone(),
        k_test_train=d["Kx"].clone(),
        h_ini_train=d["h0"].clone(),
        h_ini_test=d["h0x"].clone(),
    )
    kw[arg].view(-1)[0] = math.nan
    with pytest.raises(ValueError, match=rf"{arg} contains 1 NaN or infinite entries"):
        interpolate(**kw)


def test_dtype_and_device_mismatch_refused() -> None:
    d = problem(5)
    match = r"y_train must have the dtype of k_train \(torch.float64\), got torch.float32"
    with pytest.raises(ValueError, match=match):
        interpolate(d["K"], d["y"].float())
    with pytest.raises(ValueError, match=r"k_test_train must have the dtype of k_train"):
        interpolate(d["K"], d["y"], k_test_train=d["Kx"].float())


def test_initial_function_needed_at_both_point_sets() -> None:
    d = problem(5)
    with pytest.raises(ValueError, match=r"h_ini_test is required"):
        interpolate(d["K"], d["y"], k_test_train=d["Kx"], h_ini_train=d["h0"])
    with pytest.raises(ValueError, match=r"h_ini_test was given without h_ini_train"):
        interpolate(d["K"], d["y"], k_test_train=d["Kx"], h_ini_test=d["h0x"])
    with pytest.raises(ValueError, match=r"h_ini_train must have the shape of y_train"):
        interpolate(d["K"], d["y"], h_ini_train=d["h0"][:3])


def test_float32_is_computed_in_float32() -> None:
    d = problem(20, seed=7)
    out32 = interpolate(d["K"].float(), d["y"].float(), k_test_train=d["Kx"].float())
    assert out32.dtype == torch.float32
    assert rel(out32.double(), interpolate(d["K"], d["y"], k_test_train=d["Kx"])) <= 1e-4


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_follows_inputs() -> None:
    d = problem(40, seed=8)
    cuda = {k: v.cuda() for k, v in d.items()}
    out = interpolate(cuda["K"], cuda["y"], k_test_train=cuda["Kx"], h_ini_train=cuda["h0"], h_ini_test=cuda["h0x"])
    assert out.is_cuda
    assert rel(out, ref_interpolate(d["K"], d["Kx"], d["y"], d["h0"], d["h0x"])) <= 1e-10
    flow = mse_flow(cuda["K"], cuda["y"], times=[1.0, math.inf], k_test_train=cuda["Kx"])
    assert flow.train.is_cuda and rel(flow.test[1], interpolate(d["K"], d["y"], k_test_train=d["Kx"])) <= 1e-10


# ------------------------------------------------------------------ consistency, Thm 5


def test_inconsistent_dataset_refused() -> None:
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(9), dtype=F64)
    x[4] = x[1]
    y = torch.arange(6, dtype=F64)
    with pytest.raises(ValueError, match=r"inconsistent training set: .*rows \[1, 4\]"):
        check_consistent(x, y)
    y[4] = y[1]
    check_consistent(x, y)  # equal inputs with equal labels are consistent
    with pytest.raises(ValueError, match=r"y_train rows must match x_train"):
        check_consistent(x, y[:5])


def test_min_norm_parameters_matches_lstsq() -> None:
    g = torch.Generator().manual_seed(10)
    J = torch.randn(8, 30, generator=g, dtype=F64)
    r = torch.randn(8, generator=g, dtype=F64)
    theta = min_norm_parameters(J, r)
    ref = np.linalg.lstsq(J.numpy(), r.numpy(), rcond=None)[0]  # minimum-norm solution of eq (4)
    assert theta.shape == (30,) and rel(theta, ref) <= 1e-10
    assert rel(J @ theta, r) <= 1e-10  # fits the data (constraint of eq (4))
    # any other solution theta + null-space vector is longer (Thm 5)
    null = torch.randn(30, generator=g, dtype=F64)
    null -= J.T @ torch.linalg.solve(J @ J.T, J @ null)
    assert float((theta + null).norm()) > float(theta.norm())


def test_min_norm_parameters_refuses_p_le_n() -> None:
    J = torch.randn(8, 8, dtype=F64)
    with pytest.raises(ValueError, match=r"P=8 parameters for 8 constraints.*Thm 5 does not apply"):
        min_norm_parameters(J, torch.zeros(8, dtype=F64))


def test_min_norm_parameters_refuses_rank_deficient_jacobian() -> None:
    J = torch.randn(5, 20, generator=torch.Generator().manual_seed(11), dtype=F64)
    J[3] = J[0]
    with pytest.raises(SingularKernelError, match=r"J J\^T \(jacobian\) is singular.*condition number"):
        min_norm_parameters(J, torch.zeros(5, dtype=F64))
    with pytest.raises(ValueError, match=r"residual must have shape \(5,\)"):
        min_norm_parameters(J, torch.zeros(4, dtype=F64))


# ------------------------------------------------------------------ Thm 2 and Lemma 3


def test_decompose_theorem_2() -> None:
    d = problem(40, m=11, seed=12)
    dec = decompose(d["K"], d["y"], k_test_train=d["Kx"], h_ini_train=d["h0"], h_ini_test=d["h0x"])
    assert rel(dec.total, dec.unbiased + dec.init_bias) <= 1e-12  # eq (6)
    assert rel(dec.total, ref_interpolate(d["K"], d["Kx"], d["y"], d["h0"], d["h0x"])) <= 1e-10
    zero = torch.zeros_like
    assert rel(dec.unbiased, ref_interpolate(d["K"], d["Kx"], d["y"], zero(d["h0"]), zero(d["h0x"]))) <= 1e-10
    assert rel(dec.fit_of_init, ref_interpolate(d["K"], d["Kx"], d["h0"], zero(d["h0"]), zero(d["h0x"]))) <= 1e-10
    assert rel(dec.init_bias, d["h0x"].numpy() - dec.fit_of_init.numpy()) <= 1e-14
    assert torch.equal(dec.h_ini, d["h0x"])
    # at the training points the initial-output bias vanishes
    dec_train = decompose(d["K"], d["y"], k_test_train=None, h_ini_train=d["h0"], h_ini_test=None)
    assert float(dec_train.init_bias.abs().max()) <= 1e-10 * float(d["h0"].abs().max())


def test_lemma_3_linearity() -> None:
    d = problem(30, seed=13)
    y2 = torch.randn(30, generator=torch.Generator().manual_seed(14), dtype=F64)
    lhs = interpolate(d["K"], 2.5 * d["y"] + y2, k_test_train=d["Kx"])
    rhs = 2.5 * interpolate(d["K"], d["y"], k_test_train=d["Kx"]) + interpolate(d["K"], y2, k_test_train=d["Kx"])
    assert rel(lhs, rhs) <= 1e-12
