"""seed 000, Thm 4 (= Thm 9, §6 and §11): the AntiSymmetrical Initialization."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, strategies as st

import ntkcheck as nk
from ntkcheck.testing.claims import check_at_most, check_close
from ntkcheck.strategies import architectures, inputs, seeds
from ntkcheck.tolerances import tolerance

from ._common import DEVICE, DTYPE, IllConditioned, reproduce, require_well_conditioned

CLAIM = "asi"
pytestmark = pytest.mark.claim(CLAIM)


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


@given(arch=architectures(max_depth=2, max_width=24, max_out=2), data=st.data())
def test_asi_linearized_training_is_interpolant_from_zero(arch, data):
    """The ASI network's linearized training (min-norm limit of its gradient flow, Thm 5) is
    h_k(.; 0, X, Y) with k the ORIGINAL network's kernel (seed 000, Thm 9, eq (22) with h'(., 0) = 0)."""
    from hypothesis import assume

    from ntkcheck.linearize import min_norm_linearized
    from ntkcheck.solvers import SingularKernelError, interpolate
    from ntkcheck.strategies import datasets

    ds = data.draw(datasets(arch, max_n=6))
    model = arch.build(dtype=DTYPE, device=DEVICE)
    x, y = ds.x(dtype=DTYPE, device=DEVICE), ds.y(dtype=DTYPE, device=DEVICE)
    xt = ds.x_test(5, dtype=DTYPE, device=DEVICE)
    k, kt = nk.ntk(model, x), nk.ntk(model, xt, x)
    try:
        require_well_conditioned(_flat(k, ds.out), "k_train")
        expected = interpolate(_flat(k, ds.out), _flat_y(y), _flat(kt, ds.out))
        trained = min_norm_linearized(nk.asi(model), x, y)
    except (SingularKernelError, IllConditioned):
        assume(False)  # (near-)singular kernel (dead ReLUs, tiny width): Thm 5's J J^T is not safely invertible
    with torch.no_grad():
        got = trained(xt)
    ctx = reproduce(arch, ds=repr(ds), check="min_norm_linearized(nk.asi(model), x, y)(x_test) vs interpolate")
    check_close(_flat_y(got), expected, tol=tolerance("solver_identity", DTYPE), claim=CLAIM,
                what="linearized ASI training vs h_k(.; 0, X, Y)", context=ctx)


def _flat(k: "torch.Tensor", out: int) -> "torch.Tensor":
    """(n, m, O, O) -> (n O, m O): the kernel of the flattened outputs, row index i*O + o."""
    if out == 1:
        return k
    n, m = k.shape[:2]
    return k.permute(0, 2, 1, 3).reshape(n * out, m * out)


def _flat_y(y: "torch.Tensor") -> "torch.Tensor":
    return y.reshape(-1)
