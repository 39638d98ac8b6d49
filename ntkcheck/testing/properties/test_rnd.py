"""seed 000, §7 Fig 2c: the RND control of the AntiSymmetrical Initialization (Thm 4).

``h_RND(x) = (sqrt 2/2) h(x; theta) - (sqrt 2/2) h(x; theta')`` with ``theta'`` an
independent draw from the init distribution.  Its output at init is not 0 (unlike
ASI), and the proof of Thm 9 applied to two different parameter vectors gives its
kernel as the average of the two networks' kernels:

    k_RND = (1/2) k_theta + (1/2) k_theta'.

``theta'`` is rebuilt independently of :func:`ntkcheck.rnd`: ``rnd(model, g)`` with
``g = torch.Generator().manual_seed(s)`` must hold exactly the parameters of
``Arch(..., seed=s).build()`` (the init distribution's draw from that generator),
frozen layers frozen as in the original.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from ntkcheck._support.seeding import child_seed
from ntkcheck.kernels.empirical import ntk
from ntkcheck.models.transforms import ASI_SCALE, merge_branches, rnd
from ntkcheck.testing.claims import check_at_most, check_close
from ntkcheck.testing.strategies import architectures, inputs, seeds
from ntkcheck.testing.tolerances import tolerance

from ._common import DEVICE, DTYPE, reproduce
from .test_asi import frozen_mismatches, with_trainable_room

CLAIM = "rnd"
pytestmark = pytest.mark.claim(CLAIM)

ARCHS = architectures(families=("mlp",), max_depth=3, max_width=32, frozen=None).map(with_trainable_room)


def _rnd_and_rebuild(arch, data_seed):
    """(model, rnd(model, g), theta' rebuilt from the init distribution with g's seed, snippet)."""
    model = arch.build(dtype=DTYPE, device=DEVICE)
    rnd_seed = child_seed(data_seed, 1)  # a stream of its own: never the architecture's seed
    net = rnd(model, torch.Generator().manual_seed(rnd_seed))
    rebuilt = replace(arch, seed=rnd_seed).build(dtype=DTYPE, device=DEVICE)
    return model, net, rebuilt, rnd_seed


def _differing_tensors(a: torch.nn.Module, b: torch.nn.Module) -> int:
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    return len(set(pa) ^ set(pb)) + sum(int(not torch.equal(pa[n], pb[n])) for n in set(pa) & set(pb))


@given(arch=ARCHS, data_seed=seeds(), n=st.integers(2, 6))
def test_rnd_second_branch_is_an_independent_draw_and_output_is_not_zero(arch, data_seed, n):
    """theta' is the init distribution's draw from the given generator (exactly), independent of theta (no
    tensor of it equals theta's namesake), frozen as the original; h_RND(x) = (sqrt 2/2)(h(x; theta) -
    h(x; theta')) is not 0: (|h(X; theta)| + |h(X; theta')|) / |h_RND(X)| stays below the rnd_output_ratio
    bound (seed 000 §7, Fig 2c: RND is the control whose output at init does not vanish)."""
    model, net, rebuilt, rnd_seed = _rnd_and_rebuild(arch, data_seed)
    x = inputs(data_seed, n, arch.in_features, dtype=DTYPE, device=DEVICE)
    ctx = reproduce(
        arch,
        x=f"inputs({data_seed}, {n}, {arch.in_features})",
        net=f"nk.rnd(model, torch.Generator().manual_seed({rnd_seed}))",
        rebuilt=f"dataclasses.replace(Arch(...), seed={rnd_seed}).build()",
    )
    count = tolerance("mismatch_count", DTYPE)
    check_at_most(
        float(_differing_tensors(net.minus, rebuilt)),
        count,
        claim=CLAIM,
        what="parameter tensors of the second branch that differ from the rebuilt draw theta'",
        context=ctx,
    )
    check_at_most(
        float(_differing_tensors(net.plus, model)),
        count,
        claim=CLAIM,
        what="parameter tensors of the first branch that differ from theta_0",
        context=ctx,
    )
    shared = sum(int(torch.equal(p, q)) for p, q in zip(net.minus.parameters(), net.plus.parameters()))
    check_at_most(
        float(shared),
        count,
        claim=CLAIM,
        what="parameter tensors the second branch shares with the first (must be independent)",
        context=ctx,
    )
    for branch in ("plus", "minus"):
        check_at_most(
            float(frozen_mismatches(model, getattr(net, branch))),
            count,
            claim=CLAIM,
            what=f"parameters of the {branch} branch whose requires_grad differs from the original's",
            context=ctx,
        )
    with torch.no_grad():
        h_rnd, h, h2 = net(x), model(x), rebuilt(x)
    scale = float(h.norm()) + float(h2.norm())
    check_close(
        h_rnd,
        ASI_SCALE * (h - h2),
        tol=tolerance("kernel_methods_agree", DTYPE),
        scale=ASI_SCALE * scale,
        claim=CLAIM,
        what="h_RND(x) vs (sqrt 2/2)(h(x; theta) - h(x; theta'))",
        context=ctx,
    )
    check_at_most(
        scale / float(h_rnd.norm()),
        tolerance("rnd_output_ratio", DTYPE),
        claim=CLAIM,
        what="(|h(X; theta)| + |h(X; theta')|) / |h_RND(X)|: the RND output at init is not 0",
        context=ctx,
    )


@given(arch=ARCHS, data_seed=seeds(), n=st.integers(2, 6))
def test_rnd_kernel_is_the_average_of_the_two_kernels(arch, data_seed, n):
    """k_RND = (1/2) k_theta + (1/2) k_theta' in total and per layer (seed 000, Thm 9's proof with theta' != theta;
    Fig 2c).  The RND kernel comes from torch.func Jacobians of the two-branch module; k_theta and k_theta' from
    the layerwise rules on the original and on the independently rebuilt theta'."""
    model, net, rebuilt, rnd_seed = _rnd_and_rebuild(arch, data_seed)
    x = inputs(data_seed, n, arch.in_features, dtype=DTYPE, device=DEVICE)
    ctx = reproduce(
        arch,
        x=f"inputs({data_seed}, {n}, {arch.in_features})",
        check=f"nk.ntk(nk.rnd(model, torch.Generator().manual_seed({rnd_seed})), x) vs the mean of "
        f"nk.ntk(model, x) and nk.ntk(dataclasses.replace(Arch(...), seed={rnd_seed}).build(), x)",
    )
    k1 = ntk(model, x, per_layer=True, method="layerwise")
    k2 = ntk(rebuilt, x, per_layer=True, method="layerwise")
    expected = {name: 0.5 * (k1[name] + k2[name]) for name in k1}
    total = sum(expected.values())
    scale = float(sum(k1.values()).norm()) + float(sum(k2.values()).norm())
    assume(scale > 0)  # both kernels 0 (every unit of a narrow ReLU net dead, only its weights trainable)
    tol = tolerance("kernel_methods_agree", DTYPE)
    check_close(
        ntk(net, x, method="jacobian"),
        total,
        tol=tol,
        scale=scale,
        claim=CLAIM,
        what="total RND kernel vs (k_theta + k_theta') / 2",
        context=ctx,
    )
    merged = merge_branches(ntk(net, x, per_layer=True, method="jacobian"))
    check_at_most(
        float(len(set(merged) ^ set(expected))),
        tolerance("mismatch_count", DTYPE),
        claim=CLAIM,
        what="per-layer kernel names of the RND net (merged) vs the original's trainable parameters",
        context=ctx,
    )
    for name, k in expected.items():
        check_close(
            merged[name],
            k,
            tol=tol,
            scale=scale,
            claim=CLAIM,
            what=f"per-layer RND kernel {name} vs (k_theta + k_theta') / 2",
            context=ctx,
        )
