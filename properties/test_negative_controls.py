"""Negative controls: each asserts the failure its positive twin must not show, so the suite has teeth."""

from __future__ import annotations

import torch
from hypothesis import given, strategies as st

import ntkcheck as nk
from ntkcheck.claims import check_at_most, check_close, relative_error
from ntkcheck.strategies import architectures, inputs, seeds
from ntkcheck.tolerances import tolerance

from _common import DEVICE, DTYPE, reproduce

CLAIM = "negative_controls"


@given(arch=architectures(max_depth=3, max_width=32), data_seed=seeds(), n=st.integers(1, 6))
def test_asi_without_sqrt2_factor_doubles_the_kernel(arch, data_seed, n):
    """Twin of seed 000 Thm 9: with scale 1 instead of sqrt(2)/2 the kernel is 2 k, not k."""
    model = arch.build(dtype=DTYPE, device=DEVICE)
    x = inputs(data_seed, n, arch.in_features, dtype=DTYPE, device=DEVICE)
    unscaled = nk.AntiSymmetric(nk.asi(model).plus, nk.asi(model).minus, scale=1.0)
    k = nk.ntk(model, x)
    ctx = reproduce(arch, x=f"inputs({data_seed}, {n}, {arch.in_features})",
                    check="nk.ntk(nk.AntiSymmetric(m1, m2, scale=1.0), x) vs 2 * nk.ntk(model, x)")
    check_close(nk.ntk(unscaled, x), 2 * k, tol=tolerance("kernel_methods_agree", DTYPE), claim=CLAIM,
                what="kernel of unscaled ASI vs twice the original", context=ctx)


@given(arch=architectures(min_depth=2, max_depth=3, max_width=32), data_seed=seeds(), n=st.integers(2, 6))
def test_doubled_kernel_is_not_the_original(arch, data_seed, n):
    """Twin of seed 000 Thm 10 vs Thm 9: the doubling trick changes the kernel (ASI does not).

    The doubled kernel is 2 (k_W[L-1] + k_b[L-1] + k_W[L]); it equals the original
    only if the lower layers' kernels happen to equal the top ones' — measured distance
    must exceed 100x the float tolerance whenever the lower layers carry kernel mass.
    """
    model = arch.build(dtype=DTYPE, device=DEVICE)
    x = inputs(data_seed, n, arch.in_features, dtype=DTYPE, device=DEVICE)
    parts = nk.ntk(model, x, per_layer=True)
    total = sum(parts.values())
    L = len(model.layers)
    top = [f"layers.{L - 2}.weight", f"layers.{L - 2}.bias", f"layers.{L - 1}.weight"]
    lower_mass = sum(float(k.norm()) for name, k in parts.items() if name not in top)
    if lower_mass <= 1e-6 * float(total.norm()):
        return  # dead lower layers (e.g. every ReLU off): the two kernels legitimately coincide
    doubled = nk.ntk(nk.double_last_layer(model), x)
    gap = relative_error(doubled, total)
    ctx = reproduce(arch, x=f"inputs({data_seed}, {n}, {arch.in_features})",
                    check="nk.ntk(nk.double_last_layer(model), x) vs nk.ntk(model, x)")
    floor = 100 * tolerance("kernel_methods_agree", DTYPE)
    check_at_most(floor / max(gap, 1e-300), 1.0, claim=CLAIM,
                  what=f"doubled kernel must differ from the original (relative gap {gap:.2e} vs floor {floor:.0e})",
                  context=ctx)
