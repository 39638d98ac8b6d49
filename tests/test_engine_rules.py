"""The layer-rule kernel engine: every rule agrees with the torch.func Jacobian (method="jacobian") to
1e-10 in float64, total and per parameter, in every output mode; kernels are symmetric PSD; tied
weights sum over their calls; parameters without a rule go through torch.func; user rules register."""

from __future__ import annotations

import pytest
import torch
from _engine_rule_cases import RULE_CASES, D, Pool, assert_exact, gen, seq, xs
from torch import nn
from torch.nn import functional

import ntkcheck as nk
from ntkcheck.kernels.empirical import Piece, register_rule


@pytest.mark.parametrize("case", list(RULE_CASES))
def test_rule_is_exact(case):
    """Every rule serves its layer alone (method='layerwise' refuses otherwise) and matches the Jacobian."""
    model, x = RULE_CASES[case]()
    assert_exact(model, x)


def test_rules_with_distinct_x2():
    model, x = RULE_CASES["conv2d"]()
    assert_exact(model, x[:3], xs(2, 2, 7, 6, seed=11))


class TiedAcrossModules(nn.Module):
    """Two modules share one weight: its per-sample gradient sums over both calls."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(3, 3)
        self.b = nn.Linear(3, 3)
        self.b.weight = self.a.weight
        self.head = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.b(torch.tanh(self.a(x)))))


class TiedConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.tanh(self.conv(x))).flatten(2).mean(2)


class TiedEmbedding(nn.Module):
    """A language-model head that reuses the embedding table through functional.linear: no rule sees that use."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(5, 4)
        self.mix = nn.Linear(4, 4)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.mix(self.embed(t))).mean(1)
        return functional.linear(h, self.embed.weight)


@pytest.mark.parametrize("cls", [TiedAcrossModules, TiedConv])
def test_tied_weights_are_exact(cls):
    assert_exact(cls().to(D), xs(4, 3) if cls is TiedAcrossModules else xs(4, 2, 4, 4))


def test_parameter_used_outside_its_layer_goes_to_torch_func():
    """The probe finds the embedding's rule incomplete (the head uses the table too): 'layerwise' refuses,
    'auto' serves that parameter by torch.func, exactly."""
    model, t = TiedEmbedding().to(D), torch.tensor([[0, 1, 4], [2, 2, 3], [4, 0, 1]])
    with pytest.raises(nk.LayerwiseUnsupportedError, match=r"embed\.weight: its rule's per-sample gradient is off"):
        nk.ntk(model, t, method="layerwise")
    assert_exact(model, t, method="auto")


class MixedRules(nn.Module):
    """Linear layers (rule) around a raw gain and a raw matrix (no rule) in one model."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(3, 4)
        self.gain = nn.Parameter(torch.rand(4) + 0.5)
        self.mat = nn.Parameter(torch.randn(4, 4))
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.lin(x)) * self.gain
        return self.head(torch.tanh(h @ self.mat))


def test_mixed_rule_and_no_rule_parameters():
    assert_exact(MixedRules().to(D), xs(4, 3), method="auto")


class Bilinear(nn.Module):
    """y = x @ W.T with no bias: a module type ntkcheck has no rule for."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w.T


def _user_rule(module, inputs, kwargs, output, batch):
    x = inputs[0]
    if x.shape[0] != batch:
        return None
    m = output.shape[-1]
    a = x.detach().reshape(batch, -1, x.shape[-1])
    return [Piece(module.w, "outer", output, lambda g: g.reshape(batch, -1, m), a)]


def test_register_rule_serves_a_user_layer():
    model = seq(Bilinear(torch.randn(4, 3, generator=gen(12), dtype=D)), nn.Tanh(), nn.Linear(4, 2), Pool(1))
    x = xs(4, 5, 3)
    with pytest.raises(nk.LayerwiseUnsupportedError, match="0.w: no layer rule"):
        nk.ntk(model, x, method="layerwise")
    register_rule(Bilinear, _user_rule)
    assert_exact(model, x)


def test_register_rule_refuses_bad_arguments():
    with pytest.raises(TypeError, match="module_type"):
        register_rule(int, _user_rule)
    with pytest.raises(TypeError, match="rule must be callable"):
        register_rule(Bilinear, 3)
