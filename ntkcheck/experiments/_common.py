"""What every reproduction shares: dtype names, CPU threads, float64 outputs and the names of its random streams.

The random streams of one seed ``s`` are :func:`ntkcheck._support.seeding.torch_generator` ``(s, stream)``
with the stream keys below: the data, the initial parameters, the minibatch order and a second independent
draw of parameters never share draws, whatever the seeds of neighbouring repetitions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from ntkcheck._support.validation import DTYPES

DATA_STREAM = 0
"""Stream key of the data draws (inputs, splits, label noise)."""
INIT_STREAM = 1
"""Stream key of the initial parameters."""
ORDER_STREAM = 2
"""Stream key of the minibatch order."""
SECOND_INIT_STREAM = 3
"""Stream key of a second, independent draw of initial parameters (RND's second branch)."""


def dtype_named(name: str, field: str) -> torch.dtype:
    """The torch dtype of ``name`` (a key of :data:`DTYPES`); a ValueError naming ``config.<field>`` otherwise."""
    if name not in DTYPES:
        raise ValueError(f"config.{field} must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


@contextlib.contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)`` (nothing for None); restore the setting after."""
    if n is None:
        yield
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"cpu_threads must be None or an int >= 1, got {n!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` as a float64 vector (no graph)."""
    p = next(model.parameters())
    with torch.no_grad():
        return model(x.to(device=p.device, dtype=p.dtype)).reshape(-1).to(torch.float64)
