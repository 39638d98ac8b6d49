"""Mutants of the flows area: ode_flow, mse_flow, mse_gd, losses, training (seed 000 eqs (2), (3), (7)).

See :mod:`ntkcheck.testing.mutants`.

Each is a slip that leaves every long-time limit right or nearly right (the limit of a §4 flow does not
depend on the loss, its time scale or its gradient's constant), so only the finite-time properties
(``finite_time_dynamics``, ``gd_iterates``, ``asi``) or the test-point checks can see it.
"""

from __future__ import annotations

import numpy as np
import torch

from ntkcheck.testing.mutants import Mutant


def _ode_flow_mse_for_every_loss(original):
    from ntkcheck.dynamics.losses import MSE

    def init(self, K, loss, Y, lr, *args, **kwargs):
        original(self, K, MSE, Y, lr, *args, **kwargs)

    return init


def _mse_flow_half_rate(original):
    def mse_flow(k_train, y_train, *, lr=1.0, **kwargs):
        return original(k_train, y_train, lr=lr / 2, **kwargs)  # rate lr lambda / n for 2 lr lambda / n

    return mse_flow


def _mse_gd_one_step_late(original):
    def mse_gd(k_train, y_train, *, steps, **kwargs):
        k = np.atleast_1d(np.asarray(steps.detach().cpu() if isinstance(steps, torch.Tensor) else steps))
        return original(k_train, y_train, steps=k + 1, **kwargs)

    return mse_gd


def _ode_flow_test_ignores_h_ini_test(original):
    def ode_flow(k_train, y_train, *, h_ini_test=None, **kwargs):
        zero = None if h_ini_test is None else torch.zeros_like(h_ini_test)
        return original(k_train, y_train, h_ini_test=zero, **kwargs)  # k_* K^-1 (h - h0) alone

    return ode_flow


def _ode_flow_starts_at_zero(original):
    def ode_flow(k_train, y_train, *, h_ini_train=None, **kwargs):
        zero = None if h_ini_train is None else torch.zeros_like(h_ini_train)
        return original(k_train, y_train, h_ini_train=zero, **kwargs)

    return ode_flow


def _ode_flow_ignores_lr(original):
    def ode_flow(k_train, y_train, *, lr=1.0, **kwargs):
        return original(k_train, y_train, **kwargs)

    return ode_flow


def _lp_grad_drops_p(original):
    def _grad(self, h, y):
        r = h - y
        return r.abs().pow(self.p - 1) * r.sign() / h.shape[0]  # (1/n) |r|^(p-1) sign r: the factor p slipped

    return _grad


def _mixture_grad_drops_weights(original):
    def _grad(self, h, y):
        g = self.terms[0][1]._grad(h, y)
        for _, loss in self.terms[1:]:
            g = g + loss._grad(h, y)
        return g

    return _grad


def _train_skips_biases(original):
    def _trainable(model):
        params = original(model)
        weights = [p for p in params if p.ndim > 1]  # "no decay on biases" turned into "no update"
        return weights or params

    return _trainable


MUTANTS: list[Mutant] = [
    Mutant(
        "ode_flow_mse_for_every_loss",
        "ode_flow integrates dh/dt = -lr K (2/n)(h - Y), the MSE's gradient and Hessian, whatever loss it is given",
        "ntkcheck.dynamics._ode.field:_PolarFlow.__init__",
        _ode_flow_mse_for_every_loss,
    ),
    Mutant(
        "mse_flow_half_rate",
        "mse_flow's time scale off by 2: mode lambda decays at lr lambda / n instead of 2 lr lambda / n",
        "ntkcheck.dynamics.flows:mse_flow",
        _mse_flow_half_rate,
    ),
    Mutant(
        "mse_gd_one_step_late",
        "mse_gd returns the iterate after k + 1 steps when asked for k (off by one)",
        "ntkcheck.dynamics.flows:mse_gd",
        _mse_gd_one_step_late,
    ),
    Mutant(
        "ode_flow_test_ignores_h_ini_test",
        "ode_flow's test predictions are k_* K^-1 (h_train(t) - h0) without the initial test output h_ini_test",
        "ntkcheck.dynamics.flows:ode_flow",
        _ode_flow_test_ignores_h_ini_test,
    ),
    Mutant(
        "ode_flow_starts_at_zero",
        "ode_flow starts the training outputs at 0 whatever h_ini_train (the ASI start for every network)",
        "ntkcheck.dynamics.flows:ode_flow",
        _ode_flow_starts_at_zero,
    ),
    Mutant(
        "ode_flow_ignores_lr",
        "ode_flow integrates with lr = 1 whatever lr it is given (time not rescaled)",
        "ntkcheck.dynamics.flows:ode_flow",
        _ode_flow_ignores_lr,
    ),
    Mutant(
        "lp_grad_drops_p",
        "LpLoss's closed-form gradient is (1/n)|r|^(p-1) sign r: the factor p slipped",
        "ntkcheck.dynamics.losses:LpLoss._grad",
        _lp_grad_drops_p,
    ),
    Mutant(
        "mixture_grad_drops_weights",
        "Mixture's gradient sums its terms' gradients without their weights",
        "ntkcheck.dynamics.losses:Mixture._grad",
        _mixture_grad_drops_weights,
    ),
    Mutant(
        "train_skips_biases",
        "train() hands only the weight matrices to the optimizer: biases (1-D parameters) are never updated",
        "ntkcheck.dynamics._training_args:_trainable",
        _train_skips_biases,
    ),
]
