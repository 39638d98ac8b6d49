"""Refused inputs to interpolate and decompose: (call, exception type, message fragment) cases."""

from __future__ import annotations

import math

import numpy as np
import torch
from _fuzz_solver_inputs import F64, _asym, _case, _indefinite, _k, _kx, _singular, _sparse, _spectral, _with, _y

from ntkcheck.dynamics.solvers import (
    SingularKernelError,
    decompose,
    interpolate,
)

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
