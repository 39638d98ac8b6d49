"""CNN, ResNet and Transformer: what each layer computes, how it is drawn and scaled, what is refused,
and the zero-output transforms on every family (kernels from torch.func Jacobians, seed 000 Thm 9 / Thm 10)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap
from torch.nn import functional

import ntkcheck as nk

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@dataclass(frozen=True)
class Family:
    name: str
    build: Callable[..., nn.Module]  # keyword arguments: generator, dtype, head_width (None: no head_width)
    inputs: Callable[[torch.Generator, torch.dtype], torch.Tensor]


def _images(*shape: int) -> Callable[[torch.Generator, torch.dtype], torch.Tensor]:
    return lambda gen, dtype: torch.randn(*shape, generator=gen, dtype=dtype)


def _tokens(vocab: int, *shape: int) -> Callable[[torch.Generator, torch.dtype], torch.Tensor]:
    return lambda gen, dtype: torch.randint(0, vocab, shape, generator=gen)


def _kw(head_width: int | None, **kwargs: object) -> dict[str, object]:
    return kwargs if head_width is None else {**kwargs, "head_width": head_width}


FAMILIES = [
    Family(
        "mlp",
        lambda head_width=None, **kw: nk.MLP(3, [6, 5] if head_width is None else [6, head_width], 2, **kw),
        _images(4, 3),
    ),
    Family("cnn-gap", lambda head_width=None, **kw: nk.CNN(3, [4, 5], 2, **_kw(head_width, **kw)), _images(4, 3, 6, 5)),
    Family(
        "cnn-flatten",
        lambda head_width=None, **kw: nk.CNN(
            2,
            [4],
            2,
            readout="flatten",
            image_size=(6, 5),
            stride=2,
            padding=1,
            dilation=(1, 2),
            activation="tanh",
            **_kw(head_width, **kw),
        ),
        _images(4, 2, 6, 5),
    ),
    Family(
        "resnet-dense",
        lambda head_width=None, **kw: nk.ResNet(6, 2, 2, in_features=3, post_activation=True, **_kw(head_width, **kw)),
        _images(4, 3),
    ),
    Family(
        "resnet-conv",
        lambda head_width=None, **kw: nk.ResNet(4, 2, 2, in_channels=2, activation="softplus", **_kw(head_width, **kw)),
        _images(4, 2, 5, 4),
    ),
    Family(
        "transformer-tokens",
        lambda head_width=None, **kw: nk.Transformer(8, 2, 2, 10, 2, vocab_size=9, max_len=6, **_kw(head_width, **kw)),
        _tokens(9, 4, 5),
    ),
    Family(
        "transformer-features",
        lambda head_width=None, **kw: nk.Transformer(
            8,
            4,
            1,
            6,
            2,
            in_features=3,
            positional="none",
            norm="post",
            readout="first",
            qk_scaling="linear",
            activation="tanh",
            **_kw(head_width, **kw),
        ),
        _images(4, 5, 3),
    ),
]
IDS = [f.name for f in FAMILIES]


def _model_and_x(family: Family, seed: int = 0, dtype: torch.dtype = F64, **kwargs: object):
    model = family.build(generator=_gen(seed), dtype=dtype, **kwargs)
    return model, family.inputs(_gen(seed + 100), dtype)


def _jacobians(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per trainable parameter, d f_o(x_n) / d theta as (N, O, P_param): torch.func, no ntkcheck kernel code."""
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}

    def f(p: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
        return functional_call(model, p, (xi.unsqueeze(0),)).squeeze(0)

    jac = vmap(jacrev(f), in_dims=(None, 0))(params, x)
    return {n: j.reshape(j.shape[0], j.shape[1], -1) for n, j in jac.items()}


def _kernel(jac: dict[str, torch.Tensor]) -> torch.Tensor:
    """J J^T as (N, N, O, O)."""
    j = torch.cat(list(jac.values()), dim=-1)
    return torch.einsum("nop,mqp->nmoq", j, j)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


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


# ---- parametrizations -----------------------------------------------------------------------------------

SCALING = {
    "cnn": (lambda w, gen: nk.CNN(3, [w, w], 2048, generator=gen), _images(6, 3, 5, 5)),
    "resnet-dense": (lambda w, gen: nk.ResNet(w, 2, 2048, in_features=4, generator=gen), _images(6, 4)),
    "resnet-conv": (
        lambda w, gen: nk.ResNet(w, 2, 2048, in_channels=3, kernel_size=1, generator=gen),
        _images(6, 3, 4, 4),
    ),
    "transformer": (
        lambda w, gen: nk.Transformer(w, 4, 1, w, 2048, vocab_size=11, max_len=5, generator=gen),
        _tokens(11, 6, 5),
    ),
}


@pytest.mark.parametrize("name", list(SCALING))
def test_ntk_parametrization_keeps_the_output_variance_order_one(name):
    """E f(x)^2 at init changes by less than 1.5x from width 64 to 1024 (measured: 0.98-1.09); a missing
    1/sqrt(fan_in) would multiply it by 16 per layer.  The mean runs over 6 inputs, 2048 outputs (iid given
    the last features) and 16 seeds at width 64 / 2 at width 1024, where the features have concentrated."""
    build, inputs = SCALING[name]
    x = inputs(_gen(0), torch.float32)
    with torch.no_grad():
        second = {
            w: float(torch.stack([build(w, _gen(s))(x) for s in range(seeds)]).square().mean())
            for w, seeds in ((64, 16), (1024, 2))
        }
    ratio = second[1024] / second[64]
    assert 0.01 < second[64] < 100
    assert 1 / 1.5 < ratio < 1.5, f"E f^2: {second}"


@pytest.mark.parametrize("family", FAMILIES, ids=IDS)
def test_standard_and_ntk_agree_at_init_with_gradients_apart_by_the_multiplier(family):
    """Same raw draw: standard (fan_in init) stores c * W where ntk stores W and multiplies by c, so the
    functions agree and d f / d W_ntk = c * d f / d W_standard for every parameter."""
    kw = dict(weight_std=1.7, bias_std=0.4)
    ntk, x = _model_and_x(family, **kw)
    std = family.build(generator=_gen(0), dtype=F64, parametrization="standard", **kw)
    torch.testing.assert_close(std(x), ntk(x), rtol=1e-12, atol=1e-12)
    g_ntk = torch.autograd.grad(ntk(x).sum(), list(ntk.parameters()))
    g_std = torch.autograd.grad(std(x).sum(), list(std.parameters()))
    modules = dict(ntk.named_modules())
    scaled = 0
    for (name, _), a, b in zip(ntk.named_parameters(), g_ntk, g_std):
        owner, _, kind = name.rpartition(".")
        mult = getattr(modules[owner], f"{kind}_mult")
        torch.testing.assert_close(a, mult * b, rtol=1e-10, atol=1e-12)
        scaled += mult != 1.0
    assert scaled > 0


def test_standard_glorot_draws_every_parameter_at_the_glorot_scale():
    model = nk.CNN(40, [60], parametrization="standard", init="glorot", weight_std=2.0, generator=_gen(10), dtype=F64)
    conv = model.convs[0]
    expected = 2.0 * math.sqrt(2 / (40 * 9 + 60 * 9))
    assert conv.weight_mult == 1.0 and abs(float(conv.weight.detach().std()) / expected - 1) < 0.02
    assert abs(float(conv.bias.detach().std()) / expected - 1) < 0.3


def test_embeddings_draw_weight_std_in_both_parametrizations():
    ntk = nk.Transformer(16, 2, 1, 8, vocab_size=4000, max_len=2, weight_std=2.0, generator=_gen(11), dtype=F64)
    std = nk.Transformer(
        16,
        2,
        1,
        8,
        vocab_size=4000,
        max_len=2,
        weight_std=2.0,
        parametrization="standard",
        generator=_gen(11),
        dtype=F64,
    )
    assert ntk.embed.weight_mult == 2.0 and std.embed.weight_mult == 1.0
    assert abs(float(ntk.embed.weight.detach().std()) - 1) < 0.02
    torch.testing.assert_close(std.embed.weight, 2.0 * ntk.embed.weight)


# ---- randomness, dtypes, rebuilding ----------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES, ids=IDS)
def test_parameters_come_from_the_generator_only(family):
    state = torch.random.get_rng_state()
    a = family.build(generator=_gen(3), dtype=F64)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG was not touched
    torch.manual_seed(123)  # nor read
    b = family.build(generator=_gen(3), dtype=F64)
    c = family.build(generator=_gen(4), dtype=F64)
    pa, pb, pc = (dict(m.named_parameters()) for m in (a, b, c))
    assert all(torch.equal(pa[n], pb[n]) for n in pa)
    assert any(not torch.equal(pa[n], pc[n]) for n in pa)


@pytest.mark.parametrize("family", FAMILIES, ids=IDS)
def test_no_parameter_is_tied(family):
    model = family.build(generator=_gen(0))
    every = [p for _, p in model.named_parameters(remove_duplicate=False)]
    assert len(every) == len(list(model.parameters()))
    assert len({p.data_ptr() for p in every}) == len(every)


@pytest.mark.parametrize("family", FAMILIES, ids=IDS)
def test_float32_and_float64_compute_the_same_function(family):
    """A float32 network and its float64 cast agree to float32 precision; dtype names build torch dtypes."""
    m32, x32 = _model_and_x(family, dtype=torch.float32)
    m64 = family.build(generator=_gen(0), dtype=F64)
    m64.load_state_dict({n: p.double() for n, p in m32.state_dict().items()})
    x64 = x32 if not x32.is_floating_point() else x32.double()
    assert all(p.dtype == torch.float32 for p in m32.parameters())
    out32, out64 = m32(x32), m64(x64)
    assert out32.dtype == torch.float32 and out64.dtype == F64
    assert float(out64.detach().abs().max()) > 0
    torch.testing.assert_close(out32.double(), out64, rtol=1e-4, atol=1e-5)
    by_name = family.build(generator=_gen(0), dtype="float64")
    assert all(p.dtype == F64 for p in by_name.parameters())
    assert all(
        torch.equal(p, q) for p, q in zip(by_name.parameters(), family.build(generator=_gen(0), dtype=F64).parameters())
    )


@pytest.mark.parametrize("family", FAMILIES[1:], ids=IDS[1:])
def test_reinitialized_and_spec_rebuild_the_architecture(family):
    model, x = _model_and_x(family)
    fresh = model.reinitialized(_gen(5))
    again = model.reinitialized(_gen(5))
    assert fresh.spec() == model.spec()
    assert all(torch.equal(p, q) for p, q in zip(fresh.parameters(), again.parameters()))
    assert all(p.dtype == F64 for p in fresh.parameters())
    shapes = [(n, tuple(p.shape)) for n, p in model.named_parameters()]
    rebuilt = eval(model.spec(), {"ntkcheck": nk})
    assert [(n, tuple(p.shape)) for n, p in rebuilt.named_parameters()] == shapes
    assert fresh(x).shape == model(x).shape


# ---- zero-output transforms on every family --------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES, ids=IDS)
def test_asi_output_is_zero_and_its_kernel_is_the_models(family):
    """seed 000 Thm 4 / Thm 9: h_ASI = 0 at init and k_ASI = k, over the trainable parameters."""
    model, x = _model_and_x(family)
    net = nk.asi(model)
    assert float(model(x).detach().abs().max()) > 0
    assert float(net(x).detach().abs().max()) == 0.0
    k = _kernel(_jacobians(model, x))
    assert float(k.abs().max()) > 0
    assert _rel(_kernel(_jacobians(net, x)), k) <= 1e-10


@pytest.mark.parametrize("family", FAMILIES, ids=IDS)
def test_rnd_redraws_the_second_branch_from_the_model_init(family):
    model, x = _model_and_x(family)
    net = nk.rnd(model, _gen(7))
    fresh = model.reinitialized(_gen(7))
    assert all(torch.equal(p, q) for p, q in zip(net.minus.parameters(), fresh.parameters()))
    assert all(torch.equal(p, q) for p, q in zip(net.plus.parameters(), model.parameters()))
    torch.testing.assert_close(net(x), nk.models.transforms.ASI_SCALE * (model(x) - fresh(x)), rtol=1e-14, atol=0)
    assert float(net(x).detach().abs().max()) > 0


@pytest.mark.parametrize("family", FAMILIES, ids=IDS)
def test_double_last_layer_zeroes_the_body_kernels_and_doubles_the_head_kernels(family):
    """seed 000 Thm 10: output 0; per-parameter kernels 0 below W^[L-1], doubled for W^[L-1], b^[L-1], W^[L]."""
    model, x = _model_and_x(family, head_width=5)
    doubled = nk.double_last_layer(model)
    assert float(doubled(x).detach().abs().max()) <= 1e-12 * float(model(x).detach().abs().max())
    original = {n: torch.einsum("nop,mqp->nmoq", j, j) for n, j in _jacobians(model, x).items()}
    per = {n: torch.einsum("nop,mqp->nmoq", j, j) for n, j in _jacobians(doubled, x).items()}
    scale = float(_kernel(_jacobians(model, x)).abs().max())
    names = list(per)
    top = names[-3:]  # W^[L-1], b^[L-1], W^[L] (the doubled output layer has no bias)
    assert [n.rpartition(".")[2] for n in top] == ["weight", "bias", "weight"]
    for name in top:
        assert _rel(per[name], 2 * original[name]) <= 1e-10, name
    for name in names[:-3]:
        assert float(per[name].abs().max()) <= 1e-12 * scale, name
    assert len(names[:-3]) >= 2


def test_double_last_layer_doubles_a_head_width():
    model = nk.ResNet(6, 1, 2, in_features=3, head_width=4, generator=_gen(0))
    doubled = nk.double_last_layer(model)
    assert doubled.head_width == 8 and doubled.head.layers[0].weight.shape == (8, 6)
    assert doubled.head.layers[1].bias is None
    assert doubled.head.layers[1].weight_mult == model.head.layers[1].weight_mult
    assert "head_width=8" in doubled.spec()


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
