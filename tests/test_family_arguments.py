"""CNN, ResNet and Transformer: what is refused, by name."""

from __future__ import annotations

import math
import re

import pytest
import torch
from _family_models import F64, _gen
from torch import nn

import ntkcheck as nk

# ---- refused arguments -----------------------------------------------------------------------------------


def _cnn(**kw):
    return nk.CNN(3, [4], **kw)


def _resnet(**kw):
    return nk.ResNet(8, 2, **{"in_features": 3, **kw})


def _transformer(**kw):
    return nk.Transformer(
        **{"d_model": 8, "n_heads": 2, "n_blocks": 1, "mlp_width": 16, "vocab_size": 5, "max_len": 4, **kw}
    )


W4 = torch.zeros(4, 2, 3, 3)


def F64_CNN(x):
    return nk.CNN(3, [4], generator=_gen(0), dtype=F64)(x)


def FLAT_CNN(x):
    return nk.CNN(3, [4], readout="flatten", image_size=6, generator=_gen(0), dtype=F64)(x)


def VALID_CNN(x):
    return nk.CNN(3, [4, 4], padding=0, kernel_size=3, generator=_gen(0), dtype=F64)(x)


def TOKENS(x):
    return nk.Transformer(8, 2, 1, 8, vocab_size=5, max_len=4, generator=_gen(0), dtype=F64)(x)


def SEQUENCES(x):
    return nk.Transformer(8, 2, 1, 8, in_features=3, positional="none", generator=_gen(0), dtype=F64)(x)


def DENSE(x):
    return nk.ResNet(8, 1, in_features=3, generator=_gen(0), dtype=F64)(x)


def _case(case_id, call, error, fragment):
    return pytest.param(call, error, fragment, id=case_id)


CASES = [
    _case("CNN(in_channels=0)", lambda: nk.CNN(0, [4]), ValueError, "in_channels must be an int >= 1"),
    _case("CNN(channels=[])", lambda: nk.CNN(3, []), ValueError, "channels must hold at least one"),
    _case("CNN(channels=[4,0])", lambda: nk.CNN(3, [4, 0]), ValueError, "channels[1] must be an int >= 1"),
    _case("CNN(channels=4)", lambda: nk.CNN(3, 4), TypeError, "channels must be a sequence"),
    _case("CNN(readout='max')", lambda: _cnn(readout="max"), ValueError, "readout must be one of"),
    _case("CNN(flatten,no image_size)", lambda: _cnn(readout="flatten"), ValueError, "image_size must be given"),
    _case("CNN(same,stride=2)", lambda: _cnn(stride=2), ValueError, "padding='same' needs stride 1"),
    _case("CNN(padding='full')", lambda: _cnn(padding="full"), ValueError, "padding must be one of"),
    _case("CNN(padding=-1)", lambda: _cnn(padding=-1), ValueError, "padding must be an int >= 0"),
    _case("CNN(kernel_size=0)", lambda: _cnn(kernel_size=0), ValueError, "kernel_size must be an int >= 1"),
    _case("CNN(kernel_size=3-tuple)", lambda: _cnn(kernel_size=(3, 3, 3)), ValueError, "kernel_size must be an int or"),
    _case("CNN(stride=1.5)", lambda: _cnn(stride=1.5, padding=0), TypeError, "stride must be an int"),
    _case("CNN(dilation=(1,0))", lambda: _cnn(dilation=(1, 0)), ValueError, "dilation[1] must be an int >= 1"),
    _case(
        "CNN(image_size too small)", lambda: _cnn(image_size=2, padding=0), ValueError, "image_size (2, 2) is too small"
    ),
    _case("CNN(head_width=0)", lambda: _cnn(head_width=0), ValueError, "head_width must be an int >= 1"),
    _case("CNN(activation='swish')", lambda: _cnn(activation="swish"), ValueError, "activation must be one of"),
    _case("CNN(init=glorot,ntk)", lambda: _cnn(init="glorot"), ValueError, "init='glorot' applies to"),
    _case("CNN(dtype=int64)", lambda: _cnn(dtype=torch.int64), TypeError, "dtype must be a floating dtype"),
    _case("CNN(generator=1)", lambda: _cnn(generator=1), TypeError, "generator must be a torch.Generator"),
    _case("CNN(bias=1)", lambda: _cnn(bias=1), TypeError, "bias must be a bool"),
    _case("CNN(weight_std=-1)", lambda: _cnn(weight_std=-1.0), ValueError, "weight_std must be a finite float >= 0"),
    _case("CNN(device='gpu')", lambda: _cnn(device="gpu"), ValueError, "device 'gpu' is not a device name"),
    _case("ResNet(no input)", lambda: nk.ResNet(8, 2), ValueError, "exactly one of in_features"),
    _case("ResNet(both inputs)", lambda: _resnet(in_channels=2), ValueError, "in_channels=2"),
    _case("ResNet(width=0)", lambda: nk.ResNet(0, 2, in_features=3), ValueError, "width must be an int >= 1"),
    _case("ResNet(blocks=0)", lambda: nk.ResNet(8, 0, in_features=3), ValueError, "blocks must be an int >= 1"),
    _case("ResNet(branch_scale=nan)", lambda: _resnet(branch_scale=math.nan), ValueError, "branch_scale must be"),
    _case(
        "ResNet(post_activation='yes')",
        lambda: _resnet(post_activation="yes"),
        TypeError,
        "post_activation must be a bool",
    ),
    _case("ResNet(dense,image_size)", lambda: _resnet(image_size=5), ValueError, "image_size applies to"),
    _case(
        "ResNet(parametrization='mup')",
        lambda: _resnet(parametrization="mup"),
        ValueError,
        "parametrization must be one of",
    ),
    _case("ResNet(in_channels=2.0)", lambda: nk.ResNet(8, 1, in_channels=2.0), TypeError, "in_channels must be"),
    _case("Transformer(n_heads=3)", lambda: _transformer(n_heads=3), ValueError, "n_heads (3) must divide d_model"),
    _case("Transformer(no input)", lambda: _transformer(vocab_size=None), ValueError, "exactly one of vocab_size"),
    _case("Transformer(both inputs)", lambda: _transformer(in_features=3), ValueError, "in_features=3"),
    _case("Transformer(learned,no max_len)", lambda: _transformer(max_len=None), ValueError, "max_len must be given"),
    _case("Transformer(norm='sandwich')", lambda: _transformer(norm="sandwich"), ValueError, "norm must be one of"),
    _case("Transformer(readout='cls')", lambda: _transformer(readout="cls"), ValueError, "readout must be one of"),
    _case(
        "Transformer(positional='sin')", lambda: _transformer(positional="sin"), ValueError, "positional must be one of"
    ),
    _case("Transformer(qk_scaling=None)", lambda: _transformer(qk_scaling=None), TypeError, "qk_scaling must be"),
    _case("Transformer(mlp_width=0)", lambda: _transformer(mlp_width=0), ValueError, "mlp_width must be an int"),
    _case("Transformer(n_blocks=True)", lambda: _transformer(n_blocks=True), TypeError, "n_blocks must be an int"),
    _case("Transformer(vocab_size=0)", lambda: _transformer(vocab_size=0), ValueError, "vocab_size must be an int"),
    _case("Conv2d(weight 3-d)", lambda: nk.Conv2d(torch.zeros(4, 3, 3), None), ValueError, "weight must have shape"),
    _case("Conv2d(groups=3)", lambda: nk.Conv2d(W4, None, groups=3), ValueError, "groups (3) must divide"),
    _case("Conv2d(bias shape)", lambda: nk.Conv2d(W4, torch.zeros(3)), ValueError, "bias must have shape (4,)"),
    _case("Conv2d(weight_mult=-1)", lambda: nk.Conv2d(W4, None, weight_mult=-1.0), ValueError, "weight_mult"),
    _case("Embedding(weight 1-d)", lambda: nk.Embedding(torch.zeros(3)), ValueError, "weight must have shape"),
    _case(
        "LayerNorm(bias shape)",
        lambda: nk.LayerNorm(torch.ones(3), torch.zeros(4)),
        ValueError,
        "bias must have shape (3,)",
    ),
    _case(
        "SelfAttention(n_heads=4,d=6)",
        lambda: nk.SelfAttention(*(nk.Linear(torch.zeros(6, 6), None) for _ in range(4)), n_heads=4),
        ValueError,
        "n_heads (4) must divide",
    ),
    _case(
        "CNN(x channels)",
        lambda: F64_CNN(torch.zeros(2, 4, 5, 5, dtype=F64)),
        ValueError,
        "x must have shape (N, 3, size, size)",
    ),
    _case(
        "CNN(x float32)",
        lambda: F64_CNN(torch.zeros(2, 3, 5, 5)),
        ValueError,
        "x must match the model's parameters (torch.float64 on cpu), got torch.float32 on cpu",
    ),
    _case(
        "CNN(x int64)",
        lambda: F64_CNN(torch.zeros(2, 3, 5, 5, dtype=torch.long)),
        TypeError,
        "x must be a floating-point tensor of the model's dtype",
    ),
    _case("CNN(x 3-d)", lambda: F64_CNN(torch.zeros(3, 5, 5, dtype=F64)), ValueError, "x must have shape"),
    _case("CNN(x list)", lambda: F64_CNN([[1.0]]), TypeError, "x must be a torch.Tensor"),
    _case("CNN(x empty batch)", lambda: F64_CNN(torch.zeros(0, 3, 5, 5, dtype=F64)), ValueError, "N >= 1"),
    _case(
        "CNN(flatten,x size)",
        lambda: FLAT_CNN(torch.zeros(2, 3, 5, 6, dtype=F64)),
        ValueError,
        "x must have shape (N, 3, 6, 6)",
    ),
    _case(
        "CNN(x too small)",
        lambda: VALID_CNN(torch.zeros(2, 3, 4, 4, dtype=F64)),
        ValueError,
        "x has images of size (4, 4), too small",
    ),
    _case("ResNet(x features)", lambda: DENSE(torch.zeros(2, 4, dtype=F64)), ValueError, "x must have shape (N, 3)"),
    _case("Transformer(x float)", lambda: TOKENS(torch.zeros(2, 3, dtype=F64)), TypeError, "x must hold integer"),
    _case("Transformer(x bool)", lambda: TOKENS(torch.zeros(2, 3, dtype=torch.bool)), TypeError, "x must hold integer"),
    _case("Transformer(x id 5)", lambda: TOKENS(torch.tensor([[0, 5]])), ValueError, "token ids in [0, 5)"),
    _case("Transformer(x id -1)", lambda: TOKENS(torch.tensor([[-1, 2]])), ValueError, "values in [-1, 2]"),
    _case(
        "Transformer(x too long)",
        lambda: TOKENS(torch.zeros(1, 5, dtype=torch.long)),
        ValueError,
        "at most max_len=4 positions",
    ),
    _case(
        "Transformer(x features)",
        lambda: SEQUENCES(torch.zeros(2, 3, 4, dtype=F64)),
        ValueError,
        "x must have shape (N, size, 3)",
    ),
    _case(
        "double(CNN single head)",
        lambda: nk.double_last_layer(nk.CNN(3, [4], generator=_gen(0))),
        ValueError,
        "head_width",
    ),
    _case(
        "double(nn.Conv2d)",
        lambda: nk.double_last_layer(nn.Conv2d(1, 1, 1)),
        TypeError,
        "mlp must be an ntkcheck.MLP, CNN, ResNet or Transformer",
    ),
]


@pytest.mark.parametrize("call, error, fragment", CASES)
def test_bad_argument_is_refused_by_name(call, error, fragment):
    with pytest.raises(error, match=re.escape(fragment)):
        call()
