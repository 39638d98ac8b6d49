"""Shared pytest configuration: Hypothesis profiles and the device/dtype matrix.

Profiles (choose with ``--hypothesis-profile NAME`` or ``NTKCHECK_PROFILE``):
``dev`` fast local runs; ``ci`` Hypothesis' own ci profile (derandomized,
print_blob) with our example count; ``ci-random`` the same without derandomization;
``thorough`` many examples; ``gpu`` no deadline.
Device and dtype come from ``NTKCHECK_DEVICE`` (cpu|cuda) and ``NTKCHECK_DTYPE``
(float64|float32), set by the tox factors.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dev", max_examples=10, **_common)
settings.register_profile("ci", parent=settings.get_profile("ci"), max_examples=25, **_common)
# ci with fresh randomness each run (seed it with --hypothesis-seed): for repeated runs that look for flakes
settings.register_profile("ci-random", parent=settings.get_profile("ci"), derandomize=False)
settings.register_profile("thorough", max_examples=300, **_common)
settings.register_profile("gpu", max_examples=100, **_common)
settings.load_profile(os.environ.get("NTKCHECK_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture(scope="session")
def device() -> torch.device:
    """The device under test (NTKCHECK_DEVICE); CUDA runs skip cleanly without a GPU."""
    name = os.environ.get("NTKCHECK_DEVICE", "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        pytest.skip("NTKCHECK_DEVICE=cuda but no CUDA device is available")
    return torch.device(name)


@pytest.fixture(scope="session")
def dtype() -> torch.dtype:
    """The dtype under test (NTKCHECK_DTYPE)."""
    name = os.environ.get("NTKCHECK_DTYPE", "float64")
    return {"float64": torch.float64, "float32": torch.float32}[name]


@pytest.fixture(autouse=True)
def _no_tf32():
    """TF32 stays off in every test (claims are checked in full float32/float64)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
