"""Bad and unusual inputs to the kernel solvers, the closed-form flows and the min-norm solvers.

Every refused input raises the documented exception type with a message that names the
argument; every unusual input that is accepted gives the value of a float64 numpy reference.
Drawn kernels: indefinite symmetric matrices are always refused, Gram matrices of random
features are solved to within ``10 N cond eps`` of numpy (the forward-error bound of a
backward-stable solve, Higham Thm 7.2, with the factor N of its backward error).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from ntkcheck.dynamics.flows import mse_flow, mse_gd
from ntkcheck.dynamics.linearization import min_norm_linearized
from ntkcheck.dynamics.solvers import (
    SingularKernelError,
    check_consistent,
    condition_number,
    decompose,
    interpolate,
    max_stable_lr,
    min_norm_parameters,
)

F64 = torch.float64
EPS64 = torch.finfo(F64).eps
EPS32 = torch.finfo(torch.float32).eps


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _k(n: int = 5, dtype: torch.dtype = F64) -> torch.Tensor:
    """A well-conditioned Gram kernel A A^T / 6 + 0.1 I."""
    a = torch.randn(n, 6, generator=_gen(0), dtype=F64)
    return (a @ a.T / 6 + 0.1 * torch.eye(n, dtype=F64)).to(dtype)


def _y(n: int = 5, dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.randn(n, generator=_gen(1), dtype=F64).to(dtype)


def _kx(m: int = 3, n: int = 5) -> torch.Tensor:
    return torch.randn(m, n, generator=_gen(2), dtype=F64)


def _spectral(evals: list[float] | np.ndarray, seed: int = 3, dtype: torch.dtype = F64) -> torch.Tensor:
    """Q diag(evals) Q^T, Q a random orthogonal matrix (exactly symmetric)."""
    n = len(evals)
    q = torch.linalg.qr(torch.randn(n, n, generator=_gen(seed), dtype=F64))[0]
    k = q @ torch.diag(torch.as_tensor(evals, dtype=F64)) @ q.T
    return ((k + k.T) / 2).to(dtype)


def _indefinite(n: int = 5) -> torch.Tensor:
    return _spectral(np.linspace(-4.1, 4.8, n))


def _singular() -> torch.Tensor:
    x = torch.randn(5, 3, generator=_gen(4), dtype=F64)
    x[3] = x[0]  # duplicated input
    return torch.exp(-(torch.cdist(x, x) ** 2))


def _with(t: torch.Tensor, value: float) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[1] = value
    return t


def _asym() -> torch.Tensor:
    k = _k()
    k[0, 1] += 1e-3
    return k


def _sparse() -> torch.Tensor:
    return _k().to_sparse()


def _jac(n: int = 3, p: int = 10) -> torch.Tensor:
    return torch.randn(n, p, generator=_gen(5), dtype=F64)


def _dup_jac() -> torch.Tensor:
    j = _jac()
    j[2] = j[0]
    return j


def _net(*middle: nn.Module, width: int = 8) -> nn.Module:
    torch.manual_seed(6)
    return nn.Sequential(nn.Linear(2, width), nn.Tanh(), *middle, nn.Linear(width, 1)).to(F64)


def _x(n: int = 4, d: int = 2) -> torch.Tensor:
    return torch.randn(n, d, generator=_gen(7), dtype=F64)


def _dup_x() -> torch.Tensor:
    x = _x()
    x[3] = x[0]
    return x


def _case(case_id: str, call: Callable[[], object], error: type[Exception], fragment: str):
    return pytest.param(call, error, fragment, id=case_id)


INTERPOLATE_CASES = [
    _case("k_train=list", lambda: interpolate(_k().tolist(), _y()), TypeError, "k_train must be a torch.Tensor"),
    _case("k_train=numpy", lambda: interpolate(_k().numpy(), _y()), TypeError, "k_train must be a torch.Tensor"),
    _case("k_train=int64", lambda: interpolate(_k().long(), _y()), TypeError, "k_train must have dtype torch.float32"),
    _case(
        "k_train=float16",
        lambda: interpolate(_k().half(), _y().half()),
        TypeError,
        "k_train must have dtype torch.float32 or torch.float64",
    ),
    _case(
        "k_train=bfloat16",
        lambda: interpolate(_k().bfloat16(), _y().bfloat16()),
        TypeError,
        "k_train must have dtype torch.float32 or torch.float64",
    ),
    _case(
        "k_train=complex128", lambda: interpolate(_k().to(torch.complex128), _y()), TypeError, "k_train must have dtype"
    ),
    _case(
        "k_train=meta",
        lambda: interpolate(_k().to("meta"), _y().to("meta")),
        ValueError,
        "k_train is on the meta device",
    ),
    _case("k_train=sparse", lambda: interpolate(_sparse(), _y()), TypeError, "k_train must be a dense"),
    _case("k_train=1-D", lambda: interpolate(_y(), _y()), ValueError, "k_train must have shape"),
    _case("k_train=3-D", lambda: interpolate(_k()[None], _y()), ValueError, "k_train must have shape"),
    _case(
        "k_train=empty",
        lambda: interpolate(torch.zeros(0, 0, dtype=F64), _y()),
        ValueError,
        "k_train must not be empty",
    ),
    _case("k_train=3x4", lambda: interpolate(torch.ones(3, 4, dtype=F64), _y(3)), ValueError, "k_train must be square"),
    _case(
        "k_train=block-O!=O'",
        lambda: interpolate(torch.ones(2, 2, 1, 2, dtype=F64), _y(2)),
        ValueError,
        "k_train must be square",
    ),
    _case(
        "k_train=nan",
        lambda: interpolate(_with(_k(), math.nan), _y()),
        ValueError,
        "k_train contains 1 NaN or infinite entries",
    ),
    _case("k_train=inf", lambda: interpolate(_with(_k(), math.inf), _y()), ValueError, "k_train contains 1 NaN"),
    _case(
        "k_train=asymmetric",
        lambda: interpolate(_asym(), _y()),
        ValueError,
        "k_train must be symmetric: relative asymmetry",
    ),
    _case(
        "k_train=indefinite",
        lambda: interpolate(_indefinite(), _y()),
        ValueError,
        "k_train is not positive semi-definite: smallest eigenvalue -4.1",
    ),
    _case(
        "k_train=indefinite+pinv",
        lambda: interpolate(_indefinite(), _y(), pinv_rcond=1e-8),
        ValueError,
        "k_train is not positive semi-definite",
    ),
    _case(
        "k_train=negative-definite",
        lambda: interpolate(-_k(), _y()),
        ValueError,
        "k_train is not positive semi-definite",
    ),
    _case("k_train=singular", lambda: interpolate(_singular(), _y()), SingularKernelError, "k_train is singular"),
    _case(
        "k_train=zeros",
        lambda: interpolate(torch.zeros(5, 5, dtype=F64), _y()),
        SingularKernelError,
        "k_train is singular",
    ),
    _case("y_train=rows", lambda: interpolate(_k(), _y(4)), ValueError, "y_train rows must match k_train (n=5)"),
    _case("y_train=3-D", lambda: interpolate(_k(), _y().reshape(5, 1, 1)), ValueError, "y_train must have shape"),
    _case(
        "y_train=float32", lambda: interpolate(_k(), _y().float()), ValueError, "y_train must have the dtype of k_train"
    ),
    _case("y_train=int64", lambda: interpolate(_k(), _y().long()), TypeError, "y_train must have dtype"),
    _case("y_train=nan", lambda: interpolate(_k(), _with(_y(), math.nan)), ValueError, "y_train contains 1 NaN"),
    _case(
        "y_train=meta",
        lambda: interpolate(_k(), _y().to("meta")),
        ValueError,
        "y_train must be on the device of k_train (cpu), got meta",
    ),
    _case(
        "y_train=block-shape",
        lambda: interpolate(_k(6).reshape(3, 2, 3, 2).permute(0, 2, 1, 3), _y(3)),
        ValueError,
        "y_train must have shape (3, 2)",
    ),
    _case(
        "k_test_train=columns",
        lambda: interpolate(_k(), _y(), k_test_train=_kx(3, 4)),
        ValueError,
        "k_test_train columns must match k_train",
    ),
    _case(
        "k_test_train=1-D",
        lambda: interpolate(_k(), _y(), k_test_train=_y()),
        ValueError,
        "k_test_train must have shape",
    ),
    _case(
        "k_test_train=float32",
        lambda: interpolate(_k(), _y(), k_test_train=_kx().float()),
        ValueError,
        "k_test_train must have the dtype of k_train",
    ),
    _case(
        "k_test_train=inf",
        lambda: interpolate(_k(), _y(), k_test_train=_with(_kx(), -math.inf)),
        ValueError,
        "k_test_train contains 1 NaN",
    ),
    _case(
        "h_ini_train=shape",
        lambda: interpolate(_k(), _y(), h_ini_train=_y(4)),
        ValueError,
        "h_ini_train must have the shape of y_train",
    ),
    _case(
        "h_ini_test=alone",
        lambda: interpolate(_k(), _y(), k_test_train=_kx(), h_ini_test=_y(3)),
        ValueError,
        "h_ini_test was given without h_ini_train",
    ),
    _case(
        "h_ini_test=shape",
        lambda: interpolate(_k(), _y(), k_test_train=_kx(), h_ini_train=_y(), h_ini_test=_y(4)),
        ValueError,
        "h_ini_test must have shape (3,)",
    ),
    _case(
        "h_ini_test=missing",
        lambda: interpolate(_k(), _y(), k_test_train=_kx(), h_ini_train=_y()),
        ValueError,
        "h_ini_test is required",
    ),
    _case("pinv_rcond=0", lambda: interpolate(_k(), _y(), pinv_rcond=0.0), ValueError, "pinv_rcond must lie in (0, 1)"),
    _case("pinv_rcond=1", lambda: interpolate(_k(), _y(), pinv_rcond=1.0), ValueError, "pinv_rcond must lie in (0, 1)"),
    _case("pinv_rcond=nan", lambda: interpolate(_k(), _y(), pinv_rcond=math.nan), ValueError, "pinv_rcond"),
    _case("pinv_rcond='1e-6'", lambda: interpolate(_k(), _y(), pinv_rcond="1e-6"), TypeError, "pinv_rcond"),
    _case("pinv_rcond=True", lambda: interpolate(_k(), _y(), pinv_rcond=True), TypeError, "pinv_rcond"),
    _case(
        "pinv_rcond<eps64",
        lambda: interpolate(_k(), _y(), pinv_rcond=1e-17),
        ValueError,
        "pinv_rcond=1e-17 is below the machine epsilon of the kernel's dtype torch.float64",
    ),
    _case(
        "pinv_rcond<eps32",
        lambda: interpolate(_k(dtype=torch.float32), _y(dtype=torch.float32), pinv_rcond=1e-9),
        ValueError,
        "pinv_rcond=1e-09 is below the machine epsilon of the kernel's dtype torch.float32",
    ),
    _case(
        "max_cond=1", lambda: interpolate(_k(), _y(), max_cond=1.0), ValueError, "max_cond must be None or a float > 1"
    ),
    _case("max_cond=-5", lambda: interpolate(_k(), _y(), max_cond=-5), ValueError, "max_cond must be"),
    _case("max_cond=nan", lambda: interpolate(_k(), _y(), max_cond=math.nan), ValueError, "max_cond must be"),
    _case(
        "max_cond=inf",
        lambda: interpolate(_k(), _y(), max_cond=math.inf),
        ValueError,
        "max_cond=inf exceeds what torch.float64 can honour",
    ),
    _case(
        "max_cond>1/eps64",
        lambda: interpolate(_k(), _y(), max_cond=1e16),
        ValueError,
        "max_cond=1e+16 exceeds what torch.float64 can honour, 1 / eps",
    ),
    _case(
        "max_cond>1/eps32",
        lambda: interpolate(_k(dtype=torch.float32), _y(dtype=torch.float32), max_cond=1e8),
        ValueError,
        "max_cond=1e+08 exceeds what torch.float32 can honour",
    ),
    _case("max_cond='big'", lambda: interpolate(_k(), _y(), max_cond="big"), TypeError, "max_cond must be None"),
    _case(
        "max_cond<cond",
        lambda: interpolate(_spectral(np.logspace(0, -5, 5)), _y(), max_cond=1e3),
        SingularKernelError,
        "threshold 1.000e+03",
    ),
]

DECOMPOSE_CASES = [
    _case(
        "h_ini_train=None",
        lambda: decompose(_k(), _y(), k_test_train=None, h_ini_train=None, h_ini_test=None),
        ValueError,
        "h_ini_train is required",
    ),
    _case(
        "k_train=indefinite",
        lambda: decompose(_indefinite(), _y(), k_test_train=None, h_ini_train=_y(), h_ini_test=None),
        ValueError,
        "k_train is not positive semi-definite",
    ),
    _case(
        "pinv_rcond<eps",
        lambda: decompose(_k(), _y(), k_test_train=None, h_ini_train=_y(), h_ini_test=None, pinv_rcond=1e-20),
        ValueError,
        "pinv_rcond=1e-20 is below the machine epsilon",
    ),
    _case(
        "h_ini_train=float32",
        lambda: decompose(_k(), _y(), k_test_train=None, h_ini_train=_y().float(), h_ini_test=None),
        ValueError,
        "h_ini_train must have the dtype of k_train",
    ),
    _case(
        "max_cond>1/eps",
        lambda: decompose(_k(), _y(), k_test_train=None, h_ini_train=_y(), h_ini_test=None, max_cond=1e30),
        ValueError,
        "max_cond=1e+30 exceeds",
    ),
]

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


def _named(prefix: str, cases: list) -> list:
    return [pytest.param(*c.values, id=f"{prefix}:{c.id}") for c in cases]


CASES = (
    _named("interpolate", INTERPOLATE_CASES)
    + _named("decompose", DECOMPOSE_CASES)
    + _named("min_norm_parameters", MIN_NORM_CASES)
    + _named("min_norm_linearized", LINEARIZED_CASES)
    + _named("condition_number", CONDITION_CASES)
    + _named("max_stable_lr", MAX_LR_CASES)
    + FLOW_CASES
    + _named("check_consistent", CONSISTENT_CASES)
)


@pytest.mark.parametrize("call, error, fragment", CASES)
def test_bad_input_is_refused_by_name(call: Callable[[], object], error: type[Exception], fragment: str) -> None:
    with pytest.raises(error, match=re.escape(fragment)):
        call()


# ------------------------------------------------------------------ unusual inputs that are accepted


def _rel(a: torch.Tensor, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.detach().double().numpy() - b) / max(np.linalg.norm(b), 1e-300))


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


# ------------------------------------------------------------------ drawn kernels


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 8),
    seed=st.integers(0, 2**31 - 1),
    log_depth=st.floats(-9.0, 1.0),
    log_scale=st.floats(-30.0, 30.0),
    dtype=st.sampled_from([torch.float64, torch.float32]),
)
def test_indefinite_symmetric_kernels_are_always_refused(n, seed, log_depth, log_scale, dtype):
    """Eigenvalues in [0, 1] except one at ``-depth * max(lambda_max, 1e-3)``, all scaled by 10^log_scale.

    depth >= 1e-9 in float64 and >= 1e-3 in float32 lies at least 10x outside the tolerance
    ``100 N eps`` (N <= 8: 1.8e-13 and 9.5e-5).
    """
    depth = 10.0 ** max(log_depth, -3.0 if dtype == torch.float32 else -9.0)
    rng = np.random.default_rng(seed)
    evals = rng.uniform(0.0, 1.0, n)
    evals[0] = -depth * max(evals[1:].max(initial=0.0), 1e-3)
    k = _spectral(evals * 10.0**log_scale, seed=seed % 1000, dtype=dtype)
    y = torch.ones(n, dtype=dtype)
    fragment = "k_train is not positive semi-definite: smallest eigenvalue -"
    for call in (
        lambda: interpolate(k, y, pinv_rcond=1e-3),
        lambda: interpolate(k, y),
        lambda: max_stable_lr(k),
        lambda: mse_flow(k, y, times=[1.0, math.inf], pinv_rcond=1e-3),
        lambda: mse_gd(k, y, lr=1e-3, steps=[2]),
        lambda: decompose(k, y, k_test_train=None, h_ini_train=y, h_ini_test=None, pinv_rcond=1e-3),
    ):
        with pytest.raises(ValueError, match=re.escape(fragment)):
            call()
    with pytest.raises(ValueError, match="k is not positive semi-definite"):
        condition_number(k)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 12), extra=st.integers(0, 10), m=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_random_gram_kernels_are_solved_like_numpy(n, extra, m, seed):
    """K = Phi Phi^T from random features Phi (n, n + extra), float64: interpolate and the t = inf flow agree
    with ``k_x alpha``, ``alpha = np.linalg.solve(K, y)``, within ``10 N cond(K) eps ||k_x|| ||alpha||`` (the
    error of alpha carried through k_x; relative to the output itself a cancelling sum would inflate it), and
    min_norm_parameters(Phi, y) agrees with ``np.linalg.lstsq`` within ``10 N cond(Phi) eps`` relative."""
    rng = np.random.default_rng(seed)
    phi = rng.standard_normal((n + m, n + extra))
    k_all = phi @ phi.T
    k, kx, y = k_all[:n, :n], k_all[n:, :n], rng.standard_normal(n)
    cond = np.linalg.cond(k)
    assume(cond <= 1e10)  # the default guard 1 / (N eps) refuses far worse; the bound stays meaningful
    alpha = np.linalg.solve(k, y)
    ref = kx @ alpha
    bound = 10 * n * cond * EPS64 * np.linalg.norm(kx, 2) * np.linalg.norm(alpha)
    kt, kxt, yt = torch.from_numpy(k), torch.from_numpy(kx), torch.from_numpy(y)
    assert np.linalg.norm(interpolate(kt, yt, k_test_train=kxt).numpy() - ref) <= bound
    assert np.linalg.norm(mse_flow(kt, yt, times=[math.inf], k_test_train=kxt).test[0].numpy() - ref) <= bound
    jac = torch.from_numpy(phi[:n])
    if jac.shape[1] > n:
        lstsq = np.linalg.lstsq(phi[:n], y, rcond=None)[0]
        assert _rel(min_norm_parameters(jac, yt), lstsq) <= 10 * n * math.sqrt(cond) * EPS64
