"""Kernel solver speed against n: interpolate, the closed-form MSE flow, the ODE flow.

* ``interpolate``: seed 000 eq (5) at m = n/4 test points (condition check by
  ``eigvalsh``, then a Cholesky solve);
* ``mse_flow``: the closed-form MSE flow at 64 times plus ``t = inf``, test points
  included: one ``eigh`` serves all times;
* ``ode_flow``: the same flow integrated by Radau IIA (scipy, float64 on the host
  whatever the device: its cost is the integrator's, not the kernel's), 16 times.

The kernel is the analytic NTK of a 2-hidden-layer ReLU MLP on Gaussian inputs
(d = 16), computed in float64, plus a ridge ``4 n eps(float32) r`` (r the largest
absolute row sum of the training block, a bound on its largest eigenvalue): the
condition number then stays below a quarter of the solvers' float32 guard
``1 / (n eps)``, so float32 and float64 time the same matrix.  Before timing,
``mse_flow`` at ``t = inf`` is checked against ``interpolate`` and the ODE flow
against the closed form.  Each case records in ``extra_info``: the solver, n, m,
dtype, the number of times, ``solves_per_s`` (1 / median; ``throughput``), the
condition number and the peak memory of one call.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from _measure import peak_memory, synced
from conftest import rounds_for, size_set

import ntkcheck as nk


@dataclass(frozen=True)
class Case:
    solver: str
    n: int
    dtype: str = "float64"

    @property
    def id(self) -> str:
        return f"{self.solver}-n{self.n}-{self.dtype}"


def _cases(solvers: tuple[str, ...], ns: list[int], dtypes: tuple[str, ...] = ("float64", "float32")) -> list[Case]:
    return [Case(s, n, dt) for s in solvers for dt in dtypes for n in ns]


CLOSED = ("interpolate", "mse_flow")
CASES = {
    "smoke": _cases(CLOSED, [16]) + _cases(("ode_flow",), [8]),
    "cpu": _cases(CLOSED, [256, 512, 1024])
    + _cases(("ode_flow",), [16, 32, 64], ("float64",))
    + [Case("ode_flow", 32, "float32")],
    "gpu": _cases(CLOSED, [1024, 4096, 8192])
    + _cases(("ode_flow",), [16, 32, 64], ("float64",))
    + [Case("ode_flow", 32, "float32")],
}
DTYPES = {"float32": torch.float32, "float64": torch.float64}
FLOW_TIMES = np.concatenate([np.geomspace(1e-3, 1e4, 64), [math.inf]])
ODE_TIMES = np.geomspace(1e-2, 1e3, 16)
TOL = {torch.float32: 1e-3, torch.float64: 1e-8}


@functools.lru_cache(maxsize=8)
def _kernel(n: int, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """(k_train + ridge, k_test_train, y_train, ridge) in float64 on ``device``; m = max(n // 4, 1) test points."""
    gen = torch.Generator().manual_seed(n)
    m = max(n // 4, 1)
    model = nk.MLP(16, [64, 64], 1, generator=gen, dtype=torch.float64, device=device)
    x = torch.randn(n + m, 16, generator=gen, dtype=torch.float64).to(device)
    kernel = nk.analytic_ntk(model, x)
    k_train, k_test = kernel[:n, :n], kernel[n:, :n]
    ridge = 4 * n * torch.finfo(torch.float32).eps * float(k_train.abs().sum(1).max())
    k_train = k_train + ridge * torch.eye(n, dtype=torch.float64, device=device)
    y = torch.randn(n, generator=gen, dtype=torch.float64).to(device)
    return k_train, k_test.contiguous(), y, ridge


def _solver(solver: str, k: torch.Tensor, kx: torch.Tensor, y: torch.Tensor):
    if solver == "interpolate":
        return lambda: nk.interpolate(k, y, k_test_train=kx)
    if solver == "mse_flow":
        return lambda: nk.mse_flow(k, y, times=FLOW_TIMES, k_test_train=kx)
    if solver == "ode_flow":
        return lambda: nk.ode_flow(k, y, loss=nk.MSE, times=ODE_TIMES, k_test_train=kx)
    raise ValueError(f"solver must be interpolate, mse_flow or ode_flow, got {solver!r}")


def _check(solver: str, out, k: torch.Tensor, kx: torch.Tensor, y: torch.Tensor) -> None:
    """mse_flow(inf) against interpolate; ode_flow against the closed form at its times."""
    if solver == "interpolate":
        return
    if solver == "mse_flow":
        got, want = out.test[-1], nk.interpolate(k, y, k_test_train=kx)
    else:
        assert out.converged, f"ode_flow did not converge: residual {out.residual:.2e}"
        got, want = out.test, nk.mse_flow(k, y, times=ODE_TIMES, k_test_train=kx).test
    err = float((got - want).norm() / want.norm())
    assert err < TOL[k.dtype], f"{solver}: relative error {err:.2e} against the closed form"


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES[size_set()]])
def test_solver_speed(benchmark, device, case: Case):
    dtype = DTYPES[case.dtype]
    k64, kx64, y64, ridge = _kernel(case.n, str(device))
    k, kx, y = k64.to(dtype), kx64.to(dtype), y64.to(dtype)
    call = synced(_solver(case.solver, k, kx, y), device)
    _check(case.solver, call(), k, kx, y)  # also the warm-up
    start = time.perf_counter()
    memory = peak_memory(call, device)
    per_call = time.perf_counter() - start
    benchmark.pedantic(call, rounds=rounds_for(per_call), iterations=1, warmup_rounds=1 if per_call < 0.25 else 0)
    if benchmark.stats is not None:
        median = benchmark.stats.stats.median
        n_times = {"interpolate": 1, "mse_flow": len(FLOW_TIMES), "ode_flow": len(ODE_TIMES)}[case.solver]
        benchmark.extra_info.update(
            method=case.solver,
            n=case.n,
            m=kx.shape[0],
            dtype=case.dtype,
            times=n_times,
            solves_per_s=1.0 / median,
            throughput=1.0 / median,
            throughput_unit="solves/s",
            condition_number=nk.condition_number(k64),
            ridge=ridge,
            peak_memory_bytes=memory,
            tf32=torch.backends.cuda.matmul.allow_tf32,
        )
