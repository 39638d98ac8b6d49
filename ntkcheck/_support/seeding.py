"""Seeds of independent random streams, all derived from numpy's ``SeedSequence``.

A stream is named by a root ``seed`` and a path of non-negative integers (``key``): the streams of
different paths are independent (a hash of the whole path, not ``seed + i``), so neighbouring
examples, seeds or samples never share draws.
"""

from __future__ import annotations

import numpy as np
import torch

from ntkcheck._support.validation import check_positive_int, check_seed


def child_seed(seed: int, *key: int) -> int:
    """A 64-bit seed for the stream ``key`` under ``seed``: the first word of ``SeedSequence(seed, spawn_key=key)``."""
    seed = check_seed(seed, "seed")
    path = tuple(check_positive_int(k, "key", minimum=0) for k in key)
    return int(np.random.SeedSequence(seed, spawn_key=path).generate_state(1, dtype=np.uint64)[0])


def torch_generator(seed: int, *key: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch generator on ``device`` seeded with :func:`child_seed` ``(seed, *key)``."""
    return torch.Generator(device=device).manual_seed(child_seed(seed, *key))


def numpy_generator(seed: int, *key: int) -> np.random.Generator:
    """A numpy generator of the stream ``key`` under ``seed``."""
    seed = check_seed(seed, "seed")
    path = tuple(check_positive_int(k, "key", minimum=0) for k in key)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=path))
