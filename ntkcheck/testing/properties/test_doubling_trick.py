"""seed 000, Thm 10 (§12): the doubling trick zeroes the output by killing the lower layers' kernels.

Drawn: every architecture family, biases, 1-3 outputs, seed 000's glorot init, frozen layers (a layer frozen
in the original stays frozen in the doubled network, so its kernel is absent from both).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from ntkcheck.kernels.empirical import ntk
from ntkcheck.models.transforms import double_last_layer
from ntkcheck.testing.claims import check_at_most, check_close
from ntkcheck.testing.strategies import architectures, inputs, seeds
from ntkcheck.testing.tolerances import tolerance

from ._common import DEVICE, DTYPE, reproduce
from .test_asi import with_trainable_room

CLAIM = "doubling_trick"
pytestmark = pytest.mark.claim(CLAIM)


@given(
    arch=architectures(families=("mlp",), min_depth=1, max_depth=4, max_width=32, frozen=None).map(with_trainable_room),
    data_seed=seeds(),
    n=st.integers(1, 6),
)
def test_doubled_per_layer_kernels(arch, data_seed, n):
    """For m <= L-2: k_W'[m] = k_b'[m] = 0; k_W'[L-1] = 2 k_W[L-1], k_b'[L-1] = 2 k_b[L-1], k_W'[L] = 2 k_W[L];
    and h'(x, theta'(0)) = 0 (seed 000, Thm 10).  The doubled net has the original's trainable parameters
    minus the output bias (none, as in Chizat & Bach), with the original's requires_grad flags."""
    model = arch.build(dtype=DTYPE, device=DEVICE)
    x = inputs(data_seed, n, arch.in_features, dtype=DTYPE, device=DEVICE)
    doubled = double_last_layer(model)
    ctx = reproduce(
        arch,
        x=f"inputs({data_seed}, {n}, {arch.in_features})",
        check="nk.ntk(nk.double_last_layer(model), x, per_layer=True)",
    )
    original = ntk(model, x, per_layer=True)
    scale = float(sum(original.values()).norm())
    assume(scale > 0)  # a kernel that is 0 (every unit of a narrow ReLU net dead) would pass any comparison
    n_layers = len(model.layers)
    out_bias = f"layers.{n_layers - 1}.bias"
    flags = {n: p.requires_grad for n, p in model.named_parameters() if n != out_bias}
    new_flags = {n: p.requires_grad for n, p in doubled.named_parameters()}
    mismatched = len(set(flags) ^ set(new_flags)) + sum(flags[n] != new_flags[n] for n in set(flags) & set(new_flags))
    check_at_most(
        float(mismatched),
        tolerance("mismatch_count", DTYPE),
        claim=CLAIM,
        what="parameters of the doubled net (names, requires_grad) vs the original's without b^(L)",
        context=ctx,
    )
    new = ntk(doubled, x, per_layer=True, method="jacobian")
    tol = tolerance("kernel_methods_agree", DTYPE)
    top = {f"layers.{n_layers - 2}.weight", f"layers.{n_layers - 2}.bias", f"layers.{n_layers - 1}.weight"}
    for name, k in new.items():
        expected = 2 * original[name] if name in top else 0 * original[name]
        check_close(k, expected, tol=tol, scale=scale, claim=CLAIM, what=f"per-layer kernel {name}", context=ctx)
    captured: dict[str, torch.Tensor] = {}

    def keep_input(_module, args, _out) -> None:
        captured["a"] = args[0]

    handle = doubled.layers[-1].register_forward_hook(keep_input)
    with torch.no_grad():
        out = doubled(x)
    handle.remove()
    last = doubled.layers[-1]
    # h' sums c w_i a_i and -c w_i a_i in one dot product: its rounding is relative to sum_i |c w_i a_i|
    scale = float((last.weight_mult * captured["a"].abs() @ last.weight.detach().abs().T).max())
    check_at_most(
        float(out.abs().max()),
        tolerance("doubled_zero_output", DTYPE) * scale,
        claim=CLAIM,
        what="max |h'(x)| at init relative to sum |c w a|",
        context=ctx,
    )
