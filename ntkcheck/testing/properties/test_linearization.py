"""seed 000 §3.2, eq (1), and seed 001 Lemma 1: the linearized network.

    h_lin(x, theta) = h(x, theta_0) + grad_theta h(x, theta_0) . (theta - theta_0)        (seed 000 eq (1))

(seed 001 writes the same f_lin(x) = f(x; theta_0) + grad_theta f(x)|_{theta_0} (theta - theta_0) in its
Lemma 1, garbled in the extracted text).  :func:`ntkcheck.dynamics.linearization.linearize` builds it; with
theta = theta_0 + delta it is checked against

* the definition, with J = d h(x) / d theta at theta_0 from an oracle written here (``torch.func.jacrev``
  through ``functional_call`` on a float64 copy of the model, no ntkcheck code): h_lin = h(x, theta_0) + J delta;
* affinity in theta: h_lin(theta_0 + a d1 + b d2) - h_0 = a (h_lin(theta_0 + d1) - h_0) + b (h_lin(theta_0 + d2) - h_0);
* its kernel: the NTK of h_lin at ANY theta is the network's NTK at theta_0, J(x1) J(x2)^T (seed 000 §3.2: the
  linearized model's gradient is grad_theta h(x, theta_0) whatever theta), in total and per layer;
* first-order agreement with the real network, and no more: the Taylor remainder
  r(t) = h(x, theta_0 + t delta) - h_lin(x, theta_0 + t delta) = (t^2 / 2) delta^T H(x) delta + O(t^3).
  Its even part e(t) = (r(t) + r(-t)) / 2 = (t^2 / 2) delta^T H delta + O(t^4) must grow by 4 when t doubles:
  ||e(2t)|| / ||e(t)|| = 4 (1 + O(t^2)).  A "linearization" that is the network itself has r = 0 and fails
  (0/0), as does one with a spurious even part; first-order errors (odd in t) are the definition check's.

Frozen layers are drawn (only trainable parameters are linearized).  The second-order check needs a network
that is not affine in its trainable parameters: a smooth activation (not relu, whose kinks add a remainder
of order t * P(a pre-activation crosses 0) = O(t^2) at random, so the ratio is not 4) and, when the draw
leaves only one trainable layer that enters affinely (the last one, or any one under the identity), the first
and last layers are unfrozen as well, making the remainder bilinear in two layers.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from torch.func import functional_call, jacrev

from ntkcheck._support.seeding import child_seed
from ntkcheck.dynamics.linearization import linearize
from ntkcheck.kernels.empirical import ntk
from ntkcheck.models import ACTIVATIONS
from ntkcheck.testing.claims import check_at_most, check_close
from ntkcheck.testing.strategies import architectures, inputs, seeds
from ntkcheck.testing.tolerances import tolerance

from ._common import DEVICE, DTYPE, reproduce

CLAIM = "linearization"
pytestmark = pytest.mark.claim(CLAIM)


SMOOTH = tuple(a for a in ACTIVATIONS if a != "relu")
COEFFICIENTS = [-2.0, -0.5, 0.75, 1.0, 3.0]
STEPS = {torch.float64: (1e-4, 1e-3, 1e-2), torch.float32: (1e-2, 2e-2, 5e-2, 0.1, 0.2)}
"""Candidate t of the second-order check (delta is at the parameter scale, see :func:`direction`): the
first one whose remainder is resolved above rounding (RESOLVED) is used."""
RESOLVED = 1e3
"""A draw enters the second-order check at the first t of STEPS where, measured in float64 on the real
network alone, its even remainder E(t) = (h(theta_0 + t delta) + h(theta_0 - t delta)) / 2 - h_0 = t^2 a + t^4 c
is resolved, ||E(t)|| >= RESOLVED * eps * (||h_0|| + t ||J delta||) (rounding then moves the ratio by ~1e-3 of a
forward pass's error growth), and only if it is in its quadratic regime there: | ||E(2t)|| / (4 ||E(t)||) - 1 |
<= 1/4 of the second_order_ratio tolerance.  Draws failing this (a second-order coefficient a nearly 0, or
one swamped by higher orders before rounding lets it show) cannot show the order in this dtype and are
assumed away."""


def _trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def oracle_jacobian(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(h(x, theta_0) flattened sample-major, {name: (N*O, numel) Jacobian}) in float64, by jacrev on a copy."""
    twin = copy.deepcopy(model).to(torch.float64)
    params = _trainable(twin)
    fixed = {n: p.detach() for n, p in twin.named_parameters() if not p.requires_grad}
    xd = x.detach().to(torch.float64)

    def outputs(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return functional_call(twin, {**p, **fixed}, (xd,)).reshape(-1)

    with torch.no_grad():
        h0 = outputs(params)
    jac = jacrev(outputs)(params)
    return h0, {n: j.reshape(h0.numel(), -1) for n, j in jac.items()}


def network_at(model: torch.nn.Module, delta: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The real network h(x, theta_0 + delta), by functional_call (frozen parameters unchanged)."""
    params = {n: p.detach() + delta[n] for n, p in model.named_parameters() if p.requires_grad}
    with torch.no_grad():
        return functional_call(model, params, (x,)).reshape(-1)


def direction(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """A random direction: per tensor N(0, 1) entries scaled to that tensor's RMS at theta_0 (the parameter
    scale of either parametrization), from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for n, p in _trainable(model).items():
        z = torch.randn(p.shape, generator=gen, dtype=torch.float64)
        rms = float(p.double().pow(2).mean().sqrt())
        out[n] = (z * (rms if rms > 0 else 1.0)).to(dtype=p.dtype, device=p.device)
    return out


def _lin_at(lin, delta: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    lin.load_delta(delta)
    with torch.no_grad():
        return lin(x).reshape(-1)


def _ctx(arch, data_seed, n, **extra):
    return reproduce(
        arch,
        x=f"inputs({data_seed}, {n}, {arch.in_features})",
        delta=f"test_linearization.direction(model, child_seed({data_seed}, 1))",
        **extra,
    )


@given(
    arch=architectures(families=("mlp",), max_depth=3, max_width=128, max_out=3, frozen=None),
    data_seed=seeds(),
    n=st.integers(1, 5),
    a=st.sampled_from(COEFFICIENTS),
    b=st.sampled_from(COEFFICIENTS),
)
def test_linearized_network_is_first_order_taylor_and_affine(arch, data_seed, n, a, b):
    """h_lin(x, theta_0 + delta) = h(x, theta_0) + J(x) delta with J the jacrev oracle (seed 000 eq (1)), and
    h_lin is affine in theta: h_lin(theta_0 + a d1 + b d2) - h_0 = a (h_lin(theta_0 + d1) - h_0) + b (...)."""
    model = arch.build(dtype=DTYPE, device=DEVICE)
    x = inputs(data_seed, n, arch.in_features, dtype=DTYPE, device=DEVICE)
    lin = linearize(model)
    h0, jac = oracle_jacobian(model, x)
    d1, d2 = direction(model, child_seed(data_seed, 1)), direction(model, child_seed(data_seed, 2))
    tol = tolerance("linearized_forward", DTYPE)
    ctx = _ctx(arch, data_seed, n, a=a, b=b)
    outs = {}
    for label, delta in (("d1", d1), ("d2", d2)):
        jd = sum(jac[name] @ delta[name].reshape(-1).double().to(jac[name].device) for name in jac)
        got = _lin_at(lin, delta, x)
        outs[label] = got.double()
        check_close(
            got.double(),
            h0 + jd,
            tol=tol,
            scale=float(h0.norm() + jd.norm()),
            claim=CLAIM,
            what=f"linearize(model) at theta_0 + {label} vs h(x, theta_0) + J(x) {label} (jacrev oracle)",
            context=ctx + f"\ncheck = linearize(model).load_delta({label})(x)",
        )
    combo = {name: a * d1[name] + b * d2[name] for name in d1}
    got = _lin_at(lin, combo, x).double()
    h0_lib = _lin_at(lin, {name: torch.zeros_like(t) for name, t in d1.items()}, x).double()
    want = h0_lib + a * (outs["d1"] - h0_lib) + b * (outs["d2"] - h0_lib)
    check_close(
        got,
        want,
        tol=tol,
        scale=float(h0_lib.norm() + abs(a) * (outs["d1"] - h0_lib).norm() + abs(b) * (outs["d2"] - h0_lib).norm()),
        claim=CLAIM,
        what="h_lin(theta_0 + a d1 + b d2) vs h_0 + a (h_lin(d1) - h_0) + b (h_lin(d2) - h_0)",
        context=ctx,
    )
    check_close(h0_lib, h0, tol=tol, claim=CLAIM, what="h_lin(x, theta_0) vs h(x, theta_0)", context=ctx)


@given(
    arch=architectures(families=("mlp",), max_depth=2, max_width=64, max_out=3, frozen=None),
    data_seed=seeds(),
    n1=st.integers(2, 4),
    n2=st.integers(1, 3),
    method=st.sampled_from(["jacobian", "ntvp"]),
)
def test_linearized_kernel_is_network_kernel_at_init(arch, data_seed, n1, n2, method):
    """The NTK of h_lin at theta = theta_0 + delta is J(x1) J(x2)^T with J the network's Jacobian at theta_0
    (jacrev oracle), in total and under each of the network's parameter names (seed 000 §3.2)."""
    x1 = inputs(data_seed, n1, arch.in_features, dtype=DTYPE, device=DEVICE)
    x2 = inputs(child_seed(data_seed, 3), n2, arch.in_features, dtype=DTYPE, device=DEVICE)
    for attempt in range(16):
        model = arch.build(dtype=DTYPE, device=DEVICE)
        (_, j1), (_, j2) = oracle_jacobian(model, x1), oracle_jacobian(model, x2)
        # ||J1 J2^T|| <= (||J1||^2 + ||J2||^2) / 2: the scale errors are measured against
        scale = sum(float(j.pow(2).sum()) for j in (*j1.values(), *j2.values()))
        if scale > 0:
            break
        # every gradient vanishes (dead width-1 relu paths): an all-zero kernel proves nothing, so the
        # parameters are redrawn from the next seeds of the stream (the context names the seed used)
        arch = dataclasses.replace(arch, seed=child_seed(arch.seed, 100 + attempt))
    lin = linearize(model).load_delta(direction(model, child_seed(data_seed, 1)))
    out = arch.out_features
    per = {
        name: torch.einsum("aop,bqp->aboq", j1[name].reshape(n1, out, -1), j2[name].reshape(n2, out, -1)) for name in j1
    }
    per = {name: (k[:, :, 0, 0] if out == 1 else k) for name, k in per.items()}
    total = sum(per.values())
    ctx = reproduce(
        arch,
        x1=f"inputs({data_seed}, {n1}, {arch.in_features})",
        x2=f"inputs(child_seed({data_seed}, 3), {n2}, {arch.in_features})",
        check=f"nk.ntk(linearize(model).load_delta(direction(model, child_seed({data_seed}, 1))), x1, x2, "
        f"method={method!r})",
    )
    tol = tolerance("kernel_methods_agree", DTYPE)
    assume(scale > 0)  # 16 dead redraws in a row: not met in the measured runs
    check_close(
        ntk(lin, x1, x2, method=method).double(),
        total,
        tol=tol,
        scale=scale,
        claim=CLAIM,
        what=f"ntk(h_lin at theta_0 + delta, method={method!r}) vs J(x1) J(x2)^T at theta_0",
        context=ctx,
    )
    got = ntk(lin, x1, x2, method=method, per_layer=True)
    for name, k in per.items():
        g = got.get(name)
        check_close(
            torch.zeros_like(k) if g is None else g.double(),
            k,
            tol=tol,
            scale=scale,
            claim=CLAIM,
            what=f"per-layer ntk(h_lin)[{name!r}] vs J_p(x1) J_p(x2)^T at theta_0",
            context=ctx,
        )


def _not_affine(arch):
    """The same draw with the first and last layers unfrozen when its trainable layers would enter the output
    affinely (only the last layer trainable, or a single trainable layer under the identity)."""
    n_layers = len(arch.widths) + 1
    trainable = [i for i in range(n_layers) if i not in arch.frozen]
    affine = trainable == [n_layers - 1] or (arch.activation == "identity" and len(trainable) == 1)
    if not affine:
        return arch
    return dataclasses.replace(arch, frozen=tuple(i for i in arch.frozen if i not in (0, n_layers - 1)))


@given(
    arch=architectures(
        families=("mlp",), min_depth=1, max_depth=3, max_width=128, max_out=3, activations=SMOOTH, frozen=None
    ).map(_not_affine),
    data_seed=seeds(),
    n=st.integers(1, 5),
)
def test_linearization_differs_from_network_at_second_order(arch, data_seed, n):
    """r(t) = h(x, theta_0 + t delta) - h_lin(x, theta_0 + t delta) is second order (seed 000 eq (1) is the
    first-order Taylor expansion): its even part e(t) = (r(t) + r(-t)) / 2 satisfies ||e(2t)|| / ||e(t)|| = 4."""
    model = arch.build(dtype=DTYPE, device=DEVICE)
    x = inputs(data_seed, n, arch.in_features, dtype=DTYPE, device=DEVICE)
    lin = linearize(model)
    delta = direction(model, child_seed(data_seed, 1))
    # the network's own even remainder, in float64 on a copy (no linearization involved): the first t where
    # it is resolved in DTYPE, and whether it is quadratic there (see RESOLVED)
    twin, x64 = copy.deepcopy(model).to(torch.float64), x.double()
    d64 = {name: d.double() for name, d in delta.items()}
    h0 = network_at(twin, {k: torch.zeros_like(d) for k, d in d64.items()}, x64)

    def network_even(s: float) -> tuple[float, float]:
        plus, minus = (network_at(twin, {k: sign * s * d for k, d in d64.items()}, x64) for sign in (1.0, -1.0))
        return float(((plus + minus) / 2 - h0).norm()), float(((plus - minus) / 2).norm())

    eps = torch.finfo(DTYPE).eps
    for t in STEPS[DTYPE]:
        even, odd = network_even(t)
        if even >= RESOLVED * eps * (float(h0.norm()) + odd):
            break
    own_ratio = network_even(2 * t)[0] / even if even > 0 else math.inf
    assume(
        abs(own_ratio / 4 - 1) <= tolerance("second_order_ratio", DTYPE) / 4
        and even >= RESOLVED * eps * (float(h0.norm()) + odd)
    )

    def even_remainder(s: float) -> torch.Tensor:
        parts = []
        for sign in (1.0, -1.0):
            step = {name: sign * s * d for name, d in delta.items()}
            parts.append(network_at(model, step, x).double() - _lin_at(lin, step, x).double())
        return (parts[0] + parts[1]) / 2

    e1, e2 = even_remainder(t), even_remainder(2 * t)
    ratio = float(e2.norm() / e1.norm()) if float(e1.norm()) > 0 else float("nan")
    ctx = _ctx(
        arch, data_seed, n, t=t, check="e(s) = (h(theta_0 + s delta) - h_lin(theta_0 + s delta) + (s -> -s)) / 2"
    )
    check_at_most(
        abs(ratio / 4 - 1),
        tolerance("second_order_ratio", DTYPE),
        claim=CLAIM,
        what=f"|(||e(2t)|| / ||e(t)||) / 4 - 1| of the Taylor remainder of h_lin (measured ratio {ratio:.6g})",
        context=ctx,
    )
