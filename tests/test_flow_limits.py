"""ode_flow on ill-conditioned kernels, its step and time limits, and its progress line.

Kernels ``K = Q diag(lambda) Q^T`` with lambda log-spaced from 1 down to 1/cond (n = 20).  References: the
MSE flow from a float64 numpy eigendecomposition, ``h(t) = Y + V exp(-(2 lr / n) lambda t) V^T (h0 - Y)``
(seed 000 eq (3)); for L^4 at finite times an independent integration of eq (3) in t itself (scipy Radau,
rtol 1e-12), which is accurate for t <= 10 because the fast modes have settled by then.
"""

from __future__ import annotations

import inspect
import math
import time

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from ntkcheck.dynamics.flows import ode_flow
from ntkcheck.dynamics.losses import MSE, LpLoss
from ntkcheck.errors import FlowLimitError

L4 = LpLoss(4.0)
TIMES = [1.0, 10.0, math.inf]


def kernel(n: int, cond: float, seed: int = 0, outputs: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    K = (Q * np.logspace(0, -math.log10(cond), n)) @ Q.T
    y = rng.standard_normal(n if outputs is None else (n, outputs))
    return torch.from_numpy(0.5 * (K + K.T)), torch.from_numpy(y)


def mse_reference(K: np.ndarray, y: np.ndarray, times: list[float], lr: float = 1.0) -> np.ndarray:
    lam, V = np.linalg.eigh(K)
    n = K.shape[0]
    out = []
    for t in times:
        decay = np.zeros_like(lam) if math.isinf(t) else np.exp(-(2 * lr / n) * lam * t)
        out.append(y + V @ (decay * (V.T @ (0.0 - y))))
    return np.stack(out)


def l4_reference(K: np.ndarray, y: np.ndarray, t_end: float) -> np.ndarray:
    n = K.shape[0]

    def rhs(_t: float, h: np.ndarray) -> np.ndarray:
        return -K @ ((4 / n) * (h - y) ** 3)

    def jac(_t: float, h: np.ndarray) -> np.ndarray:
        return -K * ((12 / n) * (h - y) ** 2)[None, :]

    sol = solve_ivp(
        rhs, (0.0, t_end), np.zeros(n), method="Radau", jac=jac, rtol=1e-12, atol=1e-14, t_eval=[1.0, t_end]
    )
    assert sol.success
    return sol.y.T


@pytest.mark.parametrize("cond", [1e10, 1e12])
@pytest.mark.parametrize("loss", [MSE, L4], ids=["mse", "l4"])
def test_ill_conditioned_flow_is_fast_and_accurate(loss, cond: float) -> None:
    """cond 1e10 and 1e12 (accepted by the default guard, 1 / (n eps) = 2.3e14): <= 10 s of CPU each, and the
    MSE within 1e-6 of the closed form (relative to |y - h0|) at t = 1, 10 and inf."""
    K, y = kernel(20, cond)
    start = time.process_time()
    # a bounded step budget: a return to step counts that grow with cond fails here instead of running for minutes
    res = ode_flow(K, y, loss=loss, times=TIMES, max_cond=1e3 * cond, max_steps=20_000)
    seconds = time.process_time() - start
    assert seconds <= 10.0, seconds
    assert res.converged and res.residual <= 1.01e-10
    scale = float(np.linalg.norm(y.numpy()))
    got = res.train.numpy()
    if loss is MSE:
        ref = mse_reference(K.numpy(), y.numpy(), TIMES)
    else:
        ref = np.concatenate([l4_reference(K.numpy(), y.numpy(), 10.0), y.numpy()[None]])
    err = np.linalg.norm(got - ref, axis=1) / scale
    assert err.max() <= 1e-6, err


def test_two_outputs_run_per_block_and_match_the_closed_form() -> None:
    K, y = kernel(20, 1e12, outputs=2)
    res = ode_flow(K, y, loss=MSE, times=TIMES, max_cond=1e15, max_steps=40_000)
    ref = np.stack([mse_reference(K.numpy(), y[:, c].numpy(), TIMES) for c in range(2)], axis=-1)
    err = np.linalg.norm((res.train.numpy() - ref).reshape(3, -1), axis=1) / float(np.linalg.norm(y.numpy()))
    assert err.max() <= 1e-6, err


def test_max_steps_raises_flow_limit_error_saying_how_far_it_got() -> None:
    K, y = kernel(20, 1e6)
    with pytest.raises(FlowLimitError) as info:
        ode_flow(K, y, loss=L4, times=TIMES, max_cond=1e9, max_steps=50)
    err = info.value
    assert isinstance(err, RuntimeError)
    assert err.steps == 51 and err.seconds >= 0 and err.t > 0 and 0 < err.residual < 1
    msg = str(err)
    assert "went past max_steps=50" in msg and "after 51 integration steps" in msg
    assert f"t = {err.t:.6g}" in msg and f"||h - Y|| / ||h_ini_train - Y|| = {err.residual:.3e}" in msg
    assert "tol=1e-10" in msg


def test_max_seconds_raises_flow_limit_error() -> None:
    K, y = kernel(20, 1e2)
    start = time.perf_counter()
    with pytest.raises(FlowLimitError, match=r"max_seconds=0\.3 before its stop .* s it had reached flow time") as info:
        ode_flow(K, y, loss=LpLoss(1.2), times=TIMES, max_seconds=0.3, max_steps=None)  # a p = 1.2 entry slides along 0
    assert info.value.seconds >= 0.3 and time.perf_counter() - start < 5.0
    assert info.value.residual > 1e-3  # no progress toward the stop


def test_limit_counts_steps_of_all_blocks_and_names_the_block() -> None:
    K, y = kernel(10, 1e4, outputs=3)
    y[:, 0] = 0.0  # block 1 starts at its targets: nothing to integrate there
    full = ode_flow(K, y, loss=L4, times=[math.inf], max_cond=1e7)
    assert full.converged and full.steps > 100
    assert ode_flow(K, y, loss=L4, times=[math.inf], max_cond=1e7, max_steps=full.steps).converged  # exactly enough
    # one step fewer fails in the last block: the budget is shared (each block alone needs far fewer steps)
    with pytest.raises(FlowLimitError, match=r"\(block 3 of 3\) with .* in this block") as info:
        ode_flow(K, y, loss=L4, times=[math.inf], max_cond=1e7, max_steps=full.steps - 1)
    assert info.value.steps == full.steps
    with pytest.raises(FlowLimitError, match=r"after 6 integration steps .*\(block 2 of 3\)"):
        ode_flow(K, y, loss=L4, times=[math.inf], max_cond=1e7, max_steps=5)


def test_every_call_is_bounded_by_default() -> None:
    params = inspect.signature(ode_flow).parameters
    assert isinstance(params["max_steps"].default, int) and params["max_steps"].default <= 1_000_000
    assert params["progress"].default is None


def test_progress_line_only_when_asked(capsys) -> None:
    K, y = kernel(20, 1e6)
    ode_flow(K, y, loss=L4, times=TIMES, max_cond=1e9)  # stderr is not a terminal under pytest: no bar
    assert "ode_flow" not in capsys.readouterr().err
    ode_flow(K, y, loss=L4, times=TIMES, max_cond=1e9, progress=True)
    err = capsys.readouterr().err
    assert "ode_flow: |h - Y| down" in err and "decades, t = " in err and "steps" in err
