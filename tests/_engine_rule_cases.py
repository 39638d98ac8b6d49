"""Layer-rule cases, exactness checks and small layers shared by the tests of the layer-rule kernel engine."""

from __future__ import annotations

import torch
from torch import nn

import ntkcheck as nk

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
