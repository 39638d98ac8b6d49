"""Zero-output transforms keep the original's frozen parameters frozen (seed 000 Thm 9 / Thm 10)."""

from __future__ import annotations

import torch
from torch import nn

import ntkcheck as nk


def _frozen_mlp(seed: int = 0) -> nk.MLP:
    model = nk.MLP(3, [8, 8], 2, activation="tanh", generator=torch.Generator().manual_seed(seed),
                   dtype=torch.float64)
    model.layers[0].requires_grad_(False)
    model.layers[1].requires_grad_(False)
    return model


def _flags(module: nn.Module) -> dict[str, bool]:
    return {name: p.requires_grad for name, p in module.named_parameters()}


def test_asi_keeps_frozen_layers_frozen_in_both_branches():
    model = _frozen_mlp()
    net = nk.asi(model)
    assert _flags(net.plus) == _flags(model)
    assert _flags(net.minus) == _flags(model)


def test_asi_kernel_equals_original_with_frozen_layers():
    """Thm 9's 1/2 k + 1/2 k sums over the trainable parameters only: with frozen lower layers
    the ASI kernel is still the original's (an unfrozen copy would add the lower layers' kernels)."""
    model = _frozen_mlp()
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    k = nk.ntk(model, x)
    torch.testing.assert_close(nk.ntk(nk.asi(model), x), k, rtol=1e-10, atol=1e-12 * float(k.abs().max()))
    merged = nk.merge_branches(nk.ntk(nk.asi(model), x, per_layer=True))
    assert set(merged) == {"layers.2.weight", "layers.2.bias"}


def test_rnd_keeps_the_freezing_pattern_and_redraws_frozen_layers():
    model = _frozen_mlp()
    net = nk.rnd(model, torch.Generator().manual_seed(2))
    assert _flags(net.plus) == _flags(model)
    assert _flags(net.minus) == _flags(model)
    assert not torch.equal(net.minus.layers[0].weight, model.layers[0].weight)


def test_rnd_of_generic_module_keeps_the_freezing_pattern():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    net[0].requires_grad_(False)
    a = nk.rnd(net, torch.Generator().manual_seed(3))
    assert _flags(a.minus) == _flags(net)
    assert _flags(a.plus) == _flags(net)


def test_double_last_layer_keeps_the_freezing_pattern():
    model = _frozen_mlp()
    doubled = nk.double_last_layer(model)
    assert not doubled.layers[0].weight.requires_grad
    assert not doubled.layers[1].weight.requires_grad and not doubled.layers[1].bias.requires_grad
    assert doubled.layers[2].weight.requires_grad
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    per = nk.ntk(doubled, x, per_layer=True)
    assert set(per) == {"layers.2.weight"}
    original = nk.ntk(model, x, per_layer=True)
    torch.testing.assert_close(per["layers.2.weight"], 2 * original["layers.2.weight"])


def test_transforms_do_not_freeze_trainable_parameters():
    model = nk.MLP(2, [4], generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    for net in (nk.asi(model), nk.rnd(model, torch.Generator().manual_seed(6)), nk.double_last_layer(model)):
        assert all(p.requires_grad for p in net.parameters())
