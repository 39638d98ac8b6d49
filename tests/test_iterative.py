"""Iterative and out-of-core solvers against dense references, and the diag_reg ridge (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

import ntkcheck as nk
from ntkcheck.dynamics.iterative.blocked_cholesky import blocked_cholesky_solve
from ntkcheck.dynamics.iterative.cg import cg_interpolate, cg_solve
from ntkcheck.dynamics.iterative.krylov import krylov_mse_flow
from ntkcheck.dynamics.solvers import SingularKernelError
from ntkcheck.errors import IterativeConvergenceError
from ntkcheck.kernels.operator import ntk_operator

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _rel(a, b) -> float:
    a = np.asarray(a.detach() if isinstance(a, torch.Tensor) else a)
    b = np.asarray(b.detach() if isinstance(b, torch.Tensor) else b)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def ntk_problem():
    """A 2-output MLP with P = 3*24 + 24 + 24*2 + 2 = 146 > n*O on n = 40 train and 7 test inputs."""
    g = _gen(0)
    model = nk.MLP(3, [24], 2, generator=g, dtype=F64)
    x, xt = torch.randn(40, 3, generator=g, dtype=F64), torch.randn(7, 3, generator=g, dtype=F64)
    return dict(
        model=model,
        x=x,
        K=nk.ntk(model, x),
        Kx=nk.ntk(model, xt, x),
        Kt=nk.ntk(model, x, output="trace"),
        Ktx=nk.ntk(model, xt, x, output="trace"),
        y=torch.randn(40, 2, generator=g, dtype=F64),
        h0=torch.randn(40, 2, generator=g, dtype=F64),
        h0x=torch.randn(7, 2, generator=g, dtype=F64),
    )


def _ridge_kernel(n: int, seed: int, ridge: float = 0.1) -> torch.Tensor:
    A = torch.randn(n, 8, generator=_gen(seed), dtype=F64)
    return A @ A.T / 8 + ridge * torch.eye(n, dtype=F64)


def _spread_kernel(n: int, seed: int, lam_min: float) -> torch.Tensor:
    """Q diag(logspace(0, log10 lam_min)) Q^T: eigenvalues spread over the whole range, random eigenvectors."""
    lam = torch.logspace(0, float(np.log10(lam_min)), n, dtype=F64)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=_gen(seed), dtype=F64))
    return (Q * lam) @ Q.T


# ------------------------------------------------------------------------------ CG


@pytest.mark.parametrize("preconditioner", ["jacobi", "pivoted_cholesky", "none"])
def test_cg_interpolant_equals_dense_solve_on_the_operator(ntk_problem, preconditioner: str) -> None:
    p = ntk_problem
    op = ntk_operator(p["model"], p["x"], output="trace")
    want = nk.interpolate(p["Kt"], p["y"], k_test_train=p["Ktx"])
    assert nk.condition_number(p["Kt"]) < 1e5
    got = cg_interpolate(op, p["y"], k_test_train=p["Ktx"], preconditioner=preconditioner, rank=20)
    err = _rel(got.prediction, want)
    assert err < 1e-8, f"cg_interpolate({preconditioner}) vs interpolate: relative error {err:.2e}"
    assert 1 <= got.iterations <= 400 and 0 < got.residual <= 1e-10
    # the reported residual is the true one of the returned coefficients
    true = ((p["Kt"] @ got.alpha - p["y"]).norm(dim=0) / p["y"].norm(dim=0)).max()
    assert float(true) == pytest.approx(got.residual, rel=1e-2)  # two product paths: rounding ~1e-13


def test_cg_multi_output_full_kernel_and_initial_function(ntk_problem, tmp_path) -> None:
    p = ntk_problem
    want = nk.interpolate(p["K"], p["y"], k_test_train=p["Kx"], h_ini_train=p["h0"], h_ini_test=p["h0x"])
    path = tmp_path / "k.npy"
    n, o = 40, 2
    np.save(path, p["K"].permute(0, 2, 1, 3).reshape(n * o, n * o).numpy())
    for kernel in (ntk_operator(p["model"], p["x"]), p["K"], np.load(path, mmap_mode="r")):
        got = cg_interpolate(
            kernel,
            p["y"],
            k_test_train=p["Kx"],
            h_ini_train=p["h0"],
            h_ini_test=p["h0x"],
            preconditioner="pivoted_cholesky",
            rank=40,
        )
        assert got.prediction.shape == (7, 2)
        assert _rel(got.prediction, want) < 1e-8, type(kernel).__name__
    train = cg_interpolate(p["K"], p["y"], h_ini_train=p["h0"])
    assert _rel(train.prediction, p["y"]) < 1e-9  # the interpolant fits Y (defining property)


def test_cg_solve_several_right_hand_sides() -> None:
    K = _ridge_kernel(120, 1)
    B = torch.randn(120, 4, generator=_gen(2), dtype=F64)
    B[:, 2] = 0.0  # a zero column is solved by x = 0
    got = cg_solve(K, B, tol=1e-12)
    want = torch.from_numpy(scipy.linalg.solve(K.numpy(), B.numpy(), assume_a="pos"))
    assert _rel(got.solution, want) < 1e-10 and float(got.solution[:, 2].abs().max()) == 0.0
    assert got.residual <= 1e-12
    one = cg_solve(K.numpy(), B[:, 0].numpy(), tol=1e-12)
    assert one.solution.shape == (120,) and _rel(one.solution, want[:, 0]) < 1e-10


def test_cg_non_convergence_raises_with_the_residual() -> None:
    K = _spread_kernel(200, 3, 1e-8)
    b = torch.randn(200, generator=_gen(4), dtype=F64)
    match = r"within max_iter=15 kernel products: relative residual"
    with pytest.raises(IterativeConvergenceError, match=match) as info:
        cg_solve(K, b, max_iter=15, preconditioner="none")
    err = info.value
    assert err.iterations >= 15 and err.residual > 1e-10
    assert f"{err.residual:.3e}" in str(err)


def test_cg_refuses_an_indefinite_kernel() -> None:
    K = torch.diag(torch.tensor([1.0, 2.0, -3.0, 4.0], dtype=F64))
    with pytest.raises(SingularKernelError, match=r"p\^T \(K \+ mu I\) p = -?\d"):
        cg_solve(K, torch.ones(4, dtype=F64), preconditioner="none")


# ------------------------------------------------------------------------------ diag_reg


def _closed_form(K: torch.Tensor, y: torch.Tensor, Kx: torch.Tensor, diag_reg: float) -> np.ndarray:
    lam = diag_reg * np.trace(K.numpy()) / K.shape[0]
    return Kx.numpy() @ scipy.linalg.solve(K.numpy() + lam * np.eye(K.shape[0]), y.numpy(), assume_a="pos")


def test_diag_reg_matches_the_closed_form(ntk_problem) -> None:
    p = ntk_problem
    K, Kx, y = p["Kt"], p["Ktx"], p["y"]
    for reg in (1e-3, 0.5):
        want = _closed_form(K, y, Kx, reg)
        assert _rel(nk.interpolate(K, y, k_test_train=Kx, diag_reg=reg), want) < 1e-10
        assert _rel(nk.interpolate(K, y, diag_reg=reg), _closed_form(K, y, K, reg)) < 1e-10
        op = ntk_operator(p["model"], p["x"], output="trace")
        for kernel in (op, K):
            got = cg_interpolate(kernel, y, k_test_train=Kx, diag_reg=reg, preconditioner="pivoted_cholesky", rank=10)
            assert _rel(got.prediction, want) < 1e-8
        assert (
            _rel(
                cg_solve(K, y, diag_reg=reg).solution,
                scipy.linalg.solve(K.numpy() + reg * float(K.diagonal().mean()) * np.eye(40), y.numpy()),
            )
            < 1e-8
        )
        flow = nk.mse_flow(K, y, times=[np.inf], k_test_train=Kx, diag_reg=reg)
        assert _rel(flow.test[0], want) < 1e-10 and _rel(flow.train[0], _closed_form(K, y, K, reg)) < 1e-10


def test_diag_reg_flow_is_the_weight_decay_flow(ntk_problem) -> None:
    """a(t) = (K + mu)^{-1} (I - expm(-c (K + mu) t)) (Y - h0), by scipy's expm and solve."""
    p = ntk_problem
    K, Kx, y, h0, h0x = p["Kt"], p["Ktx"], p["y"], p["h0"], p["h0x"]
    reg, lr, t = 0.05, 0.7, 3.0
    mu = reg * float(K.diagonal().mean())
    c = 2 * lr / 40
    A = K.numpy() + mu * np.eye(40)
    a = scipy.linalg.solve(A, (np.eye(40) - scipy.linalg.expm(-c * t * A)) @ (y - h0).numpy())
    flow = nk.mse_flow(K, y, times=[t], k_test_train=Kx, h_ini_train=h0, h_ini_test=h0x, lr=lr, diag_reg=reg)
    assert _rel(flow.train[0], h0.numpy() + K.numpy() @ a) < 1e-10
    assert _rel(flow.test[0], h0x.numpy() + Kx.numpy() @ a) < 1e-10


def test_decompose_with_diag_reg(ntk_problem) -> None:
    p = ntk_problem
    K, Kx, y, h0, h0x = p["Kt"], p["Ktx"], p["y"], p["h0"], p["h0x"]
    d = nk.decompose(K, y, k_test_train=Kx, h_ini_train=h0, h_ini_test=h0x, diag_reg=0.1)
    assert _rel(d.total, h0x.numpy() + _closed_form(K, y - h0, Kx, 0.1)) < 1e-10
    assert _rel(d.unbiased + d.init_bias, d.total) < 1e-12


@pytest.mark.parametrize(
    "bad, exc",
    [
        (-1e-3, ValueError),
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        (True, TypeError),
        ("0.1", TypeError),
    ],
)
def test_diag_reg_is_validated(bad, exc) -> None:
    K, y = _ridge_kernel(10, 5), torch.ones(10, dtype=F64)
    for call in (
        lambda: nk.interpolate(K, y, diag_reg=bad),
        lambda: nk.decompose(K, y, k_test_train=None, h_ini_train=y, h_ini_test=None, diag_reg=bad),
        lambda: nk.mse_flow(K, y, times=[1.0], diag_reg=bad),
        lambda: cg_solve(K, y, diag_reg=bad),
        lambda: krylov_mse_flow(K, y, times=[1.0], diag_reg=bad),
        lambda: blocked_cholesky_solve(K.numpy(), y, diag_reg=bad),
    ):
        with pytest.raises(exc, match="diag_reg must be a finite float >= 0"):
            call()


def test_diag_reg_is_keyword_only() -> None:
    K, y = _ridge_kernel(10, 5), torch.ones(10, dtype=F64)
    with pytest.raises(TypeError):
        nk.interpolate(K, y, None, None, None, None, None, 0.1)  # type: ignore[misc]


# ------------------------------------------------------------------------------ Krylov flow


@pytest.mark.parametrize("reg", [0.0, 0.01])
def test_krylov_flow_equals_the_dense_flow(ntk_problem, reg: float) -> None:
    p = ntk_problem
    times = [0.0, 0.05, 1.0, 20.0, 400.0]
    want = nk.mse_flow(
        p["K"],
        p["y"],
        times=times,
        k_test_train=p["Kx"],
        h_ini_train=p["h0"],
        h_ini_test=p["h0x"],
        lr=0.5,
        diag_reg=reg,
    )
    for kernel in (ntk_operator(p["model"], p["x"]), p["K"]):
        got = krylov_mse_flow(
            kernel,
            p["y"],
            times=times,
            k_test_train=p["Kx"],
            h_ini_train=p["h0"],
            h_ini_test=p["h0x"],
            lr=0.5,
            diag_reg=reg,
        )
        assert got.train.shape == want.train.shape and got.test.shape == want.test.shape
        assert _rel(got.train, want.train) < 1e-8 and _rel(got.test, want.test) < 1e-8
        assert 1 <= got.iterations <= 80 and got.error <= 1e-10
        assert _rel(got.train[0], p["h0"]) == 0.0


def test_krylov_flow_limits() -> None:
    K = _spread_kernel(300, 6, 1e-6)
    y = torch.randn(300, generator=_gen(7), dtype=F64)
    with pytest.raises(IterativeConvergenceError, match=r"within max_iter=10 steps: change estimate") as info:
        krylov_mse_flow(K, y, times=[1e6], max_iter=10)
    assert info.value.residual > 1e-10
    with pytest.raises(ValueError, match="times must be finite for krylov_mse_flow"):
        krylov_mse_flow(K, y, times=[1.0, float("inf")])


# ------------------------------------------------------------------------------ blocked Cholesky


def test_blocked_cholesky_on_a_memmap(tmp_path) -> None:
    n = 150
    K = _ridge_kernel(n, 8, ridge=1e-3)
    path = tmp_path / "k.npy"
    np.save(path, K.numpy())
    mm = np.load(path, mmap_mode="r")
    B = torch.randn(n, 3, generator=_gen(9), dtype=F64)
    want = scipy.linalg.solve(K.numpy(), B.numpy(), assume_a="pos")
    for budget in (16 * n * 7, 16 * n * 64, 16 * n * n):  # 7 rows per block (22 blocks, a short last one) ... one
        got = blocked_cholesky_solve(mm, B, memory_budget=budget)
        assert got.block_rows == min(budget // (16 * n), n)
        assert _rel(got.solution, want) < 1e-10 and got.residual < 1e-10
    reg = blocked_cholesky_solve(mm, B[:, 0], diag_reg=0.2, memory_budget=16 * n * 20, factor_path=tmp_path / "L")
    mu = 0.2 * float(K.diagonal().mean())
    assert _rel(reg.solution, scipy.linalg.solve(K.numpy() + mu * np.eye(n), B[:, 0].numpy())) < 1e-10
    assert (tmp_path / "L").stat().st_size == n * n * 8


def test_blocked_cholesky_guards(tmp_path) -> None:
    A = torch.randn(60, 5, generator=_gen(10), dtype=F64)
    singular = (A @ A.T).numpy()
    with pytest.raises(SingularKernelError, match="blocked_cholesky_solve"):
        blocked_cholesky_solve(singular, np.ones(60), memory_budget=16 * 60 * 8)
    with pytest.raises(ValueError, match="memory_budget=100 bytes is too small"):
        blocked_cholesky_solve(np.eye(60), np.ones(60), memory_budget=100)
    with pytest.raises(ValueError, match=r"rhs must have shape \(60,\) or \(60, k\)"):
        blocked_cholesky_solve(np.eye(60), np.ones(59))
    with pytest.raises(TypeError, match="kernel must be a numpy array"):
        blocked_cholesky_solve(torch.eye(3), np.ones(3))  # type: ignore[arg-type]
