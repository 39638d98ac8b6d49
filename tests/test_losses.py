"""Losses of seed 000 §4: values, gradients, mixtures and the conditions (i)-(iii)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ntkcheck.dynamics.losses import MSE, CrossEntropy, DistLoss, Loss, LpLoss, Mixture, check_conditions

P_VALUES = [1.5, 2.0, 3.0, 4.0]


def _pair(shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("shape", [(1,), (9,), (9, 3)])
@pytest.mark.parametrize("p", P_VALUES)
def test_lp_value_matches_numpy(p: float, shape: tuple[int, ...]) -> None:
    h, y = _pair(shape)
    ref = np.sum(np.abs(h.numpy() - y.numpy()) ** p) / shape[0]  # mean over samples, sum over outputs
    assert float(LpLoss(p)(h, y)) == pytest.approx(ref, rel=1e-13)


@pytest.mark.parametrize("shape", [(9,), (9, 3)])
@pytest.mark.parametrize("p", P_VALUES)
def test_lp_grad_and_hessian_closed_forms(p: float, shape: tuple[int, ...]) -> None:
    h, y = _pair(shape, seed=1)
    loss = LpLoss(p)
    r = (h - y).numpy()
    g_ref = p / shape[0] * np.abs(r) ** (p - 1) * np.sign(r)
    np.testing.assert_allclose(loss.grad(h, y).numpy(), g_ref, rtol=1e-13, atol=0)
    # the closed forms agree with the autograd defaults of the base class
    torch.testing.assert_close(loss.grad(h, y), Loss._grad(loss, h, y), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(loss.hessian(h, y), Loss._hessian(loss, h, y), rtol=1e-10, atol=1e-13)
    H_ref = np.diag((p * (p - 1) / shape[0] * np.abs(r) ** (p - 2)).ravel())
    np.testing.assert_allclose(loss.hessian(h, y).numpy(), H_ref, rtol=1e-12, atol=0)


def test_mse_gradient_is_two_over_n() -> None:
    h, y = _pair((6,))
    torch.testing.assert_close(MSE.grad(h, y), 2 / 6 * (h - y), rtol=1e-14, atol=0)


def test_lp_hessian_finite_at_zero_residual_for_p_below_two() -> None:
    y = torch.zeros(4, dtype=torch.float64)
    H = LpLoss(1.5).hessian(y.clone(), y)
    assert bool(torch.isfinite(H).all())
    assert float(LpLoss(1.5).grad(y.clone(), y).abs().max()) == 0.0


@pytest.mark.parametrize("p", [1.0, 0.5, 0.0, -2.0, math.inf, math.nan])
def test_lp_rejects_p_outside_one_to_infinity(p: float) -> None:
    with pytest.raises(ValueError, match=r"p must satisfy 1 < p < inf"):
        LpLoss(p)


@pytest.mark.parametrize("p", ["2", None, True])
def test_lp_rejects_non_numbers(p: object) -> None:
    with pytest.raises(TypeError, match=r"p must be a float"):
        LpLoss(p)  # type: ignore[arg-type]


def test_mixture_is_weighted_sum() -> None:
    h, y = _pair((8, 2), seed=3)
    mix = 0.3 * LpLoss(2) + LpLoss(4) * 2.0 + LpLoss(1.5)
    assert isinstance(mix, Mixture)
    assert [w for w, _ in mix.terms] == [0.3, 2.0, 1.0]  # nested sums are flattened
    ref = 0.3 * LpLoss(2)(h, y) + 2.0 * LpLoss(4)(h, y) + LpLoss(1.5)(h, y)
    torch.testing.assert_close(mix(h, y), ref, rtol=1e-14, atol=0)
    g_ref = 0.3 * LpLoss(2).grad(h, y) + 2.0 * LpLoss(4).grad(h, y) + LpLoss(1.5).grad(h, y)
    torch.testing.assert_close(mix.grad(h, y), g_ref, rtol=1e-14, atol=0)
    torch.testing.assert_close(mix.grad(h, y), Loss._grad(mix, h, y), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(mix.hessian(h, y), Loss._hessian(mix, h, y), rtol=1e-10, atol=1e-13)
    assert mix.section4 and mix.shift_invariant
    scaled = 2 * mix
    torch.testing.assert_close(scaled(h, y), 2 * ref, rtol=1e-14, atol=0)


@pytest.mark.parametrize("weight", [0.0, -1.0, math.inf, math.nan])
def test_mixture_rejects_non_positive_weights(weight: float) -> None:
    with pytest.raises(ValueError, match=r"weight must be a positive finite float"):
        weight * LpLoss(2)
    with pytest.raises(ValueError, match=r"weight must be a positive finite float"):
        Mixture([(weight, LpLoss(2))])


def test_mixture_rejects_non_losses() -> None:
    with pytest.raises(TypeError):
        LpLoss(2) + 1.0  # type: ignore[operator]
    with pytest.raises(TypeError, match=r"terms\[0\] must be a \(weight, Loss\) pair"):
        Mixture([(1.0, "mse")])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"terms must hold at least one"):
        Mixture([])


def test_distloss_wraps_a_callable_with_autograd_gradient() -> None:
    h, y = _pair((7,), seed=4)
    huber = DistLoss(lambda a, b: (torch.sqrt(1 + (a - b) ** 2) - 1).sum(), name="pseudo_huber")
    r = (h - y).numpy()
    assert float(huber(h, y)) == pytest.approx(np.sum(np.sqrt(1 + r**2) - 1), rel=1e-13)
    np.testing.assert_allclose(huber.grad(h, y).numpy(), r / np.sqrt(1 + r**2), rtol=1e-12)
    assert not huber.shift_invariant and "pseudo_huber" in repr(huber)


def test_distloss_rejects_bad_callables() -> None:
    with pytest.raises(TypeError, match=r"fn must be callable"):
        DistLoss(3.0)  # type: ignore[arg-type]
    h, y = _pair((3,))
    with pytest.raises(ValueError, match=r"0-dim tensor"):
        DistLoss(lambda a, b: a - b)(h, y)


def test_loss_arguments_are_checked() -> None:
    h, y = _pair((5,))
    with pytest.raises(ValueError, match=r"y must have the shape of h"):
        MSE(h, y[:4])
    bad = h.clone()
    bad[2] = math.nan
    with pytest.raises(ValueError, match=r"h contains 1 NaN"):
        MSE.grad(bad, y)
    with pytest.raises(TypeError, match=r"y must have the dtype and device of h"):
        MSE(h, y.float())
    with pytest.raises(ValueError, match=r"h must have shape \(n,\) or \(n, O\)"):
        MSE(h.reshape(1, 1, 5), y.reshape(1, 1, 5))


@pytest.mark.parametrize(
    "loss",
    [
        LpLoss(1.5),
        LpLoss(2),
        LpLoss(3),
        LpLoss(4),
        0.5 * LpLoss(2) + LpLoss(4),
        DistLoss(lambda a, b: (torch.sqrt(1 + (a - b) ** 2) - 1).sum()),
    ],
    ids=["p1.5", "p2", "p3", "p4", "mixture", "pseudo_huber"],
)
def test_check_conditions_accepts_section4_losses(loss: Loss) -> None:
    check_conditions(loss, 5, torch.Generator().manual_seed(0))
    check_conditions(loss, 4, outputs=2)


def test_check_conditions_catches_condition_i() -> None:
    shifted = DistLoss(lambda a, b: ((a - b) ** 2).sum() + 1.0)
    with pytest.raises(ValueError, match=r"condition \(i\).*dist\(z, z\) = 1\.000e\+00"):
        check_conditions(shifted, 5)


def test_check_conditions_catches_condition_ii() -> None:
    # positive near z, negative once |z' - z| > 10: the minimum is not attained at z' = z
    dipping = DistLoss(lambda a, b: ((a - b) ** 2).sum() - 0.01 * ((a - b) ** 4).sum())
    with pytest.raises(ValueError, match=r"condition \(ii\)"):
        check_conditions(dipping, 3)


def test_check_conditions_catches_condition_iii() -> None:
    # positive away from z but flat (zero gradient) once |z' - z| > 1
    flat = DistLoss(lambda a, b: torch.clamp(((a - b) ** 2).sum(), max=1.0))
    with pytest.raises(ValueError, match=r"condition \(iii\).*\|\|grad dist\(z', z\)\|\| = 0\.000e\+00"):
        check_conditions(flat, 3)


def test_check_conditions_catches_nonzero_gradient_at_target() -> None:
    # dist(z, z) = 0 but the gradient there is not zero (z is not a minimiser)
    tilted = DistLoss(lambda a, b: ((a - b) ** 2).sum() + (a - b).sum())
    with pytest.raises(ValueError, match=r"condition \(iii\): \|\|grad dist\(z, z\)\|\|"):
        check_conditions(tilted, 3)


def test_check_conditions_argument_checks() -> None:
    with pytest.raises(ValueError, match=r"n must be an int >= 1"):
        check_conditions(MSE, 0)
    with pytest.raises(TypeError, match=r"loss must be a ntkcheck.dynamics.losses.Loss"):
        check_conditions(lambda a, b: a, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"outside the class of seed 000 §4"):
        check_conditions(CrossEntropy(), 3)


def test_cross_entropy_value_and_gradient() -> None:
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(6, 4, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 3, 1, 1, 2, 0])
    ce = CrossEntropy()
    z = logits.numpy()
    logp = z - z.max(1, keepdims=True) - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
    assert float(ce(logits, labels)) == pytest.approx(-logp[np.arange(6), labels.numpy()].mean(), rel=1e-13)
    onehot = np.eye(4)[labels.numpy()]
    np.testing.assert_allclose(ce.grad(logits, labels).numpy(), (np.exp(logp) - onehot) / 6, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(ce.grad(logits, labels), Loss._grad(ce, logits, labels), rtol=1e-12, atol=1e-15)
    assert ce.section4 is False


def test_cross_entropy_argument_checks() -> None:
    logits = torch.zeros(3, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"y labels must lie in \[0, 2\)"):
        CrossEntropy()(logits, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"y must be integer class labels of shape \(3,\)"):
        CrossEntropy()(logits, torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"h must be floating-point logits of shape \(n, C\)"):
        CrossEntropy()(torch.zeros(3, dtype=torch.float64), torch.tensor([0, 1, 1]))
