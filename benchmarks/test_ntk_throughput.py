"""NTK throughput: every ntkcheck method and the torch.func tutorial recipes, side by side.

Each case records in ``extra_info``: effective TF/s (per-layer Gram flops / median
time, ANCHORS.md's definition), the fraction of a square matmul's rate measured in
the same run, and the peak memory of one call.  Times come from a synchronised call
(pytest-benchmark's timer sees the finished device work), after warm-up rounds;
the number of rounds is calibrated to the call's duration (``conftest.rounds_for``).

``NTKCHECK_BENCH_FORCE_METHOD=jacobian`` (or ``ntvp``, ``layerwise``) computes
every ntkcheck kernel (the ``layerwise``, ``jacobian`` and ``ntvp`` benchmarks)
with that method, under the benchmark's usual name; the torch.func recipes are
unaffected.  It exists to produce a deliberately slowed run that ``ntkcheck
report`` must flag against the baseline, e.g. (with the baseline's settings, see
reports/baselines/README.md)::

    NTKCHECK_BENCH_SIZES=cpu NTKCHECK_BENCH_THREADS=1 NTKCHECK_BENCH_FORCE_METHOD=jacobian \
        pytest benchmarks/test_ntk_throughput.py -k "N32- or N256-" \
        --benchmark-timer=time.process_time --benchmark-json slow.json
    ntkcheck report slow.json --baseline reports/baselines/cpu-2core-x86_64.json

(the larger cases take minutes with the jacobian method on a CPU, hence ``-k``; the
cases left out are listed as missing, not compared).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
import torch
from _cases import MLPCase
from _measure import gram_flops, peak_memory, synced
from _recipes import jacobian_contraction, ntk_vector_products
from conftest import forced_method, rounds_for, size_set

import ntkcheck as nk


@dataclass(frozen=True)
class Case(MLPCase):
    methods: tuple[str, ...] = ("layerwise",)


ALL = ("layerwise", "jacobian", "ntvp", "recipe_jacobian", "recipe_ntvp")
CASES = {
    "smoke": [Case(16, 16, 4, methods=ALL), Case(16, 8, 4, depth=1, outputs=2, dtype="float64", methods=ALL)],
    "cpu": [
        Case(32, 256, 16, methods=ALL),
        Case(256, 256, 16, methods=("layerwise", "jacobian", "recipe_jacobian")),
        Case(256, 256, 16, dtype="float64", methods=("layerwise", "recipe_jacobian")),
        Case(256, 128, 16, outputs=3, methods=("layerwise", "jacobian", "recipe_jacobian")),
        Case(1024, 512, 16, methods=("layerwise",)),
        Case(1024, 512, 16, depth=1, methods=("layerwise",)),
        Case(2048, 1024, 16, methods=("layerwise",)),
    ],
    "gpu": [
        Case(256, 512, 16, methods=ALL),
        Case(1024, 1024, 16, methods=("layerwise", "jacobian", "ntvp", "recipe_jacobian", "recipe_ntvp")),
        Case(1024, 1024, 16, dtype="float64", methods=("layerwise", "recipe_jacobian")),
        Case(1024, 1024, 16, outputs=10, methods=("layerwise", "jacobian")),
        Case(2048, 2048, 64, methods=("layerwise",)),
        Case(4096, 4096, 64, methods=("layerwise",)),
        Case(16384, 4096, 64, methods=("layerwise",)),
        Case(16384, 4096, 64, depth=1, methods=("layerwise",)),
        Case(32768, 4096, 64, methods=("layerwise",)),
    ],
}

PARAMS = [pytest.param(c, m, id=f"{m}-{c.id}") for c in CASES[size_set()] for m in c.methods]
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _runner(method: str, model: nk.MLP, x: torch.Tensor):
    if method == "recipe_jacobian":
        return lambda: jacobian_contraction(model, x, x)
    if method == "recipe_ntvp":
        return lambda: ntk_vector_products(model, x, x)
    return lambda: nk.ntk(model, x, method=forced_method() or method)


@pytest.mark.parametrize("case,method", PARAMS)
def test_ntk_throughput(benchmark, device, matmul_rate_of, case: Case, method: str):
    dtype = DTYPES[case.dtype]
    gen = torch.Generator().manual_seed(0)
    model = nk.MLP(case.d, [case.width] * case.depth, case.outputs, generator=gen, dtype=dtype, device=device)
    x = torch.randn(case.n, case.d, generator=gen, dtype=dtype).to(device)
    call = synced(_runner(method, model, x), device)
    result = call()  # warm-up (and the value to check)
    reference = nk.ntk(model, x[:8], method="jacobian")
    got = result[:8, :8] if method != "recipe_ntvp" else None
    if got is not None:
        got = got.reshape(reference.shape)
        assert float((got - reference).norm() / reference.norm()) < (1e-4 if dtype == torch.float32 else 1e-10)
    del result
    start = time.perf_counter()
    memory = peak_memory(call, device)
    per_call = time.perf_counter() - start
    benchmark.pedantic(call, rounds=rounds_for(per_call), iterations=1, warmup_rounds=1 if per_call < 0.25 else 0)
    sizes = (case.d, *([case.width] * case.depth), case.outputs)
    flops = gram_flops(case.n, case.n, sizes, case.outputs)
    if benchmark.stats is not None:
        median = benchmark.stats.stats.median
        rate = matmul_rate_of(dtype)
        benchmark.extra_info.update(
            method=method,
            n=case.n,
            width=case.width,
            d=case.d,
            depth=case.depth,
            outputs=case.outputs,
            dtype=case.dtype,
            gram_flops=flops,
            effective_tflops=flops / median / 1e12,
            matmul_tflops=rate / 1e12,
            fraction_of_matmul=flops / median / rate,
            peak_memory_bytes=memory,
            tf32=torch.backends.cuda.matmul.allow_tf32,
            throughput=flops / median / 1e12,
            throughput_unit="effective TF/s",
        )
        if forced_method() is not None and method in ("layerwise", "jacobian", "ntvp"):
            benchmark.extra_info["forced_method"] = forced_method()
