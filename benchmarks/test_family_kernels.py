"""Exact empirical NTKs across model families: ntkcheck against the torch.func recipe, side by side.

Each case (:class:`_cases.FamilyCase`) runs ``ntkcheck.ntk`` (``method="auto"``: the layer
rules) and, where listed, the torch.func tutorial's Jacobian-contraction recipe
(``_recipes.jacobian_contraction``) on the same network and inputs.  Before timing,
each kernel's top-left 8 x 8 block must agree with ``ntkcheck.ntk(method="jacobian")``
(vmap(jacrev) per-sample gradients, no layer rule involved), so a wrong fast kernel
fails rather than wins.

``extra_info`` (read by ``ntkcheck report``): ``family``, ``case`` (the case id shared by
every library's benchmark of that case, also in ``test_neural_tangents.py``), ``library``
(``ntkcheck`` or ``torch.func recipe``), ``method``, ``n``, ``params``; the effective rate
``gram_flops / median`` against the square-matmul rate measured in the same run, where
``gram_flops`` is ``2 N^2 P O^2`` for the convolutional and attention families (the
contraction of the per-sample gradients, P parameters) and, for the MLP, the full-square
per-layer Gram flops of ANCHORS.md with ``fraction_of_floor`` = (those flops / the measured
rate of plain matmuls of the same shapes) / median; ``peak_memory_bytes`` for cases with
``memory``.  The ntkcheck CNN case also stores ``layers``: per parameter, the rule's
cost-model choice (Gram-of-Grams or per-sample gradients, with both flop counts) and the
CPU time of its features and of its Gram, from one ``torch.profiler`` run of the call.
"""

from __future__ import annotations

import time
from collections import defaultdict

import pytest
import torch
from _cases import FamilyCase
from _families import build, gram_matmul_rate, mlp_gram_shapes
from _measure import gram_flops, peak_memory, synced
from _recipes import jacobian_contraction
from conftest import rounds_for, size_set
from torch.profiler import ProfilerActivity, profile

import ntkcheck as nk

SMOKE = dict(n=4, width=4, depth=1, image=6, tokens=4, heads=2, vocab=8, d=4)
BUDGETED = ("ntkcheck", "ntkcheck-budget", "recipe")
CASES = {
    "smoke": [
        FamilyCase("mlp", **SMOKE, methods=("ntkcheck",)),
        FamilyCase("cnn", **{**SMOKE, "depth": 2}, memory=True, methods=BUDGETED, budget_mib=1),
        FamilyCase("resnet", **SMOKE),
        FamilyCase("transformer", **SMOKE),
    ],
    "cpu": [
        FamilyCase("mlp", 1024, 512, 3, methods=("ntkcheck",)),
        FamilyCase("cnn", 128, 32, 3),
        FamilyCase("resnet", 128, 32, 2),
        FamilyCase("transformer", 128, 64, 2),
        # With memory_budget at about 1/6 of the recipe's measured peak (416, 624, 1434 MiB on one thread):
        # the same kernel from blocks of rows whose features are recomputed, in less memory and more time.
        FamilyCase("cnn", 1024, 32, 3, memory=True, methods=BUDGETED, budget_mib=64),
        FamilyCase("resnet", 1024, 32, 2, memory=True, methods=BUDGETED, budget_mib=100),
        FamilyCase("transformer", 1024, 64, 2, memory=True, methods=BUDGETED, budget_mib=240),
    ],
    "gpu": [
        FamilyCase("mlp", 16384, 4096, 3, d=64, methods=("ntkcheck",)),
        FamilyCase("cnn", 1024, 64, 3),
        FamilyCase("resnet", 1024, 64, 2),
        FamilyCase("transformer", 1024, 128, 2),
        FamilyCase("cnn", 4096, 64, 3, memory=True),
        FamilyCase("transformer", 4096, 128, 2, memory=True),
    ],
}
LIBRARY = {"ntkcheck": "ntkcheck", "ntkcheck-budget": "ntkcheck, memory_budget", "recipe": "torch.func recipe"}
PARAMS = [pytest.param(c, m, id=f"{m}-{c.id}") for c in CASES[size_set()] for m in c.methods]
CHECK_ROWS = 8


def _runner(method: str, model: torch.nn.Module, x: torch.Tensor, case: FamilyCase):
    if method == "recipe":
        return lambda: jacobian_contraction(model, x, x)
    if method == "ntkcheck-budget":
        assert case.budget_mib is not None, f"{case.id} lists ntkcheck-budget without budget_mib"
        return lambda: nk.ntk(model, x, memory_budget=case.budget_mib * 2**20)
    return lambda: nk.ntk(model, x)


def layer_profile(model: torch.nn.Module, x: torch.Tensor) -> list[dict]:
    """Per parameter: the engine's choice, the cost model's flops, and CPU seconds, from one profiled call.

    The engine labels its work with ``torch.profiler.record_function`` ranges named
    ``ntkcheck.<stage>:<parameter>`` (stages ``per_sample`` / ``gram_of_grams`` / ``torch_func``:
    forming the features the way the cost model chose; ``tile``: the Gram; ``forward`` /
    ``backward`` with parameter ``*``: the shared passes) and, while ``ntkcheck.kernels._engine.COST_LOG``
    is a list, logs the cost model's inputs and flop counts per weight.
    """
    from ntkcheck.kernels import _engine

    _engine.COST_LOG = []
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            nk.ntk(model, x)
        costs = {entry["name"]: entry for entry in _engine.COST_LOG}
    finally:
        _engine.COST_LOG = None
    seconds: dict[tuple[str, str], float] = defaultdict(float)
    for event in prof.key_averages():
        if event.key.startswith("ntkcheck.") and ":" in event.key:
            stage, name = event.key.removeprefix("ntkcheck.").split(":", 1)
            seconds[(name, stage)] += event.cpu_time_total / 1e6
    rows = []
    for name in dict.fromkeys(n for n, _ in seconds):
        stages = {stage: s for (n, stage), s in seconds.items() if n == name}
        if name == "*":
            rows += [dict(name="*", choice=stage, features_s=s, gram_s=0.0) for stage, s in stages.items()]
            continue
        choice = next((c for c in ("gram_of_grams", "per_sample", "torch_func") if c in stages), "signal sum")
        row = dict(name=name, choice=choice, features_s=stages.get(choice, 0.0), gram_s=stages.get("tile", 0.0))
        if name in costs:
            row.update(
                gram_of_grams_flops=costs[name]["gram_of_grams_flops"],
                per_sample_flops=costs[name]["per_sample_flops"],
                positions=costs[name]["positions"],
                m=costs[name]["m"],
                k=costs[name]["k"],
            )
        rows.append(row)
    return rows


@pytest.mark.parametrize("case,method", PARAMS)
def test_family_kernel(benchmark, device, matmul_rate_of, case: FamilyCase, method: str):
    model, x = build(case, device)
    call = synced(_runner(method, model, x, case), device)
    result = call()  # warm-up, and the value to check
    rows = min(CHECK_ROWS, case.n)
    reference = nk.ntk(model, x[:rows], method="jacobian")
    got = result[:rows, :rows].reshape(reference.shape)
    tol = 1e-4 if case.dtype == "float32" else 1e-10
    err = float((got - reference).norm() / reference.norm())
    assert err < tol, f"{method} kernel of {case.id} is off from ntkcheck.ntk(method='jacobian') by {err:.3g}"
    del result
    start = time.perf_counter()
    memory = peak_memory(call, device) if case.memory else None
    per_call = time.perf_counter() - start if case.memory else None
    if per_call is None:
        start = time.perf_counter()
        call()
        per_call = time.perf_counter() - start
    benchmark.pedantic(call, rounds=rounds_for(per_call), iterations=1, warmup_rounds=1 if per_call < 0.25 else 0)
    if benchmark.stats is None:  # --benchmark-disable
        return
    median = benchmark.stats.stats.median
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    dtype = next(model.parameters()).dtype
    info = dict(
        family=case.family,
        case=case.id,
        library=LIBRARY[method],
        method=method,
        n=case.n,
        width=case.width,
        depth=case.depth,
        dtype=case.dtype,
        params=n_params,
    )
    rate = matmul_rate_of(dtype)
    if case.family == "mlp":
        sizes = (case.d, *([case.width] * case.depth), case.outputs)
        flops = gram_flops(case.n, case.n, sizes, case.outputs)
        gram_rate = gram_matmul_rate(mlp_gram_shapes(case), dtype, device)
        info.update(
            gram_matmul_gflops=gram_rate / 1e9, floor_s=flops / gram_rate, fraction_of_floor=flops / gram_rate / median
        )
    else:
        flops = 2.0 * case.n * case.n * n_params * case.outputs**2
    info.update(
        gram_flops=flops,
        effective_gflops=flops / median / 1e9,
        matmul_gflops=rate / 1e9,
        fraction_of_matmul=flops / median / rate,
        throughput=flops / median / 1e9,
        throughput_unit="effective GF/s",
    )
    if memory is not None:
        info["peak_memory_bytes"] = memory
    if method == "ntkcheck-budget":
        info["memory_budget_bytes"] = case.budget_mib * 2**20  # type: ignore[operator]
    if (
        method == "ntkcheck"
        and case.family in ("cnn", "resnet", "transformer")
        and not case.memory
        and device.type == "cpu"
    ):
        info["layers"] = layer_profile(model, x)
    benchmark.extra_info.update(info)
