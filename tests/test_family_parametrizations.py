"""CNN, ResNet and Transformer: how each is drawn and scaled, randomness, dtypes and rebuilding, and the
zero-output transforms on every family (kernels from torch.func Jacobians, seed 000 Thm 9 / Thm 10)."""

from __future__ import annotations

import math

import pytest
import torch
from _family_models import F64, FAMILIES, IDS, _gen, _images, _model_and_x, _tokens
from torch import nn
from torch.func import functional_call, jacrev, vmap

import ntkcheck as nk


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
