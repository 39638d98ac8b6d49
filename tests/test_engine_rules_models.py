"""The layer-rule kernel engine on the model families and torch's own layers, symmetric kernels at half the
cost, and its speed paths (row chunks of convolutions, symmetric Gram slabs, reused probe verdicts), each
agreeing with the torch.func Jacobian (method="jacobian") to 1e-10 in float64."""

from __future__ import annotations

import pytest
import torch
from _engine_rule_cases import RULE_CASES, TOL, D, Pool, assert_exact, gen, rel, xs
from torch import nn

import ntkcheck as nk

# ---- model families and torch's own layers ------------------------------------------------------------


def families():
    g = gen
    return {
        "CNN": (nk.CNN(3, [4, 4], 2, generator=g(), dtype=D), xs(3, 3, 6, 6)),
        "CNN_flatten": (
            nk.CNN(2, [3], 2, readout="flatten", image_size=5, stride=2, padding=1, generator=g(), dtype=D),
            xs(3, 2, 5, 5),
        ),
        "ResNet_dense": (nk.ResNet(5, 2, 2, in_features=3, generator=g(), dtype=D), xs(3, 3)),
        "ResNet_conv": (nk.ResNet(3, 1, 2, in_channels=2, generator=g(), dtype=D), xs(3, 2, 5, 5)),
        "Transformer_tokens": (
            nk.Transformer(8, 2, 1, 8, 2, vocab_size=7, max_len=5, generator=g(), dtype=D),
            torch.tensor([[0, 3, 3, 6], [1, 2, 0, 0], [6, 5, 4, 3]]),
        ),
        "Transformer_linear": (
            nk.Transformer(8, 2, 1, 8, 2, in_features=3, max_len=4, norm="post", generator=g(), dtype=D),
            xs(3, 4, 3),
        ),
    }


@pytest.mark.parametrize("family", list(families()))
def test_model_families(family):
    """Every parameter of every family by rules, learned position embeddings included."""
    model, x = families()[family]
    assert_exact(model, x, method="auto")
    assert_exact(model, x, method="layerwise")


def torch_models():
    torch.manual_seed(0)
    conv = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4, 3),
    ).to(D)

    class MHA(nn.Module):
        def __init__(self, batch_first: bool) -> None:
            super().__init__()
            self.proj = nn.Linear(3, 8)
            self.attn = nn.MultiheadAttention(8, 2, batch_first=batch_first)
            self.head = nn.Linear(8, 2)
            self.batch_first = batch_first

        def forward(self, x):
            h = self.proj(x)
            if self.batch_first:
                return self.head(self.attn(h, h, h, need_weights=False)[0].mean(1))
            h = h.transpose(0, 1)
            return self.head(self.attn(h, torch.tanh(h), h)[0].mean(0))

    enc = (
        nn.Sequential(
            nn.Linear(3, 8),
            nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True),
            Pool(1),
            nn.Linear(8, 2),
        )
        .to(D)
        .eval()
    )
    return {
        "Conv2d": (conv, xs(3, 3, 6, 6)),
        "MultiheadAttention": (MHA(True).to(D).eval(), xs(3, 4, 3)),
        "MultiheadAttention_seq_first": (MHA(False).to(D).eval(), xs(3, 4, 3)),
        "TransformerEncoderLayer": (enc, xs(3, 4, 3)),
    }


@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")  # torch.func's vmap of attention
@pytest.mark.parametrize("name", list(torch_models()))
def test_torch_models(name):
    """torch's own layers, attention included, are served by rules alone (method='layerwise')."""
    model, x = torch_models()[name]
    assert_exact(model, x)


# ---- symmetric kernels at half the cost -----------------------------------------------------------------


def test_symmetric_kernel_computes_upper_tiles_only(monkeypatch):
    """With x2=None and row blocks, only tiles on or above the diagonal are computed, the rest mirrored."""
    from ntkcheck.kernels import _engine

    model, x = RULE_CASES["conv2d"]()
    x = xs(12, 2, 7, 6)
    calls = []
    original = _engine.Engine.tiles

    def counting(self, f1, f2, **kw):
        calls.append((f1[0].g.shape[1], f2[0].g.shape[1]))
        return original(self, f1, f2, **kw)

    monkeypatch.setattr(_engine.Engine, "tiles", counting)
    budget = 200_000
    sym = nk.ntk(model, x, memory_budget=budget)
    n_sym, b = len(calls), calls[0][0]  # b: rows of a (full) block
    calls.clear()
    full = nk.ntk(model, x, x, memory_budget=budget)
    blocks = round((2 * n_sym + 0.25) ** 0.5 - 0.5)  # n_sym = b (b + 1) / 2
    assert blocks >= 3 and blocks * (blocks + 1) // 2 == n_sym and len(calls) == blocks * blocks
    assert rel(sym, full) <= 1e-13
    assert torch.equal(sym[b:, :b], sym[:b, b:].permute(1, 0, 3, 2))  # mirrored, not recomputed


class FrozenWeightRawBias(nn.Module):
    """A linear layer whose weight no rule can serve (also used raw) next to its bias, which the rule serves."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(3, 3)
        self.head = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.lin(x)) + x @ self.lin.weight)


def test_weight_served_by_torch_func_keeps_its_bias_served_by_the_rule():
    assert_exact(FrozenWeightRawBias().to(D), xs(4, 3), method="auto")


# ---- speed paths: row chunks of convolutions, symmetric Gram slabs, reused probe verdicts ---------------------


def test_convolution_row_chunks_and_symmetric_slabs_are_exact():
    """70 rows cross the convolution's row chunks (32) and, with 3 outputs, the symmetric Gram's slabs."""
    model = nn.Sequential(
        nn.Conv2d(4, 6, 3, padding=1, groups=2, stride=2),
        nn.Tanh(),
        nn.Conv2d(6, 4, 2),
        nn.Tanh(),
        Pool(),
        nn.Linear(4, 3),
    ).to(D)
    x = torch.randn(70, 4, 7, 7, generator=gen(3), dtype=D)
    assert_exact(model, x)
    assert_exact(model, x[:40], x[40:] + 0.5)


class Counting(nn.Module):
    """``inner`` counting its forward passes."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner(x)


def test_probe_verdicts_are_reused_until_the_model_changes():
    model = Counting(nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Tanh(), Pool(), nn.Linear(3, 2))).to(D)
    model.eval()
    x = torch.randn(6, 2, 5, 5, generator=gen(4), dtype=D)
    first = nk.ntk(model, x)
    model.calls = 0
    again = nk.ntk(model, x)
    assert model.calls == 1  # one forward pass of the rows, no probes
    assert torch.equal(first, again)
    with torch.no_grad():
        model.inner[0].weight.mul_(2.0)  # in place: a new parameter version, probed again
    model.calls = 0
    changed = nk.ntk(model, x)
    assert model.calls > 1
    assert rel(changed, nk.ntk(model, x, method="jacobian")) <= TOL
    model.train()  # BatchNorm now couples the rows: the cached eval-mode verdict must not serve it
    with pytest.raises(ValueError, match="couples the rows"):
        nk.ntk(model, x)
