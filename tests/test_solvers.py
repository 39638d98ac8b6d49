"""Kernel solvers and flows against dense float64 numpy/scipy references (seed 000 eqs (3)-(6), Thms 2, 5, 6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from ntkcheck.dynamics._ode.field import _PolarFlow
from ntkcheck.dynamics.flows import (
    ConvergenceWarning,
    DivergenceWarning,
    mse_flow,
    mse_gd,
    ode_flow,
)
from ntkcheck.dynamics.losses import MSE, CrossEntropy, LpLoss
from ntkcheck.dynamics.solvers import (
    SingularKernelError,
    check_consistent,
    condition_number,
    decompose,
    interpolate,
    max_stable_lr,
    min_norm_parameters,
)

F64 = torch.float64


def rel(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    a = np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a)
    b = np.asarray(b.detach().cpu() if isinstance(b, torch.Tensor) else b)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def problem(n: int, m: int = 5, seed: int = 0, outputs: int | None = None) -> dict[str, torch.Tensor]:
    """Well-conditioned joint kernel A A^T / N + 0.1 I on n train + m test points (seeded)."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n + m, 6, generator=g, dtype=F64)
    Kall = A @ A.T / 6 + 0.1 * torch.eye(n + m, dtype=F64)
    tail = () if outputs is None else (outputs,)
    return dict(
        K=Kall[:n, :n].contiguous(),
        Kx=Kall[n:, :n].contiguous(),
        y=torch.randn((n,) + tail, generator=g, dtype=F64),
        h0=torch.randn((n,) + tail, generator=g, dtype=F64),
        h0x=torch.randn((m,) + tail, generator=g, dtype=F64),
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


# ------------------------------------------------------------------ MSE flow (eq (3), closed form)


def test_mse_flow_limits() -> None:
    d = problem(25, seed=15)
    kw = dict(k_test_train=d["Kx"], h_ini_train=d["h0"], h_ini_test=d["h0x"])
    flow = mse_flow(d["K"], d["y"], times=[0.0, math.inf], **kw)
    assert flow.train.shape == (2, 25) and flow.test.shape == (2, 5)
    assert rel(flow.train[0], d["h0"]) <= 1e-12 and rel(flow.test[0], d["h0x"]) <= 1e-14
    assert rel(flow.test[1], interpolate(d["K"], d["y"], **kw)) <= 1e-10
    assert rel(flow.train[1], d["y"]) <= 1e-10


def test_mse_flow_matches_matrix_exponential() -> None:
    d = problem(10, seed=16, outputs=2)
    n, lr, times = 10, 0.7, [0.3, 2.0, 15.0]
    flow = mse_flow(d["K"], d["y"], times=times, k_test_train=d["Kx"], h_ini_train=d["h0"], h_ini_test=d["h0x"], lr=lr)
    K, Kx, y, h0, h0x = (d[k].numpy() for k in ("K", "Kx", "y", "h0", "h0x"))
    for i, t in enumerate(times):
        # dh/dt = -lr K (2/n)(h - Y)
        h_t = y + scipy.linalg.expm(-lr * 2 / n * K * t) @ (h0 - y)
        assert rel(flow.train[i], h_t) <= 1e-10
        # test points follow h_test = h_ini_test + Kx K^{-1} (h_train(t) - h0) (integral of eq (3))
        assert rel(flow.test[i], h0x + Kx @ scipy.linalg.solve(K, h_t - h0, assume_a="pos")) <= 1e-10


def test_mse_flow_loss_decreases_monotonically() -> None:
    d = problem(20, seed=17)
    times = np.concatenate([[0.0], np.geomspace(1e-3, 1e4, 60)])
    flow = mse_flow(d["K"], d["y"], times=times, h_ini_train=d["h0"])
    losses = np.array([float(MSE(h, d["y"])) for h in flow.train])
    steps = np.diff(losses)
    assert np.all(steps <= 0)
    assert np.all(steps[losses[:-1] > 1e-25] < 0)  # strictly, until the loss underflows to exactly 0
    assert losses[-1] < 1e-12 * losses[0]


def test_mse_flow_one_eigendecomposition_for_many_times(monkeypatch: pytest.MonkeyPatch) -> None:
    d = problem(15, seed=18)
    calls = []
    real = torch.linalg.eigh

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.linalg, "eigh", spy)
    flow = mse_flow(d["K"], d["y"], times=np.linspace(0, 50, 40), k_test_train=d["Kx"])
    assert len(calls) == 1 and flow.train.shape == (40, 15)


def test_mse_flow_times_checked() -> None:
    d = problem(4)
    with pytest.raises(ValueError, match=r"times must be >= 0"):
        mse_flow(d["K"], d["y"], times=[1.0, -0.5])
    with pytest.raises(ValueError, match=r"lr must be a positive finite float"):
        mse_flow(d["K"], d["y"], times=[1.0], lr=0.0)


# ------------------------------------------------------------------ ODE flow for L^p losses


@pytest.mark.parametrize("p", [1.5, 2.0, 3.0, 4.0])
def test_ode_flow_converges_to_interpolant(p: float) -> None:
    d = problem(7, seed=19)
    kw = dict(k_test_train=d["Kx"], h_ini_train=d["h0"], h_ini_test=d["h0x"])
    res = ode_flow(d["K"], d["y"], loss=LpLoss(p), times=[0.0, 1.0, math.inf], **kw)
    assert res.converged and res.residual <= 1.001e-10  # the stop event is located on the dense output
    ref = interpolate(d["K"], d["y"], **kw)
    assert rel(res.final_test, ref) <= 1e-6 and rel(res.test[2], ref) <= 1e-6
    assert rel(res.final_train, d["y"]) <= 1e-6
    assert rel(res.train[0], d["h0"]) == 0.0
    losses = [float(LpLoss(p)(h, d["y"])) for h in res.train]
    assert losses[0] > losses[1] > losses[2]


def test_ode_flow_mse_matches_closed_form() -> None:
    d = problem(7, seed=20, outputs=2)
    kw = dict(k_test_train=d["Kx"], h_ini_train=d["h0"], h_ini_test=d["h0x"], lr=0.8)
    times = [0.1, 0.5, 2.0, 10.0, 40.0]
    res = ode_flow(d["K"], d["y"], loss=LpLoss(2), times=times, **kw)
    closed = mse_flow(d["K"], d["y"], times=times, **kw)
    for i in range(len(times)):
        assert rel(res.train[i], closed.train[i]) <= 1e-6
        assert rel(res.test[i], closed.test[i]) <= 1e-6
    # it stops where the tolerance is reached: the exact residual at t_final is tol
    at_stop = mse_flow(d["K"], d["y"], times=[res.t_final], **kw).train[0]
    assert rel(at_stop, d["y"]) / rel(d["h0"], d["y"]) == pytest.approx(1e-10, rel=1e-4)


def test_ode_flow_mixture_and_grad_tol() -> None:
    d = problem(6, seed=21)
    res = ode_flow(d["K"], d["y"], loss=0.5 * LpLoss(2) + LpLoss(3), times=[math.inf], k_test_train=d["Kx"])
    assert rel(res.final_test, interpolate(d["K"], d["y"], k_test_train=d["Kx"])) <= 1e-6
    res = ode_flow(d["K"], d["y"], loss=MSE, times=[math.inf], grad_tol=1e-9)
    assert res.converged and res.grad_norm <= 1.01e-9


def test_ode_flow_warns_when_tolerance_not_reached() -> None:
    d = problem(6, seed=22)
    with pytest.warns(ConvergenceWarning, match=r"stopped at t=2 .*\|\|grad_h dist\|\| = \d"):
        res = ode_flow(d["K"], d["y"], loss=LpLoss(4), times=[1.0, 2.0], max_time=2.0)
    assert not res.converged and res.t_final == pytest.approx(2.0, rel=1e-9)
    with pytest.raises(ValueError, match=r"times must not exceed max_time"):
        ode_flow(d["K"], d["y"], loss=MSE, times=[3.0], max_time=2.0)


def test_ode_flow_refuses_cross_entropy() -> None:
    d = problem(4)
    with pytest.raises(ValueError, match=r"outside the class of seed 000 §4"):
        ode_flow(d["K"], d["y"], loss=CrossEntropy(), times=[1.0])
    with pytest.raises(TypeError, match=r"loss must be a ntkcheck.dynamics.losses.Loss"):
        ode_flow(d["K"], d["y"], loss=lambda h, y: h, times=[1.0])  # type: ignore[arg-type]


@pytest.mark.parametrize("p", [1.5, 2.0, 4.0])
def test_polar_flow_jacobian_matches_finite_differences(p: float) -> None:
    rng = np.random.default_rng(23)
    A = rng.standard_normal((5, 5))
    flow = _PolarFlow(A @ A.T / 5 + 0.1 * np.eye(5), LpLoss(p), torch.from_numpy(rng.standard_normal(5)), 0.7)
    dvec = rng.standard_normal(5)
    u = np.concatenate([dvec / np.linalg.norm(dvec), [-0.3, 0.4]])
    J = flow.jac(0.0, u)
    eps = 1e-6
    Jn = np.stack([(flow.rhs(0.0, u + eps * e) - flow.rhs(0.0, u - eps * e)) / (2 * eps) for e in np.eye(7)], axis=1)
    assert np.abs(J - Jn).max() <= 1e-7 * np.abs(J).max()


def test_polar_flow_keeps_precision_far_from_zero_targets() -> None:
    # a shift-invariant loss is evaluated at (r, 0): h = Y + r would lose r ~ 1e-11 next to Y ~ 1e8
    rng = np.random.default_rng(29)
    A = rng.standard_normal((4, 4))
    K = A @ A.T / 4 + 0.1 * np.eye(4)
    Y = torch.from_numpy(rng.standard_normal(4))
    dvec = rng.standard_normal(4)
    u = np.concatenate([dvec / np.linalg.norm(dvec), [-25.0, 1.0]])
    near = _PolarFlow(K, LpLoss(3), Y, 1.0).rhs(0.0, u)
    far = _PolarFlow(K, LpLoss(3), Y + 1e8, 1.0).rhs(0.0, u)
    assert rel(far, near) <= 1e-12


# ------------------------------------------------------------------ gradient descent stability


def test_max_stable_lr_is_n_over_lambda_max() -> None:
    d = problem(12, seed=24)
    assert max_stable_lr(d["K"]) == pytest.approx(12 / np.linalg.eigvalsh(d["K"].numpy())[-1], rel=1e-12)


def test_gd_at_or_above_the_limit_raises() -> None:
    d = problem(12, seed=25)
    lr = max_stable_lr(d["K"])
    with pytest.raises(ValueError, match=r"lr=.* >= n / lambda_max = .*lambda_max="):
        mse_gd(d["K"], d["y"], lr=lr, steps=[10])


def test_gd_above_the_limit_warns_and_diverges() -> None:
    d = problem(12, seed=26)
    lr = 1.05 * max_stable_lr(d["K"])
    with pytest.warns(DivergenceWarning, match=r"lambda_max"):
        gd = mse_gd(d["K"], d["y"], lr=lr, steps=[0, 50, 100], on_unstable="warn")
    err = [float((h - d["y"]).norm()) for h in gd.train]
    assert err[2] > err[1] > err[0]


def test_gd_below_the_limit_matches_explicit_iteration() -> None:
    d = problem(9, seed=27)
    lr = 0.95 * max_stable_lr(d["K"])  # top mode oscillates (1 < c lambda < 2) but converges
    steps = [0, 1, 7, 60]
    gd = mse_gd(d["K"], d["y"], lr=lr, steps=steps, k_test_train=d["Kx"], h_ini_train=d["h0"], h_ini_test=d["h0x"])
    K, Kx, y, h, hx = (d[k].numpy().copy() for k in ("K", "Kx", "y", "h0", "h0x"))
    for k in range(61):
        if k in steps:
            i = steps.index(k)
            assert rel(gd.train[i], h) <= 1e-10 and rel(gd.test[i], hx) <= 1e-10
        grad = 2 / 9 * (h - y)
        h, hx = h - lr * K @ grad, hx - lr * Kx @ grad
    assert float(MSE(gd.train[3], d["y"])) < float(MSE(gd.train[2], d["y"]))


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
