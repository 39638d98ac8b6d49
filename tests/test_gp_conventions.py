"""GP inference and the infinite ensemble (ntkcheck.dynamics.gp): conventions and validation, in float64.

* conventions: several outputs, the ``diag_reg`` convention, the kernels filled in from the model,
  the mean without the NNGP;
* validation: bad input raises naming the argument, a singular kernel raises with its condition number.
"""

from __future__ import annotations

import math

import pytest
import torch
from _gp_kernels import INF, TIMES, D, _close, _ensemble, _kernels

import ntkcheck as nk
from ntkcheck.dynamics.gp import analytic_ensemble, ensemble_predict, gp_inference

# -- conventions ---------------------------------------------------------------------------------------------------


def test_several_outputs_share_one_covariance_and_solve_columnwise():
    nngp, ntk, y = _kernels(seed=9, out=3)
    r = _ensemble(nngp, ntk, y, TIMES)
    assert r.mean.shape == (len(TIMES), 4, 3) and r.covariance is not None and r.covariance.shape == (len(TIMES), 4, 4)
    for o in range(3):
        c = _ensemble(nngp, ntk, y[:, o].contiguous(), TIMES)
        _close(r.mean[..., o], c.mean, f"output column {o}")
        assert c.covariance is not None
        _close(r.covariance, c.covariance, "covariance is independent of the targets")


def test_diag_reg_is_relative_to_the_mean_diagonal_unless_absolute():
    nngp, _, y = _kernels(seed=10)
    K, Kx, Ktt = nngp
    reg = 0.05
    delta = reg * float(torch.trace(K)) / K.shape[0]
    Kr = K + delta * torch.eye(K.shape[0], dtype=D)
    expected_mean = Kx @ torch.linalg.solve(Kr, y)
    expected_cov = Ktt - Kx @ torch.linalg.solve(Kr, Kx.T)
    for p in (
        gp_inference(K, y, k_test_train=Kx, k_test_test=Ktt, diag_reg=reg),
        gp_inference(K, y, k_test_train=Kx, k_test_test=Ktt, diag_reg=delta, diag_reg_absolute_scale=True),
    ):
        assert p.covariance is not None
        _close(p.mean, expected_mean, "regularised posterior mean")
        _close(p.covariance, expected_cov, "regularised posterior covariance")
    e = _ensemble(nngp, None, y, INF, diag_reg=reg)
    assert e.covariance is not None
    _close(e.mean[0], expected_mean, "regularised readout-only ensemble at t = inf")
    _close(e.covariance[0], expected_cov, "regularised readout-only ensemble covariance at t = inf")


def test_analytic_ensemble_fills_the_kernels_of_the_model():
    g = torch.Generator().manual_seed(11)
    model = nk.MLP(3, [5], 2, activation="erf", generator=g, dtype=D)
    x, xt = torch.randn(6, 3, generator=g, dtype=D), torch.randn(3, 3, generator=g, dtype=D)
    y = torch.randn(6, 2, generator=g, dtype=D)
    K = nk.analytic_nngp(model, torch.cat([x, xt]))[:, :, 0, 0]
    T = nk.analytic_ntk(model, torch.cat([x, xt]))[:, :, 0, 0]
    for get, ntk in (("ntk", (T[:6, :6], T[6:, :6])), ("nngp", None)):
        a = analytic_ensemble(model, x, y, x_test=xt, times=TIMES, get=get, lr=0.5)
        b = _ensemble((K[:6, :6], K[6:, :6], K[6:, 6:]), ntk, y, TIMES, lr=0.5)
        assert a.covariance is not None and b.covariance is not None
        _close(a.mean, b.mean, f"analytic_ensemble mean ({get})")
        _close(a.covariance, b.covariance, f"analytic_ensemble covariance ({get})")
    with pytest.raises(ValueError, match=r"y_train must have shape \(n, 2\)"):
        analytic_ensemble(model, x, y[:, 0], x_test=xt, times=1.0)
    with pytest.raises(ValueError, match="get must be one of"):
        analytic_ensemble(model, x, y, x_test=xt, times=1.0, get="ntkgp")


def test_mean_only_needs_no_nngp():
    nngp, ntk, y = _kernels(seed=12)
    a = ensemble_predict(ntk[0], y, k_test_train=ntk[1], times=TIMES, compute_cov=False)
    b = _ensemble(nngp, ntk, y, TIMES)
    assert a.covariance is None
    assert torch.equal(a.mean, b.mean)


# -- numerical trouble and validation --------------------------------------------------------------------------------


def test_singular_kernel_is_refused_with_its_condition_number_unless_regularised():
    nngp, ntk, y = _kernels(seed=13)
    dup = torch.tensor([0, 1, 2, 3, 4, 5, 5])  # the last training input twice: a singular kernel
    K, Kx, Ktt = nngp[0][dup][:, dup], nngp[1][:, dup], nngp[2]
    T, Tx = ntk[0][dup][:, dup], ntk[1][:, dup]
    y = y[dup]
    with pytest.raises(nk.SingularKernelError, match=r"condition number (inf|\d\.\d+e\+\d+) > threshold .*diag_reg"):
        gp_inference(K, y, k_test_train=Kx, k_test_test=Ktt)
    with pytest.raises(nk.SingularKernelError, match=r"k_train is singular .*condition number"):
        _ensemble((K, Kx, Ktt), (T, Tx), y, [1.0, INF])
    with pytest.raises(nk.SingularKernelError, match=r"k_train is singular"):
        _ensemble((K, Kx, Ktt), None, y, 1.0)
    with pytest.raises(nk.SingularKernelError, match=r"diag_reg=1e-30"):
        gp_inference(K, y, k_test_train=Kx, k_test_test=Ktt, diag_reg=1e-30)  # too small to help: refused, naming it
    p = gp_inference(K, y, k_test_train=Kx, k_test_test=Ktt, diag_reg=1e-8)
    e = _ensemble((K, Kx, Ktt), (T, Tx), y, [1.0, INF], diag_reg=1e-8)
    assert p.covariance is not None and e.covariance is not None
    for v in (p.mean, p.covariance, e.mean, e.covariance):
        assert bool(torch.isfinite(v).all())


def _bad_calls():
    nngp, ntk, y = _kernels(seed=14)
    K, Kx, Ktt = nngp
    T, Tx = ntk
    f32 = K.float()
    prior = {"nngp_train": K, "nngp_test_train": Kx, "nngp_test_test": Ktt}
    return [
        (lambda: gp_inference(K.numpy(), y, k_test_train=Kx), TypeError, "k_train must be a torch.Tensor"),
        (lambda: gp_inference(K[None], y, k_test_train=Kx), ValueError, r"k_train must have shape \(n, n\)"),
        (lambda: gp_inference(K[:, :, None, None], y, k_test_train=Kx), ValueError, "kernel of one output"),
        (lambda: gp_inference(K + torch.triu(K, 1), y, k_test_train=Kx), ValueError, "k_train must be symmetric"),
        (
            lambda: gp_inference(K - 2 * torch.eye(7, dtype=D) * K.diagonal().max(), y, k_test_train=Kx),
            ValueError,
            "k_train is not positive semi-definite",
        ),
        (lambda: gp_inference(K, y[:5], k_test_train=Kx), ValueError, "y_train must have 7 rows"),
        (
            lambda: gp_inference(K, y.float(), k_test_train=Kx),
            ValueError,
            r"y_train must have the dtype of k_train \(torch.float64\), got torch.float32",
        ),
        (lambda: gp_inference(K, y, k_test_train=Kx.T), ValueError, r"k_test_train must have shape \(m, 7\)"),
        (
            lambda: gp_inference(K, y, k_test_train=Kx, k_test_test=Ktt[:2, :2]),
            ValueError,
            r"k_test_test must have shape \(4, 4\)",
        ),
        (
            lambda: gp_inference(K, y, k_test_train=Kx, k_test_test=0.01 * Ktt),
            ValueError,
            r"NNGP kernels \(the joint train/test matrix",
        ),
        (
            lambda: gp_inference(K, y, k_test_train=Kx, k_test_test=Ktt, diag_reg=-1.0),
            ValueError,
            "diag_reg must be a finite float >= 0",
        ),
        (
            lambda: gp_inference(K, y, k_test_train=Kx, k_test_test=Ktt, diag_reg=True),
            TypeError,
            "diag_reg must be a finite float",
        ),
        (
            lambda: gp_inference(K, y, k_test_train=Kx, k_test_test=Ktt, diag_reg_absolute_scale=1),
            TypeError,
            "diag_reg_absolute_scale",
        ),
        (lambda: gp_inference(K, y.clone().fill_(math.nan), k_test_train=Kx), ValueError, "y_train contains 7 NaN"),
        (lambda: gp_inference(K, y, Kx), TypeError, "positional argument"),
        (lambda: ensemble_predict(T, y, k_test_train=Tx, **prior, times=-1.0), ValueError, "times must be >= 0"),
        (
            lambda: ensemble_predict(T, y, k_test_train=Tx, **prior, times=[1.0, math.nan]),
            ValueError,
            "times must be >= 0",
        ),
        (lambda: ensemble_predict(T, y, k_test_train=Tx, **prior, times="soon"), TypeError, "times must be a number"),
        (
            lambda: ensemble_predict(T, y, k_test_train=Tx, **prior, times=1.0, lr=0.0),
            ValueError,
            "lr must be a positive",
        ),
        (lambda: ensemble_predict(T, y, Tx, times=1.0), TypeError, "positional argument"),
        (
            lambda: ensemble_predict(T, y, k_test_train=Tx, nngp_train=K, nngp_test_test=Ktt, times=1.0),
            ValueError,
            "nngp_train and nngp_test_train must be given together",
        ),
        (
            lambda: ensemble_predict(T, y, k_test_train=Tx, nngp_train=K, nngp_test_train=Kx, times=1.0),
            ValueError,
            r"nngp_test_test \(K\*\*, the test-test NNGP kernel\) is None but compute_cov=True",
        ),
        (lambda: ensemble_predict(K, y, k_test_train=Kx, times=1.0), ValueError, "nngp_test_test .* is None"),
        (
            lambda: ensemble_predict(T, y, k_test_train=Tx, **prior, times=1.0, compute_cov=1),
            TypeError,
            "compute_cov must be a bool",
        ),
        (
            lambda: ensemble_predict(T[:6, :6], y[:6], k_test_train=Tx[:, :6], **prior, times=1.0),
            ValueError,
            r"nngp_train must have the shape of k_train",
        ),
        (
            lambda: ensemble_predict(T, y, k_test_train=Tx[:3], **prior, times=1.0),
            ValueError,
            r"nngp_test_train must have shape \(3, 7\)",
        ),
        (
            lambda: ensemble_predict(T.float(), y.float(), k_test_train=Tx.float(), **prior, times=1.0),
            ValueError,
            r"nngp_train must have the dtype of k_train \(torch.float32\), got torch.float64",
        ),
        (
            lambda: ensemble_predict(f32, y, k_test_train=Kx, nngp_test_test=Ktt, times=1.0),
            ValueError,
            r"k_test_train must have the dtype of k_train",
        ),
        (
            lambda: ensemble_predict(
                T, y, k_test_train=Tx, nngp_train=K, nngp_test_train=Kx, nngp_test_test=Ktt[:3, :3], times=1.0
            ),
            ValueError,
            r"nngp_test_test \(K\*\*\) must have shape",
        ),
        (
            lambda: ensemble_predict(T, y, k_test_train=Tx, **prior, times=1.0, max_cond=0.5),
            ValueError,
            "max_cond must be",
        ),
    ]


@pytest.mark.parametrize("case", range(len(_bad_calls())))
def test_bad_input_is_refused_naming_the_argument(case):
    call, err, match = _bad_calls()[case]
    with pytest.raises(err, match=match):
        call()
