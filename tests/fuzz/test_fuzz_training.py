"""Bad and unusual inputs to ode_flow, train, sharpness and the losses.

Every refused input raises the documented exception type with a message that names the argument; every
unusual input that is accepted gives the value of a float64 numpy reference (the MSE flow
``Y + V exp(-(2 lr / n) lambda t) V^T (h0 - Y)`` of seed 000 eq (3), or the dense ``J^T H J``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import ntkcheck as nk
from ntkcheck.dynamics.curvature import sharpness
from ntkcheck.dynamics.flows import ode_flow
from ntkcheck.dynamics.losses import MSE, CrossEntropy, DistLoss, LpLoss, Mixture
from ntkcheck.dynamics.training import CurvatureError, train
from ntkcheck.errors import FlowLimitError

F64 = torch.float64


def _k(n: int = 5) -> torch.Tensor:
    a = torch.randn(n, 6, generator=torch.Generator().manual_seed(0), dtype=F64)
    return a @ a.T / 6 + 0.1 * torch.eye(n, dtype=F64)


def _y(n: int = 5) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(1), dtype=F64)


def _mse_reference(K: torch.Tensor, y: torch.Tensor, times, lr: float = 1.0, h0=None) -> np.ndarray:
    Kn, yn = K.numpy(), y.numpy()
    h0n = np.zeros_like(yn) if h0 is None else h0.numpy()
    lam, V = np.linalg.eigh(Kn)
    out = []
    for t in times:
        decay = np.zeros_like(lam) if math.isinf(t) else np.exp(-(2 * lr / len(yn)) * lam * t)
        out.append(yn + V @ (decay * (V.T @ (h0n - yn))))
    return np.stack(out)


def _flow(**change) -> Callable[[], object]:
    def call():
        kwargs = dict(k_train=_k(), y_train=_y(), loss=MSE, times=[1.0])
        kwargs.update(change)
        return ode_flow(**kwargs)

    return call


def _mlp(**kw) -> nk.MLP:
    return nk.MLP(3, [8], 1, dtype=F64, generator=torch.Generator().manual_seed(0), **kw)


def _data(n: int = 6):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(n, 3, generator=g, dtype=F64)
    return x, torch.sin(x[:, 0])


def _train(**change) -> Callable[[], object]:
    def call():
        x, y = _data()
        kwargs = dict(model=_mlp(), x=x, y=y, loss=MSE, lr=0.01, steps=2)
        kwargs.update(change)
        return train(**kwargs)

    return call


def _sharp(**change) -> Callable[[], object]:
    def call():
        x, y = _data()
        kwargs = dict(model=_mlp(), x=x, y=y, loss=MSE)
        kwargs.update(change)
        return sharpness(**kwargs)

    return call


class NoParams(nn.Module):
    in_features = 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1]


def _frozen() -> nn.Module:
    return _mlp().requires_grad_(False)


def _zero_residual_y() -> torch.Tensor:
    x, y = _data()
    with torch.no_grad():
        y[2] = _mlp()(x)[2, 0]
    return y


def _vector_loss(h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return (h - t) ** 2  # not a scalar


H = torch.zeros(4, dtype=F64)

CASES: list[tuple[str, Callable[[], object], type[BaseException], str]] = [
    # ode_flow: times, lr, loss, tolerances, limits, shapes
    ("flow-times-negative", _flow(times=[1.0, -0.5]), ValueError, "times"),
    ("flow-times-nan", _flow(times=[float("nan")]), ValueError, "times"),
    ("flow-times-2d", _flow(times=[[1.0, 2.0]]), ValueError, "times"),
    ("flow-times-empty", _flow(times=[]), ValueError, "times"),
    ("flow-times-string", _flow(times="soon"), TypeError, "times"),
    ("flow-times-past-max-time", _flow(times=[3.0], max_time=2.0), ValueError, "max_time"),
    ("flow-lr-zero", _flow(lr=0.0), ValueError, "lr"),
    ("flow-lr-negative", _flow(lr=-1.0), ValueError, "lr"),
    ("flow-lr-nan", _flow(lr=float("nan")), ValueError, "lr"),
    ("flow-lr-inf", _flow(lr=float("inf")), ValueError, "lr"),
    ("flow-lr-string", _flow(lr="1"), TypeError, "lr"),
    ("flow-loss-callable", _flow(loss=lambda h, y: ((h - y) ** 2).mean()), TypeError, "loss"),
    ("flow-loss-string", _flow(loss="mse"), TypeError, "loss"),
    ("flow-loss-cross-entropy", _flow(loss=CrossEntropy()), ValueError, "loss"),
    ("flow-tol-zero", _flow(tol=0.0), ValueError, "tol"),
    ("flow-tol-above-one", _flow(tol=1.5), ValueError, "tol"),
    ("flow-rtol-string", _flow(rtol="tight"), TypeError, "rtol"),
    ("flow-atol-negative", _flow(atol=-1e-9), ValueError, "atol"),
    ("flow-grad-tol-negative", _flow(grad_tol=-1.0), ValueError, "grad_tol"),
    ("flow-grad-tol-nan", _flow(grad_tol=float("nan")), ValueError, "grad_tol"),
    ("flow-max-time-zero", _flow(max_time=0.0), ValueError, "max_time"),
    ("flow-max-steps-zero", _flow(max_steps=0), ValueError, "max_steps"),
    ("flow-max-steps-float", _flow(max_steps=10.5), TypeError, "max_steps"),
    ("flow-max-steps-bool", _flow(max_steps=True), TypeError, "max_steps"),
    ("flow-max-seconds-zero", _flow(max_seconds=0.0), ValueError, "max_seconds"),
    ("flow-max-seconds-inf", _flow(max_seconds=float("inf")), ValueError, "max_seconds"),
    ("flow-max-seconds-string", _flow(max_seconds="1"), TypeError, "max_seconds"),
    ("flow-progress-string", _flow(progress="yes"), TypeError, "progress"),
    ("flow-max-steps-reached", _flow(loss=LpLoss(4), max_steps=3), FlowLimitError, "max_steps=3"),
    ("flow-y-extra-row", _flow(y_train=_y(6)), ValueError, "y_train"),
    ("flow-y-list", _flow(y_train=[0.0] * 5), TypeError, "y_train"),
    ("flow-k-not-square", _flow(k_train=torch.zeros(5, 4, dtype=F64)), ValueError, "k_train"),
    ("flow-k-singular", _flow(k_train=torch.ones(5, 5, dtype=F64)), ValueError, "k_train"),
    # train: step size, budget, optimizer, loss, data, model
    ("train-lr-zero", _train(lr=0.0), ValueError, "lr"),
    ("train-lr-inf", _train(lr=float("inf")), ValueError, "lr"),
    ("train-lr-string", _train(lr="0.1"), TypeError, "lr"),
    ("train-lr-missing", _train(lr=None), TypeError, "lr"),
    ("train-steps-zero", _train(steps=0), ValueError, "steps"),
    ("train-steps-negative", _train(steps=-3), ValueError, "steps"),
    ("train-steps-float", _train(steps=2.0), TypeError, "steps"),
    ("train-steps-bool", _train(steps=True), TypeError, "steps"),
    ("train-optimizer-unknown", _train(optimizer="SGD"), ValueError, "optimizer"),
    ("train-optimizer-int", _train(optimizer=3), TypeError, "optimizer"),
    ("train-optimizer-class", _train(optimizer=torch.optim.SGD, lr=None), TypeError, "optimizer"),
    ("train-loss-none", _train(loss=None), TypeError, "loss"),
    ("train-loss-vector", _train(loss=_vector_loss), TypeError, "loss"),
    ("train-x-1d", _train(x=torch.zeros(6, dtype=F64)), ValueError, "x"),
    ("train-x-int", _train(x=torch.zeros(6, 3, dtype=torch.int64)), TypeError, "x"),
    ("train-x-float32", _train(x=torch.zeros(6, 3)), ValueError, "x"),
    ("train-x-features", _train(x=torch.zeros(6, 4, dtype=F64)), ValueError, "x"),
    ("train-x-inf", _train(x=torch.full((6, 3), float("inf"), dtype=F64)), ValueError, "x"),
    ("train-y-complex", _train(y=torch.zeros(6, dtype=torch.complex128)), TypeError, "y"),
    ("train-y-rows", _train(y=torch.zeros(5, dtype=F64)), ValueError, "y"),
    ("train-y-float32", _train(y=torch.zeros(6)), ValueError, "y"),
    ("train-y-nan", _train(y=torch.full((6,), float("nan"), dtype=F64)), ValueError, "y"),
    ("train-y-too-many-outputs", _train(y=torch.zeros(6, 2, dtype=F64)), ValueError, "y"),
    ("train-model-not-module", _train(model=lambda t: t), TypeError, "model"),
    ("train-model-no-parameters", _train(model=NoParams()), ValueError, "model"),
    ("train-model-all-frozen", _train(model=_frozen()), ValueError, "model"),
    ("train-batch-size-too-big", _train(optimizer="sgd", batch_size=7), ValueError, "batch_size"),
    ("train-batch-size-with-gd", _train(batch_size=3), ValueError, "batch_size"),
    ("train-record-every-zero", _train(record_every=0), ValueError, "record_every"),
    ("train-loss-threshold-negative", _train(loss_threshold=-1.0), ValueError, "loss_threshold"),
    ("train-progress-int", _train(progress=1), TypeError, "progress"),
    ("train-check-lr-string", _train(check_lr="yes"), TypeError, "check_lr"),
    ("train-generator-seed", _train(generator=0), TypeError, "generator"),
    ("train-x-test-alone", _train(x_test=torch.zeros(2, 3, dtype=F64)), ValueError, "x_test"),
    # sharpness
    ("sharpness-loss-int", _sharp(loss=3), TypeError, "loss"),
    ("sharpness-model-not-module", _sharp(model="mlp"), TypeError, "model"),
    ("sharpness-model-frozen", _sharp(model=_frozen()), ValueError, "model"),
    ("sharpness-x-features", _sharp(x=torch.zeros(6, 2, dtype=F64)), ValueError, "x"),
    ("sharpness-y-rows", _sharp(y=torch.zeros(4, dtype=F64)), ValueError, "y"),
    ("sharpness-lp1.5-zero-residual", _sharp(y=_zero_residual_y(), loss=LpLoss(1.5)), CurvatureError, "loss"),
    ("sharpness-mixture-zero-residual", _sharp(y=_zero_residual_y(), loss=MSE + LpLoss(1.5)), CurvatureError, "loss"),
    # losses
    ("lp-p-one", lambda: LpLoss(1.0), ValueError, "p"),
    ("lp-p-half", lambda: LpLoss(0.5), ValueError, "p"),
    ("lp-p-negative", lambda: LpLoss(-2.0), ValueError, "p"),
    ("lp-p-nan", lambda: LpLoss(float("nan")), ValueError, "p"),
    ("lp-p-inf", lambda: LpLoss(float("inf")), ValueError, "p"),
    ("lp-p-string", lambda: LpLoss("2"), TypeError, "p"),
    ("lp-p-bool", lambda: LpLoss(True), TypeError, "p"),
    ("mixture-empty", lambda: Mixture([]), ValueError, "terms"),
    ("mixture-weight-zero", lambda: Mixture([(0.0, MSE)]), ValueError, "weight"),
    ("mixture-weight-negative", lambda: Mixture([(-1.0, MSE)]), ValueError, "weight"),
    ("mixture-weight-nan", lambda: Mixture([(float("nan"), MSE)]), ValueError, "weight"),
    ("mixture-weight-inf", lambda: Mixture([(float("inf"), MSE)]), ValueError, "weight"),
    ("mixture-weight-string", lambda: Mixture([("1", MSE)]), TypeError, "weight"),
    ("mixture-term-not-loss", lambda: Mixture([(1.0, "mse")]), TypeError, "terms[0]"),
    ("mixture-term-not-pair", lambda: Mixture([1.0]), TypeError, "terms[0]"),
    ("loss-times-negative", lambda: -1.0 * MSE, ValueError, "weight"),
    ("loss-times-string", lambda: MSE * "2", TypeError, "weight"),
    ("loss-h-int", lambda: MSE(torch.zeros(4, dtype=torch.int64), H), TypeError, "h"),
    ("loss-h-nan", lambda: MSE(torch.full((4,), float("nan"), dtype=F64), H), ValueError, "h"),
    ("loss-y-shape", lambda: MSE(H, torch.zeros(5, dtype=F64)), ValueError, "y"),
    ("loss-y-dtype", lambda: MSE(H, torch.zeros(4)), TypeError, "y"),
    ("distloss-fn-not-callable", lambda: DistLoss(3), TypeError, "fn"),
]


@pytest.mark.parametrize("call, exc, name", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_names_the_argument(call, exc, name):
    with pytest.raises(exc) as info:
        call()
    assert name in str(info.value), str(info.value)


# -- unusual inputs that are accepted: values against the float64 reference ----------------------------------


def test_unsorted_and_repeated_times_give_the_closed_form_at_each():
    times = [10.0, 0.0, math.inf, 1.0, 1.0]
    res = ode_flow(_k(), _y(), loss=MSE, times=times)
    ref = _mse_reference(_k(), _y(), times)
    assert np.abs(res.train.numpy() - ref).max() <= 1e-7 * float(_y().norm())
    assert torch.equal(res.train[1], torch.zeros(5, dtype=F64))  # t = 0: exactly h0


def test_lr_rescales_time():
    a = ode_flow(_k(), _y(), loss=LpLoss(3), times=[2.0], lr=0.5)
    b = ode_flow(_k(), _y(), loss=LpLoss(3), times=[1.0], lr=1.0)
    assert float((a.train - b.train).norm()) <= 1e-7 * float(_y().norm())


def test_start_at_the_targets_is_a_rest_point():
    res = ode_flow(_k(), _y(), loss=LpLoss(4), times=[1.0, math.inf], h_ini_train=_y())
    assert res.converged and res.steps == 0 and torch.equal(res.train[0], _y())


@settings(max_examples=8, deadline=None, derandomize=True)
@given(n=st.integers(2, 6), log_cond=st.floats(0.0, 8.0), lr=st.floats(0.1, 10.0), seed=st.integers(0, 2**16))
def test_mse_flow_matches_the_closed_form_on_random_kernels(n, log_cond, lr, seed):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    K = torch.from_numpy(((Q * np.logspace(0, -log_cond, n)) @ Q.T + (Q * np.logspace(0, -log_cond, n)) @ Q.T).T / 2)
    y, h0 = torch.from_numpy(rng.standard_normal(n)), torch.from_numpy(rng.standard_normal(n))
    times = [0.5, 5.0, math.inf]
    res = ode_flow(K, y, loss=MSE, times=times, lr=lr, h_ini_train=h0, max_cond=1e10)
    ref = _mse_reference(K, y, times, lr, h0)
    assert np.linalg.norm(res.train.numpy() - ref, axis=1).max() <= 1e-6 * float((y - h0).norm())


def test_sharpness_of_a_linear_loss_is_zero():
    """No curvature at all (loss linear in h): lambda_max = 0, not an ARPACK failure."""
    x, y = _data()
    assert sharpness(_mlp(), x, y, lambda h, t: (h - t).sum()) == 0.0


def test_sharpness_of_a_one_parameter_model_is_the_dense_value():
    class Scale(nn.Module):
        in_features = 3

        def __init__(self) -> None:
            super().__init__()
            self.c = nn.Parameter(torch.tensor(0.7, dtype=F64))

        def forward(self, x):
            return self.c * x[:, :1]

    x, y = _data()
    expected = float((2 / 6) * (x[:, 0] ** 2).sum())  # J = x[:, 0], H = (2/n) I
    assert math.isclose(sharpness(Scale(), x, y, MSE), expected, rel_tol=1e-12)
