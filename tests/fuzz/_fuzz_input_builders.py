"""Small networks, inputs, architectures and odd modules from which the input fuzz cases are built."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

import ntkcheck as nk
from ntkcheck.testing.strategies import Arch

F64 = torch.float64


def _mlp(*args: object, **kwargs: object) -> nk.MLP:
    """MLP(3, [4]) with the given arguments replacing the defaults."""
    base: dict[str, object] = {"in_features": 3, "widths": [4]}
    base.update(zip(("in_features", "widths", "out_features"), args))
    base.update(kwargs)
    return nk.MLP(base.pop("in_features"), base.pop("widths"), **base)  # type: ignore[arg-type]


def _net(out: int = 1, in_features: int = 3) -> nk.MLP:
    return nk.MLP(in_features, [4], out, dtype=F64, generator=torch.Generator().manual_seed(0))


def _frozen() -> nk.MLP:
    return _net().requires_grad_(False)


def _x(n: int = 4, d: int = 3, **kwargs: object) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(1), dtype=F64).to(**kwargs)


def _with(value: float) -> torch.Tensor:
    x = _x()
    x[1, 2] = value
    return x


def _meta(n: int = 4, d: int = 3) -> torch.Tensor:
    return torch.empty(n, d, dtype=F64, device="meta")


def _arch(**kwargs: object) -> Arch:
    fields: dict[str, object] = dict(
        in_features=3,
        widths=(4,),
        out_features=1,
        activation="relu",
        bias=True,
        parametrization="ntk",
        weight_std=1.0,
        bias_std=0.1,
        seed=0,
    )
    fields.update(kwargs)
    return Arch(**fields)  # type: ignore[arg-type]


class _NoReset(nn.Module):
    """Holds a parameter directly and has no reset_parameters()."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(3, 1, dtype=F64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w


class _Pair(nn.Module):
    """Returns a tuple, not a tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 1).double()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.linear(x), x


def _antisymmetric_forward(plus: nn.Module, minus: nn.Module) -> torch.Tensor:
    return nk.AntiSymmetric(plus, minus)(_x())


def _transformer() -> nn.Module:
    return nk.Transformer(4, 1, 1, 4, 1, vocab_size=5, max_len=3, dtype=F64)


def _case(case_id: str, call: Callable[[], object], error: type[Exception], fragment: str):
    return pytest.param(call, error, fragment, id=case_id)


MISSING_CUDA = f"cuda:{torch.cuda.device_count()}"  # one past the last CUDA device: never present
