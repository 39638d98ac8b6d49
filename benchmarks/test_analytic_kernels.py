"""Analytic (infinite-width) NTKs: ``ntkcheck.analytic_ntk`` of the MLP and of the CNN (the CNTK).

Cases share ids (``analytic-<case id>``) with ``test_neural_tangents.py``'s stax ``kernel_fn``
timings, so ``ntkcheck report`` puts the two side by side.  Before timing, each kernel must pass
checks that can fail:

* MLP: equal to the ReLU arc-cosine recursion written out below (Jacot et al. 2018; Cho & Saul
  2009), a separate implementation in float64, to 1e-5 relative;
* CNN: symmetric, positive semi-definite (smallest eigenvalue >= -1e-6 of the largest), and its
  cross block ``analytic_ntk(model, x[:h], x[h:])`` equal to the same block of the full kernel
  (one computation with x2, one without).

A CNTK with global average pooling couples every pair of pixels of every pair of images, so its
cost grows as N^2 (H W)^2; a call that takes over ``SLOW_CALL_S`` is timed in one round.
"""

from __future__ import annotations

import math
import time

import pytest
import torch
from _cases import FamilyCase
from _families import build
from _measure import calibrated_rounds, synced
from conftest import ROUND_BUDGET_S, size_set

import ntkcheck as nk

SLOW_CALL_S = 5.0
SMOKE = dict(n=4, width=4, depth=1, image=6, d=4)
CASES = {
    "smoke": [FamilyCase("mlp", **SMOKE), FamilyCase("cnn", **{**SMOKE, "depth": 2})],
    "cpu": [FamilyCase("mlp", 1024, 512, 3), FamilyCase("cnn", 32, 32, 3)],
    "gpu": [FamilyCase("mlp", 4096, 512, 3), FamilyCase("cnn", 32, 32, 3)],
}


def relu_ntk_recursion(x1: torch.Tensor, x2: torch.Tensor, depth: int, w_std: float, b_std: float) -> torch.Tensor:
    """The infinite-width NTK of a ReLU MLP in NTK parametrization with ``depth`` hidden layers and a linear
    readout, by the arc-cosine recursion: Sigma_1 = w^2 x.x'/d + b^2, Theta_1 = Sigma_1; per further layer
    Sigma = w^2 E[relu(u) relu(v)] + b^2 and Theta = Sigma + w^2 E[relu'(u) relu'(v)] Theta_prev."""
    x1, x2 = x1.double(), x2.double()
    d = x1.shape[1]
    cross = w_std**2 * (x1 @ x2.T) / d + b_std**2
    q1 = w_std**2 * (x1 * x1).sum(1) / d + b_std**2
    q2 = w_std**2 * (x2 * x2).sum(1) / d + b_std**2
    theta = cross.clone()
    for _ in range(depth):
        norm = torch.sqrt(q1[:, None] * q2[None, :])
        angle = torch.arccos((cross / norm).clamp(-1.0, 1.0))
        e_phi = norm * (torch.sin(angle) + (math.pi - angle) * torch.cos(angle)) / (2 * math.pi)
        e_dphi = (math.pi - angle) / (2 * math.pi)
        cross = w_std**2 * e_phi + b_std**2
        theta = cross + w_std**2 * e_dphi * theta
        q1, q2 = w_std**2 * q1 / 2 + b_std**2, w_std**2 * q2 / 2 + b_std**2  # E[relu(u)^2] = q / 2
    return theta


def _check(case: FamilyCase, model: torch.nn.Module, x: torch.Tensor, kernel: torch.Tensor) -> None:
    k = kernel.double()
    if case.family == "mlp":
        rows = min(8, case.n)
        want = relu_ntk_recursion(x[:rows], x[:rows], case.depth, 1.0, 0.1)
        err = float((k[:rows, :rows] - want).norm() / want.norm())
        assert err < 1e-5, f"analytic_ntk of {case.id} is off from the arc-cosine recursion by {err:.3g}"
        return
    assert torch.allclose(k, k.T, rtol=1e-6, atol=0.0), f"analytic_ntk of {case.id} is not symmetric"
    eig = torch.linalg.eigvalsh(k)
    assert float(eig[0]) >= -1e-6 * float(eig[-1]), f"analytic_ntk of {case.id} has eigenvalue {float(eig[0]):.3g}"
    h = max(1, min(4, case.n // 2))
    cross = nk.analytic_ntk(model, x[:h], x[h : 2 * h]).double()
    err = float((cross - k[:h, h : 2 * h]).norm() / k[:h, h : 2 * h].norm())
    assert err < 1e-5, f"analytic_ntk(x[:{h}], x[{h}:{2 * h}]) of {case.id} differs from the full kernel by {err:.3g}"


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES[size_set()]])
def test_analytic_kernel(benchmark, device, case: FamilyCase):
    model, x = build(case, device)
    call = synced(lambda: nk.analytic_ntk(model, x), device)
    start = time.perf_counter()
    kernel = call()
    per_call = time.perf_counter() - start
    _check(case, model, x, kernel)
    del kernel
    slow = per_call > SLOW_CALL_S
    rounds = calibrated_rounds(per_call, ROUND_BUDGET_S[size_set()], min_rounds=1 if slow else 3)
    benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=0 if slow else 1)
    if benchmark.stats is None:
        return
    benchmark.extra_info.update(
        family=case.family,
        case="analytic-" + case.id,
        library="ntkcheck",
        method="analytic_ntk",
        n=case.n,
        depth=case.depth,
        dtype=case.dtype,
        first_call_s=per_call,
    )
