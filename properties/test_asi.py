"""seed 000, Thm 4 (= Thm 9, §6 and §11): the AntiSymmetrical Initialization."""

from __future__ import annotations

from hypothesis import given, strategies as st

import ntkcheck as nk
from ntkcheck.claims import check_at_most, check_close
from ntkcheck.strategies import architectures, inputs, seeds
from ntkcheck.tolerances import tolerance

from _common import DEVICE, DTYPE, reproduce

CLAIM = "asi"


@given(arch=architectures(max_depth=3, max_width=32), data_seed=seeds(), n=st.integers(1, 6))
def test_asi_output_is_zero_at_init(arch, data_seed, n):
    """h_ASI(x, Theta(0)) = (sqrt 2/2) h(x, theta_0) - (sqrt 2/2) h(x, theta_0) = 0 exactly (seed 000, Thm 9)."""
    model = arch.build(dtype=DTYPE, device=DEVICE)
    x = inputs(data_seed, n, arch.in_features, dtype=DTYPE, device=DEVICE)
    out = nk.asi(model)(x).detach()
    check_at_most(float(out.abs().max()), tolerance("asi_zero_output", DTYPE), claim=CLAIM,
                  what="max |h_ASI(x)| at init",
                  context=reproduce(arch, x=f"inputs({data_seed}, {n}, {arch.in_features})",
                                    check="nk.asi(model)(x)"))


@given(arch=architectures(max_depth=3, max_width=32), data_seed=seeds(), n=st.integers(1, 6))
def test_asi_kernel_equals_original_total_and_per_layer(arch, data_seed, n):
    """k_Theta0 = (1/2) k_theta0 + (1/2) k_theta0 = k_theta0, layer by layer (seed 000, Thm 9 proof)."""
    model = arch.build(dtype=DTYPE, device=DEVICE)
    x = inputs(data_seed, n, arch.in_features, dtype=DTYPE, device=DEVICE)
    net = nk.asi(model)
    ctx = reproduce(arch, x=f"inputs({data_seed}, {n}, {arch.in_features})",
                    check="nk.ntk(nk.asi(model), x) vs nk.ntk(model, x)")
    tol = tolerance("kernel_methods_agree", DTYPE)
    original = nk.ntk(model, x, per_layer=True)
    total = sum(original.values())
    check_close(nk.ntk(net, x), total, tol=tol, claim=CLAIM, what="total ASI kernel vs original", context=ctx)
    merged = nk.merge_branches(nk.ntk(net, x, per_layer=True))
    assert merged.keys() == original.keys()
    scale = float(total.norm())
    for name, k in original.items():
        check_close(merged[name], k, tol=tol, scale=scale, claim=CLAIM, what=f"per-layer kernel {name}", context=ctx)
