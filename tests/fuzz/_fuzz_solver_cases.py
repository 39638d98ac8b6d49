"""Refused inputs to the min-norm solvers, condition_number, max_stable_lr, the flows and check_consistent:
(call, exception type, message fragment) cases.
"""

from __future__ import annotations

import math

import torch
from _fuzz_solver_inputs import (
    F64,
    _asym,
    _case,
    _dup_jac,
    _dup_x,
    _indefinite,
    _jac,
    _k,
    _net,
    _singular,
    _with,
    _x,
    _y,
)
from torch import nn

from ntkcheck.dynamics.flows import mse_flow, mse_gd
from ntkcheck.dynamics.linearization import min_norm_linearized
from ntkcheck.dynamics.solvers import (
    SingularKernelError,
    check_consistent,
    condition_number,
    max_stable_lr,
    min_norm_parameters,
)

MIN_NORM_CASES = [
    _case(
        "jacobian=list",
        lambda: min_norm_parameters(_jac().tolist(), _y(3)),
        TypeError,
        "jacobian must be a torch.Tensor",
    ),
    _case("jacobian=1-D", lambda: min_norm_parameters(_y(), _y(3)), ValueError, "jacobian must have shape"),
    _case(
        "jacobian=float16",
        lambda: min_norm_parameters(_jac().half(), _y(3).half()),
        TypeError,
        "jacobian must have dtype torch.float32 or torch.float64",
    ),
    _case(
        "jacobian=meta",
        lambda: min_norm_parameters(_jac().to("meta"), _y(3)),
        ValueError,
        "jacobian is on the meta device",
    ),
    _case(
        "jacobian=nan",
        lambda: min_norm_parameters(_with(_jac(), math.nan), _y(3)),
        ValueError,
        "jacobian contains 1 NaN",
    ),
    _case(
        "jacobian=empty",
        lambda: min_norm_parameters(torch.zeros(0, 5, dtype=F64), _y(3)),
        ValueError,
        "jacobian must not be empty",
    ),
    _case(
        "jacobian=P<=n",
        lambda: min_norm_parameters(_jac(5, 3), _y(5)),
        ValueError,
        "jacobian has P=3 parameters for 5 constraints",
    ),
    _case(
        "jacobian=duplicate-rows",
        lambda: min_norm_parameters(_dup_jac(), _y(3)),
        SingularKernelError,
        "J J^T (jacobian) is singular",
    ),
    _case(
        "jacobian=zeros",
        lambda: min_norm_parameters(torch.zeros(3, 10, dtype=F64), _y(3)),
        SingularKernelError,
        "J J^T (jacobian) is singular",
    ),
    _case("residual=shape", lambda: min_norm_parameters(_jac(), _y(4)), ValueError, "residual must have shape (3,)"),
    _case(
        "residual=float32",
        lambda: min_norm_parameters(_jac(), _y(3).float()),
        ValueError,
        "residual must have the dtype of jacobian",
    ),
    _case(
        "residual=inf",
        lambda: min_norm_parameters(_jac(), _with(_y(3), math.inf)),
        ValueError,
        "residual contains 1 NaN",
    ),
    _case(
        "max_cond>1/eps^2",
        lambda: min_norm_parameters(_jac(), _y(3), max_cond=1e40),
        ValueError,
        "max_cond=1e+40 exceeds what torch.float64 can honour, 1 / eps^2",
    ),
    _case("max_cond=0.5", lambda: min_norm_parameters(_jac(), _y(3), max_cond=0.5), ValueError, "max_cond must be"),
]


LINEARIZED_CASES = [
    _case("model=str", lambda: min_norm_linearized("net", _x(), _y(4)), TypeError, "model must be a torch.nn.Module"),
    _case(
        "model=dropout-train",
        lambda: min_norm_linearized(_net(nn.Dropout(0.5)), _x(), _y(4)),
        ValueError,
        "model.2 (Dropout, training mode: random)",
    ),
    _case(
        "model=batchnorm-train",
        lambda: min_norm_linearized(_net(nn.BatchNorm1d(8)), _x(), _y(4)),
        ValueError,
        "model.2 (BatchNorm1d, training mode",
    ),
    _case("model=P<=n", lambda: min_norm_linearized(_net(width=1), _x(8), _y(8)), ValueError, "model has P = 5"),
    _case(
        "x_train=features",
        lambda: min_norm_linearized(_net(), _x(4, 3), _y(4)),
        ValueError,
        "x_train must have 2 features",
    ),
    _case(
        "x_train=float32",
        lambda: min_norm_linearized(_net(), _x().float(), _y(4)),
        ValueError,
        "x_train must have the dtype",
    ),
    _case(
        "x_train=meta",
        lambda: min_norm_linearized(_net(), _x().to("meta"), _y(4)),
        ValueError,
        "x_train is on the meta device",
    ),
    _case(
        "x_train=duplicate",
        lambda: min_norm_linearized(_net(), _dup_x(), _y(4)),
        SingularKernelError,
        "J J^T (jacobian) is singular",
    ),
    _case(
        "y_train=list",
        lambda: min_norm_linearized(_net(), _x(), [0.0] * 4),
        TypeError,
        "y_train must be a torch.Tensor",
    ),
    _case("y_train=rows", lambda: min_norm_linearized(_net(), _x(), _y(5)), ValueError, "y_train must have shape"),
    _case(
        "y_train=nan",
        lambda: min_norm_linearized(_net(), _x(), _with(_y(4), math.nan)),
        ValueError,
        "y_train contains 1 NaN",
    ),
]


CONDITION_CASES = [
    _case("k=list", lambda: condition_number([[1.0]]), TypeError, "k must be a torch.Tensor"),
    _case("k=float16", lambda: condition_number(_k().half()), TypeError, "k must have dtype torch.float32"),
    _case("k=indefinite", lambda: condition_number(_indefinite()), ValueError, "k is not positive semi-definite"),
    _case("k=asymmetric", lambda: condition_number(_asym()), ValueError, "k must be symmetric"),
    _case("k=2x3", lambda: condition_number(torch.ones(2, 3, dtype=F64)), ValueError, "k must be square"),
    _case("k=meta", lambda: condition_number(_k().to("meta")), ValueError, "k is on the meta device"),
]


MAX_LR_CASES = [
    _case(
        "k_train=diag(-5,1)",
        lambda: max_stable_lr(torch.diag(torch.tensor([-5.0, 1.0], dtype=F64))),
        ValueError,
        "k_train is not positive semi-definite: smallest eigenvalue -5 (largest 1)",
    ),
    _case(
        "k_train=negative-definite", lambda: max_stable_lr(-_k()), ValueError, "k_train is not positive semi-definite"
    ),
    _case(
        "k_train=zeros",
        lambda: max_stable_lr(torch.zeros(3, 3, dtype=F64)),
        ValueError,
        "k_train must have a positive eigenvalue",
    ),
    _case("k_train=bfloat16", lambda: max_stable_lr(_k().bfloat16()), TypeError, "k_train must have dtype"),
    _case("k_train=nan", lambda: max_stable_lr(_with(_k(), math.nan)), ValueError, "k_train contains 1 NaN"),
]


FLOW_CASES = [
    _case("mse_flow:times<0", lambda: mse_flow(_k(), _y(), times=[1.0, -0.5]), ValueError, "times must be >= 0"),
    _case("mse_flow:times=nan", lambda: mse_flow(_k(), _y(), times=[math.nan]), ValueError, "times must be >= 0"),
    _case("mse_flow:times='abc'", lambda: mse_flow(_k(), _y(), times="abc"), TypeError, "times must be a number"),
    _case("mse_flow:lr=0", lambda: mse_flow(_k(), _y(), times=[1.0], lr=0.0), ValueError, "lr must be a positive"),
    _case(
        "mse_flow:indefinite+pinv",
        lambda: mse_flow(_indefinite(), _y(), times=[1.0], pinv_rcond=1e-8),
        ValueError,
        "k_train is not positive semi-definite: smallest eigenvalue -4.1",
    ),
    _case(
        "mse_flow:pinv_rcond<eps",
        lambda: mse_flow(_singular(), _y(), times=[1.0], pinv_rcond=1e-18),
        ValueError,
        "pinv_rcond=1e-18 is below the machine epsilon",
    ),
    _case(
        "mse_flow:max_cond+pinv",
        lambda: mse_flow(_k(), _y(), times=[1.0], pinv_rcond=1e-6, max_cond=1e30),
        ValueError,
        "max_cond=1e+30 exceeds",
    ),
    _case(
        "mse_flow:singular",
        lambda: mse_flow(_singular(), _y(), times=[1.0]),
        SingularKernelError,
        "k_train is singular",
    ),
    _case(
        "mse_flow:float16",
        lambda: mse_flow(_k().half(), _y().half(), times=[1.0]),
        TypeError,
        "k_train must have dtype",
    ),
    _case("mse_flow:asymmetric", lambda: mse_flow(_asym(), _y(), times=[1.0]), ValueError, "k_train must be symmetric"),
    _case("mse_gd:lr>=limit", lambda: mse_gd(_k(), _y(), lr=2 * max_stable_lr(_k()), steps=[3]), ValueError, "lr="),
    _case("mse_gd:lr<0", lambda: mse_gd(_k(), _y(), lr=-1.0, steps=[3]), ValueError, "lr must be a positive"),
    _case(
        "mse_gd:on_unstable='ignore'",
        lambda: mse_gd(_k(), _y(), lr=0.1, steps=[3], on_unstable="ignore"),
        ValueError,
        "on_unstable must be one of",
    ),
    _case(
        "mse_gd:steps=1.5",
        lambda: mse_gd(_k(), _y(), lr=0.1, steps=[1.5]),
        ValueError,
        "steps must be non-negative integers",
    ),
    _case(
        "mse_gd:steps=inf",
        lambda: mse_gd(_k(), _y(), lr=0.1, steps=[math.inf]),
        ValueError,
        "steps must be non-negative",
    ),
    _case("mse_gd:steps<0", lambda: mse_gd(_k(), _y(), lr=0.1, steps=[-1]), ValueError, "steps must be >= 0"),
    _case(
        "mse_gd:indefinite",
        lambda: mse_gd(_indefinite(), _y(), lr=0.1, steps=[3]),
        ValueError,
        "k_train is not positive semi-definite",
    ),
    _case(
        "mse_gd:meta",
        lambda: mse_gd(_k().to("meta"), _y().to("meta"), lr=0.1, steps=[3]),
        ValueError,
        "k_train is on the meta device",
    ),
]


CONSISTENT_CASES = [
    _case("x_train=list", lambda: check_consistent([[0.0]], _y(1)), TypeError, "x_train must be a torch.Tensor"),
    _case("x_train=1-D", lambda: check_consistent(_y(), _y()), ValueError, "x_train must have shape"),
    _case("x_train=nan", lambda: check_consistent(_with(_x(), math.nan), _y(4)), ValueError, "x_train contains"),
    _case(
        "x_train=meta", lambda: check_consistent(_x().to("meta"), _y(4)), ValueError, "x_train is on the meta device"
    ),
    _case("y_train=rows", lambda: check_consistent(_x(), _y(3)), ValueError, "y_train rows must match x_train"),
    _case("y_train=int64", lambda: check_consistent(_x(), _y(4).long()), TypeError, "y_train must have dtype"),
    _case(
        "y_train=meta", lambda: check_consistent(_x(), _y(4).to("meta")), ValueError, "y_train is on the meta device"
    ),
    _case(
        "inconsistent",
        lambda: check_consistent(_dup_x(), _y(4)),
        ValueError,
        "inconsistent training set: x_train has equal inputs with different y_train labels at rows [0, 3]",
    ),
]
