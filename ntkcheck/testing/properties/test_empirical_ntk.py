"""seed 000, §3.2 (after eq (3)) and §12: the exact empirical NTK and its per-layer kernels.

    k(x, x') = grad_theta h(x, theta_0)^T grad_theta h(x', theta_0)                       (seed 000 §3.2)
    k(x, x') = sum_p k_p(x, x'),   k_p(x, x') = grad_{theta_p} h(x)^T grad_{theta_p} h(x')   (seed 000 §12)

For O outputs the kernel is the (O, O) block k(x, x')[o, q] = grad h_o(x)^T grad h_q(x'), stored as
(N1, N2, O, O); the sum runs over the TRAINABLE parameters only (frozen layers do not count).

The oracle is written here, independent of ntkcheck's kernel code: ``torch.func.jacrev`` of
``functional_call(model, params)`` with respect to the raw trainable parameter tensors (the
module's own ``weight_mult``/``bias_mult`` act inside the forward pass, so nothing about the
parametrization is re-derived), contracted as J_p(x1) J_p(x2)^T per parameter tensor, in float64
on a float64 copy of the model whatever the dtype under test.  Every method of :func:`ntkcheck.ntk`
(``layerwise``, ``jacobian``, ``ntvp``), in total and per layer, for x2 != x1 and for x2 = x1, is
compared with it; the kernel of x1 with itself must also be symmetric (k(x, x')[o, q] =
k(x', x)[q, o]) and positive semi-definite as an (N O, N O) Gram matrix.

Draws: every family of :func:`ntkcheck.testing.strategies.architectures` (MLPs up to width 256; small CNNs with
strides, padding, average-pooling and flatten readouts on images; dense and convolutional ResNets;
Transformers on feature sequences and on integer token ids), 1-3 outputs, biases, frozen units, both
parametrizations and inits; the inputs of each family from ``dataset_for``.

Tolerances: ``kernel_methods_agree`` (same sums of products in another order; relative to the norm
of the total oracle kernel, also for per-layer kernels), ``symmetry``, ``psd``.  x1 has at least two
rows, and a draw whose oracle k(x1, x1) is exactly zero (every ReLU path dead at every x1: width-1
layers) has its parameters redrawn from the next seeds of the stream, so no example passes on an
all-zero kernel; k(x1, x2) errors are measured relative to ||k(x1, x1)|| + ||k(x2, x2)||, which
bounds k(x1, x2) and stays nonzero when every x2 is dead.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import operator

import pytest
import torch
from hypothesis import assume, example, given
from hypothesis import strategies as st
from torch.func import functional_call, jacrev

from ntkcheck._support.seeding import child_seed
from ntkcheck._support.shapes import kernel_as_matrix
from ntkcheck.kernels.empirical import ntk
from ntkcheck.testing.claims import check_at_most, check_close
from ntkcheck.testing.strategies import Arch, architectures, dataset_for, seeds
from ntkcheck.testing.tolerances import tolerance

from ._common import DEVICE, DTYPE, reproduce

CLAIM = "empirical_ntk"
pytestmark = pytest.mark.claim(CLAIM)


def oracle_jacobians(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """``name -> (N, O, numel)``: d h_o(x_n) / d theta_p for every trainable parameter tensor, in float64.

    ``jacrev`` of the whole batch's flattened output (row n * O + o) with respect to the raw parameters,
    through ``functional_call`` on a float64 copy: no ntkcheck code beyond the model itself.
    """
    twin = copy.deepcopy(model).to(torch.float64)
    params = {n: p.detach() for n, p in twin.named_parameters() if p.requires_grad}
    fixed = {n: p.detach() for n, p in twin.named_parameters() if not p.requires_grad}
    xd = x.detach().to(torch.float64) if x.is_floating_point() else x.detach()  # token ids stay integers

    def outputs(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return functional_call(twin, {**p, **fixed}, (xd,)).reshape(-1)

    with torch.no_grad():
        n_out = outputs(params).numel() // x.shape[0]
    jac = jacrev(outputs)(params)
    return {n: j.reshape(x.shape[0], n_out, -1) for n, j in jac.items()}


def oracle_kernels(j1: dict[str, torch.Tensor], j2: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-parameter kernels ``name -> (N1, N2, O, O)`` = J_p(x1) J_p(x2)^T, plus their sum under ``"total"``."""
    out = {n: torch.einsum("aop,bqp->aboq", j1[n], j2[n]) for n in j1}
    out["total"] = functools.reduce(operator.add, out.values())
    return out


def _layout(k: torch.Tensor, n_out: int) -> torch.Tensor:
    """The library's layout: (N1, N2) for one output, (N1, N2, O, O) otherwise."""
    return k[:, :, 0, 0] if n_out == 1 else k


def _gram(k: torch.Tensor, n_out: int) -> torch.Tensor:
    """(N, N[, O, O]) -> the (N O, N O) Gram matrix, rows sample-major."""
    return k if n_out == 1 else kernel_as_matrix(k)


def _draw(arch, data_seed, n1, n2):
    """The model, inputs and oracle kernels of a draw.  A draw whose k(x1, x1) is exactly zero (every ReLU
    path dead at every x1: width-1 relu layers) would let any method pass; its parameters are redrawn from
    the next seeds of the stream instead (the returned arch names the seed used)."""
    d1, d2 = dataset_for(arch, data_seed, n1), dataset_for(arch, child_seed(data_seed, 1), n2)
    x1, x2 = d1.x(dtype=DTYPE, device=DEVICE), d2.x(dtype=DTYPE, device=DEVICE)
    for attempt in range(16):
        model = arch.build(dtype=DTYPE, device=DEVICE)
        j1 = oracle_jacobians(model, x1)
        own = oracle_kernels(j1, j1)
        if float(own["total"].norm()) > 0:
            break
        arch = dataclasses.replace(arch, seed=child_seed(arch.seed, 100 + attempt))
    assume(float(own["total"].norm()) > 0)  # 16 dead redraws in a row: not met in the measured runs
    j2 = oracle_jacobians(model, x2)
    cross = oracle_kernels(j1, j2)
    # k(x1, x2) may vanish when every x2 is dead; its errors are measured against
    # ||k(x1, x1)|| + ||k(x2, x2)||, which bounds it (Cauchy-Schwarz) and is never 0 here
    scale = float(own["total"].norm() + oracle_kernels(j2, j2)["total"].norm())
    ctx = reproduce(arch, x1=f"{d1!r}.x(dtype={DTYPE})", x2=f"{d2!r}.x(dtype={DTYPE})")
    return arch, model, x1, x2, cross, own, scale, ctx


def _check_against_oracle(model, x1, x2, expected, method, ctx, arch, label, scale):
    """Total and per-layer kernels of ``method`` vs the oracle, errors relative to ``scale`` (an oracle norm)."""
    n_out = arch.out_features
    tol = tolerance("kernel_methods_agree", DTYPE)
    want_total = _layout(expected["total"], n_out)
    got = ntk(model, x1, x2, method=method)
    check_close(
        got.double(),
        want_total,
        tol=tol,
        scale=scale,
        claim=CLAIM,
        what=f"ntk(method={method!r}) {label} vs J(x1) J(x2)^T (oracle): relative error",
        context=ctx + f"\ncheck = nk.ntk(model, x1, {'x2' if x2 is not None else 'None'}, method={method!r})",
    )
    per_layer = ntk(model, x1, x2, method=method, per_layer=True)
    names = [n for n in expected if n != "total"]
    for name in names:
        got_p = per_layer.get(name)
        got_p = torch.zeros_like(_layout(expected[name], n_out)) if got_p is None else got_p.double()
        check_close(
            got_p,
            _layout(expected[name], n_out),
            tol=tol,
            scale=scale,
            claim=CLAIM,
            what=f"ntk(method={method!r}, per_layer=True)[{name!r}] {label} vs J_p(x1) J_p(x2)^T (oracle)",
            context=ctx + f"\ncheck = nk.ntk(model, x1, method={method!r}, per_layer=True)[{name!r}]",
        )
    extra = sorted(set(per_layer) - set(names))
    leftover = sum((per_layer[n].double() for n in extra), torch.zeros_like(want_total))
    check_close(
        leftover,
        torch.zeros_like(want_total),
        tol=tol,
        scale=scale,
        claim=CLAIM,
        what=f"ntk(method={method!r}, per_layer=True) {label}: kernels under names that are not trainable "
        f"parameters ({extra})",
        context=ctx,
    )


def _check_symmetric_psd(k, n_out, ctx, method):
    sym = k.permute(1, 0, 3, 2) if n_out > 1 else k.T
    check_close(
        k,
        sym,
        tol=tolerance("symmetry", DTYPE),
        claim=CLAIM,
        what=f"ntk(model, x, method={method!r}): k(x, x')[o, q] vs k(x', x)[q, o]",
        context=ctx,
    )
    g = _gram(k.double(), n_out)
    eig = torch.linalg.eigvalsh((g + g.T) / 2)
    top = float(eig.abs().max())
    check_at_most(
        max(-float(eig.min()), 0.0) / top,
        tolerance("psd", DTYPE),
        claim=CLAIM,
        what=f"ntk(model, x, method={method!r}): -lambda_min / lambda_max of the (N O, N O) Gram matrix",
        context=ctx,
    )


# Explicit draws that always run: NTK parametrization with a bias multiplier != 1 (where b and b^2 differ), several
# outputs, x2 != x1 of another size, and a frozen middle layer.
EXPLICIT = Arch(
    in_features=3,
    widths=(16, 12),
    out_features=2,
    activation="tanh",
    bias=True,
    parametrization="ntk",
    weight_std=1.5,
    bias_std=0.5,
    seed=7,
    frozen=(1,),
)


EXPLICIT_CNN = Arch(
    in_features=2,
    widths=(3, 4),
    out_features=2,
    activation="relu",
    bias=True,
    parametrization="standard",
    weight_std=1.0,
    bias_std=0.5,
    seed=5,
    init="glorot",
    frozen=(0,),
    family="cnn",
    image_size=5,
    stride=2,
    padding=1,
    readout="flatten",
)
EXPLICIT_TOKENS = Arch(
    in_features=1,
    widths=(4,),
    out_features=3,
    activation="gelu",
    bias=True,
    parametrization="ntk",
    weight_std=1.0,
    bias_std=0.5,
    seed=9,
    family="transformer",
    d_model=4,
    heads=2,
    seq_len=3,
    vocab=5,
    norm="post",
)


@example(arch=EXPLICIT, data_seed=11, n1=3, n2=2)
@example(arch=EXPLICIT_CNN, data_seed=12, n1=3, n2=2)
@example(arch=EXPLICIT_TOKENS, data_seed=13, n1=3, n2=2)
@given(
    arch=architectures(max_depth=3, max_width=256, max_out=3, frozen=None),
    data_seed=seeds(),
    n1=st.integers(2, 5),
    n2=st.integers(1, 4),
)
def test_layerwise_ntk_is_jacobian_gram(arch, data_seed, n1, n2):
    """k = sum_p grad_{theta_p} h(x1)^T grad_{theta_p} h(x2) (seed 000 §3.2, §12): ntk(method="layerwise"),
    total and per layer, for x2 != x1 and x2 = x1, equals the jacrev oracle on MLPs, CNNs, ResNets and
    Transformers (images, sequences, token ids); k(x1, x1) is symmetric and PSD."""
    arch, model, x1, x2, cross, own, scale, ctx = _draw(arch, data_seed, n1, n2)
    _check_against_oracle(model, x1, x2, cross, "layerwise", ctx, arch, "(x1, x2)", scale)
    _check_against_oracle(model, x1, None, own, "layerwise", ctx, arch, "(x1, x1)", float(own["total"].norm()))
    _check_symmetric_psd(ntk(model, x1, method="layerwise"), arch.out_features, ctx, "layerwise")


@example(method="ntvp", arch=EXPLICIT, data_seed=11, n1=3, n2=2)
@example(method="jacobian", arch=EXPLICIT, data_seed=11, n1=3, n2=2)
@given(
    method=st.sampled_from(["jacobian", "ntvp"]),
    arch=architectures(max_depth=3, max_width=64, max_out=3, frozen=None),
    data_seed=seeds(),
    n1=st.integers(2, 4),
    n2=st.integers(1, 4),
)
def test_autodiff_ntk_is_jacobian_gram(arch, data_seed, n1, n2, method):
    """The same definition through ntk(method="jacobian") and ntk(method="ntvp") (torch.func inside the
    library), total and per layer, for x2 != x1 and x2 = x1, against the jacrev oracle; symmetric and PSD."""
    arch, model, x1, x2, cross, own, scale, ctx = _draw(arch, data_seed, n1, n2)
    _check_against_oracle(model, x1, x2, cross, method, ctx, arch, "(x1, x2)", scale)
    _check_against_oracle(model, x1, None, own, method, ctx, arch, "(x1, x1)", float(own["total"].norm()))
    _check_symmetric_psd(ntk(model, x1, method=method), arch.out_features, ctx, method)
