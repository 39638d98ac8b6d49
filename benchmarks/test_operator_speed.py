"""The matrix-free NTK operator: mat-vec time and peak memory against N, and CG against the dense solve.

* ``matvec``: one product ``K v = J (J^T v)`` of :func:`ntkcheck.ntk_operator` for a 2-hidden-layer
  MLP (d = 16, width 64, one output; P = 5313 parameters) on N Gaussian inputs.  Its cost is
  ``O(N P)`` time and ``O(N + P)`` memory plus a chunk's activations: ``extra_info`` records
  ``peak_memory_bytes`` of one product next to ``dense_kernel_bytes = 8 N^2`` (what forming K would
  take) and ``ns_per_row_param`` (median / (N P)), which stays flat across N if the cost is O(N P).
* ``cg`` / ``dense``: the interpolant's coefficients ``(K + mu I)^{-1} y`` (``diag_reg = 1e-3``) by
  :func:`ntkcheck.cg_solve` on the operator (pivoted-Cholesky preconditioner of rank 64), and by
  forming K with :func:`ntkcheck.ntk` and :func:`ntkcheck.interpolate` (eigvalsh guard + Cholesky).
  Before timing, CG is checked against the dense solve; ``extra_info`` records the iterations and
  the residual.

float64 throughout (the library's claims are checked in float64).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
import torch
from _measure import peak_memory, synced
from conftest import rounds_for, size_set

import ntkcheck as nk

D, WIDTH, DIAG_REG = 16, 64, 1e-3


@dataclass(frozen=True)
class Case:
    kind: str  # matvec | cg | dense
    n: int

    @property
    def id(self) -> str:
        return f"{self.kind}-n{self.n}"


CASES = {
    "smoke": [Case("matvec", 32), Case("cg", 32), Case("dense", 32)],
    "cpu": [Case("matvec", n) for n in (1000, 2000, 4000, 8000)]
    + [Case(k, n) for k in ("cg", "dense") for n in (250, 500)],
    "gpu": [Case("matvec", n) for n in (4000, 16000, 64000, 256000)]
    + [Case(k, n) for k in ("cg", "dense") for n in (2000, 8000, 16000)],
}


def _problem(n: int, device: torch.device):
    gen = torch.Generator().manual_seed(n)
    model = nk.MLP(D, [WIDTH, WIDTH], 1, generator=gen, dtype=torch.float64, device=device)
    x = torch.randn(n, D, generator=gen, dtype=torch.float64).to(device)
    y = torch.randn(n, generator=gen, dtype=torch.float64).to(device)
    return model, x, y


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES[size_set()]])
def test_operator(benchmark, device, case: Case):
    model, x, y = _problem(case.n, device)
    op = nk.ntk_operator(model, x)
    info: dict[str, object] = {}
    if case.kind == "matvec":
        call = synced(lambda: op @ y, device)
    elif case.kind == "cg":
        call = synced(lambda: nk.cg_solve(op, y, diag_reg=DIAG_REG, preconditioner="pivoted_cholesky", rank=64), device)
        out = call()
        dense = nk.interpolate(nk.ntk(model, x), y, diag_reg=DIAG_REG)  # K alpha at the training points
        got = op @ out.solution
        err = float((got - dense).norm() / dense.norm())
        assert err < 1e-7, f"cg_solve against interpolate: relative error {err:.2e}"
        info.update(iterations=out.iterations, residual=out.residual)
    else:
        call = synced(lambda: nk.interpolate(nk.ntk(model, x), y, diag_reg=DIAG_REG), device)
    call()  # warm-up
    start = time.perf_counter()
    memory = peak_memory(call, device)
    per_call = time.perf_counter() - start
    benchmark.pedantic(call, rounds=rounds_for(per_call), iterations=1, warmup_rounds=0)
    if benchmark.stats is not None:
        median = benchmark.stats.stats.median
        info.update(
            method=case.kind,
            n=case.n,
            params=op.n_params,
            dtype="float64",
            peak_memory_bytes=memory,
            dense_kernel_bytes=8 * case.n * case.n,
            throughput=1.0 / median,
            throughput_unit="calls/s",
            ns_per_row_param=1e9 * median / (case.n * op.n_params),
            diag_reg=DIAG_REG,
            tf32=torch.backends.cuda.matmul.allow_tf32,
        )
        benchmark.extra_info.update(info)
