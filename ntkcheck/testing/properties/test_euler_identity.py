"""seed 001, Lemma 2 and eq (14) (App. C): f = (1/L) <theta, grad f> for bias-free ReLU networks.

seed 001's text of eq (14) is garbled by the PDF extraction; re-derived here: with
Phi(x) = grad_theta f(x; theta_0) (a row), f(X; theta_0) = (1/L) Phi(X) theta_0 by
Euler's theorem (f is positively homogeneous of degree L in theta), and
theta_inf = theta_0 + Phi(X)^T (Phi Phi^T)^{-1} (Y - f(X; theta_0)) (seed 000 Thm 5), so

    f_lin(x; theta_inf) = Phi(x) Phi(X)^T (Phi Phi^T)^{-1} Y + (1/L) Phi(x) [I - P] theta_0,

P = Phi(X)^T (Phi Phi^T)^{-1} Phi(X) the projection onto the row space of Phi(X).
Inputs are drawn from the unit ball B_1^d(0) (seed 001 §1.2); 1-3 outputs (each output is
a bias-free ReLU net of its own).

Lemma 2's hypothesis is f(x; c theta) = c^L f(x; theta) for c > 0.  Among the families of
:func:`ntkcheck.testing.strategies.architectures` it holds for bias-free ReLU MLPs and bias-free ReLU CNNs:
a convolution is linear in its weight, zero padding and strides keep it so, ReLU is positively
1-homogeneous, and average pooling and flattening are linear, so scaling every weight tensor by c
scales the output by c^L with L = convolutions + head layers.  It fails for the other families:
a ResNet block h + s W2 relu(W1 h) mixes degrees (the skip path is degree k, the branch k + 2, so
f(c theta) is a polynomial in c, not c^L), and a Transformer's LayerNorm (invariant to scaling its
input) and softmax attention are not homogeneous at all.  The CNN identity holds for any input;
images are standard normal.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from ntkcheck.dynamics.linearization import jacobian
from ntkcheck.errors import IllConditionedError
from ntkcheck.testing.claims import check_close
from ntkcheck.testing.strategies import architectures, dataset_for, datasets, inputs, seeds
from ntkcheck.testing.tolerances import tolerance

from ._common import DEVICE, DTYPE, reproduce
from ._seed001 import MAX_N, ball_x, ball_x_test, eq14_terms, flat_params, relu_bias_free

CLAIM = "euler_identity"
pytestmark = pytest.mark.claim(CLAIM)


@given(arch=relu_bias_free(max_depth=4, max_width=32, min_width=4, max_out=3), data_seed=seeds(), n=st.integers(1, 6))
def test_output_is_inner_product_with_gradient(arch, data_seed, n):
    """f(x; theta) = (1/L) <theta, grad_theta f(x; theta)>, L the number of weight layers (seed 001, Lemma 2)."""
    model = arch.build(dtype=DTYPE, device=DEVICE)
    x = inputs(data_seed, n, arch.in_features, unit_ball=True, dtype=DTYPE, device=DEVICE)
    jac, theta = jacobian(model, x), flat_params(model)
    euler = jac @ theta / len(model.layers)
    with torch.no_grad():
        out = model(x).reshape(-1)
    # the inner product sums P terms J_ij theta_j of both signs: its rounding is relative to sum_j |J_ij theta_j|
    magnitude = float((jac.abs() @ theta.abs()).norm()) / len(model.layers)
    assume(magnitude > 0)  # every path through the net dead at every x: f = 0 = grad f, nothing to compare
    check_close(
        euler,
        out,
        tol=tolerance("kernel_methods_agree", DTYPE),
        claim=CLAIM,
        scale=magnitude,
        what="(1/L) <theta, grad f(x)> vs f(x)",
        context=reproduce(arch, x=f"inputs({data_seed}, {n}, {arch.in_features}, unit_ball=True)"),
    )


@given(arch=relu_bias_free(max_out=2), data=st.data())
def test_trained_linearization_is_interpolant_plus_init_term(arch, data):
    """f_lin(x; theta_inf) = kernel interpolant + (1/L) Phi(x)(I - P) theta_0, and the second term
    vanishes on the training inputs (seed 001, Lemma 2, eq (14))."""
    ds = data.draw(datasets(arch, max_n=MAX_N))
    x, y, xt = ball_x(ds), ds.y(dtype=DTYPE, device=DEVICE), ball_x_test(ds, 4)
    try:
        terms = eq14_terms(arch, x, y, xt)
    except IllConditionedError:
        assume(False)  # Phi Phi^T too ill-conditioned for the dtype's solver tolerance
    ctx = reproduce(arch, ds=repr(ds), x="inputs(ds.seed, ds.n, ds.d, unit_ball=True)")
    tol = tolerance("solver_identity", DTYPE)
    scale = float(terms.interpolant.norm() + terms.init_term.norm() + terms.euler_test.norm())
    check_close(
        terms.trained,
        terms.interpolant + terms.init_term,
        tol=tol,
        scale=scale,
        claim=CLAIM,
        what="f_lin(x; theta_inf) vs interpolant + (1/L) Phi(x)(I - P) theta_0",
        context=ctx,
    )
    # on X the init term is (1/L) Phi(X) theta_0 minus its projection: it cancels terms of size |f(X)|
    scale_train = float(terms.euler_train.norm() + y.norm())
    check_close(
        terms.init_term_train,
        torch.zeros_like(terms.init_term_train),
        tol=tol,
        scale=scale_train,
        claim=CLAIM,
        what="(1/L) Phi(X)(I - P) theta_0 on the training inputs",
        context=ctx,
    )


@given(
    arch=architectures(families=("cnn",), max_out=3, activations=("relu",), bias=False),
    data_seed=seeds(),
    n=st.integers(1, 6),
)
def test_cnn_output_is_inner_product_with_gradient(arch, data_seed, n):
    """f(x; theta) = (1/L) <theta, grad_theta f(x; theta)> for bias-free ReLU CNNs with average-pooling or
    flatten readouts, L = convolutions + head layers (seed 001, Lemma 2: f is positively homogeneous of
    degree L in theta)."""
    model = arch.build(dtype=DTYPE, device=DEVICE)
    ds = dataset_for(arch, data_seed, n)
    x = ds.x(dtype=DTYPE, device=DEVICE)
    degree = len(model.convs) + len(model.head.layers)
    jac, theta = jacobian(model, x), flat_params(model)
    euler = jac @ theta / degree
    with torch.no_grad():
        out = model(x).reshape(-1)
    magnitude = float((jac.abs() @ theta.abs()).norm()) / degree
    assume(magnitude > 0)  # every path dead at every x: f = 0 = grad f, nothing to compare
    check_close(
        euler,
        out,
        tol=tolerance("kernel_methods_agree", DTYPE),
        claim=CLAIM,
        scale=magnitude,
        what="(1/L) <theta, grad f(x)> vs f(x) (bias-free ReLU CNN)",
        context=reproduce(arch, x=f"{ds!r}.x(dtype={DTYPE})"),
    )
