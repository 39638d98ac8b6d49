"""What the property files share: the device/dtype under test and reproduction snippets."""

from __future__ import annotations

import os

import torch

from ntkcheck.strategies import Arch

DEVICE = torch.device(os.environ.get("NTKCHECK_DEVICE", "cpu"))
DTYPE = {"float64": torch.float64, "float32": torch.float32}[os.environ.get("NTKCHECK_DTYPE", "float64")]


def reproduce(arch: Arch | None = None, **data: object) -> str:
    """Python lines that rebuild an example: the model from its Arch, the data from their seeds."""
    lines = ["import torch, ntkcheck as nk", "from ntkcheck.strategies import Arch, inputs"]
    if arch is not None:
        lines.append(f"model = {arch!r}.build(dtype={DTYPE}, device={str(DEVICE)!r})")
    lines += [f"{name} = {value}" for name, value in data.items()]
    return "\n".join(lines)
