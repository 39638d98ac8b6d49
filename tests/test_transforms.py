"""Zero-output transforms: frozen parameters stay frozen (seed 000 Thm 9 / Thm 10), both branches see the
same arguments and random numbers, and what they cannot transform is refused by name."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ntkcheck as nk


def _frozen_mlp(seed: int = 0) -> nk.MLP:
    model = nk.MLP(3, [8, 8], 2, activation="tanh", generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
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


# ---- randomness shared by the branches ----------------------------------------------------------


def _dropout_net(device: str = "cpu") -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Dropout(0.5), nn.Linear(16, 2)).double().to(device)


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")),
    ],
)
def test_asi_of_dropout_net_is_zero_in_train_mode(device):
    """ASI's h = 0 at init (seed 000 Thm 4) holds in train mode: both branches draw the same dropout mask."""
    model = _dropout_net(device).train()
    x = torch.randn(32, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to(device)
    torch.manual_seed(2)
    first, second = model(x), model(x)
    assert not torch.equal(first, second)  # dropout is active: two passes draw different masks
    net = nk.asi(model).train()
    assert float(net(x).detach().abs().max()) == 0.0


def test_asi_forward_consumes_the_rng_as_one_branch_does():
    """The global RNG leaves an ASI forward pass where one pass of the original leaves it."""
    model, x = _dropout_net().train(), torch.randn(8, 3, dtype=torch.float64)
    net = nk.asi(model).train()
    torch.manual_seed(3)
    expected_mask_output = model(x)
    after_model = torch.rand(4)
    torch.manual_seed(3)
    net(x)
    torch.testing.assert_close(torch.rand(4), after_model)
    torch.manual_seed(3)
    torch.testing.assert_close(net.plus(x), expected_mask_output)


def test_rnd_branches_share_the_dropout_mask():
    """RND's branches differ in their parameters only: with equal parameters its output would be 0."""
    model = _dropout_net().train()
    net = nk.rnd(model, torch.Generator().manual_seed(4)).train()
    x = torch.randn(8, 3, dtype=torch.float64)
    torch.manual_seed(5)
    out = net(x)
    torch.manual_seed(5)
    plus = net.plus(x)
    torch.manual_seed(5)
    minus = net.minus(x)
    torch.testing.assert_close(out, nk.models.transforms.ASI_SCALE * (plus - minus), rtol=0, atol=0)


# ---- branch shapes and arguments ------------------------------------------------------------------


def test_antisymmetric_refuses_branches_of_different_out_features():
    with pytest.raises(ValueError, match=r"plus and minus must have the same in/out features.*3 -> 1.*3 -> 2"):
        nk.AntiSymmetric(nk.MLP(3, [4], 1), nk.MLP(3, [4], 2))


def test_antisymmetric_refuses_outputs_of_different_shapes_at_forward():
    net = nk.AntiSymmetric(nn.Sequential(nk.MLP(3, [4], 1)), nn.Sequential(nk.MLP(3, [4], 2)))
    with pytest.raises(ValueError, match=r"plus and minus must return outputs of one shape.*\(6, 1\).*\(6, 2\)"):
        net(torch.randn(6, 3))


def test_antisymmetric_refuses_one_module_in_both_branches():
    model = nk.MLP(3, [4])
    with pytest.raises(ValueError, match="plus and minus must be distinct modules"):
        nk.AntiSymmetric(model, model)


class _Scaled(nn.Module):
    """A module whose forward takes a keyword argument."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2).double()

    def forward(self, x: torch.Tensor, *, scale: float = 1.0) -> torch.Tensor:
        return scale * self.linear(x)


def test_asi_and_rnd_pass_keyword_arguments_to_both_branches():
    torch.manual_seed(0)
    model, x = _Scaled(), torch.randn(4, 3, dtype=torch.float64)
    assert float(nk.asi(model)(x, scale=3.0).detach().abs().max()) == 0.0
    net = nk.rnd(model, torch.Generator().manual_seed(1))
    torch.testing.assert_close(net(x, scale=3.0), 3.0 * net(x), rtol=1e-15, atol=0)


# ---- refused arguments -----------------------------------------------------------------------------


def test_rnd_refuses_a_generator_that_is_no_generator():
    torch.manual_seed(0)
    for model in (nn.Linear(3, 1), nk.MLP(3, [4])):
        with pytest.raises(TypeError, match="generator must be a torch.Generator or None, got int"):
            nk.rnd(model, generator=3)


def test_transforms_refuse_models_without_trainable_parameters():
    frozen = nk.MLP(3, [4]).requires_grad_(False)
    for transform in (nk.asi, nk.rnd):
        with pytest.raises(ValueError, match="model .*has no parameters"):
            transform(nn.ReLU())
        with pytest.raises(ValueError, match="model has no trainable parameters: all 4 have requires_grad=False"):
            transform(frozen)
    with pytest.raises(ValueError, match="mlp has no trainable parameters"):
        nk.double_last_layer(frozen)


def test_merge_branches_refuses_what_is_no_kernel_dict():
    with pytest.raises(TypeError, match="per_param must be a dict"):
        nk.merge_branches([("plus.w", torch.zeros(2, 2))])
    with pytest.raises(TypeError, match="per_param must map str names to tensors"):
        nk.merge_branches({"plus.w": 1.0})
    with pytest.raises(ValueError, match=r"plus.w and minus.w differ in shape: \(2, 2\) and \(1,\)"):
        nk.merge_branches({"plus.w": torch.zeros(2, 2), "minus.w": torch.zeros(1)})
