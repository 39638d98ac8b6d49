"""seed 000, Thm 5, eq (4) (§4, App. 9): the parameter-space limit of linearized training.

The linearized network ``f_lin(x; theta) = h(x; theta_0) + J(x) (theta - theta_0)`` trained by the
PARAMETER-space gradient flow (seed 000 eq (2))

    d theta / dt = -grad_theta dist(f_lin(X; theta), Y) = -J^T g,   g = grad_h dist(h, Y),

ends, for every loss of §4's class, at theta_inf = theta_0 + J^T (J J^T)^{-1} (Y - h_0): the solution of
problem (4), the interpolating parameters nearest theta_0.  The proof's two facts are what the oracle
uses: the velocity -J^T g lies in the row space of J, so theta(t) - theta_0 does too, and condition
(iii) makes the flow stop only where f_lin(X) = Y.  :mod:`._dynamics` integrates the flow with the loss's
gradient written there, in orthonormal coordinates of that row space (from the SVD of J; P can be
thousands), until ``|f_lin(X) - Y| <= 1e-10 |h_0 - Y|``.

:func:`ntkcheck.dynamics.solvers.min_norm_parameters` (a reduced QR of J^T, never forming J J^T) is checked against
that limit, against ``torch.linalg.lstsq``'s minimum-norm solution of ``J delta = Y - h_0`` (an orthogonal
factorisation of J, no J J^T), and on its defining properties: it fits, ``J delta = Y - h_0``, and it has no
component in null(J) (so every other interpolant ``delta + z``, z in null(J), is longer).  Draws: every family (MLPs,
CNNs, ResNets, Transformers: Thm 5 holds for any differentiable model), 1-3 outputs, biases in half of
them, frozen units in a quarter, MLP widths up to 128.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from ntkcheck.dynamics.linearization import jacobian
from ntkcheck.dynamics.solvers import SingularKernelError, min_norm_parameters
from ntkcheck.testing.claims import check_close
from ntkcheck.testing.strategies import FAMILY_ORDER, datasets
from ntkcheck.testing.tolerances import MAX_CONDITION_FLOW, tolerance

from ._common import DEVICE, DTYPE, reproduce
from ._dynamics import ParameterFlow, outputs, param_jacobian
from ._dynamics_draws import max_samples, section4_losses, wide_architectures

CLAIM = "min_norm_parameters"
pytestmark = pytest.mark.claim(CLAIM)


@given(
    arch=wide_architectures(6, max_depth=2, max_width=128, max_in=4, max_out=3, frozen=None, families=FAMILY_ORDER),
    data=st.data(),
    loss=section4_losses(),
)
def test_parameter_flow_converges_to_min_norm_parameters(arch, data, loss):
    """Gradient flow of the linearized network in parameter space, d theta/dt = -J^T grad_h dist
    (seed 000 eq (2)), under a §4 loss ends at theta_0 + J^T (J J^T)^{-1} (Y - h_0) =
    ``min_norm_parameters(jacobian(model, x), Y - h_0)`` (seed 000 Thm 5, eq (4)); that equals lstsq's
    minimum-norm solution, fits the data and has no null-space component.  Tolerances ``flow_limit``
    (the flow) and ``solver_identity`` (the solvers); draws with cond(J J^T) > MAX_CONDITION_FLOW rejected."""
    ds = data.draw(datasets(arch, max_n=max_samples(arch, 6)))
    model = arch.build(dtype=DTYPE, device=DEVICE)
    x, y = ds.x(dtype=DTYPE, device=DEVICE), ds.y(dtype=DTYPE, device=DEVICE)
    J = param_jacobian(model, x)
    h0 = outputs(model, x, ds.out)
    r = (y - h0).reshape(-1)
    flow = ParameterFlow(J, -r, loss, ds.n)
    assume(flow.cond <= MAX_CONDITION_FLOW)  # Thm 5 needs J of full row rank
    try:
        expected = min_norm_parameters(jacobian(model, x), r, max_cond=MAX_CONDITION_FLOW)
    except SingularKernelError:
        assume(False)  # float32 rounding of J J^T past the bound the oracle's SVD met
    delta, reached = flow.limit()
    ctx = reproduce(
        arch,
        ds=repr(ds),
        loss=repr(loss),
        check="flow of theta under -J^T grad dist vs min_norm_parameters(jacobian(model, x), y - h0)",
    )
    got = torch.from_numpy(delta).to(dtype=expected.dtype, device=expected.device)
    check_close(
        expected,
        got,
        tol=tolerance("flow_limit", DTYPE) * (1.0 if reached else 0.0),
        claim=CLAIM,
        what=f"min_norm_parameters vs theta(inf) - theta_0 of the parameter flow (loss {loss!r}, "
        f"event reached: {reached})",
        context=ctx,
    )
    tol = tolerance("solver_identity", DTYPE)
    ls = torch.linalg.lstsq(J.cpu(), r.cpu()[:, None], driver="gelsd").solution[:, 0].to(expected)
    check_close(
        expected,
        ls,
        tol=tol,
        claim=CLAIM,
        context=ctx,
        what="min_norm_parameters vs torch.linalg.lstsq (gelsd) minimum-norm solution of J delta = Y - h0",
    )
    check_close(
        J @ expected, r, tol=tol, claim=CLAIM, context=ctx, what="fit of min_norm_parameters: J delta vs Y - h0"
    )
    # (I - V V^T) delta, V an orthonormal basis of the row space of J from its SVD: the part of delta that a
    # shorter interpolant delta - z (z in null(J)) could remove
    Vt = torch.from_numpy(flow.Vt).to(expected)
    null_part = expected - Vt.T @ (Vt @ expected)
    check_close(
        null_part,
        torch.zeros_like(null_part),
        tol=tol,
        scale=float(expected.norm()),
        claim=CLAIM,
        context=ctx,
        what="null-space component of min_norm_parameters (any other interpolant is longer)",
    )
