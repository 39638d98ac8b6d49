"""The arguments every kernel solver shares, validated and brought to matrix form
(conventions in :mod:`ntkcheck.dynamics.solvers`)."""

from __future__ import annotations

from typing import NamedTuple

import torch

from ntkcheck._support.shapes import kernel_as_matrix
from ntkcheck._support.validation import (
    check_finite_result,
    check_kernel_tensor,
    check_same_device,
    check_same_device_dtype,
)
from ntkcheck.dynamics._kernel_checks import _kernel_matrix


class _Problem(NamedTuple):
    K: torch.Tensor  # (N, N)
    Kx: torch.Tensor | None  # (M, N)
    Y: torch.Tensor  # (N, C)
    H0: torch.Tensor  # (N, C)
    H0x: torch.Tensor | None  # (M, C)
    n: int  # number of samples (rows of y_train)
    train_shape: tuple[int, ...]
    test_shape: tuple[int, ...] | None


def _check_initial_pairing(k_test_train: object, h_ini_train: object, h_ini_test: object) -> None:
    """``ValueError`` unless ``h_ini_test`` is given exactly when ``h_ini_train`` and ``k_test_train`` are."""
    if h_ini_train is None and h_ini_test is not None:
        raise ValueError("h_ini_test was given without h_ini_train: give the initial function at both point sets")
    if h_ini_test is not None and k_test_train is None:
        raise ValueError("h_ini_test was given without k_test_train")
    if h_ini_train is not None and k_test_train is not None and h_ini_test is None:
        raise ValueError(
            "h_ini_test is required when h_ini_train and k_test_train are given (h_ini at the test points)"
        )


def _targets(k_train: torch.Tensor, y_train: object) -> torch.Tensor:
    """``y_train`` checked against the (n, n) or (n, n, O, O) ``k_train``."""
    check_same_device(k_train, y_train, "k_train", "y_train")
    y = check_kernel_tensor(y_train, "y_train", (1, 2), "(n,) or (n, O)")
    check_same_device_dtype(k_train, y, "k_train", "y_train")
    n = k_train.shape[0]
    if y.shape[0] != n:
        raise ValueError(f"y_train rows must match k_train (n={n}), got shape {tuple(y.shape)}")
    if k_train.ndim == 4:
        o = k_train.shape[2]
        if not (y.shape[1:] == (o,) or (o == 1 and y.ndim == 1)):
            raise ValueError(f"y_train must have shape ({n}, {o}) for a (n, n, O, O) k_train, got {tuple(y.shape)}")
    return y


def _test_kernel(k_train: torch.Tensor, k_test_train: object) -> tuple[torch.Tensor, int]:
    """``k_test_train`` (m, n) or (m, n, O, O) checked against ``k_train``: its (m O, n O) matrix and m."""
    block = k_train.ndim == 4
    check_same_device(k_train, k_test_train, "k_train", "k_test_train")
    kx = check_kernel_tensor(
        k_test_train, "k_test_train", (4,) if block else (2,), "(m, n, O, O)" if block else "(m, n)"
    )
    check_same_device_dtype(k_train, kx, "k_train", "k_test_train")
    if kx.shape[1:] != k_train.shape[1:]:
        raise ValueError(
            f"k_test_train columns must match k_train: expected "
            f"(m, {', '.join(map(str, k_train.shape[1:]))}), got shape {tuple(kx.shape)}"
        )
    return kernel_as_matrix(kx), kx.shape[0]


def _initial(
    k_train: torch.Tensor, h: object, name: str, shape: tuple[int, ...], shape_doc: str, expected: str
) -> torch.Tensor:
    """An initial output ``h_ini_*`` checked to have ``shape`` (``expected`` says which) and the dtype and device
    of ``k_train``."""
    check_same_device(k_train, h, "k_train", name)
    h0 = check_kernel_tensor(h, name, (1, 2), shape_doc)
    check_same_device_dtype(k_train, h0, "k_train", name)
    if tuple(h0.shape) != shape:
        raise ValueError(f"{name} must have {expected}, got {tuple(h0.shape)}")
    return h0


def _problem(
    k_train: object,
    y_train: object,
    k_test_train: object = None,
    h_ini_train: object = None,
    h_ini_test: object = None,
) -> _Problem:
    """Validate the arguments shared by every solver and bring them to matrix form."""
    K = _kernel_matrix(k_train)
    assert isinstance(k_train, torch.Tensor)
    y = _targets(k_train, y_train)
    _check_initial_pairing(k_test_train, h_ini_train, h_ini_test)
    block = k_train.ndim == 4

    def mat(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(-1, 1) if (block or t.ndim == 1) else t

    Kx: torch.Tensor | None = None
    test_shape: tuple[int, ...] | None = None
    if k_test_train is not None:
        Kx, m = _test_kernel(k_train, k_test_train)
        test_shape = (m,) + tuple(y.shape[1:])
    H0 = torch.zeros_like(mat(y))
    if h_ini_train is not None:
        H0 = mat(
            _initial(
                k_train,
                h_ini_train,
                "h_ini_train",
                tuple(y.shape),
                "the shape of y_train",
                f"the shape of y_train {tuple(y.shape)}",
            )
        )
    H0x = None if Kx is None else torch.zeros(Kx.shape[0], H0.shape[1], dtype=y.dtype, device=y.device)
    if h_ini_test is not None:
        assert test_shape is not None
        H0x = mat(
            _initial(
                k_train,
                h_ini_test,
                "h_ini_test",
                test_shape,
                "(m,) or (m, O)",
                f"shape {test_shape} (k_test_train rows, y_train outputs)",
            )
        )
    return _Problem(K, Kx, mat(y), H0, H0x, k_train.shape[0], tuple(y.shape), test_shape)


def _out(x: torch.Tensor, shape: tuple[int, ...], what: str) -> torch.Tensor:
    return check_finite_result(x.reshape(shape), what)
