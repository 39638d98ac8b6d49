"""The matrix-free NTK operator against the dense empirical NTK, for every model family (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.sparse.linalg import LinearOperator, aslinearoperator

import ntkcheck as nk
from ntkcheck.kernels.kernel_operator import ArrayKernelOperator, DenseKernelOperator, as_kernel_operator
from ntkcheck.kernels.operator import ntk_operator

F64 = torch.float64
REL = 1e-10  # a product is a sum of N*O*P rounded terms in either path: ~1e-15 measured


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _models():
    g = _gen(0)
    return {
        "mlp": (nk.MLP(3, [6, 5], 2, generator=g, dtype=F64), torch.randn(7, 3, generator=g, dtype=F64)),
        "cnn": (nk.CNN(3, [4, 5], 2, generator=g, dtype=F64), torch.randn(5, 3, 6, 5, generator=g, dtype=F64)),
        "resnet": (
            nk.ResNet(4, 2, 2, in_channels=2, activation="softplus", generator=g, dtype=F64),
            torch.randn(5, 2, 5, 4, generator=g, dtype=F64),
        ),
        "transformer": (
            nk.Transformer(8, 2, 2, 10, 2, vocab_size=9, max_len=6, generator=g, dtype=F64),
            torch.randint(0, 9, (5, 5), generator=g),
        ),
    }


MODELS = _models()


def _dense(model, x, output: str) -> torch.Tensor:
    K = nk.ntk(model, x, output=output)
    if K.ndim == 4:
        n, o = K.shape[0], K.shape[2]
        K = K.permute(0, 2, 1, 3).reshape(n * o, n * o)
    return K


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("output", ["full", "trace", "sum"])
@pytest.mark.parametrize("family", list(MODELS))
def test_operator_matches_dense_ntk(family: str, output: str) -> None:
    model, x = MODELS[family]
    K = _dense(model, x, output)
    op = ntk_operator(model, x, output=output, chunk=2)  # several chunks, the last one short
    assert op.shape == K.shape
    V = torch.randn(K.shape[0], 3, generator=_gen(1), dtype=F64)
    err = _rel(op @ V, K @ V)
    assert err < REL, f"ntk_operator({family}, output={output!r}) @ V: relative error {err:.2e} against ntk() @ V"
    v = V[:, 0]
    err_v = _rel(op @ v, K @ v)
    assert err_v < REL, f"ntk_operator({family}) @ v (1-D): relative error {err_v:.2e}"
    # scipy side: float64 numpy in and out, symmetric
    got = op.matvec(v.numpy())
    assert isinstance(got, np.ndarray) and got.dtype == np.float64 and got.shape == (K.shape[0],)
    assert np.linalg.norm(got - (K @ v).numpy()) < REL * float((K @ v).norm())
    assert np.linalg.norm(op.rmatvec(v.numpy()) - got) <= 1e-14 * np.linalg.norm(got)
    got_m = op.matmat(V.numpy())
    assert np.linalg.norm(got_m - (K @ V).numpy()) < REL * float((K @ V).norm())
    diag_err = _rel(op.diagonal(), K.diagonal())
    assert diag_err < REL, f"NTKOperator.diagonal ({family}, {output}): relative error {diag_err:.2e}"


def test_chunking_does_not_change_the_product() -> None:
    model, x = MODELS["mlp"]
    V = torch.randn(14, 2, generator=_gen(2), dtype=F64)
    whole = ntk_operator(model, x) @ V
    for chunk in (1, 3, 100):
        assert _rel(ntk_operator(model, x, chunk=chunk) @ V, whole) < 1e-13


def test_columns_are_kernel_columns() -> None:
    model, x = MODELS["cnn"]
    K = _dense(model, x, "full")
    op = ntk_operator(model, x)
    assert _rel(op.columns([3, 0]), K[:, [3, 0]]) < REL


def test_frozen_parameters_do_not_count() -> None:
    g = _gen(3)
    model = nk.MLP(3, [6], 1, generator=g, dtype=F64)
    x = torch.randn(6, 3, generator=g, dtype=F64)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(list(dict(model.named_parameters()))[-1].rsplit(".", 1)[0]))
    K = nk.ntk(model, x)
    v = torch.randn(6, generator=g, dtype=F64)
    assert _rel(ntk_operator(model, x) @ v, K @ v) < REL


def test_operator_validates_inputs() -> None:
    model, x = MODELS["mlp"]
    with pytest.raises(ValueError, match="output must be one of"):
        ntk_operator(model, x, output="diag")
    with pytest.raises(ValueError, match="chunk must be an int >= 1"):
        ntk_operator(model, x, chunk=0)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        ntk_operator(lambda t: t, x)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError,
        match=r"x must match the model's parameters \(torch.float64 on cpu\), "
        r"got torch.float32 on cpu",
    ):
        ntk_operator(model, x.float())
    with pytest.raises(ValueError, match=r"x \(rows of shape \(4,\)"):
        ntk_operator(model, torch.randn(3, 4, dtype=F64))
    op = ntk_operator(model, x)
    with pytest.raises(ValueError, match=r"v must have shape \(14,\) or \(14, k\).*got \(7,\)"):
        op @ torch.ones(7, dtype=F64)
    with pytest.raises(TypeError, match="v must be a floating-point tensor"):
        op @ torch.ones(14, dtype=torch.long)
    with pytest.raises(ValueError, match=r"x must have shape \(14,\) or \(14, 1\).*got \(5,\)"):
        op.matvec(np.ones(5))
    with pytest.raises(ValueError, match=r"X must have shape \(14, k\).*got \(14,\)"):
        op.matmat(np.ones(14))


def test_operator_refuses_models_coupling_rows() -> None:
    g = _gen(4)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 1)).double()
    model.train()
    with pytest.raises(ValueError, match="couples the rows of a batch"):
        ntk_operator(model, torch.randn(6, 3, generator=g, dtype=F64))


def test_dense_and_file_backed_operators(tmp_path) -> None:
    model, x = MODELS["resnet"]
    K = _dense(model, x, "full")
    path = tmp_path / "k.npy"
    np.save(path, K.numpy())
    mm = np.load(path, mmap_mode="r")
    V = torch.randn(K.shape[0], 2, generator=_gen(5), dtype=F64)
    ops = [as_kernel_operator(K), as_kernel_operator(mm, block_rows=3), as_kernel_operator(aslinearoperator(K.numpy()))]
    assert isinstance(ops[0], DenseKernelOperator) and isinstance(ops[1], ArrayKernelOperator)
    for op in ops:
        assert _rel(op @ V, K @ V) < 1e-13, repr(op)
        assert _rel(op.diagonal(), K.diagonal()) < 1e-13, repr(op)
    # (n, n, O, O) tensors take the solvers' (n*O, n*O) ordering
    K4 = nk.ntk(model, x)
    assert _rel(as_kernel_operator(K4) @ V, K @ V) < 1e-13


def test_as_kernel_operator_refuses_non_kernels(tmp_path) -> None:
    A = torch.randn(6, 6, generator=_gen(6), dtype=F64)
    with pytest.raises(ValueError, match="kernel must be symmetric: relative asymmetry"):
        as_kernel_operator(A)
    path = tmp_path / "a.npy"
    np.save(path, A.numpy())
    with pytest.raises(ValueError, match="kernel must be symmetric"):
        as_kernel_operator(np.load(path, mmap_mode="r"), block_rows=4)
    with pytest.raises(ValueError, match="kernel must be symmetric"):
        as_kernel_operator(aslinearoperator(A.numpy()))
    bad = (A @ A.T).numpy()
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        as_kernel_operator(bad)
    with pytest.raises(ValueError, match=r"square \(N, N\)"):
        as_kernel_operator(np.ones((3, 4)))
    with pytest.raises(TypeError, match="float32 or float64 array"):
        as_kernel_operator(np.eye(3, dtype=np.int64))
    with pytest.raises(TypeError, match="kernel must be a torch.Tensor, a numpy array"):
        as_kernel_operator([[1.0]])
    assert isinstance(aslinearoperator(np.eye(2)), LinearOperator)
