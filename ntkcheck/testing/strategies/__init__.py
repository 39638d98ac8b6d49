"""Hypothesis strategies for NTK claims, public so other test suites can reuse them.

Every example is reproducible from what Hypothesis prints: an :class:`Arch` is a
frozen description of an MLP, CNN, ResNet or Transformer (with the integer seed its
parameters are drawn from), and inputs are drawn from integer seeds too, so
``Arch(...).build()`` and ``Dataset(...).x()`` (or ``inputs(seed, ...)`` for rows)
rebuild the exact tensors of a failing example.  Further streams under one seed
(targets, test inputs, perturbations) come from :func:`~ntkcheck._support.seeding.child_seed`,
so neighbouring seeds never share draws.

    from hypothesis import given, strategies as st
    from ntkcheck.testing.strategies import architectures, datasets

    @given(architectures(max_depth=2), st.data())
    def test_something(arch, data):
        model = arch.build()
        x = data.draw(datasets(arch)).x()   # rows, images, sequences or token ids
        ...

Pass ``families=("mlp",)`` where a claim is about MLPs only (analytic kernels, widths).
"""

from __future__ import annotations

from ntkcheck._support.validation import DTYPES

from ._arch import FAMILY_ORDER, Arch
from ._architectures import architectures
from ._data import (
    Dataset,
    InitialFunction,
    dataset_for,
    datasets,
    initial_functions,
    inputs,
    lp_losses,
    seeds,
    stream,
    tokens,
)

__all__ = [
    "DTYPES",
    "FAMILY_ORDER",
    "Arch",
    "Dataset",
    "InitialFunction",
    "architectures",
    "dataset_for",
    "datasets",
    "initial_functions",
    "inputs",
    "lp_losses",
    "seeds",
    "stream",
    "tokens",
]
