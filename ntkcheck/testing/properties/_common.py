"""What the property files share: the device/dtype under test and reproduction snippets."""

from __future__ import annotations

import torch

from ntkcheck.dynamics.solvers import condition_number
from ntkcheck.errors import IllConditionedError
from ntkcheck.testing.plugin import backend
from ntkcheck.testing.strategies import Arch
from ntkcheck.testing.tolerances import max_condition

DEVICE = backend().device  # chosen by --ntkcheck-device / NTKCHECK_DEVICE before collection imports this
DTYPE = backend().dtype


def reproduce(arch: Arch | None = None, **data: object) -> str:
    """Python lines that rebuild an example: the model from its Arch (any family), the data from their seeds
    (``inputs(...)`` rows, or ``Dataset(...).x()`` for images, sequences and token ids)."""
    lines = [
        "import torch, ntkcheck as nk",
        "from ntkcheck._support.seeding import child_seed",
        "from ntkcheck.testing.strategies import Arch, Dataset, inputs",
    ]
    if arch is not None:
        lines.append(f"model = {arch!r}.build(dtype={DTYPE}, device={str(DEVICE)!r})")
    lines += [f"{name} = {value}" for name, value in data.items()]
    return "\n".join(lines)


def require_well_conditioned(k: torch.Tensor, what: str = "kernel") -> float:
    """Return cond(k); raise :class:`IllConditionedError` (properties ``assume`` it away) above ``max_condition``."""
    cond = condition_number(k)
    if not cond <= max_condition(k.dtype):
        raise IllConditionedError(f"{what}: condition number {cond:.3e} > {max_condition(k.dtype):.1e}")
    return cond
