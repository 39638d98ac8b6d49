"""Networks and zero-output transforms: what each layer computes, how it is drawn, what is refused."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import ntkcheck as nk


@pytest.fixture(autouse=True)
def _forward_only():
    """These tests only run forward passes; read outputs as plain numbers."""
    with torch.no_grad():
        yield


def test_ntk_layer_computes_scaled_affine_map():
    """parametrization='ntk': weight_std/sqrt(fan_in) * W a + bias_std * b (seed 001 eq (1))."""
    gen = torch.Generator().manual_seed(0)
    model = nk.MLP(5, [7], 2, activation="tanh", weight_std=1.5, bias_std=0.3, generator=gen, dtype=torch.float64)
    x = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    l1, l2 = model.layers
    h = torch.tanh(1.5 / math.sqrt(5) * x @ l1.weight.T + 0.3 * l1.bias)
    expected = 1.5 / math.sqrt(7) * h @ l2.weight.T + 0.3 * l2.bias
    torch.testing.assert_close(model(x), expected, rtol=1e-14, atol=1e-14)


def test_ntk_raw_parameters_are_standard_normal():
    model = nk.MLP(200, [300], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    w = model.layers[0].weight.detach()
    assert abs(float(w.mean())) < 0.01 and abs(float(w.std()) - 1.0) < 0.01


def test_standard_glorot_is_seed000_init():
    """init='glorot': every parameter ~ N(0, v_std^2 * 2/(fan_in + fan_out)) (seed 000 §7)."""
    model = nk.MLP(
        300,
        [500],
        parametrization="standard",
        init="glorot",
        weight_std=5.0,
        generator=torch.Generator().manual_seed(2),
        dtype=torch.float64,
    )
    layer = model.layers[0].requires_grad_(False)
    expected = 5.0 * math.sqrt(2 / 800)
    assert layer.weight_mult == 1.0 and layer.bias_mult == 1.0
    assert abs(float(layer.weight.std()) / expected - 1) < 0.01
    assert abs(float(layer.bias.std()) / expected - 1) < 0.1


def test_standard_fan_in_is_he_lecun_init():
    model = nk.MLP(
        400,
        [600],
        parametrization="standard",
        weight_std=math.sqrt(2),
        bias_std=0.0,
        generator=torch.Generator().manual_seed(3),
        dtype=torch.float64,
    )
    layer = model.layers[0].requires_grad_(False)
    assert abs(float(layer.weight.std()) / math.sqrt(2 / 400) - 1) < 0.01
    assert float(layer.bias.abs().max()) == 0.0


@pytest.mark.parametrize("name", list(nk.ACTIVATIONS))
def test_every_activation_runs_and_is_applied(name):
    gen = torch.Generator().manual_seed(4)
    model = nk.MLP(2, [3], activation=name, generator=gen, dtype=torch.float64)
    x = torch.randn(5, 2, generator=gen, dtype=torch.float64)
    l1, l2 = model.layers
    phi = nk.ACTIVATIONS[name]
    torch.testing.assert_close(model(x), l2(phi(l1(x))))


def test_same_generator_seed_same_network():
    a = nk.MLP(3, [4, 4], generator=torch.Generator().manual_seed(9))
    b = nk.MLP(3, [4, 4], generator=torch.Generator().manual_seed(9))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(widths=[4, 0]), ValueError, r"widths\[1\] must be an int >= 1"),
        (dict(widths=4), TypeError, "widths must be a sequence"),
        (dict(activation="swish"), ValueError, "activation must be one of"),
        (dict(parametrization="mup"), ValueError, "parametrization must be one of"),
        (dict(in_features=0), ValueError, "in_features must be an int >= 1"),
        (dict(out_features=1.5), TypeError, "out_features must be an int"),
        (dict(weight_std=float("nan")), ValueError, "weight_std must be a finite float"),
        (dict(bias_std=-1.0), ValueError, "bias_std must be a finite float >= 0"),
        (dict(init="glorot"), ValueError, "init='glorot' applies to parametrization='standard'"),
        (dict(generator=3), TypeError, "generator must be a torch.Generator"),
    ],
)
def test_bad_constructor_arguments_are_named(kwargs, error, match):
    args = dict(in_features=3, widths=[4])
    args.update(kwargs)
    with pytest.raises(error, match=match):
        nk.MLP(args.pop("in_features"), args.pop("widths"), **args)


def test_forward_rejects_wrong_feature_count():
    model = nk.MLP(3, [4])
    with pytest.raises(ValueError, match=r"x must have shape \(N, 3\)"):
        model(torch.zeros(2, 4))


# ---- transforms ---------------------------------------------------------------------------------


def test_asi_output_is_exactly_zero_and_parameters_trainable():
    gen = torch.Generator().manual_seed(5)
    model = nk.MLP(3, [6, 6], 2, generator=gen, dtype=torch.float64)
    net = nk.asi(model)
    x = torch.randn(8, 3, generator=gen, dtype=torch.float64)
    assert float(net(x).abs().max()) == 0.0
    assert float(model(x).abs().max()) > 0
    assert all(p.requires_grad for p in net.parameters())
    assert sum(p.numel() for p in net.parameters()) == 2 * sum(p.numel() for p in model.parameters())
    # the branches are copies: training one does not move the original
    with torch.no_grad():
        net.plus.layers[0].weight.add_(1.0)
    assert not torch.equal(net.plus.layers[0].weight, model.layers[0].weight)


def test_asi_of_arbitrary_module():
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 4, 1)).double()
    x = torch.randn(5, 1, 6, dtype=torch.float64)
    assert float(nk.asi(conv)(x).abs().max()) == 0.0


def test_rnd_redraws_second_branch_reproducibly():
    gen = torch.Generator().manual_seed(6)
    model = nk.MLP(3, [6], generator=gen, dtype=torch.float64)
    a = nk.rnd(model, torch.Generator().manual_seed(1))
    b = nk.rnd(model, torch.Generator().manual_seed(1))
    x = torch.randn(8, 3, generator=gen, dtype=torch.float64)
    assert float(a(x).abs().max()) > 0
    torch.testing.assert_close(a(x), b(x))
    assert torch.equal(a.plus.layers[0].weight, model.layers[0].weight)
    assert not torch.equal(a.minus.layers[0].weight, model.layers[0].weight)


def test_rnd_of_generic_module_uses_reset_parameters():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1)).double()
    a = nk.rnd(net, torch.Generator().manual_seed(3))
    assert not torch.equal(a.minus[0].weight, net[0].weight)


def test_double_last_layer_structure():
    """seed 000 §12: W'[L] = (W, -W), W'[L-1] = (W; W), b'[L-1] = (b; b), no output bias."""
    gen = torch.Generator().manual_seed(7)
    model = nk.MLP(3, [5, 4], generator=gen, dtype=torch.float64)
    d = nk.double_last_layer(model)
    assert d.widths == (5, 8)
    torch.testing.assert_close(d.layers[1].weight, torch.cat([model.layers[1].weight] * 2))
    torch.testing.assert_close(d.layers[1].bias, torch.cat([model.layers[1].bias] * 2))
    torch.testing.assert_close(d.layers[2].weight, torch.cat([model.layers[2].weight, -model.layers[2].weight], 1))
    assert d.layers[2].bias is None
    assert d.layers[2].weight_mult == model.layers[2].weight_mult
    x = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    assert float(d(x).abs().max()) <= 1e-12 * float(model(x).abs().max() + 1)


def test_double_last_layer_needs_an_mlp_with_hidden_layers():
    with pytest.raises(TypeError, match="mlp must be an ntkcheck.MLP"):
        nk.double_last_layer(nn.Linear(2, 1))
    with pytest.raises(ValueError, match="at least one hidden layer"):
        nk.double_last_layer(nk.MLP(2, []))


def test_merge_branches_rejects_foreign_names():
    with pytest.raises(ValueError, match="per_param key 'layers.0.weight'"):
        nk.merge_branches({"layers.0.weight": torch.zeros(1)})


# ---- dtype and device -----------------------------------------------------------------------------


@pytest.mark.parametrize("name, dtype", [("float32", torch.float32), ("float64", torch.float64)])
def test_dtype_by_name_is_the_torch_dtype(name, dtype):
    """dtype='float64' builds the network dtype=torch.float64 builds, draw for draw."""
    by_name = nk.MLP(3, [4], dtype=name, generator=torch.Generator().manual_seed(0))
    by_dtype = nk.MLP(3, [4], dtype=dtype, generator=torch.Generator().manual_seed(0))
    assert all(p.dtype == dtype for p in by_name.parameters())
    assert all(torch.equal(p, q) for p, q in zip(by_name.parameters(), by_dtype.parameters()))


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64, "int64", float])
def test_non_floating_dtype_refused(dtype):
    with pytest.raises((TypeError, ValueError), match="dtype must be"):
        nk.MLP(3, [4], dtype=dtype)


def test_integer_dtype_is_a_type_error():
    with pytest.raises(TypeError, match=r"dtype must be a floating dtype.*torch\.int64"):
        nk.MLP(3, [4], dtype=torch.int64)


def test_unavailable_device_refused_with_the_available_ones():
    missing = f"cuda:{torch.cuda.device_count()}"  # one past the last CUDA device: never present
    with pytest.raises(ValueError, match=rf"device '{missing}' is not available.*available here: \['cpu'"):
        nk.MLP(3, [4], device=missing)


def test_device_that_is_no_device_name_refused():
    with pytest.raises(ValueError, match="device 'gpu' is not a device name"):
        nk.MLP(3, [4], device="gpu")


def test_sequence_cnn_computes_conv1d_stack():
    """dims=1: Conv1d layers on (N, C, L), activation after each, then the readout and the head."""
    gen = torch.Generator().manual_seed(3)
    model = nk.CNN(
        2,
        [4],
        kernel_size=3,
        stride=2,
        padding="valid",
        readout="flatten",
        image_size=9,
        dims=1,
        activation="tanh",
        weight_std=1.2,
        bias_std=0.4,
        generator=gen,
        dtype=torch.float64,
    )
    x = torch.randn(3, 2, 9, generator=gen, dtype=torch.float64)
    conv, head = model.convs[0], model.head.layers[0]
    assert isinstance(conv, nk.models.Conv1d) and model.in_shape == (2, 9)
    h = torch.tanh(torch.nn.functional.conv1d(x, 1.2 / math.sqrt(6) * conv.weight, 0.4 * conv.bias, stride=2))
    expected = 1.2 / math.sqrt(16) * h.flatten(1) @ head.weight.T + 0.4 * head.bias
    torch.testing.assert_close(model(x), expected, rtol=1e-14, atol=1e-14)
    rebuilt = eval(model.spec(), {"ntkcheck": nk})
    assert rebuilt.in_shape == model.in_shape and isinstance(rebuilt.convs[0], nk.models.Conv1d)


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_resnet_layer_norm_placement(norm):
    """norm='pre': h + s branch(LN(h)) and a final LN; 'post': LN(h + s branch(h)); LN over the channels."""
    gen = torch.Generator().manual_seed(4)
    model = nk.ResNet(
        6, 1, in_channels=2, dims=1, kernel_size=3, norm=norm, activation="erf", generator=gen, dtype=torch.float64
    )
    for p in model.parameters():  # gains and biases away from 1 and 0, so their place shows
        p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    x = torch.randn(3, 2, 5, generator=gen, dtype=torch.float64)
    block = model.residual[0]

    def ln(module, h):  # over the channels (dim 1) at each position
        return torch.nn.functional.layer_norm(
            h.transpose(1, 2), (6,), module.weight, module.bias, module.eps
        ).transpose(1, 2)

    h = model.stem(x)
    if norm == "pre":
        h = ln(model.final_norm, h + block.scale * block.second(torch.erf(block.first(ln(block.norm, h)))))
    else:
        h = ln(block.norm, h + block.scale * block.second(torch.erf(block.first(h))))
    torch.testing.assert_close(model(x), model.head(h.mean(-1)), rtol=1e-14, atol=1e-14)
    assert (model.final_norm is None) == (norm == "post")


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(cls="CNN", dims=3), ValueError, "dims must be 1"),
        (dict(cls="ResNet", in_features=3, dims=1), ValueError, "dims applies to convolutional"),
        (dict(cls="ResNet", in_features=3, norm="layer"), ValueError, "norm"),
    ],
)
def test_new_family_options_are_checked(kwargs, error, match):
    kwargs = dict(kwargs)
    cls = getattr(nk, kwargs.pop("cls"))
    args = (2, [4]) if cls is nk.CNN else (4, 1)
    with pytest.raises(error, match=match):
        cls(*args, **kwargs)
