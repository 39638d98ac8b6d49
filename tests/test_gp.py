"""GP inference and the infinite ensemble (ntkcheck.dynamics.gp) against independent computations, in float64.

* the ensemble mean against the kernel solvers (``interpolate`` at t = inf, ``mse_flow`` from
  ``h_ini = 0`` at time t: seed 000 eqs (3), (5)), and the readout-only ensemble at t = inf against
  the Cholesky-based ``gp_inference``;
* the covariance against sampling: exact Gaussian initial outputs pushed through ``mse_flow``
  (many columns at once), and wide one-hidden-layer networks, each trained in closed form on its
  own empirical NTK from its own initial outputs (the linearized flow), within standard errors;
* defining properties: symmetric PSD covariances, the prior at t = 0, zero variance on the
  training points.
"""

from __future__ import annotations

import pytest
import torch
from _gp_kernels import INF, TIMES, D, _close, _ensemble, _kernels

import ntkcheck as nk
from ntkcheck.dynamics.gp import GaussianPrediction, analytic_ensemble, gp_inference

Z = 4.5  # standard errors a Monte Carlo estimate may deviate (a few dozen entries per test, fixed seeds)


def _assert_psd(cov: torch.Tensor, what: str) -> None:
    for k, c in enumerate(cov.reshape(-1, *cov.shape[-2:])):
        assert torch.equal(c, c.T), f"{what}[{k}] is not exactly symmetric: max|C - C^T| = {(c - c.T).abs().max():.3e}"
        lam = torch.linalg.eigvalsh(c)
        assert float(lam[0]) >= -1e-12 * max(float(lam[-1]), 1.0), f"{what}[{k}] has eigenvalue {float(lam[0]):.3e}"


# -- the mean against the solvers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("out", [1, 3])
@pytest.mark.parametrize("readout_only", [False, True])
def test_mean_at_infinite_time_is_the_interpolant(out, readout_only):
    nngp, ntk, y = _kernels(out=out)
    r = _ensemble(nngp, None if readout_only else ntk, y, INF)
    k, kx = (nngp[0], nngp[1]) if readout_only else ntk
    _close(
        r.mean[0], nk.interpolate(k, y, k_test_train=kx), "ensemble mean at t = inf vs interpolate (seed 000 eq (5))"
    )


@pytest.mark.parametrize("lr", [1.0, 0.37])
@pytest.mark.parametrize("out", [1, 2])
@pytest.mark.parametrize("readout_only", [False, True])
def test_mean_at_time_t_is_the_flow_from_zero_initial_output(lr, out, readout_only):
    nngp, ntk, y = _kernels(seed=1, out=out)
    r = _ensemble(nngp, None if readout_only else ntk, y, TIMES, lr=lr)
    k, kx = (nngp[0], nngp[1]) if readout_only else ntk
    flow = nk.mse_flow(k, y, times=TIMES, k_test_train=kx, lr=lr)  # h_ini = 0
    assert flow.test is not None
    _close(r.mean, flow.test, "ensemble mean vs mse_flow with h_ini = 0 (seed 000 eq (3))")
    assert torch.equal(r.times, flow.times)


def test_readout_only_ensemble_at_infinite_time_is_the_gp_posterior():
    nngp, _, y = _kernels(seed=2, out=2)
    e = _ensemble(nngp, None, y, [INF])
    p = gp_inference(nngp[0], y, k_test_train=nngp[1], k_test_test=nngp[2])
    assert p.covariance is not None and e.covariance is not None
    _close(e.mean[0], p.mean, "readout-only ensemble mean at t = inf (eigh) vs gp_inference (Cholesky)")
    _close(e.covariance[0], p.covariance, "readout-only ensemble covariance at t = inf vs gp_inference")


def test_ntk_formula_with_the_nngp_as_ntk_reduces_to_the_readout_formula():
    """Lee et al. 2019 eq (16) with Theta = K equals K** - K*X K^-1 (I - e^{-2cKt}) K_X* (two code paths)."""
    nngp, _, y = _kernels(seed=3)
    general = _ensemble(nngp, (nngp[0], nngp[1]), y, TIMES, lr=0.8)
    readout = _ensemble(nngp, None, y, TIMES, lr=0.8)
    assert general.covariance is not None and readout.covariance is not None
    _close(general.mean, readout.mean, "mean")
    _close(general.covariance, readout.covariance, "covariance (general vs readout-only formula)", rtol=1e-9)


# -- the covariance ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("readout_only", [False, True])
def test_covariance_is_symmetric_positive_semidefinite(readout_only):
    nngp, ntk, y = _kernels(seed=4, n=9, m=6, out=2)
    r = _ensemble(nngp, None if readout_only else ntk, y, [0.0, 0.01, 0.5, 3.0, 40.0, INF])
    assert r.covariance is not None and r.covariance.shape == (6, 6, 6)
    _assert_psd(r.covariance, "ensemble covariance")
    p = gp_inference(nngp[0], y, k_test_train=nngp[1], k_test_test=nngp[2])
    assert p.covariance is not None
    _assert_psd(p.covariance[None], "gp_inference covariance")


@pytest.mark.parametrize("readout_only", [False, True])
def test_at_time_zero_the_ensemble_is_the_prior(readout_only):
    nngp, ntk, y = _kernels(seed=5)
    r = _ensemble(nngp, None if readout_only else ntk, y, [0.0, 1.0])
    assert r.covariance is not None
    assert torch.equal(r.mean[0], torch.zeros_like(r.mean[0])), "mean at t = 0 must be 0 (the prior mean)"
    _close(r.covariance[0], nngp[2], "covariance at t = 0 vs the prior NNGP K** on the test points", rtol=1e-14)
    assert float((r.covariance[1] - nngp[2]).abs().max()) > 1e-3 * float(nngp[2].abs().max()), (
        "the covariance must move away from the prior once training starts"
    )


def test_noise_free_gp_posterior_on_the_training_points_has_zero_variance():
    nngp, ntk, y = _kernels(seed=6, out=2)
    K = nngp[0]
    p = gp_inference(K, y, k_test_train=K, k_test_test=K)
    assert p.covariance is not None
    _close(p.mean, y, "posterior mean on the training points vs y_train", rtol=1e-11)
    assert float(p.covariance.abs().max()) <= 1e-11 * float(K.abs().max()), (
        f"posterior variance on the training points: max |cov| = {float(p.covariance.abs().max()):.3e}"
    )
    # every trained member interpolates: the NTK ensemble at t = inf is N(Y, 0) on X as well
    e = _ensemble((K, K, K), (ntk[0], ntk[0]), y, INF)
    assert e.covariance is not None
    _close(e.mean[0], y, "NTK ensemble mean on the training points at t = inf", rtol=1e-11)
    assert float(e.covariance.abs().max()) <= 1e-10 * float(K.abs().max()), (
        f"NTK ensemble variance on the training points at t = inf: {float(e.covariance.abs().max()):.3e}"
    )
    # with a noise variance the posterior keeps uncertainty
    q = gp_inference(K, y, k_test_train=K, k_test_test=K, diag_reg=1e-2)
    assert q.covariance is not None and float(q.covariance.diagonal().min()) > 1e-4 * float(K.diagonal().min())


@pytest.mark.parametrize("readout_only", [False, True])
def test_covariance_equals_sampled_gaussian_initial_outputs_pushed_through_the_flow(readout_only):
    """f_0 ~ N(0, [[K, K_X*], [K*X, K**]]) exactly; each sample trained by mse_flow (S columns at once)."""
    nngp, ntk, y = _kernels(seed=7, n=6, m=3)
    n, m, S = 6, 3, 20000
    joint = torch.cat([torch.cat([nngp[0], nngp[1].T], 1), torch.cat([nngp[1], nngp[2]], 1)])
    L = torch.linalg.cholesky(joint)
    f0 = L @ torch.randn(n + m, S, generator=torch.Generator().manual_seed(70), dtype=D)
    k, kx = (nngp[0], nngp[1]) if readout_only else ntk
    times = [0.4, 3.0, INF]
    flow = nk.mse_flow(
        k,
        y[:, None].expand(n, S).contiguous(),
        times=times,
        k_test_train=kx,
        h_ini_train=f0[:n].contiguous(),
        h_ini_test=f0[n:].contiguous(),
        lr=0.6,
    )
    assert flow.test is not None
    _within_standard_errors(
        flow.test.permute(2, 0, 1),
        _ensemble(nngp, None if readout_only else ntk, y, times, lr=0.6),
        "Gaussian f_0 samples",
    )


def _within_standard_errors(samples: torch.Tensor, ens: GaussianPrediction, what: str) -> None:
    """``samples`` (S, T, m): sample mean and covariance within Z standard errors of ``ens``."""
    S = samples.shape[0]
    assert ens.covariance is not None
    mu = samples.mean(0)
    dev = samples - mu
    cov = torch.einsum("sti,stj->tij", dev, dev) / (S - 1)
    var = ens.covariance.diagonal(dim1=1, dim2=2)  # (T, m)
    z_mean = (mu - ens.mean) / (var / S).sqrt()
    se_cov = ((var[:, :, None] * var[:, None, :] + ens.covariance**2) / S).sqrt()  # Gaussian s.e. of a covariance
    z_cov = (cov - ens.covariance) / se_cov
    assert float(z_mean.abs().max()) < Z, f"{what}: mean off by {float(z_mean.abs().max()):.2f} standard errors"
    assert float(z_cov.abs().max()) < Z, f"{what}: covariance off by {float(z_cov.abs().max()):.2f} standard errors"


def test_wide_networks_trained_by_the_linearized_flow_approach_the_ensemble():
    """200 independently initialised relu networks of width 1024 (NTK parametrization), each trained in closed form
    on its own empirical NTK from its own initial outputs (seed 000 eq (3)); their mean and covariance on the test
    points against the analytic ensemble (finite-width bias O(1/width), far below the standard errors)."""
    n, m, d, width, S = 6, 3, 3, 1024, 200
    g = torch.Generator().manual_seed(8)
    x = torch.randn(n + m, d, generator=g, dtype=D)
    y = torch.randn(n, generator=g, dtype=D)

    def net(gen: torch.Generator, w: int) -> nk.MLP:
        return nk.MLP(d, [w], 1, weight_std=1.5, bias_std=0.2, generator=gen, dtype=D)

    times = [0.5, 2.0, INF]
    ens = analytic_ensemble(net(g, 2), x[:n], y, x_test=x[n:], times=times)
    gen = torch.Generator().manual_seed(80)
    preds = []
    for _ in range(S):
        f = net(gen, width)
        J = nk.jacobian(f, x)
        theta = J @ J.T
        with torch.no_grad():
            f0 = f(x)[:, 0]
        flow = nk.mse_flow(
            theta[:n, :n], y, times=times, k_test_train=theta[n:, :n], h_ini_train=f0[:n], h_ini_test=f0[n:]
        )
        assert flow.test is not None
        preds.append(flow.test)
    _within_standard_errors(torch.stack(preds), ens, f"{S} networks of width {width}")
