"""The layer-rule kernel engine: every rule agrees with the torch.func Jacobian (method="jacobian") to
1e-10 in float64, total and per parameter, in every output mode; kernels are symmetric PSD; tied
weights sum over their calls; parameters without a rule go through torch.func; user rules register."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional

import ntkcheck as nk
from ntkcheck.kernels.empirical import Piece, register_rule

D = torch.float64
MODES = ("full", "trace", "sum")
TOL = 1e-10


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def flat(k: torch.Tensor) -> torch.Tensor:
    n1, n2 = k.shape[:2]
    if k.ndim == 2:
        return k
    o = k.shape[2]
    return k.permute(0, 2, 1, 3).reshape(n1 * o, n2 * o)


def assert_exact(
    model: nn.Module, x: torch.Tensor, x2: torch.Tensor | None = None, *, method: str = "layerwise", **kw
) -> None:
    """Total and per-parameter kernels equal the Jacobian's in every output mode; symmetric PSD when x2 is None."""
    for mode in MODES:
        ref = nk.ntk(model, x, x2, method="jacobian", output=mode, **kw)
        got = nk.ntk(model, x, x2, method=method, output=mode, **kw)
        assert got.shape == ref.shape, mode
        assert rel(got, ref) <= TOL, (mode, rel(got, ref))
        parts_ref = nk.ntk(model, x, x2, method="jacobian", output=mode, per_layer=True, **kw)
        parts = nk.ntk(model, x, x2, method=method, output=mode, per_layer=True, **kw)
        assert list(parts) == list(parts_ref)
        for name, k in parts_ref.items():
            err = float((parts[name] - k).norm()) / max(float(k.norm()), float(ref.norm()) * 1e-3)
            assert err <= TOL, (mode, name, err)
        if x2 is None:
            m = flat(got)
            assert float((m - m.T).abs().max()) <= 1e-12 * float(m.abs().max())
            eig = torch.linalg.eigvalsh(m)
            assert float(eig.min()) >= -1e-12 * float(eig.max()), (mode, float(eig.min()))


class Pool(nn.Module):
    """Mean over every dimension but the first two of (N, C, ...) -> (N, C); with ``dim`` over that one."""

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(self.dim) if self.dim is not None else x.flatten(2).mean(2)


def seq(*layers: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*layers).to(D)


def ntk_linear(fan_in: int, fan_out: int, wm: float = 0.7, bm: float = 0.3) -> nk.Linear:
    g = gen(1)
    return nk.Linear(
        torch.randn(fan_out, fan_in, generator=g, dtype=D),
        torch.randn(fan_out, generator=g, dtype=D),
        weight_mult=wm,
        bias_mult=bm,
    )


def ntk_conv(cls: type, c_in: int, c_out: int, k: tuple[int, ...], **kw) -> nn.Module:
    g = gen(2)
    groups = kw.get("groups", 1)
    return cls(
        torch.randn(c_out, c_in // groups, *k, generator=g, dtype=D),
        torch.randn(c_out, generator=g, dtype=D),
        weight_mult=0.6,
        bias_mult=0.2,
        **kw,
    )


def xs(*shape: int, seed: int = 3) -> torch.Tensor:
    return torch.randn(*shape, generator=gen(seed), dtype=D)


def batch_norm_eval(bn: nn.Module) -> nn.Module:
    bn.running_mean.uniform_(-0.5, 0.5, generator=gen(4))
    bn.running_var.uniform_(0.5, 2.0, generator=gen(5))
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5, generator=gen(6))
        bn.bias.uniform_(-0.5, 0.5, generator=gen(7))
    return bn


RULE_CASES = {
    "linear_rank3": lambda: (seq(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2), Pool(1)), xs(4, 6, 3)),
    "linear_rank4": lambda: (seq(nn.Linear(3, 4), nn.Tanh(), Pool(), nn.Linear(2, 2)), xs(4, 2, 3, 3)),
    "ntk_linear_rank3": lambda: (seq(ntk_linear(3, 5), nn.Tanh(), ntk_linear(5, 2), Pool(1)), xs(4, 6, 3)),
    "conv1d": lambda: (
        seq(
            nn.Conv1d(2, 4, 3, stride=2, padding=2, dilation=2),
            nn.Tanh(),
            nn.Conv1d(4, 4, 3, padding="same", groups=2),
            Pool(),
            nn.Linear(4, 2),
        ),
        xs(4, 2, 9),
    ),
    "conv2d": lambda: (
        seq(
            nn.Conv2d(2, 4, 3, stride=(2, 1), padding=1),
            nn.ReLU(),
            nn.Conv2d(4, 6, (3, 2), padding="same", dilation=2, groups=2),
            nn.Tanh(),
            nn.Conv2d(6, 3, 2, padding=1, padding_mode="reflect"),
            Pool(),
        ),
        xs(4, 2, 7, 6),
    ),
    "conv2d_no_bias": lambda: (seq(nn.Conv2d(2, 3, 3, bias=False), nn.Tanh(), Pool(), nn.Linear(3, 1)), xs(4, 2, 5, 5)),
    "ntk_conv": lambda: (
        seq(
            ntk_conv(nk.Conv1d, 2, 4, (3,), padding="same"),
            nn.Tanh(),
            Pool(),
            nn.Unflatten(1, (1, 1, 4)),
            ntk_conv(nk.Conv2d, 1, 2, (1, 3), padding=(0, 1), groups=1),
            Pool(),
        ),
        xs(4, 2, 6),
    ),
    "ntk_conv2d_groups": lambda: (
        seq(ntk_conv(nk.Conv2d, 4, 4, (3, 3), stride=2, groups=2, dilation=1), nn.Tanh(), Pool()),
        xs(4, 4, 7, 7),
    ),
    "layer_norm": lambda: (
        seq(nn.Linear(3, 4), nn.Unflatten(2, (2, 2)), nn.LayerNorm((2, 2)), nn.Flatten(2), Pool(1), nn.Linear(4, 2)),
        xs(4, 5, 3),
    ),
    "ntk_layer_norm": lambda: (
        seq(
            nn.Linear(3, 4),
            nk.LayerNorm(
                torch.rand(4, generator=gen(8), dtype=D) + 0.5,
                torch.randn(4, generator=gen(9), dtype=D),
                weight_mult=0.8,
                bias_mult=0.4,
            ),
            nn.Tanh(),
            nn.Linear(4, 2),
        ),
        xs(4, 3),
    ),
    "group_norm": lambda: (
        seq(nn.Conv2d(2, 4, 3), nn.GroupNorm(2, 4), nn.Tanh(), Pool(), nn.Linear(4, 2)),
        xs(4, 2, 5, 5),
    ),
    "rms_norm": lambda: (seq(nn.Linear(3, 4), nn.RMSNorm(4), nn.Tanh(), nn.Linear(4, 2), Pool(1)), xs(4, 5, 3)),
    "batch_norm_eval": lambda: (
        seq(
            nn.Conv2d(2, 3, 3),
            batch_norm_eval(nn.BatchNorm2d(3)),
            nn.ReLU(),
            Pool(),
            nn.Linear(3, 4),
            batch_norm_eval(nn.BatchNorm1d(4)),
            nn.Tanh(),
            nn.Linear(4, 1),
        ).eval(),
        xs(4, 2, 5, 5),
    ),
    "embedding": lambda: (
        seq(nn.Embedding(5, 3), nn.Tanh(), nn.Linear(3, 2), Pool(1)),
        torch.tensor([[0, 1, 1, 4], [2, 2, 2, 2], [4, 0, 3, 1], [1, 1, 0, 0]]),
    ),
    "embedding_padding_idx": lambda: (
        seq(nn.Embedding(5, 3, padding_idx=1), nn.Flatten(), nn.Linear(12, 2)),
        torch.tensor([[0, 1, 1, 4], [2, 2, 2, 2], [4, 0, 3, 1], [1, 1, 0, 0]]),
    ),
    "ntk_embedding": lambda: (
        seq(
            nk.Embedding(torch.randn(6, 3, generator=gen(10), dtype=D), weight_mult=0.5), nn.Flatten(), nn.Linear(9, 2)
        ),
        torch.tensor([[0, 5, 5], [1, 0, 2], [5, 5, 5]]),
    ),
}


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
