"""seed 000, Thm 4 (= Thm 9, §6 and §11), eq (7): ASI and original networks follow the same kernel flow.

``h_ASI(x; Theta) = (sqrt 2/2) h(x; theta_1) - (sqrt 2/2) h(x; theta_2)`` with ``theta_1(0) = theta_2(0) = theta_0``
(:func:`ntkcheck.models.transforms.asi`) has output 0 at init and, over BOTH branches' parameters, the Jacobian
``J_ASI = (sqrt 2/2) (J, -J)``, so ``J_ASI J_ASI^T = J J^T``: the original network's kernel k.  Hence, for any
loss of §4 and at every time t, the gradient flow (2) of the linearized ASI network,

    d Theta/dt = -lr J_ASI^T grad_h dist(h_ASI(X; Theta), Y),

moves its outputs along the kernel flow (7) ``d h'/dt = -lr k(., X) grad_h dist(h'(X), Y)`` started at
``h'(., 0) = 0``, while the original network's linearized flow follows (7) started at ``h_ini = h(.; theta_0)``.

Checked at finite times spread over the flow's time scales: the left sides by :mod:`._dynamics`' parameter-
space integration with the Jacobian of ``asi(model)`` (2P columns, autograd rows) and of ``model``; the right
sides by :func:`ntkcheck.dynamics.flows.ode_flow` with the ORIGINAL network's kernel ``ntk(model, .)`` started at 0
and at h_ini.  Frozen layers stay frozen in both branches, so the kernels count the same parameters.
Drawn across every family (MLPs, CNNs, ResNets, Transformers: the argument uses only J).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from ntkcheck.dynamics.flows import ConvergenceWarning, ode_flow
from ntkcheck.dynamics.solvers import SingularKernelError
from ntkcheck.kernels.empirical import ntk
from ntkcheck.models.transforms import asi
from ntkcheck.testing.claims import check_at_most, check_close
from ntkcheck.testing.strategies import FAMILY_ORDER, datasets
from ntkcheck.testing.tolerances import MAX_CONDITION_FLOW, tolerance

from ._common import DEVICE, DTYPE, reproduce
from ._dynamics import ODE_RTOL, ParameterFlow, outputs, param_jacobian, predict
from ._dynamics_draws import max_samples, section4_losses, wide_architectures

CLAIM = "asi"
pytestmark = pytest.mark.claim(CLAIM)


def _flow(k, y, loss, times, kt, lr, h0=None, h0t=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # stopped at max_time on purpose
        return ode_flow(
            k,
            y,
            loss=loss,
            times=times,
            k_test_train=kt,
            h_ini_train=h0,
            h_ini_test=h0t,
            lr=lr,
            rtol=ODE_RTOL,
            atol=ODE_RTOL,
            max_time=times[-1],
            max_cond=MAX_CONDITION_FLOW,
        )


@given(
    arch=wide_architectures(6, max_depth=2, max_width=32, max_in=3, max_out=2, frozen=None, families=FAMILY_ORDER),
    data=st.data(),
    loss=section4_losses(),
    lr=st.sampled_from([0.5, 2.0]),
)
def test_asi_and_original_linearized_flows_follow_kernel_flow(arch, data, loss, lr):
    """Parameter flow (2) of linearized ``asi(model)`` over both branches == ``ode_flow`` with the original's
    kernel from h'(., 0) = 0, and that of ``model`` == ``ode_flow`` from h_ini, at training and test points and
    finite times (seed 000 Thm 4 / Thm 9, eq (7)).  Tolerance ``finite_time_flow``."""
    ds = data.draw(datasets(arch, max_n=max_samples(arch, 3)))
    model = arch.build(dtype=DTYPE, device=DEVICE)
    net = asi(model)
    x, y = ds.x(dtype=DTYPE, device=DEVICE), ds.y(dtype=DTYPE, device=DEVICE)
    xt = ds.x_test(3, dtype=DTYPE, device=DEVICE)
    Ja, Jat = param_jacobian(net, x), param_jacobian(net, xt)
    J, Jt = param_jacobian(model, x), param_jacobian(model, xt)
    h0, h0t = outputs(model, x, ds.out), outputs(model, xt, ds.out)
    ha0, ha0t = outputs(net, x, ds.out), outputs(net, xt, ds.out)
    ctx = reproduce(
        arch,
        ds=repr(ds),
        loss=repr(loss),
        lr=lr,
        check="parameter flow (2) of nk.asi(model) vs ode_flow(nk.ntk(model, x), y, loss=loss, times=times, "
        "k_test_train=nk.ntk(model, xt, x), lr=lr) from 0",
    )
    zero = tolerance("asi_zero_output", DTYPE)
    check_at_most(
        float(torch.cat([ha0.reshape(-1), ha0t.reshape(-1)]).abs().max()),
        zero,
        claim=CLAIM,
        what="max |h_ASI| at init (start of the flow)",
        context=ctx,
    )
    asi_flow = ParameterFlow(Ja, (ha0 - y).reshape(-1), loss, ds.n, lr)
    orig_flow = ParameterFlow(J, (h0 - y).reshape(-1), loss, ds.n, lr)
    assume(asi_flow.cond <= MAX_CONDITION_FLOW)
    fast, slow = asi_flow.time_scales()
    times = np.unique([fast, 0.3 * slow, slow]).tolist()
    k, kt = ntk(model, x), ntk(model, xt, x)
    try:
        from_zero = _flow(k, y, loss, times, kt, lr)
        from_ini = _flow(k, y, loss, times, kt, lr, h0, h0t)
    except SingularKernelError:
        assume(False)  # float32 rounding of the library's kernel past the bound the oracle's J met
    tol = tolerance("finite_time_flow", DTYPE)
    da = asi_flow.at(times)
    check_close(
        from_zero.train,
        predict(ha0, Ja, da),
        tol=tol,
        claim=CLAIM,
        context=ctx,
        what=f"linearized ASI flow vs kernel flow (7) from 0 at the training points ({loss!r})",
    )
    check_close(
        from_zero.test,
        predict(ha0t, Jat, da),
        tol=tol,
        claim=CLAIM,
        context=ctx,
        what=f"linearized ASI flow vs kernel flow (7) from 0 at test points ({loss!r})",
    )
    do = orig_flow.at(times)
    check_close(
        from_ini.train,
        predict(h0, J, do),
        tol=tol,
        claim=CLAIM,
        context=ctx,
        what=f"linearized original flow vs kernel flow (7) from h_ini at the training points ({loss!r})",
    )
    check_close(
        from_ini.test,
        predict(h0t, Jt, do),
        tol=tol,
        claim=CLAIM,
        context=ctx,
        what=f"linearized original flow vs kernel flow (7) from h_ini at test points ({loss!r})",
    )
