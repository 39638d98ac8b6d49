"""CNN, ResNet and Transformer: their shapes and what each layer computes."""

from __future__ import annotations

import math

import pytest
import torch
from _family_models import F64, FAMILIES, IDS, _gen, _model_and_x
from torch.nn import functional

import ntkcheck as nk

# ---- shapes and attributes -------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES, ids=IDS)
def test_output_shape_and_declared_input_shape(family):
    model, x = _model_and_x(family)
    assert model(x).shape == (x.shape[0], 2) and model.out_features == 2
    assert len(model.in_shape) == x.ndim - 1
    assert all(s is None or s == n for s, n in zip(model.in_shape, x.shape[1:]))


def test_in_shape_fixes_what_an_image_size_fixes():
    assert nk.CNN(3, [4]).in_shape == (3, None, None)
    assert nk.CNN(3, [4], readout="flatten", image_size=8).in_shape == (3, 8, 8)
    assert nk.ResNet(4, 1, in_channels=2, image_size=(5, 6)).in_shape == (2, 5, 6)
    assert nk.Transformer(8, 2, 1, 8, vocab_size=5, max_len=3).in_shape == (None,)
    assert nk.Transformer(8, 2, 1, 8, in_features=3, positional="none").in_shape == (None, 3)
    assert nk.MLP(3, [4]).in_shape == (3,)


# ---- what the layers compute --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stride, padding, dilation, groups",
    [
        (1, 0, 1, 1),
        (2, 1, 1, 1),
        (1, "same", 2, 1),
        (2, (2, 0), (1, 2), 2),
        (1, "valid", 1, 4),
        (3, 2, 2, 2),
    ],
)
def test_conv2d_is_functional_conv_times_the_multipliers(stride, padding, dilation, groups):
    gen = _gen(1)
    w = torch.randn(8, 4 // groups, 3, 2, generator=gen, dtype=F64)
    b = torch.randn(8, generator=gen, dtype=F64)
    x = torch.randn(3, 4, 9, 8, generator=gen, dtype=F64)
    layer = nk.Conv2d(
        w, b, weight_mult=0.37, bias_mult=1.9, stride=stride, padding=padding, dilation=dilation, groups=groups
    )
    expected = 0.37 * functional.conv2d(x, w, None, stride, padding, dilation, groups) + 1.9 * b[:, None, None]
    out = layer(x)
    torch.testing.assert_close(out, expected, rtol=1e-13, atol=1e-13)
    assert tuple(out.shape[-2:]) == layer.output_size((9, 8))
    assert layer.in_channels == 4 and layer.out_channels == 8 and layer.kernel_size == (3, 2)


def test_conv1d_is_functional_conv_times_the_multipliers():
    gen = _gen(2)
    w, b = torch.randn(5, 3, 4, generator=gen, dtype=F64), torch.randn(5, generator=gen, dtype=F64)
    x = torch.randn(2, 3, 11, generator=gen, dtype=F64)
    layer = nk.Conv1d(w, b, weight_mult=0.5, bias_mult=0.2, stride=2, padding=3, dilation=2)
    torch.testing.assert_close(
        layer(x), 0.5 * functional.conv1d(x, w, None, 2, 3, 2) + 0.2 * b[:, None], rtol=1e-13, atol=1e-13
    )


def test_linear_acts_on_the_last_dimension_of_any_rank():
    gen = _gen(3)
    w, b = torch.randn(4, 3, generator=gen, dtype=F64), torch.randn(4, generator=gen, dtype=F64)
    x = torch.randn(2, 5, 3, generator=gen, dtype=F64)
    layer = nk.Linear(w, b, weight_mult=0.7, bias_mult=0.3)
    torch.testing.assert_close(layer(x), 0.7 * torch.einsum("nti,oi->nto", x, w) + 0.3 * b)
    torch.testing.assert_close(layer(x)[1], layer(x[1]), rtol=1e-14, atol=1e-14)


def test_embedding_and_layer_norm_apply_their_multipliers():
    gen = _gen(4)
    table = torch.randn(6, 3, generator=gen, dtype=F64)
    ids = torch.tensor([[0, 5, 2], [2, 2, 1]])
    torch.testing.assert_close(nk.Embedding(table, weight_mult=1.5)(ids), 1.5 * table[ids])
    gain, shift = torch.randn(3, generator=gen, dtype=F64), torch.randn(3, generator=gen, dtype=F64)
    x = torch.randn(4, 3, generator=gen, dtype=F64)
    z = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5)
    layer = nk.LayerNorm(gain, shift, weight_mult=2.0, bias_mult=0.5)
    torch.testing.assert_close(layer(x), 2.0 * gain * z + 0.5 * shift)


@pytest.mark.parametrize("qk_scaling, scale", [("sqrt", 1 / math.sqrt(3)), ("linear", 1 / 3)])
def test_self_attention_is_scaled_dot_product_attention(qk_scaling, scale):
    gen = _gen(5)
    proj = [
        nk.Linear(
            torch.randn(6, 6, generator=gen, dtype=F64),
            torch.randn(6, generator=gen, dtype=F64),
            weight_mult=0.4,
            bias_mult=0.1,
        )
        for _ in range(4)
    ]
    attention = nk.SelfAttention(*proj, n_heads=2, qk_scaling=qk_scaling)
    x = torch.randn(3, 4, 6, generator=gen, dtype=F64)
    q, k, v = (p(x).reshape(3, 4, 2, 3).transpose(1, 2) for p in proj[:3])
    mixed = functional.scaled_dot_product_attention(q, k, v, scale=scale).transpose(1, 2).reshape(3, 4, 6)
    torch.testing.assert_close(attention(x), proj[3](mixed), rtol=1e-12, atol=1e-12)
    assert attention.logit_scale == pytest.approx(scale, rel=1e-15)


def test_cnn_is_its_convolutions_readout_and_head():
    gen = _gen(6)
    model = nk.CNN(2, [3, 4], 2, weight_std=1.3, bias_std=0.2, activation="tanh", generator=gen, dtype=F64)
    x = torch.randn(5, 2, 6, 6, generator=gen, dtype=F64)
    h = x
    for conv, fan_in in zip(model.convs, (2 * 9, 3 * 9)):
        assert conv.weight_mult == pytest.approx(1.3 / math.sqrt(fan_in)) and conv.bias_mult == 0.2
        h = torch.tanh(functional.conv2d(h, conv.weight * 1.3 / math.sqrt(fan_in), 0.2 * conv.bias, padding=1))
    head = model.head.layers[0]
    expected = h.mean(dim=(2, 3)) @ head.weight.T * 1.3 / 2 + 0.2 * head.bias
    torch.testing.assert_close(model(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("post_activation", [False, True])
def test_resnet_blocks_add_the_scaled_branch(post_activation):
    gen = _gen(7)
    model = nk.ResNet(5, 4, 1, in_features=3, post_activation=post_activation, generator=gen, dtype=F64)
    assert model.branch_scale == 0.5  # 1 / sqrt(blocks)
    x = torch.randn(6, 3, generator=gen, dtype=F64)
    h = model.stem(x)
    for block in model.residual:
        h = h + 0.5 * block.second(torch.relu(block.first(h)))
        h = torch.relu(h) if post_activation else h
    torch.testing.assert_close(model(x), model.head(h), rtol=1e-13, atol=1e-13)
    flat = nk.ResNet(5, 4, 1, in_features=3, branch_scale=0.0, generator=_gen(7), dtype=F64)
    torch.testing.assert_close(flat(x), flat.head(flat.stem(x)), rtol=0, atol=0)


def test_transformer_pre_norm_block_is_the_reference_computation():
    gen = _gen(8)
    model = nk.Transformer(6, 2, 1, 5, 2, vocab_size=7, max_len=4, generator=gen, dtype=F64)
    ids = torch.randint(0, 7, (3, 4), generator=gen)
    emb, pos, block = model.embed, model.position, model.blocks[0]
    assert emb.weight_mult == 1.0 and pos.weight_mult == 1.0
    h = emb.weight[ids] + pos.weight[:4]
    a = functional.layer_norm(h, (6,))  # gain 1, bias 0 at init
    q, k, v = (
        p(a).reshape(3, 4, 2, 3).transpose(1, 2) for p in (block.attention.q, block.attention.k, block.attention.v)
    )
    h = h + block.attention.out(functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(3, 4, 6))
    h = h + block.fc2(functional.gelu(block.fc1(functional.layer_norm(h, (6,)))))
    expected = model.head(functional.layer_norm(h, (6,)).mean(dim=1))
    torch.testing.assert_close(model(ids), expected, rtol=1e-12, atol=1e-12)


def test_layer_norms_start_at_gain_one_and_bias_zero():
    model = nk.Transformer(8, 2, 2, 8, vocab_size=5, max_len=3, generator=_gen(9))
    norms = [m for m in model.modules() if isinstance(m, nk.LayerNorm)]
    assert len(norms) == 5
    assert all(torch.equal(m.weight, torch.ones(8)) and torch.equal(m.bias, torch.zeros(8)) for m in norms)
