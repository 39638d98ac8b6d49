"""The model families (MLP, CNN, ResNet, Transformer) and their inputs, shared by the family tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

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
