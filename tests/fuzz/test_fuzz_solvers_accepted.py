"""Unusual inputs to the kernel solvers, the closed-form flows and the min-norm solvers that are accepted.

Every one gives the value of a float64 numpy reference.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from _fuzz_solver_inputs import EPS64, _jac, _k, _kx, _rel, _y

from ntkcheck.dynamics.flows import mse_flow, mse_gd
from ntkcheck.dynamics.solvers import (
    interpolate,
    min_norm_parameters,
)


def _ref(k: torch.Tensor, y: torch.Tensor, kx: torch.Tensor) -> np.ndarray:
    return kx.double().numpy() @ np.linalg.solve(k.double().numpy(), y.double().numpy())


ACCEPTED = [
    pytest.param(
        lambda: (interpolate(_k(1), _y(1), k_test_train=_kx(2, 1)), _ref(_k(1), _y(1), _kx(2, 1))), 1e-14, id="n=1"
    ),
    pytest.param(
        lambda: (
            interpolate(_k()[:, :, None, None], _y(), k_test_train=_kx()[:, :, None, None]),
            _ref(_k(), _y(), _kx()),
        ),
        1e-12,
        id="block-O=1-with-(n,)-targets",
    ),
    pytest.param(
        lambda: (interpolate(1e-150 * _k(), _y(), k_test_train=1e-150 * _kx()), _ref(_k(), _y(), _kx())),
        1e-12,
        id="kernel-scaled-1e-150",
    ),
    pytest.param(
        lambda: (interpolate(1e150 * _k(), _y(), k_test_train=1e150 * _kx()), _ref(_k(), _y(), _kx())),
        1e-12,
        id="kernel-scaled-1e150",
    ),
    pytest.param(
        lambda: (interpolate(_k().T, _y(), k_test_train=_kx().T.contiguous().T), _ref(_k(), _y(), _kx())),
        1e-12,
        id="non-contiguous",
    ),
    pytest.param(
        lambda: (interpolate(_k().requires_grad_(), _y(), k_test_train=_kx()), _ref(_k(), _y(), _kx())),
        1e-12,
        id="requires-grad",
    ),
    pytest.param(
        lambda: (
            interpolate(_k(dtype=torch.float32), _y(dtype=torch.float32), k_test_train=_kx().float()),
            _ref(_k(), _y(), _kx()),
        ),
        1e-4,
        id="float32",
    ),
    pytest.param(
        lambda: (interpolate(_k(), _y(), k_test_train=_kx(), max_cond=1 / EPS64), _ref(_k(), _y(), _kx())),
        1e-12,
        id="max_cond=1/eps",
    ),
    pytest.param(
        lambda: (interpolate(_k(), _y(), k_test_train=_kx(), pinv_rcond=EPS64), _ref(_k(), _y(), _kx())),
        1e-12,
        id="pinv_rcond=eps",
    ),
    pytest.param(
        lambda: (mse_flow(_k(), _y(), times=0.0, h_ini_train=_kx()[0]).train[0], _kx()[0].numpy()),
        1e-14,
        id="mse_flow-t=0-scalar",
    ),
    pytest.param(
        lambda: (mse_gd(_k(), _y(), lr=0.1, steps=[0], h_ini_train=_kx()[0]).train[0], _kx()[0].numpy()),
        1e-14,
        id="mse_gd-steps=0",
    ),
    pytest.param(
        lambda: (
            min_norm_parameters(_jac().reshape(3, 1, 10), _y(3).reshape(3, 1)),
            np.linalg.lstsq(_jac().numpy(), _y(3).numpy(), rcond=None)[0],
        ),
        1e-12,
        id="min_norm-(n,1,P)-jacobian",
    ),
    pytest.param(
        lambda: (
            min_norm_parameters(_jac(), _y(3), max_cond=1 / EPS64**2),
            np.linalg.lstsq(_jac().numpy(), _y(3).numpy(), rcond=None)[0],
        ),
        1e-12,
        id="min_norm-max_cond=1/eps^2",
    ),
]


@pytest.mark.parametrize("call, tol", ACCEPTED)
def test_unusual_input_is_solved(call: Callable[[], tuple[torch.Tensor, np.ndarray]], tol: float) -> None:
    got, ref = call()
    assert _rel(got, ref) <= tol
