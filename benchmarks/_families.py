"""Models, inputs and reference rates for the family benchmarks (:class:`_cases.FamilyCase`)."""

from __future__ import annotations

import time

import numpy as np
import torch
from _cases import FamilyCase
from torch import nn

import ntkcheck as nk

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def build(case: FamilyCase, device: torch.device, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """The case's network (NTK parametrization, ReLU or GELU as the family's default) and its N inputs."""
    dtype = DTYPES[case.dtype]
    gen = torch.Generator().manual_seed(seed)
    common = dict(generator=gen, dtype=dtype, device=device)
    if case.family == "mlp":
        model: nn.Module = nk.MLP(case.d, [case.width] * case.depth, case.outputs, **common)
        x = torch.randn(case.n, case.d, generator=gen, dtype=dtype)
    elif case.family == "cnn":
        model = nk.CNN(case.channels, [case.width] * case.depth, case.outputs, **common)
        x = torch.randn(case.n, case.channels, case.image, case.image, generator=gen, dtype=dtype)
    elif case.family == "resnet":
        model = nk.ResNet(case.width, case.depth, case.outputs, in_channels=case.channels, **common)
        x = torch.randn(case.n, case.channels, case.image, case.image, generator=gen, dtype=dtype)
    elif case.family == "transformer":
        model = nk.Transformer(
            case.width,
            case.heads,
            case.depth,
            4 * case.width,
            case.outputs,
            vocab_size=case.vocab,
            max_len=case.tokens,
            **common,
        )
        x = torch.randint(0, case.vocab, (case.n, case.tokens), generator=gen)
    else:
        raise ValueError(f"case.family must be mlp, cnn, resnet or transformer, got {case.family!r}")
    return model, x.to(device)


def mlp_gram_shapes(case: FamilyCase) -> list[tuple[int, int]]:
    """(rows, inner) of every full-square Gram product of the MLP layerwise kernel: A A^T and G G^T per layer."""
    sizes = (case.d, *([case.width] * case.depth), case.outputs)
    return [(case.n, a) for a in sizes[:-1]] + [(case.outputs * case.n, b) for b in sizes[1:]]


def gram_matmul_rate(
    shapes: list[tuple[int, int]], dtype: torch.dtype, device: torch.device, repeats: int = 5, timer=time.process_time
) -> float:
    """Measured flop rate (flop/s) of the full-square products ``X @ Y.T`` of these (rows, inner) shapes.

    X and Y are distinct random matrices, so no symmetry is exploited: this is the
    rate of a plain matmul of the Gram's shapes; the best of ``repeats`` timings of
    the whole set (the least disturbed one on a shared machine).
    """
    gen = torch.Generator().manual_seed(1)
    pairs = [
        (
            torch.randn(r, k, generator=gen, dtype=dtype).to(device),
            torch.randn(r, k, generator=gen, dtype=dtype).to(device),
        )
        for r, k in shapes
    ]
    flops = sum(2.0 * r * r * k for r, k in shapes)
    best = float("inf")
    for i in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = timer()
        for a, b in pairs:
            a @ b.T
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:  # the first pass warms up
            best = min(best, timer() - t0)
    return flops / best


def nt_arrays(model: nn.Module, x: torch.Tensor, case: FamilyCase) -> dict[str, np.ndarray]:
    """The model's parameters and inputs in neural-tangents' layouts (stax ``Dense``: W (in, out); ``Conv``: W
    HWIO, inputs NHWC), as ``W0, b0, W1, b1, ...`` in layer order and ``x``, for :mod:`_nt_runner`."""
    if case.family == "mlp":
        ws = [(m.weight.detach().T, m.bias.detach()) for m in model.modules() if isinstance(m, nk.models.Linear)]
        xs = x.detach()
    elif case.family == "cnn":
        ws = [(c.weight.detach().permute(2, 3, 1, 0), c.bias.detach()) for c in model.convs]
        head = [m for m in model.head.modules() if isinstance(m, nk.models.Linear)]
        ws += [(m.weight.detach().T, m.bias.detach()) for m in head]
        xs = x.detach().permute(0, 2, 3, 1)
    else:
        raise ValueError(f"neural-tangents runs mlp and cnn cases, got {case.family!r}")
    out = {"x": xs.cpu().contiguous().numpy()}
    for i, (w, b) in enumerate(ws):
        out[f"W{i}"] = w.cpu().contiguous().numpy()
        out[f"b{i}"] = b.cpu().contiguous().numpy()
    return out
