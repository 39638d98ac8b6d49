"""Jacobian throughput of the linearized model: ``J v`` (jvp), ``J^T u`` (vjp) and J itself.

For ``f_lin = ntkcheck.linearize(MLP)`` at ``theta = theta_0 + delta`` (``delta`` and
``u`` Gaussian, never zero), with J the (N*O, P) Jacobian of the MLP at ``theta_0``:

* ``jvp``: one forward pass of ``f_lin`` without autograd, ``f(x; theta_0) + J delta``
  (one ``torch.func.jvp``; J is never formed);
* ``vjp``: a forward pass of ``f_lin`` and its backward, ``J^T u`` (the gradient
  one training step of the linearized model needs);
* ``jacobian``: :func:`ntkcheck.jacobian`, J formed explicitly by ``jacrev`` over the
  whole batch (N*O backward passes of the batch: quadratic in N, small cases only).

Each case records in ``extra_info``: ``jvp_per_s`` / ``vjp_per_s`` (batched
products per second, 1 / median), ``rows_per_s`` (Jacobian rows per second,
N*O / median: rows applied by a jvp or vjp, rows formed by ``jacobian``), the
parameter count P and the peak memory of one call.  Before timing, each
operation is checked against the explicit Jacobian on the first 4 inputs.
Times come from synchronised calls; rounds are calibrated to the call's duration.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
import torch
from _cases import MLPCase
from _measure import peak_memory, synced
from conftest import rounds_for, size_set

import ntkcheck as nk


@dataclass(frozen=True)
class Case(MLPCase):
    ops: tuple[str, ...] = ("jvp", "vjp")


ALL = ("jvp", "vjp", "jacobian")
CASES = {
    "smoke": [Case(16, 16, 4, ops=ALL), Case(16, 8, 4, depth=1, outputs=2, dtype="float64", ops=ALL)],
    "cpu": [
        Case(64, 256, 16, ops=ALL),
        Case(64, 256, 16, dtype="float64", ops=ALL),
        Case(64, 128, 16, outputs=3, ops=("jvp", "jacobian")),
        Case(256, 256, 16),
        Case(1024, 256, 16),
        Case(4096, 256, 16),
        Case(1024, 128, 16),
        Case(1024, 512, 16),
    ],
    "gpu": [
        Case(512, 1024, 64, ops=ALL),
        Case(512, 1024, 64, dtype="float64", ops=ALL),
        Case(128, 1024, 64, outputs=10, ops=ALL),
        Case(4096, 1024, 64, outputs=10),
        Case(4096, 1024, 64),
        Case(16384, 1024, 64),
        Case(65536, 1024, 64),
        Case(16384, 256, 64),
        Case(16384, 4096, 64),
    ],
}
PARAMS = [pytest.param(c, op, id=f"{op}-{c.id}") for c in CASES[size_set()] for op in c.ops]
DTYPES = {"float32": torch.float32, "float64": torch.float64}
TOL = {torch.float32: 1e-4, torch.float64: 1e-10}


def _operation(op: str, lin: nk.Linearized, x: torch.Tensor, u: torch.Tensor):
    params = list(lin.parameters())
    if op == "jvp":

        def jvp():
            with torch.no_grad():
                return lin(x)

        return jvp
    if op == "vjp":
        return lambda: torch.autograd.grad(lin(x), params, grad_outputs=u)
    if op == "jacobian":
        return lambda: nk.jacobian(lin, x)
    raise ValueError(f"op must be one of {ALL}, got {op!r}")


def _check(op: str, lin: nk.Linearized, x: torch.Tensor, u: torch.Tensor) -> None:
    """The operation on the first 4 inputs against the explicit Jacobian J (4*O, P)."""
    x4, u4 = x[:4], u[:4]
    jac = nk.jacobian(lin, x4)
    if op == "jvp":
        with torch.no_grad():
            got = (lin(x4) - lin.base(x4)).reshape(-1)
        want = jac @ lin.delta()
    elif op == "vjp":
        got = torch.cat([g.reshape(-1) for g in _operation("vjp", lin, x4, u4)()])
        want = jac.T @ u4.reshape(-1)
    else:
        return  # the jacobian op is J itself
    err = float((got - want).norm() / want.norm())
    assert err < TOL[x.dtype], f"{op}: relative error {err:.2e} against J from ntkcheck.jacobian"


@pytest.mark.parametrize("case,op", PARAMS)
def test_jacobian_throughput(benchmark, device, case: Case, op: str):
    dtype = DTYPES[case.dtype]
    gen = torch.Generator().manual_seed(0)
    model = nk.MLP(case.d, [case.width] * case.depth, case.outputs, generator=gen, dtype=dtype, device=device)
    lin = nk.linearize(model)
    n_params = lin.n_params()
    lin.load_delta(0.01 * torch.randn(n_params, generator=gen, dtype=dtype).to(device))
    x = torch.randn(case.n, case.d, generator=gen, dtype=dtype).to(device)
    u = torch.randn(case.n, case.outputs, generator=gen, dtype=dtype).to(device)
    _check(op, lin, x, u)
    call = synced(_operation(op, lin, x, u), device)
    call()  # warm-up
    start = time.perf_counter()
    memory = peak_memory(call, device)
    per_call = time.perf_counter() - start
    benchmark.pedantic(call, rounds=rounds_for(per_call), iterations=1, warmup_rounds=1 if per_call < 0.25 else 0)
    if benchmark.stats is not None:
        median = benchmark.stats.stats.median
        rows = case.n * case.outputs
        benchmark.extra_info.update(
            method=op,
            n=case.n,
            width=case.width,
            d=case.d,
            depth=case.depth,
            outputs=case.outputs,
            dtype=case.dtype,
            n_params=n_params,
            rows=rows,
            calls_per_s=1.0 / median,
            rows_per_s=rows / median,
            peak_memory_bytes=memory,
            throughput=rows / median,
            throughput_unit="Jacobian rows/s",
            tf32=torch.backends.cuda.matmul.allow_tf32,
        )
        if op in ("jvp", "vjp"):
            benchmark.extra_info[f"{op}_per_s"] = 1.0 / median
