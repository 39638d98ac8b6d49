"""seed 000, Thm 6, eq (12) (= problem (5), App. 9); seed 001, eqs (10)-(11): the trained network is the
minimum-RKHS-norm interpolant, and its RKHS distance from h_ini is its parameter distance from theta_0.

For the trained linearized network h = f_lin(.; theta_inf) (theta_inf = theta_0 + J^+ (Y - h_ini(X)),
seed 000 Thm 5), the proof of Thm 6 gives

    ||h - h_ini||_k = ||theta_inf - theta_0||_2,   ||h - h_ini||_k^2 = alpha^T K alpha,
    alpha = K^{-1} (Y - h_ini(X)),

and every other interpolant h_1 (h_1(X) = Y, h_1 - h_ini in H_k) is farther: ||h_1 - h_ini||_k >
||h - h_ini||_k.  Seed 001 eqs (10)-(11) state the same for the last layer (its text is garbled in the
extraction: (10) reads "H_inf = argmin ||H||_2 s.t. Y = psi(X) H", (11) "f_int = argmin ||f||_{H_Psi}
s.t. Y = f(X)").

Compared (the expected side never goes through ntkcheck.dynamics.solvers):

* the library's trained network ``min_norm_linearized`` fits Y, and ||theta_inf - theta_0||^2 equals the
  squared norm of the minimum-norm lstsq solution on the Jacobian, and alpha^T K alpha of the library's
  interpolant coefficients (``interpolate`` with k_test_train = I returns alpha);
* the RKHS norm computed in FUNCTION space on an enlarged point set Z = X + T: for g = h - h_ini in the
  span of k(., Z), ||g||_k^2 = g(Z)^T K_ZZ^{-1} g(Z) (K_ZZ = ntk at Z, solved by scipy), with g(Z)
  from the trained network's forward pass and from ``interpolate`` at Z;
* minimality against two competitors that also fit Y: theta_1 = theta_inf + v with v a random vector
  of the null space of J(X) (h_1 fits Y; Pythagoras ||theta_1 - theta_0||^2 = ||theta_inf - theta_0||^2
  + ||v||^2, so strictly larger by the measured ||v||^2), and v = (I - J^+ J) J(T)^T beta (a
  perturbation in the span of k(., T), so its function-space RKHS distance on Z is exactly
  ||theta_inf - theta_0||^2 + ||v||^2 > ||h - h_ini||_k^2).

Draws: every activation, 1-3 outputs, biases, frozen layers, seed 000's glorot init, widths up to 256
(widths below 16 raised to 16).  The training points are cut to their largest prefix, and the extra
points to those that keep cond(K_ZZ) <= ``max_condition_solve`` with it.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from ntkcheck._support.shapes import matrix_as_kernel
from ntkcheck.dynamics.linearization import jacobian, linearize, min_norm_linearized
from ntkcheck.dynamics.solvers import interpolate
from ntkcheck.kernels.empirical import ntk
from ntkcheck.testing.claims import check_at_most, check_close
from ntkcheck.testing.strategies import Arch, Dataset, architectures, datasets, seeds
from ntkcheck.testing.tolerances import max_condition_solve, tolerance

from ._common import DEVICE, DTYPE, reproduce
from ._interpolants import EPS, flat, flat_kernel, min_norm, roomy

CLAIM = "rkhs_norm"
pytestmark = pytest.mark.claim(CLAIM)
N_EXTRA = 4  # test points added to X for the function-space norm


def _identity_kernel(n: int, o: int) -> torch.Tensor:
    """The identity as a k_test_train argument: (n, n) for one output, (n, n, o, o) blocks otherwise."""
    eye = torch.eye(n * o, dtype=DTYPE, device=DEVICE)
    return eye if o == 1 else matrix_as_kernel(eye, o).contiguous()


def _well_conditioned(rows: torch.Tensor) -> bool:
    """cond(J J^T) <= max_condition_solve for the Jacobian rows ``rows``."""
    s = torch.linalg.svdvals(rows)
    return bool(s[-1] > 0) and float(s[0] / s[-1]) ** 2 <= max_condition_solve(DTYPE)


def _conditioned_sets(J_x: torch.Tensor, J_t: torch.Tensor, o: int) -> tuple[int, list[int]]:
    """The largest prefix n' >= 1 of the training points and the extra points kept with it, in order, each
    kept when cond(J J^T) <= max_condition_solve still holds on the union; at least one extra point must be
    kept ((0, []) if there is none).  Keeping rather than cutting at the first bad extra point matters for a
    positively homogeneous net on 1-d inputs: an extra point of the training point's sign is parallel to it,
    one of the other sign is not."""
    for n in range(J_x.shape[0] // o, 0, -1):
        keep: list[int] = []
        for i in range(J_t.shape[0] // o):
            rows = torch.cat([J_x[: n * o], *(J_t[j * o : (j + 1) * o] for j in [*keep, i])])
            if _well_conditioned(rows):
                keep.append(i)
        if keep:
            return n, keep
    return 0, []


def _example(arch: Arch, ds: Dataset):
    """model, n, x, y, the extra points, J(Z) (float64) and K_ZZ from nk.ntk, flattened.

    The training points are cut to their largest prefix (x = ds.x()[:n]) and the extra points to those kept
    with it (xt = ds.x_test(N_EXTRA)[keep]) whose joint kernel is well enough conditioned to check (a
    construction); only a draw where one training point and every extra point give a singular kernel is
    rejected (e.g. a bias-free ReLU
    net on 1-d inputs of one sign: positively homogeneous, so their Jacobians are parallel)."""
    model = arch.build(dtype=DTYPE, device=DEVICE)
    o = arch.out_features
    x_all, y_all = ds.x(dtype=DTYPE, device=DEVICE), ds.y(dtype=DTYPE, device=DEVICE)
    xt_all = ds.x_test(N_EXTRA, dtype=DTYPE, device=DEVICE)
    J_all = flat_kernel(jacobian(model, torch.cat([x_all, xt_all])))
    J_x, J_t = J_all[: ds.n * o], J_all[ds.n * o :]
    n, keep = _conditioned_sets(J_x, J_t, o)
    if n < 1:
        assume(False)  # singular already on one training point with every extra point: no K_ZZ^{-1}
    x, y, xt = x_all[:n], y_all[:n], xt_all[keep]
    z = torch.cat([x, xt])
    J_z = torch.cat([J_x[: n * o], *(J_t[j * o : (j + 1) * o] for j in keep)])
    return model, n, x, y, xt, keep, z, J_z, flat_kernel(ntk(model, z))


def _num(value: float) -> torch.Tensor:
    return torch.tensor([value], dtype=torch.float64)


def _rkhs_sq(chol, values: torch.Tensor) -> float:
    """g(Z)^T K_ZZ^{-1} g(Z) by scipy's Cholesky: the squared RKHS norm of g in the span of k(., Z)."""
    v = values.numpy()
    return float(v @ scipy.linalg.cho_solve(chol, v))


@given(
    arch=architectures(families=("mlp",), max_depth=3, max_width=256, max_out=3, frozen=None),
    data=st.data(),
    seed=seeds(),
    size=st.sampled_from([0.5, 1.0, 3.0]),
)
def test_trained_network_is_the_minimum_rkhs_norm_interpolant(arch, data, seed, size):
    """||h - h_ini||_k^2 = alpha^T K alpha = ||theta_inf - theta_0||^2 for the trained linearized network,
    computed in function space on X + T and in parameter space by lstsq; two other interpolants
    (theta_inf + a null-space vector of J(X), and + a perturbation in the span of k(., T)) fit Y and are
    farther by exactly ||v||^2 (seed 000 Thm 6 eq (12); seed 001 eqs (10)-(11))."""
    arch = roomy(arch)
    ds = data.draw(datasets(arch, max_n=8))
    model, n, x, y, xt, keep, z, J_z, K_z = _example(arch, ds)
    o, m = arch.out_features, len(xt)
    N = n * o
    ctx = reproduce(
        arch,
        ds=f"nk.testing.strategies.{ds!r}; x, y = ds.x()[:{n}], ds.y()[:{n}]",
        seed=seed,
        size=size,
        check=f"lin = min_norm_linearized(model, x, y); z = cat(x, ds.x_test({N_EXTRA})[{keep}]); "
        "||lin.delta()||^2 vs g(z)^T nk.ntk(model, z)^{-1} g(z), g = lin(z) - model(z)",
    )
    J = J_z[:N]
    with torch.no_grad():
        h0_z = model(z)
    h0 = h0_z[:n].reshape(y.shape)
    r = flat(y - h0)
    delta_ref = min_norm(J, r).reshape(-1)  # theta_inf - theta_0, independent of ntkcheck.dynamics.solvers
    norm_sq = float(delta_ref @ delta_ref)

    # error units: cond(K_ZZ) >= cond(K_XX); e = eps + the gap between ntk and J J^T on Z
    gram = J_z @ J_z.T
    ev = torch.linalg.eigvalsh(gram)
    cond = float(ev[-1] / ev[0])
    e = EPS + float((K_z - gram).norm() / gram.norm())
    fwd_tol, fit_tol = tolerance("interpolant_forward", DTYPE), tolerance("interpolant_fit", DTYPE)
    chol_z = scipy.linalg.cho_factor(K_z.numpy())
    alpha_ref = scipy.linalg.cho_solve(scipy.linalg.cho_factor(K_z[:N, :N].numpy()), r.numpy())
    p = J.shape[1]  # the linearized networks' forward passes sum over p parameters
    fit_unit = EPS * (
        (N + p**0.5) * float(ev[-1]) * float(np.linalg.norm(alpha_ref)) + float(flat(h0).norm()) + float(flat(y).norm())
    )

    def norm_unit(extra: float = 0.0) -> float:
        """e (1 + cond + sqrt(p cond)) times the squared norms compared: the forward error of a quadratic
        form in K_ZZ^{-1} (kernel error e amplified by cond, values from a forward pass over p terms)."""
        return e * (1 + cond + (p * cond) ** 0.5) * (norm_sq + extra)

    # the library's trained network fits Y, and its displacement has the minimum norm
    lin = min_norm_linearized(model, x, y)
    delta_lib = flat(lin.delta())
    with torch.no_grad():
        h_z = lin(z)
    check_close(
        flat(h_z[:n]),
        flat(y),
        tol=fit_tol,
        scale=fit_unit,
        claim=CLAIM,
        context=ctx,
        what="trained linearized network: residual h(X) - Y (backward-error units)",
    )
    check_close(
        _num(float(delta_lib @ delta_lib)),
        _num(norm_sq),
        tol=fwd_tol,
        scale=norm_unit(),
        claim=CLAIM,
        context=ctx,
        what="||theta_inf - theta_0||^2 of min_norm_linearized vs the lstsq minimum norm",
    )
    # alpha^T K alpha with the library interpolant's coefficients: interpolate(K, Y, I, h_ini, 0) = alpha
    alpha = flat(
        interpolate(
            ntk(model, x), y, k_test_train=_identity_kernel(n, o), h_ini_train=h0, h_ini_test=torch.zeros_like(h0)
        )
    )
    check_close(
        _num(float(alpha @ K_z[:N, :N] @ alpha)),
        _num(norm_sq),
        tol=fwd_tol,
        scale=norm_unit(),
        claim=CLAIM,
        context=ctx,
        what="alpha^T K alpha of the library's interpolant vs ||theta_inf - theta_0||^2 (lstsq)",
    )
    # the same norm in function space on Z, from the trained network and from interpolate at Z
    check_close(
        _num(_rkhs_sq(chol_z, flat(h_z - h0_z))),
        _num(norm_sq),
        tol=fwd_tol,
        scale=norm_unit(),
        claim=CLAIM,
        context=ctx,
        what="||h - h_ini||_k^2 on X + T (trained network, K_ZZ^{-1}) vs ||theta_inf - theta_0||^2 (lstsq)",
    )
    h_interp = interpolate(
        ntk(model, x), y, k_test_train=ntk(model, z, x), h_ini_train=h0, h_ini_test=h0_z.reshape(len(z), *y.shape[1:])
    )
    check_close(
        _num(_rkhs_sq(chol_z, flat(h_interp) - flat(h0_z))),
        _num(norm_sq),
        tol=fwd_tol,
        scale=norm_unit(),
        claim=CLAIM,
        context=ctx,
        what="||h - h_ini||_k^2 on X + T (interpolate at Z, K_ZZ^{-1}) vs ||theta_inf - theta_0||^2 (lstsq)",
    )

    # competitors theta_1 = theta_inf + v with J(X) v = 0, ||v|| = size ||theta_inf - theta_0||
    gen = torch.Generator().manual_seed(seed)
    q = torch.linalg.qr(J.T).Q  # orthonormal basis of the row space of J(X) (full row rank: cond bounded)

    def null_part(w: torch.Tensor) -> torch.Tensor:
        """(I - J^+ J) w, the component of w in the null space of J(X), scaled to ``size`` ||theta_inf - theta_0||
        (projected twice, so J(X) v is ~eps ||J|| ||v|| however much of w lay in the row space)."""
        for _ in range(2):
            w = w - q @ (q.T @ w)
        return w * (size * norm_sq**0.5 / float(w.norm()))

    rkhs_h = _rkhs_sq(chol_z, flat(h_z - h0_z))
    v_null = null_part(torch.randn(J.shape[1], generator=gen, dtype=torch.float64))
    v_span = null_part(J_z[N:].T @ torch.randn(m * o, generator=gen, dtype=torch.float64))
    for label, v, in_span in (
        ("a null-space vector of J(X)", v_null, False),
        ("a perturbation in the span of k(., T)", v_span, True),
    ):
        displacement = delta_lib + v  # theta_1 - theta_0
        v_sq = float(v @ v)
        rival = linearize(model).load_delta(displacement.to(dtype=DTYPE, device=DEVICE))
        with torch.no_grad():
            h1_z = rival(z)
        check_close(
            flat(h1_z[:n]),
            flat(y),
            tol=fit_tol,
            scale=fit_unit * (1 + size),
            claim=CLAIM,
            context=ctx,
            what=f"competitor theta_inf + {label}: residual h_1(X) - Y (backward-error units)",
        )
        check_close(
            _num(float(displacement @ displacement) - norm_sq),
            _num(v_sq),
            tol=fwd_tol,
            scale=norm_unit(v_sq),
            claim=CLAIM,
            context=ctx,
            what=f"||theta_1 - theta_0||^2 - ||theta_inf - theta_0||^2 vs ||v||^2 (Pythagoras; v {label})",
        )
        if in_span:  # the function-space norm on Z sees all of v: the RKHS distance grows by exactly ||v||^2
            check_close(
                _num(_rkhs_sq(chol_z, flat(h1_z - h0_z)) - rkhs_h),
                _num(v_sq),
                tol=fwd_tol,
                scale=norm_unit(v_sq),
                claim=CLAIM,
                context=ctx,
                what=f"||h_1 - h_ini||_k^2 - ||h - h_ini||_k^2 on X + T vs ||v||^2 (v {label})",
            )
        # the gap ||v||^2 is resolved: the checks above cannot pass with h_1 no farther than h
        check_at_most(
            float(fwd_tol * norm_unit(v_sq)) / v_sq,
            tolerance("control_ratio", DTYPE),
            claim=CLAIM,
            context=ctx,
            what=f"error bound / ||v||^2 of the larger distance (v {label})",
        )
