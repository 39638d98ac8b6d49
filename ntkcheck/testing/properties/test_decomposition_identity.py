"""seed 000, Thm 2, eq (6) (= Thm 7, eq (17)) and Lemma 3 (§5, App. 10): the initial output splits off linearly.

    h_k(.; h_ini, X, Y) = h_k(.; 0, X, Y) + h_ini - h_k(.; 0, X, h_ini(X))          (eq (6))

where h_k(.; h_ini, X, Y) = h_ini + k(., X) K^{-1} (Y - h_ini(X)) solves problem (5) (the trained
linearized network, Thm 5/6), and h_k(.; 0, X, .) is linear in the targets (Lemma 3, eq (15)).

Nothing on the expected side goes through :mod:`ntkcheck.dynamics.solvers`:

* the defining property of h_k: it interpolates, h_k(X; h_ini, X, Y) = Y, up to the backward error of
  a stable solve (``interpolant_fit``, independent of cond(K));
* the library's interpolant and every term of ``decompose`` against the minimum-norm parameters of
  the linearized network, delta = J^+ (Y - h_ini(X)) by ``torch.linalg.lstsq`` (SVD driver) on the
  Jacobian, mapped to the test points as h_ini(T) + J(T) delta (Thm 5/6: that is h_k); on random PSD
  kernels against a Cholesky solve of ``scipy.linalg`` (``interpolant_forward``, scaled by the
  measured cond(K));
* eq (6) itself on independently trained linearized networks: the linearization of the network
  (h_ini = its own output) and of its ASI twin (same kernel, output 0: seed 000 Thm 4), each moved to
  its lstsq minimum-norm parameters and evaluated by its own forward pass (a Jacobian-vector product).

Draws: every family of :func:`ntkcheck.testing.strategies.architectures` (MLPs, CNNs on images, dense and
convolutional ResNets, Transformers on sequences and token ids; eq (6) and Lemma 3 hold for any
differentiable model), every activation, 1-3 outputs (block kernels (n, n, O, O), sample-major), biases, frozen
layers, seed 000's glorot init, widths up to 256 (widths below 16 are raised to 16).  The training set
is cut to its largest prefix whose kernel has cond(K) <= ``max_condition_solve`` (a linear network's
NTK, of rank <= (d + 1) O, keeps at most d + 1 points); only a draw singular on its first point is
rejected.  Tolerances are in units of the measured backward/forward error of a stable solve (see the
reasons of ``interpolant_fit`` and ``interpolant_forward``).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ntkcheck.dynamics.linearization import jacobian, linearize, min_norm_linearized
from ntkcheck.dynamics.solvers import decompose, interpolate
from ntkcheck.models.transforms import asi
from ntkcheck.testing.claims import check_close
from ntkcheck.testing.strategies import architectures, datasets, initial_functions, seeds
from ntkcheck.testing.tolerances import max_condition_solve, tolerance

from ._common import DEVICE, DTYPE, reproduce
from ._interpolants import Reference, flat, flat_kernel, min_norm, network_example, outputs, roomy
from ._psd import MODULE, psd_problem, targets

CLAIM = "decomposition_identity"
pytestmark = pytest.mark.claim(CLAIM)


def check_interpolant(k, y, kt, h_train, h_test, ref: Reference, ctx: str, label: str) -> None:
    """Fit at X, and interpolate / every term of decompose against the lstsq reference at the test points."""
    fit_tol, fwd_tol = tolerance("interpolant_fit", DTYPE), tolerance("interpolant_forward", DTYPE)
    r = y - h_train
    # (a) the defining property: h_k(X; h_ini, X, Y) = Y, through both code paths of interpolate
    check_close(
        flat(interpolate(k, y, h_ini_train=h_train)),
        flat(y),
        tol=fit_tol,
        scale=ref.fit_scale(r, h_train, y),
        claim=CLAIM,
        context=ctx,
        what=f"{label}: residual h_k(X; h_ini, X, Y) - Y (units of the solve's backward error)",
    )
    check_close(
        flat(interpolate(k, y, k_test_train=k, h_ini_train=h_train, h_ini_test=h_train)),
        flat(y),
        tol=fit_tol,
        scale=ref.fit_scale(r, h_train, y),
        claim=CLAIM,
        context=ctx,
        what=f"{label}: residual of the interpolant evaluated with k_test_train = K at X",
    )
    # (b) interpolate with h_ini against h_ini(T) + J(T) J^+ (Y - h_ini(X))
    total_ref = flat(h_test) + ref.at_test(r)
    check_close(
        flat(interpolate(k, y, k_test_train=kt, h_ini_train=h_train, h_ini_test=h_test)),
        total_ref,
        tol=fwd_tol,
        scale=ref.forward_scale(r, h_test),
        claim=CLAIM,
        context=ctx,
        what=f"{label}: interpolate(h_ini) at test points vs h_ini + J(T) lstsq(J, Y - h_ini(X)) "
        "(units of the forward-error bound)",
    )
    # (c) the terms of eq (6), each against its own lstsq solve
    d = decompose(k, y, k_test_train=kt, h_ini_train=h_train, h_ini_test=h_test)
    unbiased_ref, fit_ref = ref.at_test(y), ref.at_test(h_train)
    terms = (
        ("total", d.total, total_ref, r, h_test),
        ("unbiased h_k(.; 0, X, Y)", d.unbiased, unbiased_ref, y, None),
        ("fit_of_init h_k(.; 0, X, h_ini(X))", d.fit_of_init, fit_ref, h_train, None),
        ("init_bias h_ini - h_k(.; 0, X, h_ini(X))", d.init_bias, flat(h_test) - fit_ref, h_train, h_test),
    )
    for name, got, expected, rhs, h in terms:
        check_close(
            flat(got),
            expected,
            tol=fwd_tol,
            scale=ref.forward_scale(rhs, h),
            claim=CLAIM,
            context=ctx,
            what=f"{label}: decompose {name} vs lstsq on the Jacobian (units of the forward-error bound)",
        )
    both = ref.forward_scale(y, h_test) + ref.forward_scale(h_train, None)
    check_close(
        flat(d.total),
        flat(d.unbiased + d.init_bias),
        tol=fwd_tol,
        scale=both,
        claim=CLAIM,
        context=ctx,
        what=f"{label}: decompose total vs unbiased + init_bias (eq (6))",
    )
    # at the training points every term interpolates its own targets
    d0 = decompose(k, y, k_test_train=None, h_ini_train=h_train, h_ini_test=None)
    for name, got, target, rhs in (
        ("total", d0.total, y, r),
        ("unbiased", d0.unbiased, y, y),
        ("fit_of_init", d0.fit_of_init, h_train, h_train),
    ):
        check_close(
            flat(got),
            flat(target),
            tol=fit_tol,
            scale=ref.fit_scale(rhs, h_train, y),
            claim=CLAIM,
            context=ctx,
            what=f"{label}: decompose {name} at X minus its targets (backward-error units)",
        )


@given(arch=architectures(max_depth=3, max_width=256, max_out=3, frozen=None), data=st.data())
def test_interpolant_fits_and_eq6_terms_match_lstsq_on_empirical_ntk(arch, data):
    """On the empirical NTK of a drawn network (1-3 outputs), with h_ini the network's own output and
    with a drawn random function: the interpolant fits Y at X, and interpolate and each term of
    decompose equal the minimum-norm lstsq solution on the Jacobian mapped to the test points;
    total = unbiased + init_bias (seed 000, Thm 2 eq (6), h_k of problem (5))."""
    arch = roomy(arch)
    ds = data.draw(datasets(arch, max_n=8))
    h_fn = data.draw(initial_functions(math.prod(arch.in_shape), arch.out_features))
    ex = network_example(arch, ds)
    model, x, y, xt, k, kt, ref = ex.model, ex.x, ex.y, ex.xt, ex.k, ex.kt, ex.ref
    ctx = reproduce(
        arch,
        ds=ex.data(),
        h_fn=f"nk.testing.strategies.{h_fn!r}",
        check="decompose(nk.ntk(model, x), y, k_test_train=nk.ntk(model, xt, x), h_ini_train=h_ini(x), "
        "h_ini_test=h_ini(xt)) vs "
        "h_ini(xt) + J(xt) lstsq(J(x), y - h_ini(x))",
    )
    check_interpolant(k, y, kt, outputs(model, x, y), outputs(model, xt, y), ref, ctx, "h_ini = network output")
    check_interpolant(k, y, kt, h_fn(x).to(y.dtype), h_fn(xt).to(y.dtype), ref, ctx, "h_ini = random function")


@given(arch=architectures(max_depth=2, max_width=256, max_out=3, frozen=None), data=st.data())
def test_eq6_on_trained_linearized_networks(arch, data):
    """Eq (6) on trained networks: the linearized network moved to its minimum-norm interpolating
    parameters (lstsq) equals the same for its ASI twin (h_ini = 0, same kernel) trained on Y, plus
    h_ini, minus the ASI twin trained on h_ini(X) (seed 000, Thm 2; Thm 4 for the twin).  Each is
    evaluated by its own forward pass; decompose and min_norm_linearized must give the same functions."""
    arch = roomy(arch)
    ds = data.draw(datasets(arch, max_n=8))
    ex = network_example(arch, ds)
    model, x, y, xt, k, kt, ref = ex.model, ex.x, ex.y, ex.xt, ex.k, ex.kt, ex.ref
    ctx = reproduce(arch, ds=ex.data(), check="linearize(model) and linearize(nk.asi(model)) at lstsq parameters")
    h_train, h_test = outputs(model, x, y), outputs(model, xt, y)
    twin = asi(model)
    J_twin = flat_kernel(jacobian(twin, x))

    def trained(net, J, rhs):
        lin = linearize(net).load_delta(min_norm(J, flat(rhs)).reshape(-1).to(dtype=DTYPE, device=DEVICE))
        with torch.no_grad():
            return lin(x), lin(xt)

    total_x, total = trained(model, ref.J, y - h_train)  # h_k(.; h_ini, X, Y)
    unbiased_x, unbiased = trained(twin, J_twin, y)  # h_k(.; 0, X, Y)
    fit_x, fit = trained(twin, J_twin, h_train)  # h_k(.; 0, X, h_ini(X))
    fit_tol, fwd_tol = tolerance("interpolant_fit", DTYPE), tolerance("interpolant_forward", DTYPE)
    r = y - h_train
    p, p_twin = ref.J.shape[1], J_twin.shape[1]  # the forward passes sum over p (p_twin) parameters
    for name, got, target, rhs, params in (
        ("network", total_x, y, r, p),
        ("ASI twin on Y", unbiased_x, y, y, p_twin),
        ("ASI twin on h_ini(X)", fit_x, h_train, h_train, p_twin),
    ):
        check_close(
            flat(got),
            flat(target),
            tol=fit_tol,
            scale=ref.fit_scale(rhs, h_train, y, params),
            claim=CLAIM,
            context=ctx,
            what=f"trained linearized {name}: residual at X (backward-error units)",
        )
    both = (
        ref.forward_scale(r, h_test, p) + ref.forward_scale(y, None, p_twin) + ref.forward_scale(h_train, None, p_twin)
    )
    check_close(
        flat(total),
        flat(unbiased) + flat(h_test) - flat(fit),
        tol=fwd_tol,
        scale=both,
        claim=CLAIM,
        context=ctx,
        what="eq (6) on trained linearized networks: network vs twin(Y) + h_ini - twin(h_ini(X))",
    )
    d = decompose(k, y, k_test_train=kt, h_ini_train=h_train, h_ini_test=h_test)
    for name, got, expected, rhs, h, params in (
        ("total", d.total, total, r, h_test, p),
        ("unbiased", d.unbiased, unbiased, y, None, p_twin),
        ("init_bias", d.init_bias, h_test.reshape(fit.shape) - fit, h_train, h_test, p_twin),
    ):
        check_close(
            flat(got),
            flat(expected),
            tol=fwd_tol,
            scale=ref.forward_scale(rhs, h, params),
            claim=CLAIM,
            context=ctx,
            what=f"decompose {name} vs the trained linearized network",
        )
    with torch.no_grad():
        trained_lib = min_norm_linearized(model, x, y)(xt)
    check_close(
        flat(trained_lib),
        flat(total),
        tol=fwd_tol,
        scale=ref.forward_scale(r, h_test, p),
        claim=CLAIM,
        context=ctx,
        what="min_norm_linearized(model, x, y) at test points vs the lstsq-trained network",
    )


COEFFICIENTS = st.integers(-3000, 3000).map(lambda i: i / 1000)  # multiples of 1e-3: no float32 underflow
CONDS = [c for c in (1e1, 1e2, 1e3, 1e4, 1e6, 1e8) if c <= max_condition_solve(DTYPE) / 2]


@given(
    seed=seeds(),
    n=st.integers(1, 24),
    m=st.integers(1, 8),
    o=st.integers(1, 3),
    rank=st.integers(1, 48),
    cond=st.sampled_from(CONDS),
    block=st.booleans(),
)
def test_interpolant_and_eq6_on_random_psd_kernels(seed, n, m, o, rank, cond, block):
    """On random PSD kernels B B^T / r + c I (cond(K) drawn up to 1e8; block (n, n, O, O) kernels or
    one kernel shared by O target columns), with random Y and h_ini: the interpolant fits Y, and
    interpolate and each term of decompose equal scipy's Cholesky solve; total = unbiased + init_bias
    (seed 000, Thm 2 eq (6))."""
    k, kt, ref = psd_problem(seed, n, m, o, rank, cond, block)
    y, h_train, h_test = (targets(seed, i, rows, o) for i, rows in ((1, n), (2, n), (3, m)))
    ctx = reproduce(
        T=MODULE,
        problem=f"T.psd_problem({seed}, {n}, {m}, {o}, {rank}, {cond}, {block})  # k, kt, ref",
        y=f"T.targets({seed}, 1, {n}, {o})",
        h_train=f"T.targets({seed}, 2, {n}, {o})",
        h_test=f"T.targets({seed}, 3, {m}, {o})",
    )
    fit_tol, fwd_tol = tolerance("interpolant_fit", DTYPE), tolerance("interpolant_forward", DTYPE)
    r = y - h_train
    check_close(
        flat(interpolate(k, y, h_ini_train=h_train)),
        flat(y),
        tol=fit_tol,
        scale=ref.fit_scale(r, h_train, y),
        claim=CLAIM,
        context=ctx,
        what="random PSD kernel: residual h_k(X; h_ini, X, Y) - Y (units of the solve's backward error)",
    )
    total_ref = flat(h_test) + ref.at_test(r)
    check_close(
        flat(interpolate(k, y, k_test_train=kt, h_ini_train=h_train, h_ini_test=h_test)),
        total_ref,
        tol=fwd_tol,
        scale=ref.forward_scale(r, h_test),
        claim=CLAIM,
        context=ctx,
        what="random PSD kernel: interpolate(h_ini) vs scipy h_ini(T) + Kt cho_solve(K, Y - h_ini(X))",
    )
    d = decompose(k, y, k_test_train=kt, h_ini_train=h_train, h_ini_test=h_test)
    fit_ref = ref.at_test(h_train)
    for name, got, expected, rhs, h in (
        ("total", d.total, total_ref, r, h_test),
        ("unbiased", d.unbiased, ref.at_test(y), y, None),
        ("fit_of_init", d.fit_of_init, fit_ref, h_train, None),
        ("init_bias", d.init_bias, flat(h_test) - fit_ref, h_train, h_test),
    ):
        check_close(
            flat(got),
            expected,
            tol=fwd_tol,
            scale=ref.forward_scale(rhs, h),
            claim=CLAIM,
            context=ctx,
            what=f"random PSD kernel: decompose {name} vs scipy's Cholesky solve",
        )
    check_close(
        flat(d.total),
        flat(d.unbiased + d.init_bias),
        tol=fwd_tol,
        scale=ref.forward_scale(y, h_test) + ref.forward_scale(h_train, None),
        claim=CLAIM,
        context=ctx,
        what="random PSD kernel: decompose total vs unbiased + init_bias (eq (6))",
    )


@given(
    seed=seeds(),
    n=st.integers(1, 24),
    m=st.integers(1, 8),
    o=st.integers(1, 3),
    rank=st.integers(1, 48),
    cond=st.sampled_from(CONDS),
    block=st.booleans(),
    a=COEFFICIENTS,
    b=COEFFICIENTS,
)
def test_zero_init_interpolant_is_linear_in_targets(seed, n, m, o, rank, cond, block, a, b):
    """h_k(.; 0, X, a Y1 + b Y2) = a h_k(.; 0, X, Y1) + b h_k(.; 0, X, Y2) (seed 000, Lemma 3, eq (15)):
    the library's interpolant of a Y1 + b Y2 against a and b times scipy's solves for Y1 and Y2, and
    against a and b times its own interpolants; at X it fits a Y1 + b Y2."""
    k, kt, ref = psd_problem(seed, n, m, o, rank, cond, block)
    y1, y2 = targets(seed, 1, n, o), targets(seed, 2, n, o)
    ctx = reproduce(
        T=MODULE,
        problem=f"T.psd_problem({seed}, {n}, {m}, {o}, {rank}, {cond}, {block})  # k, kt, ref",
        y1=f"T.targets({seed}, 1, {n}, {o})",
        y2=f"T.targets({seed}, 2, {n}, {o})",
        a=repr(a),
        b=repr(b),
    )
    fit_tol, fwd_tol = tolerance("interpolant_fit", DTYPE), tolerance("interpolant_forward", DTYPE)
    combo = a * y1 + b * y2
    zero = torch.zeros_like(y1)
    scale = abs(a) * ref.forward_scale(y1, None) + abs(b) * ref.forward_scale(y2, None)
    h12 = flat(interpolate(k, combo, k_test_train=kt))
    check_close(
        h12,
        a * ref.at_test(y1) + b * ref.at_test(y2),
        tol=fwd_tol,
        scale=scale,
        claim=CLAIM,
        context=ctx,
        what="Lemma 3: h_k(.; 0, X, a Y1 + b Y2) vs a, b times scipy's h_k(.; 0, X, Y1), h_k(.; 0, X, Y2)",
    )
    check_close(
        h12,
        a * flat(interpolate(k, y1, k_test_train=kt)) + b * flat(interpolate(k, y2, k_test_train=kt)),
        tol=fwd_tol,
        scale=scale,
        claim=CLAIM,
        context=ctx,
        what="Lemma 3: interpolate of a Y1 + b Y2 vs a, b times its interpolants",
    )
    check_close(
        flat(interpolate(k, combo)),
        flat(combo),
        tol=fit_tol,
        scale=ref.fit_scale(combo, zero, combo),
        claim=CLAIM,
        context=ctx,
        what="Lemma 3: residual of h_k(X; 0, X, a Y1 + b Y2) (backward-error units)",
    )
