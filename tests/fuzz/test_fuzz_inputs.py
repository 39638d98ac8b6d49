"""Bad inputs to networks, transforms, analytic kernels, data loaders and strategies.

Every refused input raises the documented exception type with a message that names the argument.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pytest
import torch
from _fuzz_input_builders import (
    F64,
    MISSING_CUDA,
    _antisymmetric_forward,
    _arch,
    _case,
    _frozen,
    _meta,
    _mlp,
    _net,
    _NoReset,
    _Pair,
    _transformer,
    _with,
    _x,
)
from torch import nn

import ntkcheck as nk
from ntkcheck.experiments import data
from ntkcheck.testing import strategies

MLP_CASES = [
    _case("in_features=0", lambda: _mlp(0), ValueError, "in_features must be an int >= 1"),
    _case("in_features=2.0", lambda: _mlp(2.0), TypeError, "in_features"),
    _case("in_features=True", lambda: _mlp(True), TypeError, "in_features"),
    _case("in_features='3'", lambda: _mlp("3"), TypeError, "in_features"),
    _case("widths=4", lambda: _mlp(3, 4), TypeError, "widths must be a sequence"),
    _case("widths='44'", lambda: _mlp(3, "44"), TypeError, "widths must be a sequence"),
    _case("widths=None", lambda: _mlp(3, None), TypeError, "widths must be a sequence"),
    _case("widths=[4,0]", lambda: _mlp(3, [4, 0]), ValueError, "widths[1] must be an int >= 1"),
    _case("widths=[4,-1]", lambda: _mlp(3, [4, -1]), ValueError, "widths[1]"),
    _case("widths=[4.0]", lambda: _mlp(3, [4.0]), TypeError, "widths[0]"),
    _case("widths=[True]", lambda: _mlp(3, [True]), TypeError, "widths[0]"),
    _case("out_features=0", lambda: _mlp(3, [4], 0), ValueError, "out_features"),
    _case("out_features=1.5", lambda: _mlp(3, [4], 1.5), TypeError, "out_features"),
    _case("activation='swish'", lambda: _mlp(activation="swish"), ValueError, "activation must be one of"),
    _case("activation='ReLU'", lambda: _mlp(activation="ReLU"), ValueError, "activation must be one of"),
    _case("activation=torch.tanh", lambda: _mlp(activation=torch.tanh), TypeError, "activation must be one of"),
    _case("activation=None", lambda: _mlp(activation=None), TypeError, "activation"),
    _case("bias=1", lambda: _mlp(bias=1), TypeError, "bias must be a bool"),
    _case("bias='yes'", lambda: _mlp(bias="yes"), TypeError, "bias must be a bool"),
    _case("bias=None", lambda: _mlp(bias=None), TypeError, "bias must be a bool"),
    _case("parametrization='mup'", lambda: _mlp(parametrization="mup"), ValueError, "parametrization"),
    _case("parametrization=None", lambda: _mlp(parametrization=None), TypeError, "parametrization"),
    _case("weight_std=nan", lambda: _mlp(weight_std=float("nan")), ValueError, "weight_std"),
    _case("weight_std=inf", lambda: _mlp(weight_std=float("inf")), ValueError, "weight_std"),
    _case("weight_std=-1", lambda: _mlp(weight_std=-1), ValueError, "weight_std"),
    _case("weight_std='1'", lambda: _mlp(weight_std="1"), TypeError, "weight_std"),
    _case("weight_std=True", lambda: _mlp(weight_std=True), TypeError, "weight_std"),
    _case("weight_std=tensor", lambda: _mlp(weight_std=torch.tensor(1.0)), TypeError, "weight_std"),
    _case("bias_std=-0.1", lambda: _mlp(bias_std=-0.1), ValueError, "bias_std"),
    _case("bias_std=nan", lambda: _mlp(bias_std=float("nan")), ValueError, "bias_std"),
    _case("init='he'", lambda: _mlp(parametrization="standard", init="he"), ValueError, "init must be one of"),
    _case("init=glorot-with-ntk", lambda: _mlp(init="glorot"), ValueError, "init='glorot'"),
    _case("generator=3", lambda: _mlp(generator=3), TypeError, "generator must be a torch.Generator"),
    _case("generator=numpy", lambda: _mlp(generator=np.random.default_rng(0)), TypeError, "generator"),
    _case("dtype=int64", lambda: _mlp(dtype=torch.int64), TypeError, "dtype must be a floating dtype"),
    _case("dtype=bool", lambda: _mlp(dtype=torch.bool), TypeError, "dtype"),
    _case("dtype=complex64", lambda: _mlp(dtype=torch.complex64), TypeError, "dtype"),
    _case("dtype='int64'", lambda: _mlp(dtype="int64"), ValueError, "dtype must be a floating dtype"),
    _case("dtype='double'", lambda: _mlp(dtype="double"), ValueError, "dtype"),
    _case("dtype=float", lambda: _mlp(dtype=float), TypeError, "dtype must be a torch.dtype"),
    _case("dtype=np.float64", lambda: _mlp(dtype=np.float64), TypeError, "dtype"),
    _case("device='gpu'", lambda: _mlp(device="gpu"), ValueError, "device 'gpu' is not a device name"),
    _case("device=missing-cuda", lambda: _mlp(device=MISSING_CUDA), ValueError, f"device '{MISSING_CUDA}'"),
    _case("device=0", lambda: _mlp(device=0), TypeError, "device must be a torch.device"),
    _case("reinitialized(generator=3)", lambda: _net().reinitialized(generator=3), TypeError, "generator"),
]


TRANSFORM_CASES = [
    _case("asi(3)", lambda: nk.asi(3), TypeError, "model must be a torch.nn.Module"),
    _case("asi(None)", lambda: nk.asi(None), TypeError, "model must be a torch.nn.Module"),
    _case("asi(ReLU)", lambda: nk.asi(nn.ReLU()), ValueError, "model (ReLU) has no parameters"),
    _case("asi(frozen)", lambda: nk.asi(_frozen()), ValueError, "model has no trainable parameters"),
    _case("rnd(3)", lambda: nk.rnd(3), TypeError, "model must be a torch.nn.Module"),
    _case("rnd(ReLU)", lambda: nk.rnd(nn.ReLU()), ValueError, "model (ReLU) has no parameters"),
    _case("rnd(frozen)", lambda: nk.rnd(_frozen()), ValueError, "model has no trainable parameters"),
    _case("rnd(mlp,generator=3)", lambda: nk.rnd(_net(), 3), TypeError, "generator must be a torch.Generator"),
    _case("rnd(linear,generator=3)", lambda: nk.rnd(nn.Linear(3, 1), 3), TypeError, "generator"),
    _case("rnd(linear,generator='seed')", lambda: nk.rnd(nn.Linear(3, 1), "seed"), TypeError, "generator"),
    _case("rnd(no-reset_parameters)", lambda: nk.rnd(_NoReset()), TypeError, "model holds parameters in"),
    _case("double(Linear)", lambda: nk.double_last_layer(nn.Linear(3, 1)), TypeError, "mlp must be an ntkcheck.MLP"),
    _case("double(asi)", lambda: nk.double_last_layer(nk.asi(_net())), TypeError, "mlp must be an ntkcheck.MLP"),
    _case("double(no-hidden)", lambda: nk.double_last_layer(nk.MLP(3, [])), ValueError, "mlp must have"),
    _case("double(frozen)", lambda: nk.double_last_layer(_frozen()), ValueError, "mlp has no trainable"),
    _case("merge(list)", lambda: nk.merge_branches([]), TypeError, "per_param must be a dict"),
    _case("merge(None)", lambda: nk.merge_branches(None), TypeError, "per_param must be a dict"),
    _case(
        "merge(foreign-key)",
        lambda: nk.merge_branches({"layers.0.weight": torch.zeros(1)}),
        ValueError,
        "per_param key 'layers.0.weight'",
    ),
    _case(
        "merge(bare-branch)", lambda: nk.merge_branches({"plus": torch.zeros(1)}), ValueError, "per_param key 'plus'"
    ),
    _case("merge(float-value)", lambda: nk.merge_branches({"plus.w": 1.0}), TypeError, "per_param must map"),
    _case("merge(int-key)", lambda: nk.merge_branches({1: torch.zeros(1)}), TypeError, "per_param must map"),
    _case(
        "merge(shapes-differ)",
        lambda: nk.merge_branches({"plus.w": torch.zeros(2), "minus.w": torch.zeros(3)}),
        ValueError,
        "per_param kernels of plus.w and minus.w differ in shape",
    ),
    _case("AntiSymmetric(3,m)", lambda: nk.AntiSymmetric(3, _net()), TypeError, "plus must be a torch.nn.Module"),
    _case("AntiSymmetric(m,'m')", lambda: nk.AntiSymmetric(_net(), "m"), TypeError, "minus must be"),
    _case(
        "AntiSymmetric(m,m)",
        lambda: (lambda m: nk.AntiSymmetric(m, m))(_net()),
        ValueError,
        "plus and minus must be distinct",
    ),
    _case(
        "AntiSymmetric(out1,out2)",
        lambda: nk.AntiSymmetric(_net(1), _net(2)),
        ValueError,
        "plus and minus must have the same in/out features",
    ),
    _case(
        "AntiSymmetric(in3,in4)",
        lambda: nk.AntiSymmetric(_net(1, 3), _net(1, 4)),
        ValueError,
        "plus 3 -> 1 and minus 4 -> 1",
    ),
    _case("AntiSymmetric(scale=nan)", lambda: nk.AntiSymmetric(_net(), _net(), float("nan")), ValueError, "scale"),
    _case("AntiSymmetric(scale='1')", lambda: nk.AntiSymmetric(_net(), _net(), "1"), TypeError, "scale"),
    _case(
        "AntiSymmetric-forward(shapes)",
        lambda: _antisymmetric_forward(nn.Sequential(_net(1)), nn.Sequential(_net(2))),
        ValueError,
        "plus and minus must return outputs of one shape",
    ),
    _case(
        "AntiSymmetric-forward(tuple)",
        lambda: _antisymmetric_forward(_Pair(), _Pair()),
        TypeError,
        "plus and minus must return tensors",
    ),
]


def _kernel_cases(kernel: Callable[..., torch.Tensor]) -> list:
    name, model = kernel.__name__, _net
    return [
        _case(f"{name}(x1=1-d)", lambda: kernel(model(), _x()[0]), ValueError, "x1 must have shape (N, features)"),
        _case(f"{name}(x1=3-d)", lambda: kernel(model(), _x()[None]), ValueError, "x1 must have shape"),
        _case(f"{name}(x1=empty)", lambda: kernel(model(), _x(0)), ValueError, "x1 must hold at least one input"),
        _case(f"{name}(x1=4-features)", lambda: kernel(model(), _x(d=4)), ValueError, "x1 must have 3 features"),
        _case(f"{name}(x1=int64)", lambda: kernel(model(), _x().long()), TypeError, "x1 must be a floating-point"),
        _case(f"{name}(x1=complex)", lambda: kernel(model(), _x().cdouble()), TypeError, "x1 must be a floating"),
        _case(f"{name}(x1=list)", lambda: kernel(model(), _x().tolist()), TypeError, "x1 must be a torch.Tensor"),
        _case(f"{name}(x1=numpy)", lambda: kernel(model(), _x().numpy()), TypeError, "x1 must be a torch.Tensor"),
        _case(f"{name}(x1=NaN)", lambda: kernel(model(), _with(float("nan"))), ValueError, "x1 contains 1 NaN"),
        _case(f"{name}(x1=inf)", lambda: kernel(model(), _with(float("inf"))), ValueError, "x1 contains 1 NaN"),
        _case(f"{name}(x1=meta)", lambda: kernel(model(), _meta()), ValueError, "x1 is on the meta device"),
        _case(f"{name}(x2=meta)", lambda: kernel(model(), _x(), _meta()), ValueError, "x2 is on the meta device"),
        _case(f"{name}(x2=NaN)", lambda: kernel(model(), _x(), _with(float("nan"))), ValueError, "x2 contains"),
        _case(f"{name}(x2=float32)", lambda: kernel(model(), _x(), _x().float()), ValueError, "x2 must have the dtype"),
        _case(f"{name}(model=Linear)", lambda: kernel(nn.Linear(3, 1), _x()), TypeError, "model must be an ntkcheck"),
        _case(f"{name}(model=asi)", lambda: kernel(nk.asi(_net()), _x()), TypeError, "model must be an ntkcheck"),
        _case(
            f"{name}(model=standard-glorot)",
            lambda: kernel(_mlp(parametrization="standard", init="glorot"), _x()),
            ValueError,
            "model.init 'glorot'",
        ),
        _case(
            f"{name}(model=Transformer)",
            lambda: kernel(_transformer(), torch.zeros(2, 3, dtype=torch.long)),
            ValueError,
            "no infinite-width limit implemented for SelfAttention",
        ),
        _case(
            f"{name}(activation=3)",
            lambda: kernel(_mlp(dtype=F64), _x(), activation=3),
            TypeError,
            "activation must be a name or a callable",
        ),
    ]


META_CASES = [
    _case(
        "ntk(x1=meta)",
        lambda: nk.ntk(_net(), _meta()),
        ValueError,
        "x1 must match the model's parameters (torch.float64 on cpu), got torch.float64 on meta",
    ),
    _case("ntk(x2=meta)", lambda: nk.ntk(_net(), _x(), _meta()), ValueError, "x2 is on the meta device"),
    _case("jacobian(x=meta)", lambda: nk.jacobian(_net(), _meta()), ValueError, "x is on the meta device"),
    _case(
        "min_norm_linearized(x_train=meta)",
        lambda: nk.min_norm_linearized(_net(), _meta(), torch.zeros(4)),
        ValueError,
        "x_train is on the meta device",
    ),
    _case(
        "check_consistent(x_train=meta)",
        lambda: nk.check_consistent(_meta(), torch.zeros(4)),
        ValueError,
        "x_train is on the meta device",
    ),
    _case(
        "sharpness(x=meta)",
        lambda: nk.sharpness(_net(), _meta(), torch.zeros(4, dtype=F64), nk.MSE),
        ValueError,
        "x is on the meta device",
    ),
    _case(
        "train(x=meta)",
        lambda: nk.train(_net(), _meta(), torch.zeros(4, dtype=F64), nk.MSE, steps=1),
        ValueError,
        "x is on the meta device",
    ),
]


DATA_CASES = [
    _case("gaussian_bump(n_train=0)", lambda: data.gaussian_bump(0, 5), ValueError, "n_train"),
    _case("gaussian_bump(n_train=2.0)", lambda: data.gaussian_bump(2.0, 5), TypeError, "n_train"),
    _case("gaussian_bump(n_test=0)", lambda: data.gaussian_bump(5, 0), ValueError, "n_test"),
    _case("gaussian_bump(d=0)", lambda: data.gaussian_bump(5, 5, d=0), ValueError, "d must be an int >= 1"),
    _case("gaussian_bump(seed=1.5)", lambda: data.gaussian_bump(5, 5, seed=1.5), TypeError, "seed must be an int"),
    _case("gaussian_bump(seed=True)", lambda: data.gaussian_bump(5, 5, seed=True), TypeError, "seed must be an int"),
    _case("boston_housing(n_train=0)", lambda: data.boston_housing(n_train=0), ValueError, "n_train"),
    _case("boston_housing(n_train=506)", lambda: data.boston_housing(n_train=506), ValueError, "n_train must be <"),
    _case("boston_housing(seed='0')", lambda: data.boston_housing(seed="0"), TypeError, "seed must be an int"),
    _case("mnist(n_train=0)", lambda: data.mnist(0, 5), ValueError, "n_train"),
    _case("mnist(n_test=-1)", lambda: data.mnist(5, -1), ValueError, "n_test"),
    _case("mnist(digits=[1,1])", lambda: data.mnist(5, 5, digits=[1, 1]), ValueError, "digits must be distinct"),
    _case("mnist(digits=[10])", lambda: data.mnist(5, 5, digits=[10]), ValueError, "digits must be distinct ints"),
    _case("mnist(digits=[True])", lambda: data.mnist(5, 5, digits=[True]), ValueError, "digits"),
    _case("mnist(digits='01')", lambda: data.mnist(5, 5, digits="01"), TypeError, "digits must be a non-empty"),
    _case("mnist(digits=[])", lambda: data.mnist(5, 5, digits=[]), TypeError, "digits must be a non-empty"),
    _case("mnist(scale='pm1')", lambda: data.mnist(5, 5, scale="pm1"), ValueError, "scale must be one of"),
    _case("mnist(scale=None)", lambda: data.mnist(5, 5, scale=None), TypeError, "scale must be one of"),
    _case("gaussian_bump(dtype=int64)", lambda: data.gaussian_bump(5, 5, dtype=torch.int64), TypeError, "dtype"),
    _case("gaussian_bump(dtype='double')", lambda: data.gaussian_bump(5, 5, dtype="double"), ValueError, "dtype"),
    _case("boston_housing(dtype=3)", lambda: data.boston_housing(dtype=3), TypeError, "dtype"),
    _case("boston_housing(device='gpu')", lambda: data.boston_housing(device="gpu"), ValueError, "device"),
    _case("mnist(device=0.5)", lambda: data.mnist(5, 5, device=0.5), TypeError, "device"),
]


STRATEGY_CASES = [
    _case("Arch(activation='swish').build", lambda: _arch(activation="swish").build(), ValueError, "activation"),
    _case("Arch(widths=(0,)).build", lambda: _arch(widths=(0,)).build(), ValueError, "widths[0]"),
    _case("Arch(weight_std=-1).build", lambda: _arch(weight_std=-1.0).build(), ValueError, "weight_std"),
    _case("Arch.build(dtype=int64)", lambda: _arch().build(dtype=torch.int64), TypeError, "dtype"),
    _case("Arch.build(device='gpu')", lambda: _arch().build(device="gpu"), ValueError, "device"),
    _case("inputs(n=-1)", lambda: strategies.inputs(0, -1, 3), ValueError, "n must be"),
    _case("inputs(d=0)", lambda: strategies.inputs(0, 2, 0), ValueError, "d must be"),
    _case("inputs(seed=-1)", lambda: strategies.inputs(-1, 2, 3), ValueError, "seed must be"),
    _case("inputs(seed=2.0)", lambda: strategies.inputs(2.0, 2, 3), TypeError, "seed must be"),
]


CASES = (
    MLP_CASES
    + TRANSFORM_CASES
    + _kernel_cases(nk.analytic_ntk)
    + _kernel_cases(nk.analytic_nngp)
    + META_CASES
    + DATA_CASES
    + STRATEGY_CASES
)


@pytest.mark.parametrize("call, error, fragment", CASES)
def test_bad_input_is_refused_by_name(call: Callable[[], object], error: type[Exception], fragment: str) -> None:
    with pytest.raises(error, match=re.escape(fragment)):
        call()
