"""The one tolerance table: every relative tolerance a check uses, per dtype, with its reason.

Exact identities (the same number computed two ways) are checked in float64;
float32 runs use the float32 column.  ``tolerance(name, dtype)`` is the only
way checks read these numbers: it returns a :class:`Bound`, a float that
remembers the table entry it came from (scaling it by a measured size keeps
that provenance), so the claims report prints every tolerance with its reason
and the checks of :mod:`ntkcheck.testing.claims` refuse a bare number.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Tolerance:
    float64: float
    float32: float
    reason: str


class Bound(float):
    """A tolerance value that remembers its table entry (``name``) and ``reason``.

    ``bound * scale`` (a measured size, e.g. the norm the error is relative to) is again a
    Bound with the same provenance; sums and other arithmetic give plain floats.
    """

    name: str
    reason: str

    def __new__(cls, value: float, name: str, reason: str) -> Bound:
        self = super().__new__(cls, value)
        self.name, self.reason = name, reason
        return self

    def __mul__(self, other: object) -> Bound:
        if isinstance(other, (int, float)) and not isinstance(other, bool):
            return Bound(float(self) * float(other), self.name, self.reason)
        return NotImplemented

    __rmul__ = __mul__

    def __repr__(self) -> str:
        return f"Bound({float(self)!r}, {self.name!r})"


TABLE: dict[str, Tolerance] = {
    "kernel_methods_agree": Tolerance(
        1e-10,
        1e-4,
        "Same sums of products in different orders; float64 rounding ~1e-16 * depth * sqrt(P) stays far below "
        "1e-10. float32 (eps 6e-8) accumulates over P up to ~1e5 terms: 1e-4.",
    ),
    "per_layer_sum": Tolerance(
        1e-12,
        1e-5,
        "The total is the sum of the per-layer kernels up to one rounding per layer.",
    ),
    "symmetry": Tolerance(
        1e-12,
        1e-5,
        "K(x, x') and K(x', x) are formed by the same products in a different order.",
    ),
    "psd": Tolerance(
        1e-10,
        1e-4,
        "Smallest eigenvalue of a Gram matrix >= -tol * largest: eigensolver backward error is ~eps * ||K||.",
    ),
    "solver_identity": Tolerance(
        1e-9,
        1e-3,
        "Solves lose ~cond * eps; draws whose kernel condition number exceeds MAX_CONDITION are rejected.",
    ),
    "asi_zero_output": Tolerance(
        0.0,
        0.0,
        "The ASI output at init is s*(h - h) for identical floating-point h: exactly 0.",
    ),
    "doubled_zero_output": Tolerance(
        1e-12,
        1e-5,
        "The doubled output sums w_i a_i and -w_i a_i inside one dot product: rounding of that sum, "
        "relative to the scale sum |w_i a_i|.",
    ),
    # -- solvers and flows (seed 000 eqs (2)-(7), Thm 5/6, seed 001 eq (8)) --
    "finite_time_flow": Tolerance(
        1e-5,
        1e-2,
        "ode_flow runs at rtol = atol = 1e-9 on its polar state (relative in h - Y and in 1 + t/tau): the global "
        "error is the local one summed over ~1e2 steps, 1e-7 (measured <= 5e-8 over 300 draws per property); the "
        "parameter-space oracle (LSODA at 1e-10, |r|^p smoothed below 1e-11 |r0| for p < 2) adds < 1e-9. Test "
        "points carry the training error through k_* K^-1 = J_* J^+, ||J_* J^+|| <= sqrt(cond) <= 100 at cond <= "
        "MAX_CONDITION_FLOW: 1e-5. float32: the kernels carry rounding ~1e-6 that a late-time mode "
        "exp(-c lambda_min t) amplifies by up to cond (1e4): 1e-2 (measured <= 7e-5).",
    ),
    "gd_iterates": Tolerance(
        1e-9,
        1e-3,
        "Gradient descent against its closed form: t steps each round at ~(1 + eta lambda_max) eps <= 3 eps, "
        "~1e-14 at t = 25; the kernel handed to mse_gd (nk.ntk) differs from J J^T by its own rounding (~1e-14 "
        "measured, kernel_methods_agree at worst), which t steps amplify by at most t eta lambda_max <= 43. "
        "float32: 25 * 3 * 6e-8 ~ 5e-6 for the loop, plus ~1e-6 kernel rounding times 43.",
    ),
    "interpolant_fit": Tolerance(
        10.0,
        10.0,
        "Residual at X of an interpolant: a backward-stable solve (Cholesky, Higham Thm 10.4) plus the product "
        "K alpha and the sum h_ini + K alpha leave ||h(X) - Y|| <= c eps (N ||K|| ||alpha|| + ||h_ini(X)|| + "
        "||Y||) whatever cond(K); a linearized network evaluated by its own forward pass adds dot products over "
        "its P parameters, ~sqrt(P) eps ||J|| ||theta - theta_0|| <= sqrt(P) eps ||K|| ||alpha|| (random-sign "
        "rounding, Higham §2.8). The check measures the residual in units of eps ((N + sqrt(P)) ||K|| ||alpha|| "
        "+ ||h_ini(X)|| + ||Y||) (P = 0 for a solver's output), so the entry is c; measured <= ~3 units. A ridge "
        "of 1e-9 lambda_max leaves 1e-9 ||K|| ||alpha||, >= 1e3 of these units.",
    ),
    "interpolant_forward": Tolerance(
        10.0,
        10.0,
        "Forward error at test points of an interpolant solved on a kernel known to relative accuracy e (eps "
        "plus the measured gap between the kernel handed to the solver and the reference's J J^T): "
        "||delta alpha|| <= cond e ||alpha|| to first order (Higham Thm 7.2), mapped to T by ||k(T, X)|| <= "
        "||J(T)|| ||J(X)||, plus sqrt(P) eps for a network's forward pass over P parameters. The check "
        "measures the gap in units of e ((1 + cond + sqrt(P)) ||J(T)|| ||J(X)|| ||alpha|| + ||h_ini(T)||) "
        "(quadratic forms alpha^T K alpha: e (1 + cond + sqrt(P cond)) times the form), so the entry is c; "
        "measured <= ~1 unit.",
    ),
    "cross_term_se": Tolerance(
        4.0,
        4.0,
        "A Monte Carlo mean whose expectation is 0 must lie within 4 standard errors of 0 (|mean| / se <= 4): "
        "a false alarm has probability 6e-5 per check (normal tail); the terms are computed to 1e-6 relative "
        "even in float32, far below one standard error, so the dtype needs no slack.",
    ),
    "flow_limit": Tolerance(
        1e-6,
        1e-2,
        "A flow integrated to a stopping residual of 1e-9..1e-10 ||r_0|| sits within cond(J) times that of its limit; "
        "draws with cond(K) above MAX_CONDITION_FLOW are rejected, so ~1e-7 remains for the ODE's own error. "
        "float32 inputs are integrated in float64 but the kernel carries float32 rounding (~1e-7 * cond).",
    ),
    "gd_limit": Tolerance(
        1e-8,
        1e-2,
        "Gradient descent stopped after 35 cond steps contracts the slowest mode by e^-35; what remains is "
        "rounding of ~steps * eps * cond accumulated over the iteration, 10x the solver_identity bound.",
    ),
    "monte_carlo_4se": Tolerance(
        1.0,
        1.0,
        "A Monte Carlo mean must lie within 4 standard errors of its expectation (ratio |mean| / (4 se) <= 1): a "
        "false alarm has probability 6e-5 per check (normal tail), independent of the dtype.",
    ),
    "control_ratio": Tolerance(
        1.0,
        1.0,
        "A negative control passes when the measured gap exceeds its floor (ratio floor / gap <= 1): the floor "
        "itself is set from the positive twin's tolerance, so no dtype-specific slack is needed.",
    ),
    "training_fit": Tolerance(
        1e-10,
        1e-4,
        "A network trained to a loss threshold must reach it: the threshold is the training loop's own stopping "
        "rule (1e-12..1e-14 in float64), this is the largest final loss accepted.",
    ),
    # -- width convergence, empirical and analytic kernels --
    "linearized_forward": Tolerance(
        1e-10,
        1e-4,
        "h_lin(theta_0 + delta) by one jvp vs h_0 + J delta with J from jacrev: the same products summed in a "
        "different order, ~eps * depth * sqrt(P) relative to |h_0| + |J delta| (float64 ~1e-13, float32 ~1e-5).",
    ),
    "second_order_ratio": Tolerance(
        1e-3,
        5e-2,
        "|(||e(2t)|| / ||e(t)||) / 4 - 1| for the even Taylor remainder e(t) = t^2 a + t^4 c + ... of the "
        "linearization: the draw's own network shows a ratio within 1/4 of this at the chosen t (else it is assumed "
        "away) and e(t) is >= 1e3 eps times the output there, so rounding adds ~1e-3 of a forward pass's error growth. "
        "Measured worst over 600 random draws: 1.5e-5 (float64), 1.2e-2 (float32). A remainder of another order "
        "gives 2 (first order), 8 (third) or 0/0 (none): deviations 0.5, 1, NaN.",
    ),
    "ntk_width_constant": Tolerance(
        6.0,
        6.0,
        "C in RMS_seeds ||Theta_m - Theta_inf||_F / ||Theta_inf||_F <= C m^(-1/2) (NTK param., sigma_w 1.5, sigma_b "
        "0.3, N = 6, 8 seeds). Theory: the relative variance of a ReLU net's NTK is ~5L/m (Hanin & Nica 2019), so "
        "C ~ sqrt(5L) = 3.9 at L = 3. Measured sqrt(m) RMS over widths 64..1024 and 3 blocks of 8 seeds: <= 3.6 "
        "(relu L=2), 2.9 (erf L=2), 4.3 (relu L=3); margin 1.4 over the worst. Statistical: float32 rounding "
        "(1e-6) is far below these 1e-2 errors, so the float32 value is the same.",
    ),
    "nngp_width_constant": Tolerance(
        7.0,
        7.0,
        "C in RMS_seeds ||f f^T / O - Sigma_inf||_F / ||Sigma_inf||_F <= C m^(-1/2) with O = m outputs (readout "
        "sampling adds sqrt(2/O) to the hidden layer's fluctuation). Measured sqrt(m) RMS over widths 64..1024 and "
        "3 blocks of 8 seeds: <= 4.5 (relu L=2), 3.3 (erf L=2), 4.9 (relu L=3); margin 1.4. Same in float32.",
    ),
    "mean_kernel_bias": Tolerance(
        1.5,
        1.5,
        "b in |E K_m(x, x') - K_inf(x, x')| <= (b / m) sqrt(K_inf(x, x) K_inf(x', x')), the finite-width bias of "
        "the mean NTK / NNGP of nets with >= 2 hidden layers (O(1/m), Hanin & Nica 2019; exactly 0 for one hidden "
        "layer). Measured m max|mean - exact| at m = 32 over 4000 seeds (noise se ~0.2-0.4 included): NTK <= 0.48 "
        "(relu/erf/tanh L=2, relu L=3), NNGP <= 0.74 (relu L=3); margin 2. Same in float32.",
    ),
    "trained_gap_constant": Tolerance(
        1.2,
        1.2,
        "C in RMS_seeds ||f_trained - h_k||(x_test) / ||h_k - f_0||(x_test) <= C m^(-1/2) for the one-hidden-layer "
        "ReLU net of the gap check (seed 001 Lemma 1, Lee et al. 2019: O(m^(-1/2))). Measured sqrt(m) RMS over "
        "widths 128..2048 and 2 blocks of 8 seeds: <= 0.81; margin 1.5. Same in float32 (rounding ~1e-6).",
    ),
    "ntk_width_constant_families": Tolerance(
        5.0,
        5.0,
        "C in RMS_seeds ||Theta_m - Theta_inf||_F / ||Theta_inf||_F <= C m^(-1/2) for the CNN (two 3x3 convolutions, "
        "4 images 2x6x6) and the dense / convolutional ResNet of one block, sigma_w 1.5, sigma_b 0.3, relu, in NTK "
        "and standard parametrization (against analytic_ntk's fan-in-weighted convention there). Measured sqrt(m) "
        "RMS over widths 32..512 and 3 blocks of 8 seeds (one thread, float64): <= 3.31 / 3.77 (MLP of two hidden "
        "layers on 6 inputs in R^5, NTK / standard param.), 3.18 / 3.39 (dense ResNet), 2.14 / 2.78 (CNN), "
        "1.87 / 2.09 (conv ResNet); margin 1.33 over the worst. Fitted "
        "slopes on 24 seeds: -0.65 / -0.65, -0.53 / -0.46, -0.53 / -0.51. Same in float32 (rounding ~1e-6).",
    ),
    "nngp_width_constant_families": Tolerance(
        7.5,
        7.5,
        "C in RMS_seeds ||f f^T / O - Sigma_inf||_F / ||Sigma_inf||_F <= C m^(-1/2), O = m outputs, for the families "
        "of ntk_width_constant_families (the forward pass at init, hence this error, has the same distribution in "
        "both parametrizations). Measured sqrt(m) RMS over widths 32..512 and 3 blocks of 8 seeds: <= 5.17 (dense "
        "ResNet, at m = 32), 5.08 (MLP), 3.31 (CNN), 3.35 (conv ResNet); margin 1.45. Same in float32.",
    ),
    "monte_carlo_se": Tolerance(
        4.5,
        4.5,
        "k in |mean_S - K_inf| - bias bound <= k se_S, entrywise over the upper triangle of a Monte Carlo kernel "
        "(monte_carlo_ntk / monte_carlo_nngp vs analytic_ntk / analytic_nngp): each entry is a mean of S >= 200 "
        "independent samples, near normal, so |z| > 4.5 has probability 6.8e-6; over the <= 21 entries of a check "
        "and the 17 checks of the property file (~300 entries) a false alarm has probability ~2e-3 (Bonferroni), "
        "where k = 4 would give ~2e-2. Statistical, the same in float32 (rounding ~1e-6 << se ~1e-3).",
    ),
    "mean_kernel_bias_families": Tolerance(
        0.8,
        0.8,
        "b in |E K_m(x, x') - K_inf(x, x')| <= (b / m) sqrt(K_inf(x, x) K_inf(x', x')) for the CNN with 2 "
        "convolutions and the dense / convolutional ResNet with 1 block (whose branch reads the stem's features "
        "through a second random matrix: O(1/m), Hanin & Nica 2019), sigma_w 1.5, sigma_b 0.3, relu. Measured m "
        "max|mean - exact| at m = 16 over 3000-4000 seeds (noise se ~0.1-0.2 included, no bias resolved beyond "
        "2.6 se): NTK <= 0.18 (CNN NTK param.), 0.29 (CNN standard), 0.21 (dense ResNet), 0.14 (conv ResNet); "
        "NNGP <= 0.32; margin 2.5. Same in float32.",
    ),
    # -- transforms (ASI, RND, doubling) and seed 001 --
    "mismatch_count": Tolerance(
        0.0,
        0.0,
        "A count of discrete mismatches (requires_grad flags that differ from the original's, kernel names that "
        "differ, parameter tensors that should be identical copies but are not): no rounding enters, so it is 0.",
    ),
    "rnd_output_ratio": Tolerance(
        1e3,
        1e3,
        "(|h(X; theta)| + |h(X; theta')|) / |h_RND(X)| for independent theta, theta': h_RND = (sqrt 2/2)(h - h') is "
        "O(|h| + |h'|) and falls below 1e-3 of it only if two independent outputs agree to 3 digits in every one "
        "of >= 2 coordinates (probability ~1e-6); a second branch equal to theta gives 0 (ratio inf), one within "
        "rounding of theta (float32 re-rounding) gives ratio ~1e7.",
    ),
    "narrow_net_fit": Tolerance(
        1e-14,
        1e-14,
        "The narrow-network loss control trains (in float64 in both runs) to the loop's loss threshold 1e-16; a "
        "final L2/L4 loss above 1e-14 means training stopped early and the functions compared are not the fits.",
    ),
    "sigma_slope": Tolerance(
        1.0,
        1.0,
        "Multiplies the derived band for the least-squares slope of log e(sigma): with r = |a| / (sigma^L |b|) "
        "(interpolant error over init term, measured at sigma = 1) the local slope of log|a + sigma^L b|^2 is "
        "within 2L r (1 + r) / (1 - r)^2 of 2L, and rounding of e adds sum |w_i| 2 eps_e; the band is exact, so "
        "no slack (1.0) in either dtype (eps_e carries the dtype).",
    ),
}


MAX_CONDITION_FLOW = 1e4
"""cond(K) above this is rejected by the flow properties (their stopping residual times cond stays <= 1e-5)."""


MAX_CONDITION: dict[torch.dtype, float] = {
    # Linear solves lose up to cond * eps of relative accuracy (Higham, ch. 7), so the solver_identity
    # tolerances above hold only for kernels at most this ill-conditioned; properties reject (assume away)
    # worse draws rather than loosen the bound: float64 1e6 * 1.1e-16 ~ 1e-10 < 1e-9, float32 1e3 * 6e-8 ~ 6e-5 < 1e-3.
    torch.float64: 1e6,
    torch.float32: 1e3,
}


def max_condition(dtype: torch.dtype) -> float:
    """The largest kernel condition number for which ``solver_identity`` holds in ``dtype``."""
    if dtype not in MAX_CONDITION:
        raise ValueError(f"dtype must be torch.float64 or torch.float32, got {dtype}")
    return MAX_CONDITION[dtype]


MAX_CONDITION_SOLVE: dict[torch.dtype, float] = {
    # The interpolant properties scale their forward-error tolerance by the measured cond(K)
    # (``interpolant_forward``), so they need no fixed bound for accuracy; this one keeps that tolerance
    # meaningful: c * cond * eps stays <= ~1e-5 in float64 (10 * 1e10 * 2.2e-16) and <= ~1e-2 in float32
    # (10 * 1e4 * 1.2e-7), far below the O(1) errors of a wrong solve.  Draws above it are rejected.
    torch.float64: 1e10,
    torch.float32: 1e4,
}


def max_condition_solve(dtype: torch.dtype) -> float:
    """The largest cond(K) for which the cond-scaled ``interpolant_forward`` tolerance is still tight."""
    if dtype not in MAX_CONDITION_SOLVE:
        raise ValueError(f"dtype must be torch.float64 or torch.float32, got {dtype}")
    return MAX_CONDITION_SOLVE[dtype]


def tolerance(name: str, dtype: torch.dtype) -> Bound:
    """The tolerance ``name`` for ``dtype`` (float64 or float32), as a :class:`Bound` carrying its reason."""
    if name not in TABLE:
        raise KeyError(f"tolerance name must be one of {sorted(TABLE)}, got {name!r}")
    entry = TABLE[name]
    if dtype == torch.float64:
        return Bound(entry.float64, name, entry.reason)
    if dtype == torch.float32:
        return Bound(entry.float32, name, entry.reason)
    raise ValueError(f"dtype must be torch.float64 or torch.float32, got {dtype}")
