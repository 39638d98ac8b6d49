"""seed 000, Thm 4 (= Thm 9, §6 and §11): the AntiSymmetrical Initialization.

``h_ASI(x; theta, theta') = (sqrt 2/2) h(x; theta) - (sqrt 2/2) h(x; theta')`` with
``theta'(0) = theta(0)``: the output is 0 at init and, by the proof of Thm 9,
``k_ASI = (1/2) k + (1/2) k = k`` — a sum over the trainable parameters of the two
branches, so a layer frozen in the original is frozen in both branches and the
equality holds in total and layer by layer.  Drawn: every architecture family,
biases, 1-3 outputs, seed 000's glorot init, frozen layers.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from ntkcheck.dynamics.linearization import min_norm_linearized
from ntkcheck.kernels.empirical import ntk
from ntkcheck.models.transforms import asi, merge_branches
from ntkcheck.testing.claims import check_at_most, check_close
from ntkcheck.testing.strategies import architectures, dataset_for, datasets, seeds
from ntkcheck.testing.tolerances import max_condition, tolerance

from ._common import DEVICE, DTYPE, reproduce

CLAIM = "asi"
pytestmark = pytest.mark.claim(CLAIM)


def with_trainable_room(arch):
    """Widths >= 4 (a narrow ReLU layer is dead on every input with probability 2^-width) and, where the
    frozen layers leave at most 2 O trainable parameters (no room for a dataset), no frozen layer."""
    arch = replace(arch, widths=tuple(max(w, 4) for w in arch.widths))
    return arch if arch.n_params() > 2 * arch.out_features else replace(arch, frozen=())


MAX_N = 5 if DTYPE == torch.float64 else 3
"""Training points of the linearized-training property: float32 checks only cond(J J^T) <= 1e3
(tolerances.MAX_CONDITION), which 4-5 points of a small CNN or Transformer exceed in ~1 draw of 6."""


def max_points(arch, limit: int) -> int:
    """At most ``limit`` points, and no more than a linear network's function space holds: with the identity
    activation an MLP or dense ResNet is affine in x in R^d, so J has rank <= (d + bias) O and n > d + bias
    makes J J^T singular (images have C H W >= 16 > limit dimensions; attention and LayerNorm are not affine)."""
    dense = arch.family == "mlp" or (arch.family == "resnet" and not arch.image_size)
    return min(limit, arch.in_features + int(arch.bias)) if arch.activation == "identity" and dense else limit


def frozen_mismatches(original: torch.nn.Module, branch: torch.nn.Module) -> int:
    """How many parameters of ``branch`` differ from their namesakes in ``original`` in requires_grad
    (a name missing on either side counts too)."""
    a = {n: p.requires_grad for n, p in original.named_parameters()}
    b = {n: p.requires_grad for n, p in branch.named_parameters()}
    return len(set(a) ^ set(b)) + sum(a[n] != b[n] for n in set(a) & set(b))


def autograd_jacobian(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """d net(x).reshape(-1) / d theta over the trainable parameters, one plain autograd pass per row
    (rows sample-major, columns in named_parameters() order): shares no code with ntkcheck's Jacobians."""
    params = [p for p in net.parameters() if p.requires_grad]
    out = net(x).reshape(-1)
    rows = []
    for i in range(out.numel()):
        grads = torch.autograd.grad(out[i], params, retain_graph=True, allow_unused=True)
        rows.append(
            torch.cat([torch.zeros_like(p).reshape(-1) if g is None else g.reshape(-1) for g, p in zip(grads, params)])
        )
    return torch.stack(rows).detach()


@given(arch=architectures(max_depth=3, max_width=32, frozen=None), data_seed=seeds(), n=st.integers(1, 6))
def test_asi_output_is_zero_and_freezing_mirrors_the_original(arch, data_seed, n):
    """h_ASI(x, Theta(0)) = (sqrt 2/2) h(x, theta_0) - (sqrt 2/2) h(x, theta_0) = 0 exactly (seed 000, Thm 9);
    both branches are copies of theta_0 with the original's requires_grad pattern (a frozen layer stays frozen)."""
    model = arch.build(dtype=DTYPE, device=DEVICE)
    ds = dataset_for(arch, data_seed, n)
    x = ds.x(dtype=DTYPE, device=DEVICE)
    net = asi(model)
    ctx = reproduce(arch, x=f"{ds!r}.x(dtype={DTYPE})", check="nk.asi(model)(x)")
    with torch.no_grad():
        out = net(x)
    check_at_most(
        float(out.abs().max()),
        tolerance("asi_zero_output", DTYPE),
        claim=CLAIM,
        what="max |h_ASI(x)| at init",
        context=ctx,
    )
    for branch in ("plus", "minus"):
        copy = getattr(net, branch)
        check_at_most(
            float(frozen_mismatches(model, copy)),
            tolerance("mismatch_count", DTYPE),
            claim=CLAIM,
            what=f"parameters of the {branch} branch whose requires_grad differs from the original's",
            context=ctx,
        )
        changed = sum(int(not torch.equal(p, q)) for p, q in zip(copy.parameters(), model.parameters()))
        check_at_most(
            float(changed),
            tolerance("mismatch_count", DTYPE),
            claim=CLAIM,
            what=f"parameter tensors of the {branch} branch that differ from theta_0",
            context=ctx,
        )


@given(
    arch=architectures(max_depth=3, max_width=32, frozen=None).map(with_trainable_room),
    data_seed=seeds(),
    n=st.integers(2, 6),
)
def test_asi_kernel_equals_original_total_and_per_layer(arch, data_seed, n):
    """k_Theta0 = (1/2) k_theta0 + (1/2) k_theta0 = k_theta0 over the trainable parameters, in total and
    layer by layer, frozen layers included (seed 000, Thm 9 proof).  The ASI kernel is computed from
    torch.func Jacobians of the two-branch module, the original's by the layerwise Gram rules."""
    model = arch.build(dtype=DTYPE, device=DEVICE)
    ds = dataset_for(arch, data_seed, n)
    x = ds.x(dtype=DTYPE, device=DEVICE)
    net = asi(model)
    ctx = reproduce(
        arch,
        x=f"{ds!r}.x(dtype={DTYPE})",
        check="nk.ntk(nk.asi(model), x, method='jacobian') vs nk.ntk(model, x, method='layerwise')",
    )
    original = ntk(model, x, per_layer=True, method="layerwise")
    total = sum(original.values())
    scale = float(total.norm())
    # a kernel that is 0 (every unit of a narrow ReLU net dead, only its weights trainable) would pass any scale
    assume(scale > 0)
    tol = tolerance("kernel_methods_agree", DTYPE)
    check_close(
        ntk(net, x, method="jacobian"), total, tol=tol, claim=CLAIM, what="total ASI kernel vs original", context=ctx
    )
    merged = merge_branches(ntk(net, x, per_layer=True, method="jacobian"))
    check_at_most(
        float(len(set(merged) ^ set(original))),
        tolerance("mismatch_count", DTYPE),
        claim=CLAIM,
        what="per-layer kernel names of the ASI net (merged) vs the original's trainable parameters",
        context=ctx,
    )
    for name, k in original.items():
        check_close(merged[name], k, tol=tol, scale=scale, claim=CLAIM, what=f"per-layer kernel {name}", context=ctx)


@given(arch=architectures(max_depth=2, max_width=32, frozen=None).map(with_trainable_room), data=st.data())
def test_asi_linearized_training_is_interpolant_from_zero(arch, data):
    """The ASI network's linearized training (the min-norm limit of its gradient flow, Thm 5) is
    h_k(.; 0, X, Y) with k the ORIGINAL network's kernel (seed 000, Thm 9, eq (22) with h'(., 0) = 0).

    Three computations: ``min_norm_linearized(asi(model), x, y)`` at test points; the oracle
    f_ASI(x*) + J_ASI(x*) J_ASI(X)^+ (Y - f_ASI(X)) with J from plain autograd and the pseudo-inverse
    from LAPACK's SVD least squares (gelsd, float64); and k(x*, X) K^{-1} Y with k = J J^T of the
    original network.  The trained network must also fit Y."""
    ds = data.draw(datasets(arch, max_n=max_points(arch, MAX_N)))
    model = arch.build(dtype=DTYPE, device=DEVICE)
    x, y = ds.x(dtype=DTYPE, device=DEVICE), ds.y(dtype=DTYPE, device=DEVICE)
    xt = ds.x_test(5, dtype=DTYPE, device=DEVICE)
    net = asi(model)
    j, jt = autograd_jacobian(model, x).double().cpu(), autograd_jacobian(model, xt).double().cpu()
    k = j @ j.T
    evals = torch.linalg.eigvalsh(k)
    # Thm 5 needs J J^T invertible; the float tolerances hold up to cond = max_condition (tolerances.py)
    assume(float(evals[0]) > 0 and float(evals[-1] / evals[0]) <= max_condition(DTYPE))
    yf = y.reshape(-1).double().cpu()
    trained = min_norm_linearized(net, x, y)
    with torch.no_grad():
        got, fit = trained(xt).reshape(-1).double().cpu(), trained(x).reshape(-1).double().cpu()
        f_asi_x, f_asi_t = net(x).reshape(-1).double().cpu(), net(xt).reshape(-1).double().cpu()
    ja, jat = autograd_jacobian(net, x).double().cpu(), autograd_jacobian(net, xt).double().cpu()
    delta = torch.linalg.lstsq(ja, (yf - f_asi_x)[:, None], driver="gelsd").solution[:, 0]
    oracle = f_asi_t + jat @ delta
    interpolant = jt @ j.T @ torch.linalg.solve(k, yf)  # h_k(x*; 0, X, Y) with the original's kernel
    ctx = reproduce(arch, ds=repr(ds), check="min_norm_linearized(nk.asi(model), ds.x(), ds.y())(ds.x_test(5))")
    tol = tolerance("solver_identity", DTYPE)
    scale = float(interpolant.norm()) + float(yf.norm())
    check_close(
        got,
        oracle,
        tol=tol,
        scale=scale,
        claim=CLAIM,
        what="linearized ASI training vs lstsq min-norm oracle on the ASI Jacobian",
        context=ctx,
    )
    check_close(
        got,
        interpolant,
        tol=tol,
        scale=scale,
        claim=CLAIM,
        what="linearized ASI training vs h_k(.; 0, X, Y) with the original kernel",
        context=ctx,
    )
    check_close(
        fit, yf, tol=tol, scale=float(yf.norm()), claim=CLAIM, what="linearized ASI training fits Y", context=ctx
    )
